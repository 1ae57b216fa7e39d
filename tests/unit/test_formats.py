"""Other tools' data in and out (issue #16): MPII, CrowdPose, AIC, two-category COCO, SLEAP, Label Studio exports and a
small DeepLabCut project through validate -> prepare -> one training step -> evaluate; exports to COCO, DeepLabCut
and SLEAP opened by the owning library."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from pipeline.config import params_from_dict
from pipeline.data.coco import CocoFormatError, load_json, read_coco
from pipeline.data.deeplabcut import read_deeplabcut_project, write_deeplabcut_labels
from pipeline.data.prepare import prepare
from pipeline.data.validate import validate_command
from pipeline.evaluation import evaluate_keypoints
from pipeline.inference import predict_split, to_coco_results
from pipeline.keypoints import CROWDPOSE_KEYPOINT_NAMES, KNOWN_SIGMAS, MPII_KEYPOINT_NAMES
from pipeline.model_store import load_model, save_model
from pipeline.training import train_in_process
from tests.support import formats
from tests.support.teacher import REPO


def _raw(data: dict) -> dict:
    """params.yaml with ``data`` and a training of one step on tiny crops."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"].update(data)
    raw["codec"]["input_size"] = [48, 64]
    raw["model"]["variant"] = 24
    # batch >= the seed labels and an epoch of at least one step: exactly one optimiser step
    raw["train"].update(epochs=1, min_steps_per_epoch=1, batch_size=32, warmup_steps=0, num_workers=1)
    raw["train"]["ssl"]["mode"] = "off"
    return raw


def _round(tmp_path: Path, data: dict) -> tuple[Path, dict, dict]:
    """prepare -> one training step -> evaluate on val, as the stages do; returns (prepared, counts, val metrics)."""
    raw = _raw(data)
    prepared = tmp_path / "prepared"
    counts = prepare(params_from_dict(raw).data, prepared)
    paths = {"labels": str(prepared / "labeled.json"), "val": str(prepared / "val.json"), "images_root": str(prepared)}
    checkpoint = train_in_process(params_from_dict(raw), paths, tmp_path / "checkpoints")
    (epoch,) = checkpoint.history()  # one epoch of one step, then validation on val
    assert epoch["epoch"] == 0 and math.isfinite(epoch["loss_total"]) and "val_ap" in epoch
    gt = read_coco(prepared / "val.json", sigmas=raw["data"].get("sigmas"))
    model_dir = save_model(tmp_path / "model", checkpoint.best_weights(), params_from_dict(raw), gt.schema, {})
    records, predictions = predict_split(load_model(model_dir), gt, prepared, 1.25, flip_test=False)
    assert records and predictions is not None
    metrics = evaluate_keypoints(gt.to_dict(), to_coco_results(predictions, records, gt.schema.category_id), gt.schema)
    assert math.isfinite(metrics["ap"]) and math.isfinite(metrics["pck10"])
    return prepared, counts, metrics


def _coco_source(annotations: Path, images: Path, **coco: str) -> dict:
    """params.data for a COCO-layout file: 20 seed labels, 8 val and 4 test images."""
    files = {"annotations": str(annotations), "images": str(images), **coco}
    return {"source": "coco", "labeled": 20, "val_images": 8, "test_images": 4, "coco": files}


def _validate(capsys, *args, **kwargs) -> str:
    status = validate_command(*args, **kwargs)
    out = capsys.readouterr().out
    assert status == 0, out
    return out


# ------------------------------------------------------------------------------------------- COCO variants, MPII


