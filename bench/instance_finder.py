"""``python -m bench instance_finder``: the instance finder (pipeline/finding.py) on the synthetic default.

The synthetic default of params.yaml with ``data.split: image`` (seed labels are whole images, so the finder has
images whose every person is boxed; the same 200-person budget), the ``find`` section as it is. One run:

1. the finder trained on the seed images, then run over val: recall at IoU 0.5 / 0.75 and COCO box AP;
2. a pose model trained on the same seed labels (train section, supervised, one process), evaluated on val with
   the ground-truth boxes and with the found boxes (the COCO top-down protocol: every val person is in the ground
   truth, a missed person is a miss; a found person's score is its detection score x its mean keypoint score);
3. cost: the finder's training time and its throughput over the pool's images (found people per second).

Writes the "instance_finder" section of docs/BENCHMARKS.md and docs/bench/instance_finder.json.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import tempfile
import time
from pathlib import Path

import torch

from bench.label_efficiency import COCO_MINI, coco_mini_overrides
from pipeline.config import load_params, with_overrides
from pipeline.data.coco import read_coco
from pipeline.data.dataset import InstanceRecord, TopDownDataset, instances_from_coco
from pipeline.data.prepare import prepare
from pipeline.evaluation import coco_keypoint_ap
from pipeline.finding import box_recall_and_ap, find_instances, finder_images, train_finder
from pipeline.inference import predict, to_coco_results
from pipeline.model_store import build_codec, model_from_params
from pipeline.training import train_in_process

COMMAND = "python -m bench instance_finder"
THRESHOLDS = (0.05, 0.15, 0.3)  # find.min_score values compared (0.15: params.yaml)


def recall_per_tag(gt: dict, images: list[dict], found: list) -> dict[str, tuple[int, float]]:
    """Recall at IoU 0.5 per synthetic hard-case tag (``synthetic_tags``; untagged people under "none"):
    (people, recall). Where the finder misses, not only how much."""
    from pipeline.corrections import box_iou

    found_on = {im["id"]: boxes for im, (boxes, _) in zip(images, found, strict=True)}
    hits: dict[str, list[bool]] = {}
    for a in gt["annotations"]:
        if a.get("iscrowd") or a["image_id"] not in found_on:
            continue
        hit = any(box_iou(b, a["bbox"]) >= 0.5 for b in found_on[a["image_id"]])
        for tag in a.get("synthetic_tags") or ["none"]:
            hits.setdefault(tag, []).append(hit)
    return {tag: (len(v), round(sum(v) / len(v), 3)) for tag, v in sorted(hits.items())}


def _pose_ap(model, val, records: list[InstanceRecord], detection: dict[int, float], params) -> float:
    dataset = TopDownDataset(records, model.schema, model.head.target_codec, padding=params.codec.box_padding)
    results = to_coco_results(predict(model, dataset, flip_test=params.train.flip_test), records, 1)
    for r in results:
        r["score"] *= detection.get(r["instance_id"], 1.0)
    return coco_keypoint_ap(val.to_dict(), results, model.schema)["ap"]


def source_params(source: str):
    """params.yaml split by image; ``coco_mini``: 90% of its train2017 people, whole images, as seed labels (what the
    finder may learn from), its val2017 images as val."""
    params = with_overrides(load_params(), {"data.split": "image"})
    if source == "synthetic":
        return params
    return with_overrides(
        params,
        {
            **coco_mini_overrides(),
            "data.labeled": 0.9,  # a fraction (1 would be one person); prepare keeps some people for the pool
            "find.steps": 1000,  # ~9 photos qualify: 1000 steps are already ~1000 passes over them
        },
    )


def measure(root: Path, source: str = "synthetic") -> dict:
    params = source_params(source)
    prepared = root / "prepared"
    prepare(params.data, prepared)
    labeled, pool = (json.loads((prepared / f"{n}.json").read_text()) for n in ("labeled", "pool"))
    val = read_coco(prepared / "val.json")
    val_dict = val.to_dict()

    images = finder_images(labeled, pool, prepared)
    started = time.perf_counter()
    finder = train_finder(params.find, images, val.schema.flip_index)
    finder_seconds = time.perf_counter() - started
    finder.codec.min_score = 0.0  # every peak, then each threshold below picks from them
    peaks = {}  # flip_test -> per val image (boxes, scores)
    for flip_test in (False, True):
        finder.flip_test = flip_test
        peaks[flip_test] = find_instances(finder, val.images, prepared)
    finder.flip_test = params.find.flip_test
    peaks_val = peaks[params.find.flip_test]
    by_threshold: dict[bool, dict] = {False: {}, True: {}}
    for flip_test, threshold in itertools.product((False, True), THRESHOLDS):
        kept = [(b[s >= threshold], s[s >= threshold]) for b, s in peaks[flip_test]]
        with contextlib.redirect_stdout(io.StringIO()):
            by_threshold[flip_test][threshold] = box_recall_and_ap(val_dict, val.images, kept)
    found_val = [(b[s >= params.find.min_score], s[s >= params.find.min_score]) for b, s in peaks_val]
    finder.codec.min_score = params.find.min_score
    boxes = by_threshold[params.find.flip_test][params.find.min_score]
    per_tag = recall_per_tag(val_dict, val.images, found_val)

    pool_images = pool["images"] or val.images  # coco_mini: every train image is a seed image
    started = time.perf_counter()
    found_pool = find_instances(finder, pool_images, prepared)
    find_seconds = time.perf_counter() - started
    found_people = sum(len(b) for b, _ in found_pool)

    pose_params = with_overrides(
        params, {"train.ssl.mode": "off", "train.num_workers": 1, "train.warm_start": "scratch"}
    )
    paths = {"labels": str(prepared / "labeled.json"), "val": str(prepared / "val.json"), "images_root": str(prepared)}
    weights = train_in_process(pose_params, paths, root / "pose-checkpoints").best_weights()
    model = model_from_params(pose_params, build_codec(pose_params), val.schema)
    model.load_state_dict(weights)
    model.eval()
    torch.set_num_threads(2)

    gt_records = instances_from_coco(val.images, val.annotations, prepared, val.schema.num_keypoints)
    pose_gt = _pose_ap(model, val, gt_records, {}, pose_params)
    pose_found_at = {}
    for flip_test, threshold in itertools.product((False, True), THRESHOLDS):
        found_records, detection = [], {}
        for im, (found_boxes, scores) in zip(val.images, peaks[flip_test], strict=True):
            for rank, (box, score) in enumerate(zip(found_boxes, scores, strict=True)):
                if score < threshold:
                    continue
                iid = 10**9 + im["id"] * 1000 + rank
                found_records.append(
                    InstanceRecord(iid, prepared / im["file_name"], tuple(map(float, box)), None, im["id"])
                )
                detection[iid] = float(score)
        pose_found_at[flip_test, threshold] = _pose_ap(model, val, found_records, detection, pose_params)
        by_threshold[flip_test][threshold]["pose_ap_found_boxes"] = pose_found_at[flip_test, threshold]
    pose_found = pose_found_at[params.find.flip_test, params.find.min_score]
    return {
        "seed_images": len(images),
        "seed_people": int(sum(len(i.boxes) for i in images)),
        "val_people": boxes["people"],
        "recall_iou50": round(boxes["recall_iou50"], 4),
        "recall_iou75": round(boxes["recall_iou75"], 4),
        "box_ap": round(boxes["box_ap"], 4),
        "box_ap50": round(boxes["box_ap50"], 4),
        "pose_ap_gt_boxes": round(pose_gt, 4),
        "pose_ap_found_boxes": round(pose_found, 4),
        "pose_ap_ratio": round(pose_found / pose_gt, 3) if pose_gt else None,
        "finder_train_seconds": round(finder_seconds, 1),
        **{
            key: {str(t): {k: round(v, 4) for k, v in m.items() if k != "people"} for t, m in rows.items()}
            for key, rows in (("by_min_score", by_threshold[False]), ("by_min_score_flip_test", by_threshold[True]))
        },
        "recall_iou50_per_tag": per_tag,
        "pool_images": len(pool_images),
        "instances_per_s": round(found_people / find_seconds, 1),
        "images_per_s": round(len(pool_images) / find_seconds, 1),
        "find": {
            k: getattr(params.find, k)
            for k in (
                "input_size",
                "backbone",
                "steps",
                "batch_size",
                "lr",
                "min_score",
                "flip_test",
                "keypoint_weight",
            )
        },
    }


def run() -> None:
    from bench.report import write_section

    real = None  # the short one first: a failure there costs minutes, not the synthetic run
    if (COCO_MINI / "annotations" / "person_keypoints_train2017.json").is_file():
        with tempfile.TemporaryDirectory() as tmp:
            real = measure(Path(tmp), "coco_mini")
    else:
        print(f"[instance_finder] skipping coco_mini: {COCO_MINI.resolve()} is absent (see ../shared/data/README.md)")
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(Path(tmp))
    if real:
        result["coco_mini"] = real
    r = result
    rows = [("synthetic default", r)] + ([("coco_mini (real photos)", real)] if real else [])
    body = (
        f"Synthetic default (params.yaml) with `data.split: image`: {r['seed_images']} seed images holding "
        f"{r['seed_people']} people (every person on them labeled) train the finder "
        f"({r['find']['backbone']} backbone, {r['find']['input_size'][0]}x{r['find']['input_size'][1]} letterboxed, "
        f"{r['find']['steps']} steps, batch {r['find']['batch_size']}, from scratch); val: {r['val_people']} people."
        + (
            f" coco_mini: the {real['seed_images']} seed photos of train2017 whose every person has keypoints "
            f"({real['seed_people']} people; a photo with a crowd region or a keypoint-less person cannot teach "
            f"background) train the same finder for {real['find']['steps']} steps; val: {real['val_people']} people "
            "on the val2017 photos."
            if real
            else ""
        )
        + "\n\n| finder on val | recall IoU 0.5 | recall IoU 0.75 | box AP | box AP50 |\n|---|---|---|---|---|\n"
        + "".join(
            f"| {name} | {m['recall_iou50']:.3f} | {m['recall_iou75']:.3f} | {m['box_ap']:.3f} | "
            f"{m['box_ap50']:.3f} |\n"
            for name, m in rows
        )
        + "\n| find.min_score (synthetic) | find.flip_test | recall IoU 0.5 | recall IoU 0.75 | box AP | pose AP, "
        "found boxes |\n|---|---|---|---|---|---|\n"
        + "".join(
            f"| {t} | {flip} | {m['recall_iou50']:.3f} | {m['recall_iou75']:.3f} | {m['box_ap']:.3f} | "
            f"{m['pose_ap_found_boxes']:.3f} |\n"
            for key, flip in (("by_min_score", "off"), ("by_min_score_flip_test", "on"))
            for t, m in r[key].items()
        )
        + "\nWhere it misses (synthetic; recall at IoU 0.5 and params.yaml's min_score, per hard case of the synthetic "
        "set; a person can carry several tags): "
        + ", ".join(f"{tag} {rec:.2f} ({n})" for tag, (n, rec) in r["recall_iou50_per_tag"].items())
        + ".\n\n| pose model (same weights) on val | OKS AP, ground-truth boxes | OKS AP, found boxes (missed "
        "people are misses) | ratio |\n|---|---|---|---|\n"
        + "".join(
            f"| {name} | {m['pose_ap_gt_boxes']:.3f} | {m['pose_ap_found_boxes']:.3f} | "
            + ("—" if m["pose_ap_ratio"] is None else f"{m['pose_ap_ratio']:.0%}")
            + " |\n"
            for name, m in rows
        )
        + f"\nCost on this machine: finder training {r['finder_train_seconds']:.0f} s; over the pool's "
        f"{r['pool_images']} images {r['images_per_s']:.0f} images/s, {r['instances_per_s']:.0f} found people/s "
        "(one process, 2 torch threads). A round adds the finder's training and this pass (the find stage) only when "
        "the pool has images without boxes.\n"
    )
    write_section("instance_finder", "Instance finder (issue #27)", COMMAND, body, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    run()
