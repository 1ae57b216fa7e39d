"""What the training tests of both tiers share (tests/unit/test_training.py, tests/integration/test_training_on_ray.py):
params.yaml made small enough to train on 2 CPU cores, and a project prepared with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config import params_from_dict
from pipeline.data.prepare import prepare
from tests.support.teacher import REPO


def training_params(tmp: Path, **train) -> dict:
    """params.yaml for a CPU training test: 60 synthetic images without hard cases, 96x128 crops, 3 epochs of at
    least 20 steps on 2 workers; ``train`` overrides train settings."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"].update(labeled=0.3, val_images=6, test_images=2, seed=1)
    raw["data"]["synthetic"].update(
        num_images=60, rare_pose=0, occluded=0, small=0, low_contrast=0, crowded=0, truncated=0, blur=0
    )
    raw["codec"]["input_size"] = [96, 128]
    raw["model"]["variant"] = 24
    settings = {
        "epochs": 3,
        "min_steps_per_epoch": 20,
        "batch_size": 16,
        "lr": 0.003,
        "warmup_steps": 10,
        "num_workers": 2,
        "cpus_per_worker": 1.0,
    }
    raw["train"].update({**settings, **train})
    raw["train"]["ssl"].update(mode="off", unlabeled_batch_size=8)
    return raw


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("project")
    prepare(params_from_dict(training_params(root)).data, root / "data" / "prepared")
    return root
