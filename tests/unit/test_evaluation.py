"""Metrics on real, human-annotated COCO photos: GT scores AP 1.0, noise lowers AP, and we equal pycocotools."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pipeline.evaluation import bootstrap_ap_se, evaluate_keypoints, oks, person_ap
from pipeline.keypoints import KeypointSchema

REPO = Path(__file__).resolve().parents[2]


def _gt_files(coco_val4: Path, coco_mini: Path) -> list[Path]:
    return [
        coco_val4 / "test_coco.json",
        coco_mini / "annotations" / "person_keypoints_train2017.json",
        coco_mini / "annotations" / "person_keypoints_val2017.json",
    ]


def _predictions_from_gt(gt: dict, noise_px: float = 0.0, seed: int = 0) -> list[dict]:
    """One prediction per labeled person: the truth plus a fixed random direction scaled by ``noise_px``."""
    rng = np.random.default_rng(seed)
    preds = []
    for ann in sorted(gt["annotations"], key=lambda a: a["id"]):
        if ann.get("iscrowd") or ann.get("num_keypoints", 0) == 0:
            continue
        kp = np.asarray(ann["keypoints"], float).reshape(-1, 3)
        direction = rng.normal(size=(len(kp), 2))
        xy = kp[:, :2] + noise_px * direction
        out = np.concatenate([xy, np.ones((len(kp), 1))], axis=1)
        preds.append({"image_id": ann["image_id"], "category_id": 1, "keypoints": out.ravel().tolist(), "score": 1.0})
    return preds


def _pycocotools_ap(gt_path: Path, predictions: list[dict]) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        coco_dt = coco_gt.loadRes(predictions)
        ev = COCOeval(coco_gt, coco_dt, "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return list(ev.stats)


def test_ground_truth_as_predictions_scores_one(coco_val4, coco_mini):
    schema = KeypointSchema.coco17()
    for path in _gt_files(coco_val4, coco_mini):
        gt = json.loads(path.read_text())
        metrics = evaluate_keypoints(gt, _predictions_from_gt(gt), schema)
        assert metrics["ap"] == pytest.approx(1.0), path
        assert metrics["ar"] == pytest.approx(1.0), path
        assert metrics["pck05"] == pytest.approx(1.0) and metrics["pck10"] == pytest.approx(1.0)
        assert metrics["dist_p95"] == pytest.approx(0.0, abs=1e-9)
        assert metrics["sigma_source"] == "coco" and metrics["sigmas"]["nose"] == pytest.approx(0.026)


def test_noise_lowers_ap_monotonically_and_matches_pycocotools(coco_val4, coco_mini):
    schema = KeypointSchema.coco17()
    for path in _gt_files(coco_val4, coco_mini):
        gt = json.loads(path.read_text())
        aps = []
        for noise in (0.0, 2.0, 5.0, 10.0, 20.0):
            preds = _predictions_from_gt(gt, noise)
            ours = evaluate_keypoints(gt, preds, schema)
            direct = _pycocotools_ap(path, preds)
            assert ours["ap"] == pytest.approx(direct[0], abs=1e-9)
            assert ours["ap50"] == pytest.approx(direct[1], abs=1e-9)
            assert ours["ar"] == pytest.approx(direct[5], abs=1e-9)
            aps.append(ours["ap"])
        assert all(a > b for a, b in itertools.pairwise(aps)), (path, aps)


def test_distance_metrics_are_exact_for_a_known_shift(coco_val4):
    gt = json.loads((coco_val4 / "test_coco.json").read_text())
    preds = _predictions_from_gt(gt)
    for p in preds:
        kp = np.asarray(p["keypoints"]).reshape(-1, 3)
        kp[:, 0] += 3.0
        kp[:, 1] += 4.0  # a 5 px error on every keypoint
        p["keypoints"] = kp.ravel().tolist()
    m = evaluate_keypoints(gt, preds, KeypointSchema.coco17())
    assert m["dist_p50"] == pytest.approx(5.0) and m["dist_p95"] == pytest.approx(5.0)
    assert all(v == pytest.approx(5.0) for v in m["per_keypoint_error"].values() if v is not None)
    # 5 px is below 10% of every box here but not below 5% of the small ones
    assert m["pck10"] == pytest.approx(1.0)
    assert 0.0 < m["pck05"] < 1.0


def test_instance_id_pairing_equals_greedy_matching(coco_val4):
    gt = json.loads((coco_val4 / "test_coco.json").read_text())
    preds = _predictions_from_gt(gt, noise_px=3.0)
    labeled = [a for a in sorted(gt["annotations"], key=lambda a: a["id"]) if a["num_keypoints"] > 0]
    with_ids = [dict(p, instance_id=a["id"]) for p, a in zip(preds, labeled, strict=True)]
    schema = KeypointSchema.coco17()
    a, b = evaluate_keypoints(gt, preds, schema), evaluate_keypoints(gt, with_ids, schema)
    assert a["pck05"] == pytest.approx(b["pck05"]) and a["dist_p90"] == pytest.approx(b["dist_p90"])


def test_custom_schema_uses_its_sigmas():
    """A 4-keypoint schema: sigmas from params change the AP exactly as OKS says."""
    cat = {"id": 1, "name": "mouse", "keypoints": ["snout", "leftear", "rightear", "tailbase"], "skeleton": []}
    gt = {
        "images": [{"id": 1, "file_name": "a.png", "width": 640, "height": 480}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [100, 100, 100, 100],
                "area": 10000.0,
                "iscrowd": 0,
                "num_keypoints": 4,
                "keypoints": [120, 120, 2, 150, 110, 2, 170, 110, 2, 180, 190, 2],
            },
        ],
        "categories": [cat],
    }
    pred = [
        {
            "image_id": 1,
            "category_id": 1,
            "score": 1.0,
            "keypoints": [124, 120, 1, 154, 110, 1, 174, 110, 1, 184, 190, 1],
        }
    ]
    loose = evaluate_keypoints(gt, pred, KeypointSchema.from_coco_category(cat))
    tight = evaluate_keypoints(gt, pred, KeypointSchema.from_coco_category(cat, sigmas=[0.01] * 4))
    assert loose["sigma_source"] == "default" and tight["sigma_source"] == "params"
    assert loose["ap"] > tight["ap"]


def test_evaluate_cli_json(coco_val4, tmp_path):
    gt_path = coco_val4 / "test_coco.json"
    preds = _predictions_from_gt(json.loads(gt_path.read_text()), noise_px=2.0)
    pred_path = tmp_path / "preds.json"
    pred_path.write_text(json.dumps(preds))
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", "evaluate", str(gt_path), str(pred_path), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    metrics = json.loads(out.stdout)
    for key in ("ap", "ap50", "ap75", "apm", "apl", "ar", "pck05", "pck10", "dist_p50", "dist_p90", "dist_p95"):
        assert key in metrics
    assert metrics["ap"] == pytest.approx(_pycocotools_ap(gt_path, preds)[0], abs=1e-9)


def test_person_ap_is_pycocotools_ap_when_each_person_has_one_prediction():
    """One person per image (no neighbour to match instead): the bootstrap's estimator is COCO's AP exactly."""
    cat = {"id": 1, "name": "mouse", "keypoints": ["snout", "leftear", "rightear", "tailbase"], "skeleton": []}
    schema = KeypointSchema.from_coco_category(cat)
    rng = np.random.default_rng(3)
    images, annotations, predictions, person_oks = [], [], [], []
    for i in range(1, 61):
        xy = rng.uniform(100, 200, (4, 2))
        images.append({"id": i, "file_name": f"{i}.png", "width": 640, "height": 480})
        gt_kps = np.concatenate([xy, np.full((4, 1), 2.0)], axis=1)
        annotations.append(
            {
                "id": i,
                "image_id": i,
                "category_id": 1,
                "bbox": [90, 90, 120, 120],
                "area": 9000.0,
                "iscrowd": 0,
                "num_keypoints": 4,
                "keypoints": gt_kps.ravel().tolist(),
            }
        )
        guess = xy + rng.normal(0, rng.uniform(0.5, 12), (4, 2))  # some near, some far
        score = float(rng.uniform(0.1, 1.0))
        predictions.append(
            {"image_id": i, "category_id": 1, "score": score, "keypoints": np.c_[guess, np.ones(4)].ravel().tolist()}
        )
        person_oks.append(oks(guess, gt_kps, 9000.0, schema.sigma_array))
    gt = {"images": images, "annotations": annotations, "categories": [cat]}
    scores = np.array([p["score"] for p in predictions])
    expected = evaluate_keypoints(gt, predictions, schema)["ap"]
    assert 0.2 < expected < 0.9  # a regime where ranking and thresholds both matter
    assert person_ap(np.array(person_oks), scores) == pytest.approx(expected, abs=1e-9)
    # the bootstrap s.e. is what resampling people moves the AP by: about 1/sqrt(N) of the spread
    se = bootstrap_ap_se(np.array(person_oks), scores, resamples=300)
    assert 0.01 < se < 0.15
    doubled = bootstrap_ap_se(np.tile(person_oks, 4), np.tile(scores, 4), resamples=300)
    assert doubled == pytest.approx(se / 2, rel=0.35)  # 4x the people, half the s.e.
