"""Keypoint metrics: pycocotools OKS AP/AR with the schema's sigmas, PCK, per-keypoint and percentile errors.

Predictions are COCO results: ``{"image_id", "category_id", "keypoints": [x, y, s] * K, "score"}``. When a prediction
also carries ``instance_id`` (the annotation id it was made for: top-down from ground-truth boxes), the distance
metrics use that pairing; otherwise each image's predictions are matched to its ground truth greedily by OKS.
AP/AR always come from pycocotools' own matching, so they equal a direct ``COCOeval`` call.
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import io
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pipeline.checks import is_finite_number
from pipeline.files import read_json
from pipeline.keypoints import KeypointSchema

log = logging.getLogger(__name__)

AP_KEYS = ("ap", "ap50", "ap75", "apm", "apl", "ar", "ar50", "ar75", "arm", "arl")


def _coco_from_dict(data: dict) -> COCO:
    coco = COCO()
    coco.dataset = copy.deepcopy(data)
    with _quiet():
        coco.createIndex()
    return coco


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence pycocotools' prints. Redirecting stdout is not enough inside Ray workers, whose print is patched."""
    real_print = builtins.print
    builtins.print = lambda *args, **kwargs: None
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        builtins.print = real_print


def coco_keypoint_ap(gt: dict, predictions: Sequence[dict], schema: KeypointSchema) -> dict[str, float]:
    """OKS AP / AR (the ten COCO keypoint numbers) with ``schema``'s sigmas. Empty predictions give zeros."""
    if not predictions:
        return dict.fromkeys(AP_KEYS, 0.0)
    coco_gt = _coco_from_dict(gt)
    with _quiet():
        coco_dt = coco_gt.loadRes(copy.deepcopy(list(predictions)))
        evaluator = COCOeval(coco_gt, coco_dt, "keypoints")
        evaluator.params.kpt_oks_sigmas = schema.sigma_array
        evaluator.params.catIds = [schema.category_id]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # pycocotools reports -1 where nothing qualifies (e.g. no medium people); keep -1 so that is visible.
    return {k: float(v) for k, v in zip(AP_KEYS, evaluator.stats, strict=True)}


def oks(pred: np.ndarray, gt: np.ndarray, area: float, sigmas: np.ndarray) -> float:
    """Object keypoint similarity of one prediction (K, 2) to one ground truth (K, 3), as pycocotools defines it."""
    labeled = gt[:, 2] > 0
    if not labeled.any():
        return 0.0
    d2 = ((pred - gt[:, :2]) ** 2).sum(axis=1)
    var = (2 * sigmas) ** 2
    e = d2 / var / (area + np.spacing(1)) / 2
    return float(np.exp(-e[labeled]).mean())


OKS_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # COCO's ten
RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # COCO's 101-point interpolation


def person_ap(person_oks: np.ndarray, score: np.ndarray) -> float:
    """COCO's keypoint AP when each person has exactly one prediction (top-down on given boxes): ``person_oks`` (N,)
    the OKS of each person's prediction, ``score`` (N,) its score (the mean keypoint score). Predictions ranked by
    score; mean over the ten OKS thresholds of the 101-point interpolated precision, as pycocotools computes it.
    pycocotools can differ slightly: it may match a prediction to a neighbour, keeps the 20 best-scored predictions
    per image, uses an annotation's ``area`` where ``person_oks`` falls back to the box, and gives -1 (not 0) without
    people. It is the estimator the bootstrap below resamples, not a replacement for ``coco_keypoint_ap``."""
    n = len(person_oks)
    if n == 0:
        return 0.0
    ranked = np.asarray(person_oks, np.float64)[np.argsort(-np.asarray(score), kind="mergesort")]
    hits = ranked[None, :] >= OKS_THRESHOLDS[:, None]  # (10, N)
    tp = np.cumsum(hits, axis=1)
    recall = tp / n
    precision = tp / np.arange(1, n + 1)
    precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]  # interpolated: best to the right
    aps = []
    for t in range(len(OKS_THRESHOLDS)):
        at = np.searchsorted(recall[t], RECALL_POINTS, side="left")
        aps.append(np.where(at < n, precision[t, np.minimum(at, n - 1)], 0.0).mean())
    return float(np.mean(aps))


def bootstrap_ap_se(person_oks: np.ndarray, score: np.ndarray, resamples: int = 500, seed: int = 0) -> float:
    """Standard error of ``person_ap`` over the people evaluated: its standard deviation over ``resamples``
    bootstrap resamples of the people (with replacement). What one model's AP on this val set is uncertain by
    because of which people happen to be in it; the review report puts it beside an AP difference."""
    rng = np.random.default_rng(seed)
    n = len(person_oks)
    if n < 2:
        return float("nan")
    person_oks, score = np.asarray(person_oks), np.asarray(score)
    draws = rng.integers(0, n, size=(resamples, n))
    return float(np.std([person_ap(person_oks[d], score[d]) for d in draws], ddof=1))