def test_crowdpose_file_warns_and_runs(tmp_path, coco_mini, capsys):
    path = formats.crowdpose_like(coco_mini, tmp_path / "crowdpose_train.json")
    out = _validate(capsys, path, coco_mini / "train2017")
    # COCO's skeleton on 14 keypoints: the 3 edges that reach past 14 go, the other 16 stay
    assert "field 'skeleton': warning: 3 of 19 edge(s) are not pairs of 1-based keypoint indices in 1..14" in out
    assert "field 'area': warning: missing: computed from the box" in out
    assert "OKS sigmas: crowdpose" in out
    assert "left_shoulder<->right_shoulder" in out  # flip pairs from the names
    data = _coco_source(path, coco_mini / "train2017")
    prepared, _counts, metrics = _round(tmp_path, data)
    labeled = load_json(prepared / "labeled.json")
    category = labeled["categories"][0]
    assert category["keypoints"] == list(CROWDPOSE_KEYPOINT_NAMES)
    assert all(1 <= j <= 14 for edge in category["skeleton"] for j in edge)  # written back without the bad edges
    assert all(a["area"] == a["bbox"][2] * a["bbox"][3] for a in labeled["annotations"])
    assert metrics["sigma_source"] == "crowdpose" and metrics["sigmas"]["head"] == 0.079


