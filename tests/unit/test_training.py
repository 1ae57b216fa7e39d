"""The training loop in one plain process (the loop Ray Train runs): an SSL step for each mode and both heads, and a
checkpoint of an older loop refused by name. Training for real (Ray Train workers, a SIGKILLed worker, a resumed
stage, an external Ray cluster) is in tests/integration/test_training_on_ray.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.config import params_from_dict
from pipeline.model_store import model_from_params
from pipeline.training import load_data, ssl_step_inputs, train_in_process
from tests.support import training_project
from tests.support.training_project import training_params as _params

prepared = training_project.prepared  # the fixture, shared with tests/integration/test_training_on_ray.py


@pytest.mark.parametrize("head", ["heatmap", "asla"])
@pytest.mark.parametrize("mode", ["cutout", "adaptive", "adaptive_mixup"])
def test_an_ssl_step_runs_for_both_heads(prepared, tmp_path, head, mode):
    """Plain-process training (the same loop Ray runs) with each SSL mode and both heads: losses are finite."""
    raw = _params(prepared, epochs=1, min_steps_per_epoch=2, batch_size=4, num_workers=1)
    raw["model"]["head"] = head
    raw["train"]["ssl"].update(mode=mode, unlabeled_batch_size=4)
    prepared_dir = prepared / "data" / "prepared"
    paths = {
        "labels": str(prepared_dir / "labeled.json"),
        "pool": str(prepared_dir / "pool.json"),
        "val": str(prepared_dir / "val.json"),
        "images_root": str(prepared_dir),
    }
    history = train_in_process(params_from_dict(raw), paths, tmp_path).history()
    last = history[-1]
    assert np.isfinite(last["loss_total"]) and np.isfinite(last["loss_unsup"])
    if head == "heatmap":  # the student sees a masked view: it cannot match the teacher's heatmaps for free
        assert last["loss_unsup"] > 0
    else:  # ASLA learns only from keypoints its (here untrained) teacher is confident about: none may pass
        assert last["loss_unsup"] >= 0
    assert ("loss_mixup" in last) == (mode == "adaptive_mixup")
    # the teacher's targets and the strong view have the batch's shape
    params = params_from_dict(raw)
    data = load_data(params, paths)
    model = model_from_params(params, data.codec, data.schema)
    batch = torch.utils.data.default_collate([data.unlabeled[i] for i in range(4)])
    ssl_in = ssl_step_inputs(model, model, batch, params, np.random.default_rng(0), torch.Generator().manual_seed(0))
    assert ssl_in.strong.shape == batch["image"].shape
    assert not torch.equal(ssl_in.strong, batch["image"])
    assert (ssl_in.mixup is not None) == (mode == "adaptive_mixup")  # masked (and for cutout: erased) somewhere


def test_a_checkpoint_of_an_older_loop_is_refused_by_name(prepared, tmp_path):
    """A checkpoint with one optimiser group (the loop before no-decay groups) must not be half-loaded."""
    raw = _params(prepared, epochs=1, min_steps_per_epoch=2, batch_size=4, num_workers=1)
    prepared_dir = prepared / "data" / "prepared"
    paths = {
        "labels": str(prepared_dir / "labeled.json"),
        "val": str(prepared_dir / "val.json"),
        "images_root": str(prepared_dir),
    }
    latest = train_in_process(params_from_dict(raw), paths, tmp_path)
    state = latest.training_state()
    old = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters()).state_dict()  # one group, as the old loop saved
    state["optimizer"] = {"state": {}, "param_groups": old["param_groups"]}
    torch.save(state, latest.path / latest.STATE)
    raw["train"]["epochs"] = 2  # so that it resumes
    with pytest.raises(ValueError, match="older training loop"):
        train_in_process(params_from_dict(raw), paths, tmp_path)