def _pair_predictions(gt: dict, predictions: Sequence[dict], schema: KeypointSchema) -> list[tuple[dict, dict]]:
    """(ground-truth annotation, prediction) pairs for the distance metrics."""
    anns = [
        a
        for a in gt["annotations"]
        if a.get("category_id") == schema.category_id and not a.get("iscrowd") and a.get("num_keypoints", 0) > 0
    ]
    by_id = {a["id"]: a for a in anns}
    if predictions and all("instance_id" in p for p in predictions):
        return [(by_id[p["instance_id"]], p) for p in predictions if p["instance_id"] in by_id]
    pairs = []
    sig = schema.sigma_array
    preds_by_image: dict[int, list[dict]] = {}
    for p in predictions:
        preds_by_image.setdefault(p["image_id"], []).append(p)
    gts_by_image: dict[int, list[dict]] = {}  # grouped once: linear in the annotations, not images x annotations
    for a in anns:
        gts_by_image.setdefault(a["image_id"], []).append(a)
    for image_id in sorted(gts_by_image):
        gts = gts_by_image[image_id]
        dts = sorted(preds_by_image.get(image_id, []), key=lambda p: -p.get("score", 0.0))
        if not dts:
            continue
        sim = np.array(
            [
                [
                    oks(
                        np.asarray(d["keypoints"], float).reshape(-1, 3)[:, :2],
                        np.asarray(g["keypoints"], float).reshape(-1, 3),
                        g["area"],
                        sig,
                    )
                    for g in gts
                ]
                for d in dts
            ]
        )
        used_g: set[int] = set()
        for di in range(len(dts)):
            order = [gi for gi in np.argsort(-sim[di]) if gi not in used_g]
            if order:
                used_g.add(order[0])
                pairs.append((gts[order[0]], dts[di]))
    return pairs


def distance_metrics(
    gt: dict, predictions: Sequence[dict], schema: KeypointSchema, pck_thresholds: Sequence[float] = (0.05, 0.1)
) -> dict:
    """PCK at fractions of the box size (max of width and height), per-keypoint mean error and percentiles, in px.

    Every labeled ground-truth keypoint without a prediction counts as a miss for PCK.
    """
    pairs = _pair_predictions(gt, predictions, schema)
    k = schema.num_keypoints
    errors, box_sizes, labeled = [], [], []
    for ann, pred in pairs:
        g = np.asarray(ann["keypoints"], float).reshape(k, 3)
        p = np.asarray(pred["keypoints"], float).reshape(k, 3)
        errors.append(np.linalg.norm(p[:, :2] - g[:, :2], axis=1))
        box_sizes.append(max(ann["bbox"][2], ann["bbox"][3]))
        labeled.append(g[:, 2] > 0)
    n_labeled_total = sum(
        int((np.asarray(a["keypoints"]).reshape(k, 3)[:, 2] > 0).sum())
        for a in gt["annotations"]
        if a.get("category_id") == schema.category_id and not a.get("iscrowd")
    )
    out: dict = {"matched_instances": len(pairs), "labeled_keypoints": n_labeled_total}
    if not pairs:
        out.update({f"pck{round(t * 100):02d}": 0.0 for t in pck_thresholds})
        out.update({"dist_p50": None, "dist_p90": None, "dist_p95": None, "nme": None, "per_keypoint_error": {}})
        return out
    err = np.stack(errors)  # (N, K) px
    mask = np.stack(labeled)  # (N, K)
    size = np.asarray(box_sizes)[:, None]  # (N, 1)
    for t in pck_thresholds:
        hits = ((err < t * size) & mask).sum()
        out[f"pck{round(t * 100):02d}"] = float(hits / max(n_labeled_total, 1))
    flat = err[mask]
    out["dist_p50"], out["dist_p90"], out["dist_p95"] = (float(np.percentile(flat, q)) for q in (50, 90, 95))
    out["nme"] = float((err / size)[mask].mean())  # mean error normalised by box size
    out["per_keypoint_error"] = {
        name: (float(err[mask[:, j], j].mean()) if mask[:, j].any() else None) for j, name in enumerate(schema.names)
    }
    return out


def evaluate_keypoints(gt: dict, predictions: Sequence[dict], schema: KeypointSchema) -> dict:
    """All metrics in one JSON-ready dict: AP/AR keys, pck05/pck10, distance percentiles, and the sigmas used."""
    metrics = coco_keypoint_ap(gt, predictions, schema)
    metrics.update(distance_metrics(gt, predictions, schema))
    metrics["num_predictions"] = len(predictions)
    metrics["sigma_source"] = schema.sigma_source
    metrics["sigmas"] = schema.describe_sigmas()
    # once per split would print the same line twice per stage; the metrics file has them (``sigmas``)
    log.debug("OKS sigmas used (%s): %s", schema.sigma_source, schema.describe_sigmas())
    return metrics