def test_aic_file_without_area_evaluates(tmp_path, coco_mini, capsys):
    """AIC's layout (14 keypoints, no area, no skeleton): validate, prepare, train, evaluate, and the CLI's evaluate
    on the raw file itself (ground truth without area used to crash pycocotools)."""
    path = formats.crowdpose_like(coco_mini, tmp_path / "aic_train.json", schema="aic")
    assert "OKS sigmas: aic" in _validate(capsys, path)
    data = _coco_source(path, coco_mini / "train2017")
    _, _, metrics = _round(tmp_path, data)
    assert metrics["sigma_source"] == "aic" and metrics["sigmas"] == KNOWN_SIGMAS["aic"]
    from pipeline.evaluation import evaluate_command

    gt = json.loads(path.read_text())
    perfect = [
        {"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
        for a in gt["annotations"]
    ]
    (tmp_path / "perfect.json").write_text(json.dumps(perfect))
    assert evaluate_command(path, tmp_path / "perfect.json", as_json=True) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["ap"] == pytest.approx(1.0)


def test_two_keypoint_categories_need_and_take_a_choice(tmp_path, coco_mini, capsys):
    path = formats.two_categories(coco_mini, tmp_path / "two.json")
    assert validate_command(path) == 2
    assert "several categories define keypoints: 1 'person' (17 keypoints), 2 'face' (5 keypoints)" in (
        capsys.readouterr().out
    )
    assert "instances:  64 of category 2 'face'" in _validate(capsys, path, category="face")
    with pytest.raises(CocoFormatError, match="pick one with category="):
        prepare(params_from_dict(_raw(_coco_source(path, coco_mini / "train2017"))).data, tmp_path / "x")
    data = _coco_source(path, coco_mini / "train2017", category="face")
    prepared, _, metrics = _round(tmp_path, data)
    labeled = load_json(prepared / "labeled.json")
    assert [c["name"] for c in labeled["categories"]] == ["face"]
    assert {a["category_id"] for a in labeled["annotations"]} == {2}
    assert len(metrics["sigmas"]) == 5


def test_mpii_list(tmp_path, coco_mini, capsys):
    path = formats.mpii_list(coco_mini, tmp_path / "mpii_train.json")
    records = json.loads(path.read_text())
    out = _validate(capsys, path, coco_mini / "train2017")  # detected from the content
    assert "read as mpii" in out and "OKS sigmas: mpii" in out and "right_ankle<->left_ankle" in out
    # Without --images there are no image sizes; a hint instead of "expected a JSON object"
    assert validate_command(path) == 2 and "give --images DIR" in capsys.readouterr().out
    data = {
        "source": "mpii",
        "labeled": 20,
        "val_images": 8,
        "test_images": 4,
        "mpii": {"annotations": str(path), "images": str(coco_mini / "train2017")},
    }
    prepared, _counts, metrics = _round(tmp_path, data)
    assert metrics["sigma_source"] == "mpii"
    everything = [
        a for n in ("labeled", "oracle", "val", "test") for a in load_json(prepared / f"{n}.json")["annotations"]
    ]
    assert len(everything) == len(records)
    first = next(a for a in everything if a["mpii_scale"] == records[0]["scale"])
    kps = np.asarray(first["keypoints"]).reshape(-1, 3)
    j = records[0]["joints_vis"].index(1)
    assert kps[j, :2].tolist() == pytest.approx([v - 1 for v in records[0]["joints"][j]])  # 1-based -> 0-based
    assert load_json(prepared / "labeled.json")["categories"][0]["keypoints"] == list(MPII_KEYPOINT_NAMES)
    # box: the square of side 200 * scale around the (shifted) centre, clipped to the image
    assert max(first["bbox"][2], first["bbox"][3]) <= 200 * first["mpii_scale"] + 1e-6


def test_mpii_bad_records_are_named(tmp_path, coco_mini):
    path = formats.mpii_list(coco_mini, tmp_path / "mpii.json")
    records = json.loads(path.read_text())
    records[2]["joints"] = records[2]["joints"][:15]
    del records[5]["scale"]
    path.write_text(json.dumps(records))
    from pipeline.data.mpii import read_mpii

    with pytest.raises(CocoFormatError) as err:
        read_mpii(path, coco_mini / "train2017")
    text = str(err.value)
    assert f"{path}: record 2 (image {records[2]['image']}): field 'joints': expected 16 [x, y] pairs" in text
    assert f"{path}: record 5 (image {records[5]['image']}): field 'scale': missing" in text


# ------------------------------------------------------------------------------------------------- Label Studio


def test_labelstudio_export_as_seed_labels(tmp_path, coco_mini, capsys):
    export = formats.labelstudio_export(coco_mini, tmp_path / "export.json", unlabeled=3)
    media = tmp_path / "labelstudio_media"
    out = _validate(capsys, export, media)
    assert "read as labelstudio" in out and "OKS sigmas: coco" in out
    data = {
        "source": "labelstudio",
        "val_images": 8,
        "test_images": 4,
        "labelstudio": {"export": str(export), "images": str(media)},
    }
    prepared, counts, _ = _round(tmp_path, data)
    labeled = load_json(prepared / "labeled.json")
    truth = formats.coco_people(coco_mini)[1]
    for ann in labeled["annotations"]:  # every seed label is the person the export holds, to 1e-6 px
        original = min(truth, key=lambda t: np.abs(np.subtract(t["bbox"], ann["bbox"])).sum())
        assert np.allclose(ann["bbox"], original["bbox"], atol=1e-6)
        mine, theirs = np.reshape(ann["keypoints"], (-1, 3)), np.reshape(original["keypoints"], (-1, 3))
        assert np.allclose(mine[:, :2], theirs[:, :2], atol=1e-6)
        assert ((mine[:, 2] > 0) == (theirs[:, 2] > 0)).all()  # Label Studio's keypoints carry no occlusion flag
    assert counts["oracle"] == 0 and counts["pool"] == 3  # unlabeled tasks are the pool, with the whole image as box
    pool = load_json(prepared / "pool.json")
    sizes = {im["id"]: (im["width"], im["height"]) for im in pool["images"]}
    assert all(a["bbox"] == [0, 0, *sizes[a["image_id"]]] for a in pool["annotations"])
    # names come from the export; a fixed list that lacks one is an error naming the task and region
    with pytest.raises(
        CocoFormatError,
        match=r"task 1: annotation 100: field 'result\[1\] \(region p0-nose\)': label 'nose' is not in",
    ):
        prepare(
            params_from_dict(_raw({**data, "labelstudio": {**data["labelstudio"], "keypoints": ["left_eye"]}})).data,
            tmp_path / "x",
        )


# ------------------------------------------------------------------------------------------------------- SLEAP


@pytest.mark.parametrize("embed", [True, False], ids=["embedded-frames", "video"])
def test_sleap_labels_in(tmp_path, dlc_openfield, embed, capsys, caplog):
    slp = formats.sleap_file(dlc_openfield, tmp_path / "labels.slp", embed=embed, users=30, predicted=10)
    with caplog.at_level(logging.WARNING, logger="pipeline.data.sleap"):
        out = _validate(capsys, slp)
    # the file's skeleton has no symmetries; the names pair the ears: said, with the params.yaml line to follow SLEAP
    assert "symmetries [] are not the pairs the names give [['leftear', 'rightear']]: set data.flip_pairs: []" in (
        caplog.text
    )
    assert "instances:  40 of category 1 'mouse': 30 with keypoints" in out and "images:     40" in out
    data = {"source": "sleap", "val_images": 4, "test_images": 2, "sleap": {"labels": str(slp)}}
    prepared, counts, _ = _round(tmp_path, data)
    assert counts["labeled"] == 24 and counts["pool"] == 10 and counts["oracle"] == 0  # user: labels; predicted: pool
    coco, _ = read_deeplabcut_project(dlc_openfield)
    truth = {a["image_id"]: a["keypoints"] for a in coco["annotations"]}
    labeled = load_json(prepared / "labeled.json")
    frames = {im["id"]: im["sleap_frame"] for im in labeled["images"]}
    for ann in labeled["annotations"]:
        assert np.allclose(ann["keypoints"], truth[frames[ann["image_id"]] + 1], atol=1e-4)  # float32 in the .slp
    assert labeled["categories"][0]["keypoints"] == ["snout", "leftear", "rightear", "tailbase"]
    image = prepared / labeled["images"][0]["file_name"]
    assert image.is_file() and image.suffix == ".png"


# ------------------------------------------------------------------------------------------------- DeepLabCut


def test_small_deeplabcut_project_fits_the_defaults(tmp_path, dlc_openfield, caplog, capsys):
    """55 labeled frames, params.yaml's defaults (val 100 / test 100 / 200 seed labels) and only the source set."""
    project = formats.small_dlc_project(dlc_openfield, tmp_path / "dlc55")
    assert f"images:     55 (55 with instances), files checked in {project}" in _validate(capsys, project)
    data = {"source": "deeplabcut", "deeplabcut": {"project": str(project)}}
    assert params_from_dict(_raw(data)).data.val_images == 100  # the defaults, not lowered by hand
    with caplog.at_level(logging.WARNING, logger="pipeline.data.prepare"):
        _, counts, metrics = _round(tmp_path, data)
    assert counts == {"labeled": 16, "pool": 17, "val": 11, "test": 11, "oracle": 17}
    assert "using 11 / 11 (20% each)" in caplog.text and "using 16 (half) as seed labels" in caplog.text
    assert metrics["sigma_source"] == "default"
    # a value set by hand that does not fit is still an error, not silently changed
    with pytest.raises(ValueError, match="val_images"):
        prepare(params_from_dict(_raw({**data, "val_images": 60})).data, tmp_path / "other")


def test_deeplabcut_round_trip(tmp_path, dlc_openfield):
    project = tmp_path / "openfield"
    shutil.copytree(dlc_openfield, project)
    label_file = project / "labeled-data/m4s1/CollectedData_Pranav.csv"
    before = label_file.read_bytes()
    frames_before = {p: p.stat().st_mtime_ns for p in project.rglob("*.png")}
    coco, _ = read_deeplabcut_project(project)
    write_deeplabcut_labels(project, coco)
    again, _ = read_deeplabcut_project(project)
    assert (
        np.abs(
            np.array([a["keypoints"] for a in again["annotations"]])
            - np.array([a["keypoints"] for a in coco["annotations"]])
        ).max()
        <= 1e-6
    )
    assert label_file.read_bytes() == before  # same layout as DeepLabCut wrote (one-column index kept)
    assert {p: p.stat().st_mtime_ns for p in project.rglob("*.png")} == frames_before
    table = pd.read_hdf(project / "labeled-data/m4s1/CollectedData_Pranav.h5")
    assert table.columns.names == ["scorer", "bodyparts", "coords"]
    assert table.columns.get_level_values("scorer").unique().tolist() == ["Pranav"]
    assert table.shape == (116, 8) and table.index[0] == "labeled-data/m4s1/img0000.png"


# --------------------------------------------------------------------------------------------------- exports


def _merged_project(tmp_path: Path, dlc_project: Path) -> tuple[Path, dict]:
    """A project after a round on a DeepLabCut source: prepared files, data/train.json with one merged correction
    and pool predictions for SLEAP."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "loop"
    raw = _raw(
        {
            "source": "deeplabcut",
            "labeled": 10,
            "val_images": 6,
            "test_images": 4,
            "deeplabcut": {"project": str(dlc_project)},
        }
    )
    prepare(params_from_dict(raw).data, root / "data/prepared")
    train = load_json(root / "data/prepared/labeled.json")
    pool = load_json(root / "data/prepared/pool.json")
    oracle = {a["id"]: a for a in load_json(root / "data/prepared/oracle.json")["annotations"]}
    corrected = dict(oracle[pool["annotations"][0]["id"]], source="correction", correction_id="c-1", annotator="ann")
    corrected["keypoints"] = [
        v + 2.0 if i % 3 == 0 and corrected["keypoints"][i + 2] else v for i, v in enumerate(corrected["keypoints"])
    ]
    train["annotations"].append(corrected)
    train["images"] = sorted({im["id"]: im for im in train["images"] + pool["images"]}.values(), key=lambda i: i["id"])
    (root / "data/train.json").write_text(json.dumps(train))
    # the teacher's run covers the whole pool, the corrected instance too, and one image it could not read
    everyone = pool["annotations"]
    table = pa.table(
        {
            "instance_id": pa.array([a["id"] for a in everyone], pa.int64()),
            "image_id": pa.array([a["image_id"] for a in everyone], pa.int64()),
            "keypoints": pa.array([[10.0, 20.0] * 4 for _ in everyone], pa.list_(pa.float64(), 8)),
            "scores": pa.array([[0.5] * 4 for _ in everyone], pa.list_(pa.float32(), 4)),
            "image_readable": [i != len(everyone) - 1 for i in range(len(everyone))],
        }
    )
    (root / "artifacts").mkdir()
    pq.write_table(table, root / "artifacts/pool_predictions.parquet")
    return root, corrected


def test_export_labels_coco_deeplabcut_sleap(tmp_path, dlc_openfield, capsys):
    import sleap_io as sio

    from pipeline.__main__ import main

    dlc = tmp_path / "openfield"
    shutil.copytree(dlc_openfield, dlc)
    root, corrected = _merged_project(tmp_path, dlc)
    n_labels = sum(
        len(load_json(root / f)["annotations"])
        for f in ("data/train.json", "data/prepared/val.json", "data/prepared/test.json")
    )

    assert main(["export-labels", "--format", "coco", str(tmp_path / "labels.json"), "--project", str(root)]) == 0
    exported = read_coco(tmp_path / "labels.json", images_dir=load_json(tmp_path / "labels.json")["info"]["images_dir"])
    assert len(exported.annotations) == n_labels
    assert {a["split"] for a in exported.annotations} == {"train", "val", "test"}
    mine = next(a for a in exported.annotations if a.get("correction_id") == "c-1")
    assert mine["annotator"] == "ann" and mine["keypoints"] == corrected["keypoints"]

    assert main(["export-labels", "--format", "deeplabcut", str(dlc), "--project", str(root)]) == 0
    table = pd.read_hdf(dlc / "labeled-data/m4s1/CollectedData_Pranav.h5")
    assert table.columns.names == ["scorer", "bodyparts", "coords"] and len(table) == 116  # nothing lost
    image = next(im for im in load_json(root / "data/train.json")["images"] if im["id"] == corrected["image_id"])
    row = table.loc[image["file_name"].removeprefix("images/")]
    assert row[("Pranav", "snout", "x")] == pytest.approx(corrected["keypoints"][0])  # the correction is in
    again, _ = read_deeplabcut_project(dlc)  # and DeepLabCut's project reads back through our importer
    assert len(again["annotations"]) == 116

    slp = tmp_path / "labels.slp"
    assert main(["export-labels", "--format", "sleap", str(slp), "--project", str(root), "--embed"]) == 0
    labels = sio.load_slp(str(slp))
    users = [i for lf in labels for i in lf.user_instances]
    predicted = [i for lf in labels for i in lf.predicted_instances]
    # every label a user instance; predictions for the pool less the corrected person and the unreadable image
    n_pool = len(load_json(root / "data/prepared/pool.json")["annotations"])
    assert len(users) == n_labels and len(predicted) == n_pool - 2
    assert labels.skeletons[0].node_names == ["snout", "leftear", "rightear", "tailbase"]
    assert labels.skeletons[0].symmetry_inds == [(1, 2)]  # leftear <-> rightear
    assert labels[0].image.shape[:2] == (480, 640)  # frames embedded
    assert main(["export-labels", "--format", "sleap", str(tmp_path / "x.h5"), "--project", str(root)]) == 2
    # an existing file is replaced only with --force; a folder is named, not a traceback
    before = (tmp_path / "labels.json").read_bytes()
    (tmp_path / "labels.json").write_text("someone's edited labels")
    assert main(["export-labels", "--format", "coco", str(tmp_path / "labels.json"), "--project", str(root)]) == 2
    assert (tmp_path / "labels.json").read_text() == "someone's edited labels"
    assert main(["export-labels", "--format", "coco", str(tmp_path), "--project", str(root)]) == 2
    args = ["export-labels", "--format", "coco", str(tmp_path / "labels.json"), "--project", str(root), "--force"]
    assert main(args) == 0 and (tmp_path / "labels.json").read_bytes() == before


def test_labelstudio_export_rules(tmp_path, coco_mini):
    """Keypoints without a parent rectangle are one person per task; the latest annotation that was not cancelled
    counts; a name placed twice for one person is an error naming task, annotation and region."""
    from pipeline.data.labelstudio.source import export_to_coco

    image = sorted((coco_mini / "train2017").iterdir())[0]
    with Image.open(image) as im:
        w, h = im.size

    def point(rid: str, name: str, x: float, y: float) -> dict:
        value = {"x": x, "y": y, "width": 0.5, "keypointlabels": [name]}
        return {"id": rid, "type": "keypointlabels", "original_width": w, "original_height": h, "value": value}

    older = {"id": 1, "result": [point("a", "snout", 10, 10)], "updated_at": "2026-01-01T00:00:00Z"}
    newer = {
        "id": 2,
        "result": [point("a", "snout", 50, 50), point("b", "tail", 60, 60)],
        "updated_at": "2026-02-01T00:00:00Z",
    }
    cancelled = {
        "id": 3,
        "result": [point("a", "snout", 90, 90)],
        "was_cancelled": True,
        "updated_at": "2026-03-01T00:00:00Z",
    }
    tasks = [
        {"id": 7, "data": {"image": f"/data/local-files/?d={image.name}"}, "annotations": [older, newer, cancelled]}
    ]
    coco = export_to_coco(tasks, "export.json", image.parent)
    (ann,) = coco["annotations"]
    assert coco["categories"][0]["keypoints"] == ["snout", "tail"]
    assert ann["keypoints"][:2] == pytest.approx([0.5 * w - 0.5, 0.5 * h - 0.5])  # the newer annotation
    assert ann["labelstudio_task"] == 7 and ann["source"] == "labelstudio"
    # a submitted annotation with no region: nobody there, no instance; a rectangle without keypoints: a pool
    # instance with that box; an 'occluded' choice on a point: visibility 1
    box = {
        "id": "r",
        "type": "rectanglelabels",
        "original_width": w,
        "original_height": h,
        "value": {"x": 10, "y": 10, "width": 20, "height": 30, "rotation": 0, "rectanglelabels": ["person"]},
    }
    hidden = {"id": "a", "type": "choices", "value": {"choices": ["occluded"]}}
    more = [
        {"id": 8, "data": {"image": image.name}, "annotations": [{"id": 4, "result": []}]},
        {"id": 9, "data": {"image": image.name}, "annotations": [{"id": 5, "result": [box]}]},
        {
            "id": 10,
            "data": {"image": image.name},
            "annotations": [{"id": 6, "result": [point("a", "tail", 5, 5), hidden]}],
        },
    ]
    coco = export_to_coco(tasks + more, "export.json", image.parent)
    by_task = {}
    for a in coco["annotations"]:
        by_task.setdefault(a["labelstudio_task"], []).append(a)
    assert sorted(by_task) == [7, 9, 10]
    (pool,) = by_task[9]
    assert pool["source"] == "unlabeled" and pool["bbox"] == pytest.approx(
        [0.1 * w - 0.5, 0.1 * h - 0.5, 0.2 * w, 0.3 * h]
    )
    assert by_task[10][0]["keypoints"][3:] == pytest.approx([0.05 * w - 0.5, 0.05 * h - 0.5, 1])
    box["value"]["rotation"] = 30
    with pytest.raises(CocoFormatError, match=r"task 9: annotation 5: field 'result\[0\] \(region r\)': rotated"):
        export_to_coco(tasks + more, "export.json", image.parent)
    newer["result"][0]["original_width"] = w + 100  # drawn on another image than the file of that name
    with pytest.raises(
        CocoFormatError, match=rf"task 7: field 'original_width': regions drawn on a {w}x{h}/{w + 100}x{h}"
    ):
        export_to_coco(tasks, "export.json", image.parent)
    newer["result"][0]["original_width"] = w
    newer["result"].append(point("c", "tail", 70, 70))
    with pytest.raises(
        CocoFormatError,
        match=r"export.json: task 7: annotation 2: field 'result\[2\] \(region c\)': "
        r"keypoint 'tail' placed twice",
    ):
        export_to_coco(tasks, "export.json", image.parent)


def test_deeplabcut_export_refuses_what_it_cannot_write(tmp_path, dlc_openfield):
    from pipeline.data.deeplabcut import DeepLabCutFormatError

    project = tmp_path / "openfield"
    shutil.copytree(dlc_openfield, project)
    coco, _ = read_deeplabcut_project(project)
    before = (project / "labeled-data/m4s1/CollectedData_Pranav.h5").read_bytes()
    renamed = {**coco, "categories": [{**coco["categories"][0], "keypoints": ["nose", "leftear", "rightear", "tail"]}]}
    with pytest.raises(DeepLabCutFormatError, match=r"config.yaml: bodyparts \['snout'.*are not the labels' keypoints"):
        write_deeplabcut_labels(project, renamed)
    twice = {**coco, "annotations": [*coco["annotations"], {**coco["annotations"][0], "id": 10**6}]}
    with pytest.raises(DeepLabCutFormatError, match=r"labeled-data/m4s1/img0000.png: more than one labeled instance"):
        write_deeplabcut_labels(project, twice)
    (project / "labeled-data/m4s1/img0005.png").unlink()
    with pytest.raises(DeepLabCutFormatError, match=r"no frame labeled-data/m4s1/img0005.png: export to the project"):
        write_deeplabcut_labels(project, coco)
    assert (project / "labeled-data/m4s1/CollectedData_Pranav.h5").read_bytes() == before  # nothing written


def test_sleap_visibility_round_trips(tmp_path):
    """COCO visibility 1 (placed, hidden) <-> SLEAP's placed point marked not visible; 0 <-> NaN."""
    from pipeline.data.sleap import FramePoses, read_sleap, write_sleap
    from pipeline.keypoints import KeypointSchema

    image = tmp_path / "frame.png"
    Image.fromarray(np.zeros((40, 60, 3), dtype=np.uint8)).save(image)
    schema = KeypointSchema.from_coco_category(
        {"id": 1, "name": "mouse", "keypoints": ["snout", "leftear", "rightear"]}
    )
    person = np.array([[[10.5, 12.0, 2], [20.0, 8.25, 1], [0, 0, 0]]])
    write_sleap(tmp_path / "out.slp", [FramePoses(image, person, np.zeros((0, 3, 2)), np.zeros((0, 3)))], schema)
    coco = read_sleap(tmp_path / "out.slp", tmp_path / "prepared")
    assert coco["annotations"][0]["keypoints"] == [10.5, 12.0, 2, 20.0, 8.25, 1, 0.0, 0.0, 0]
    assert coco["categories"][0]["keypoints"] == ["snout", "leftear", "rightear"]
