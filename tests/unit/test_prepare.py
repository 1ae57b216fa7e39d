"""The prepare stage: contracts of docs/DESIGN.md §3, determinism, every source, and a real `dvc repro`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import params_from_dict
from pipeline.data.coco import read_coco
from pipeline.data.prepare import PrepareError, prepare
from tests.support.teacher import REPO, copy_project

SMALL = {"synthetic": {"num_images": 24}, "val_images": 4, "test_images": 4, "labeled": 0.25, "seed": 3}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _load(out: Path, name: str) -> dict:
    return json.loads((out / f"{name}.json").read_text())


def _check_contracts(out: Path) -> dict[str, dict]:
    splits = {n: _load(out, n) for n in ("labeled", "pool", "val", "test", "oracle")}
    for name in splits:
        read_coco(out / f"{name}.json", images_dir=out, check_images=True)  # raises on any problem
    labeled_ids = {a["id"] for a in splits["labeled"]["annotations"]}
    pool_ids = {a["id"] for a in splits["pool"]["annotations"]}
    assert labeled_ids and pool_ids and not labeled_ids & pool_ids
    assert pool_ids == {a["id"] for a in splits["oracle"]["annotations"]}
    assert all(a["source"] == "seed" for a in splits["labeled"]["annotations"])
    for ann in splits["pool"]["annotations"]:
        assert ann["num_keypoints"] == 0 and not any(ann["keypoints"]), "pool must not carry the truth"
        assert ann["bbox"][2] > 0 and ann["bbox"][3] > 0
        assert "synthetic_tags" not in ann  # the truth's tags stay in oracle.json
    assert all(a["num_keypoints"] > 0 for a in splits["oracle"]["annotations"])
    held = {im["id"] for n in ("val", "test") for im in splits[n]["images"]}
    trained = {im["id"] for n in ("labeled", "pool") for im in splits[n]["images"]}
    assert {im["id"] for im in splits["val"]["images"]}.isdisjoint({im["id"] for im in splits["test"]["images"]})
    return splits | {"_held": held, "_trained": trained}


def test_synthetic_prepare_is_deterministic_and_keeps_contracts(tmp_path):
    params = params_from_dict({"data": SMALL}).data
    a, b = tmp_path / "a", tmp_path / "b"
    counts = prepare(params, a)
    prepare(params, b)
    files_a, files_b = _files(a), _files(b)
    assert files_a.keys() == files_b.keys()
    assert [k for k in files_a if files_a[k] != files_b[k]] == []
    splits = _check_contracts(a)
    assert splits["_held"].isdisjoint(splits["_trained"])
    assert len(splits["val"]["images"]) == 4 and len(splits["test"]["images"]) == 4
    eligible = counts["labeled"] + counts["pool"]
    assert counts["labeled"] == round(0.25 * eligible)
    # another seed gives another split
    other = prepare(params_from_dict({"data": {**SMALL, "seed": 4}}).data, tmp_path / "c")
    assert _files(tmp_path / "c") != files_a and sum(other.values()) > 0


def test_seed_count_and_budget_errors(tmp_path):
    params = params_from_dict({"data": {**SMALL, "labeled": 5}}).data
    assert prepare(params, tmp_path / "n")["labeled"] == 5
    with pytest.raises(PrepareError, match=r"data\.labeled = 100000.*nothing would be left"):
        prepare(params_from_dict({"data": {**SMALL, "labeled": 100000}}).data, tmp_path / "x")
    with pytest.raises(PrepareError, match="val_images"):
        prepare(params_from_dict({"data": {**SMALL, "val_images": 500}}).data, tmp_path / "y")
    with pytest.raises(PrepareError, match=r"data\.coco\.annotations must be set"):
        prepare(params_from_dict({"data": {"source": "coco"}}).data, tmp_path / "z")


def test_coco_source_on_real_photos(tmp_path, coco_mini):
    raw = {
        "source": "coco",
        "labeled": 20,
        "val_images": 10,
        "test_images": 10,
        "coco": {
            "annotations": str(coco_mini / "annotations/person_keypoints_train2017.json"),
            "images": str(coco_mini / "train2017"),
            "val_annotations": str(coco_mini / "annotations/person_keypoints_val2017.json"),
            "val_images": str(coco_mini / "val2017"),
        },
    }
    out = tmp_path / "prepared"
    counts = prepare(params_from_dict({"data": raw}).data, out)
    splits = _check_contracts(out)
    assert counts["labeled"] == 20
    # every labeled person of the train file is in the seed set or the pool (86 in coco_mini train, minus crowds)
    assert counts["labeled"] + counts["pool"] == 86
    assert all(im["file_name"].startswith("images/train/") for im in splits["pool"]["images"])
    assert all(im["file_name"].startswith("images/val/") for im in splits["val"]["images"])


def test_deeplabcut_source_four_keypoints(tmp_path, dlc_openfield):
    raw = {
        "source": "deeplabcut",
        "labeled": 10,
        "val_images": 10,
        "test_images": 10,
        "deeplabcut": {"project": str(dlc_openfield)},
    }
    out = tmp_path / "prepared"
    counts = prepare(params_from_dict({"data": raw}).data, out)
    assert counts == {"labeled": 10, "pool": 86, "val": 10, "test": 10, "oracle": 86}
    splits = _check_contracts(out)
    assert splits["labeled"]["categories"][0]["keypoints"] == ["snout", "leftear", "rightear", "tailbase"]
    assert all(len(a["keypoints"]) == 12 for a in splits["pool"]["annotations"])


def test_dvc_repro_runs_prepare(tmp_path):
    """A real `dvc repro` in a fresh git repository: the stage runs, then a second repro is a no-op."""
    project = tmp_path / "project"
    project.mkdir()
    copy_project(project)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update({k: v for k, v in SMALL.items() if k != "synthetic"})
    params["data"]["synthetic"]["num_images"] = SMALL["synthetic"]["num_images"]
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    dvc = str(Path(sys.executable).parent / "dvc")

    def run(*cmd: str) -> str:
        done = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{cmd}: {done.stdout}\n{done.stderr}"
        return done.stdout

    run("git", "init", "-q")
    run(dvc, "init", "-q")
    run(dvc, "config", "core.analytics", "false")
    first = run(dvc, "repro", "prepare")
    assert "Running stage 'prepare'" in first
    assert (project / "dvc.lock").exists()
    _check_contracts(project / "data" / "prepared")
    second = run(dvc, "repro", "prepare")
    # only `inputs` runs again (always_changed: it lists the source's files); it found nothing new, so prepare is
    # not run
    assert "Running stage 'prepare'" not in second and "didn't change" in second