class PredictionsError(ValueError):
    """A predictions file that cannot be evaluated; the message lists every problem by file, index and field."""


def read_predictions(path: Path, gt: dict, schema: KeypointSchema, max_listed: int = 20) -> list[dict]:
    """A COCO results list (``[{"image_id", "category_id", "keypoints": 3K numbers, "score"}, ...]``) or a COCO file
    whose ``annotations`` are the predictions (``score`` 1 where absent), checked against the ground truth ``gt``.

    Raises PredictionsError naming the file, the index and the field of each problem (the first ``max_listed``):
    not JSON, not a list of objects, an ``image_id`` that is not an image of the ground truth, a ``category_id``
    other than the schema's, keypoints that are not 3K finite numbers, a missing or non-finite ``score``.
    """
    where = str(path)
    try:
        doc = read_json(path)
    except (OSError, ValueError) as exc:
        raise PredictionsError(f"{where}: cannot read predictions: {exc}") from exc
    from_annotations = isinstance(doc, dict) and isinstance(doc.get("annotations"), list)
    records = doc["annotations"] if from_annotations else doc
    if not isinstance(records, list):
        raise PredictionsError(
            f"{where}: expected a COCO results list (or a COCO file with 'annotations'), got a {type(records).__name__}"
        )
    image_ids = {im["id"] for im in gt["images"]}
    k = schema.num_keypoints
    problems: list[str] = []
    out: list[dict] = []
    for i, rec in enumerate(records):
        name = f"{where}: {'annotations' if from_annotations else 'predictions'}[{i}]"
        if not isinstance(rec, dict):
            problems.append(f"{name}: expected an object, got {type(rec).__name__} {str(rec)[:40]}")
            continue
        if from_annotations and "score" not in rec:
            rec = dict(rec, score=1.0)
        found = []
        image_id = rec.get("image_id")
        if not isinstance(image_id, int) or isinstance(image_id, bool) or image_id not in image_ids:
            found.append(f"field 'image_id': {image_id!r:.40} is not an image of the ground truth")
        if rec.get("category_id", schema.category_id) != schema.category_id:
            found.append(
                f"field 'category_id': {rec['category_id']!r:.40}, the ground truth's keypoint category "
                f"is {schema.category_id}"
            )
        kps = rec.get("keypoints")
        if not isinstance(kps, list) or len(kps) != 3 * k:
            size = f"{len(kps)} values" if isinstance(kps, list) else repr(kps)[:40]
            found.append(
                f"field 'keypoints': expected 3 x {k} = {3 * k} numbers (x, y, score per keypoint), got {size}"
            )
        elif not all(is_finite_number(v) for v in kps):
            bad = next(j for j, v in enumerate(kps) if not is_finite_number(v))
            found.append(f"field 'keypoints': value {bad} is {kps[bad]!r}, not a finite number")
        if "score" not in rec:
            found.append("field 'score': missing (COCO results need a detection score)")
        elif not is_finite_number(rec["score"]):
            found.append(f"field 'score': {rec['score']!r:.40} is not a finite number")
        problems += [f"{name}: {f}" for f in found]
        if not found:
            out.append(dict(rec, category_id=schema.category_id))
    if problems:
        more = f"\n... and {len(problems) - max_listed} more" if len(problems) > max_listed else ""
        raise PredictionsError("\n".join(problems[:max_listed]) + more)
    return out


def evaluate_command(gt_path: Path, predictions_path: Path, as_json: bool, sigmas: list[float] | None = None) -> int:
    """``python -m pipeline evaluate GT.json PREDICTIONS.json [--json]``; exit status 2 on a bad file, naming it."""
    import sys

    from pipeline.data.coco import CocoFormatError, read_coco

    try:
        gt = read_coco(gt_path, sigmas=sigmas)
        predictions = read_predictions(predictions_path, gt.to_dict(), gt.schema)
    except (CocoFormatError, PredictionsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    metrics = evaluate_keypoints(gt.to_dict(), predictions, gt.schema)
    if as_json:
        print(json.dumps(metrics))
        return 0
    print(f"{gt_path}: {len(predictions)} predictions, OKS sigmas: {gt.schema.sigma_source}")
    for key in (*AP_KEYS, "pck05", "pck10", "nme", "dist_p50", "dist_p90", "dist_p95"):
        value = metrics.get(key)
        print(f"  {key:>9}: {value:.4f}" if isinstance(value, float) else f"  {key:>9}: {value}")
    print("  per-keypoint mean error (px):")
    for name, value in metrics["per_keypoint_error"].items():
        print(f"    {name:>16}: {value:.2f}" if value is not None else f"    {name:>16}: -")
    return 0
