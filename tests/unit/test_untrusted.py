"""Untrusted data and files stay contained (issue #15, items 7 and 11): paths from data files stay inside their image
folder, checkpoints and DeepLabCut files load without running code. Each test reproduces a case that got through
before. Untrusted servers (items 8-10: a local Ray and Label Studio are this user's only, annotators get images and
nothing else) are tested in tests/integration/test_untrusted_servers.py."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.config import params_from_dict
from pipeline.data.prepare import PrepareError, prepare
from pipeline.keypoints import KeypointSchema
from pipeline.training import load_training_state

REPO = Path(__file__).resolve().parents[2]
COCO17 = KeypointSchema.coco17()
ESCAPE = "../../../../.git/hooks/pre-commit"


def _coco_with(file_name: str) -> dict:
    kps = [v for j in range(17) for v in (10.0 + j, 10.0 + j, 2)]
    return {
        "images": [
            {"id": 1, "file_name": "ok.jpg", "width": 64, "height": 64},
            {"id": 2, "file_name": file_name, "width": 64, "height": 64},
        ],
        "annotations": [
            {
                "id": i,
                "image_id": i,
                "category_id": 1,
                "bbox": [5.0, 5.0, 40.0, 40.0],
                "area": 1600.0,
                "iscrowd": 0,
                "keypoints": kps,
                "num_keypoints": 17,
            }
            for i in (1, 2)
        ],
        "categories": [COCO17.to_coco_category()],
    }


# ------------------------------------------------------------------------------ 7: paths stay inside their folder


@pytest.mark.parametrize("name", [ESCAPE, "/etc/passwd", "images/../../x.jpg", "..\\..\\x.jpg"])
def test_validate_refuses_a_file_name_that_leaves_the_image_folder(tmp_path, name):
    path = tmp_path / "people.json"
    path.write_text(json.dumps(_coco_with(name)))
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "validate", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    report = done.stdout + done.stderr
    assert "image 2" in report and "file_name" in report and ("'..'" in report or "absolute" in report)


def test_prepare_refuses_it_and_links_nothing_outside(tmp_path):
    source = tmp_path / "source"
    (source / "images").mkdir(parents=True)
    hooks = tmp_path / ".git" / "hooks"
    hooks.mkdir(parents=True)
    (hooks / "pre-commit").write_text("#!/bin/sh\necho planted\n")
    coco = _coco_with("../../.git/hooks/pre-commit")
    (source / "people.json").write_text(json.dumps(coco))
    raw = {
        "data": {
            "source": "coco",
            "coco": {"annotations": str(source / "people.json"), "images": str(source / "images")},
        }
    }
    out = tmp_path / "project" / "data" / "prepared"
    with pytest.raises((PrepareError, ValueError), match=r"image 2.*file_name|'\.\.' would leave"):
        prepare(params_from_dict(raw).data, out)
    linked = [p for p in tmp_path.rglob("pre-commit")]
    assert linked == [hooks / "pre-commit"]  # no link of it anywhere, inside the project or out


def _jpeg(path: Path, size: tuple[int, int] = (16, 12)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 120, 30)).save(path)
    return path


def test_a_symlink_that_leads_outside_the_source_folder_is_refused_by_name(tmp_path):
    """A source folder holding ``img/x.jpg -> /somewhere/private.jpg``: prepare used to hard-link the symlink itself
    into data/prepared/images, and Label Studio then served the target. Now it is refused, naming the file and
    where it leads; a link that stays inside the folder is followed and its content linked, never the link."""
    from pipeline.data.prepare import link_images

    private = _jpeg(tmp_path / "private" / "secret.jpg")
    _jpeg(tmp_path / "src" / "real" / "a.jpg")
    (tmp_path / "src" / "img").mkdir()
    (tmp_path / "src" / "img" / "escape.jpg").symlink_to(private)
    (tmp_path / "src" / "img" / "inside.jpg").symlink_to(tmp_path / "src" / "real" / "a.jpg")
    (tmp_path / "src" / "linked").symlink_to(tmp_path / "private")  # a folder linked to storage elsewhere

    link_images(["img/inside.jpg"], tmp_path / "src", tmp_path / "dst")
    inside = tmp_path / "dst" / "img" / "inside.jpg"
    assert not inside.is_symlink() and inside.read_bytes() == (tmp_path / "src" / "real" / "a.jpg").read_bytes()
    for name in ("img/escape.jpg", "linked/secret.jpg"):
        with pytest.raises(PrepareError, match=rf"{name}.*resolves to {private}, outside the image folder"):
            link_images([name], tmp_path / "src", tmp_path / "dst")
    assert sorted(p.name for p in (tmp_path / "dst").rglob("*") if p.is_file()) == ["inside.jpg"]
    with pytest.raises(PrepareError, match=r"'\.\.' would leave"):
        link_images(["linked/../../outside.jpg"], tmp_path / "src", tmp_path / "dst")

    # validate refuses the same file by name
    data = _coco_with("img/escape.jpg")
    data["images"][0]["file_name"] = "img/inside.jpg"
    (tmp_path / "people.json").write_text(json.dumps(data))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "validate",
            str(tmp_path / "people.json"),
            "--images",
            str(tmp_path / "src"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=120,
    )
    assert done.returncode == 2 and "image 2: field 'file_name'" in done.stdout + done.stderr
    assert "outside the image folder" in done.stdout + done.stderr


# --------------------------------------------------------------------------------- 11: checkpoints load safely


class _Planted:
    def __reduce__(self):
        return (os.system, ("echo planted > /dev/null",))


def test_a_checkpoint_that_pickles_code_is_refused(tmp_path):
    path = tmp_path / "state.pt"
    torch.save({"model": {}, "epoch": 1, "payload": _Planted()}, path)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_training_state(path)
    plain = {"model": {"w": torch.ones(2)}, "epoch": 3, "best_ap": 0.5, "history": [{"val_ap": 0.5, "amp": "bf16"}]}
    torch.save(plain, path)
    assert load_training_state(path)["history"] == plain["history"]


class _OpensAFile:
    """Unpickling this creates ``path``: the proof that a reader ran code from the file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_deeplabcut_h5_holding_objects_is_refused_and_never_unpickled(tmp_path, dlc_openfield):
    import shutil
    import warnings

    import pandas as pd

    from pipeline.data.deeplabcut import DeepLabCutFormatError, read_deeplabcut_project, write_deeplabcut_labels

    project = tmp_path / "openfield"
    shutil.copytree(dlc_openfield, project)
    coco, _ = read_deeplabcut_project(project)
    h5 = project / "labeled-data/m4s1/CollectedData_Pranav.h5"
    marker = tmp_path / "code-ran"
    table = pd.read_hdf(h5)  # DeepLabCut's own file: numbers only
    table[("Pranav", "payload", "x")] = [_OpensAFile(str(marker))] * len(table)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas warns that an object column is pickled: the point of the test
        table.to_hdf(h5, key="df_with_missing", mode="w")
    crafted = h5.read_bytes()
    with pytest.raises(DeepLabCutFormatError, match=rf"{h5}: holds Python objects \(df_with_missing/block1_values"):
        write_deeplabcut_labels(project, coco)
    assert not marker.exists() and h5.read_bytes() == crafted  # nothing ran, nothing written
    pd.read_hdf(h5)  # what the export used to do: the payload runs
    assert marker.exists()
