"""``python -m pipeline export-labels --format coco|deeplabcut|sleap OUT``: the loop's labels back in the format of the
tool a team works in.

"The labels" are every human label the project holds after the latest merge: ``data/train.json`` (the seed labels
and the merged corrections, with their provenance: ``source``, ``correction_id``, annotator, model version, ...) and
the held-out ``data/prepared/val.json`` / ``test.json`` (human labels too, kept out of training). Each annotation gets
``split`` (train / val / test) so a reader can tell them apart. SLEAP's export adds the teacher's pool predictions
(``artifacts/pool_predictions.parquet``) as predicted instances, kept apart from the labels as SLEAP keeps them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow as pa

from pipeline.data.coco import CocoKeypoints, load_json, write_coco
from pipeline.keypoints import KeypointSchema

log = logging.getLogger(__name__)

FORMATS = ("coco", "deeplabcut", "sleap")
LABEL_FILES = {"train": "data/train.json", "val": "data/prepared/val.json", "test": "data/prepared/test.json"}
PREPARED = "data/prepared"  # what the images' file_name is relative to
POOL = "data/pool.json"  # the find stage's pool (data/prepared/pool.json in a project made before it)
PREPARED_POOL = "data/prepared/pool.json"
POOL_PREDICTIONS = "artifacts/pool_predictions.parquet"


def project_labels(project: Path) -> CocoKeypoints:
    """Every human label of the project (see module doc), one COCO dict, each annotation with its ``split``."""
    images: dict[int, dict] = {}
    annotations: list[dict] = []
    first: CocoKeypoints | None = None
    for split, rel in LABEL_FILES.items():
        path = project / rel
        if not path.is_file():
            if split == "train":
                raise FileNotFoundError(f"{path}: no merged labels yet (run `dvc repro` first)")
            continue
        coco = CocoKeypoints.from_dict(load_json(path), path)
        first = first or coco
        if coco.schema.names != first.schema.names:
            raise ValueError(f"{path}: keypoints {coco.schema.names} differ from {first.schema.names} in {LABEL_FILES}")
        for im in coco.images:
            seen = images.setdefault(im["id"], im)
            if seen["file_name"] != im["file_name"]:  # e.g. val / test from a second COCO file numbered from 1
                raise ValueError(
                    f"{path}: image id {im['id']} is {im['file_name']!r} here but {seen['file_name']!r} in an earlier "
                    f"file of {list(LABEL_FILES.values())}: the labels cannot be merged into one file"
                )
        # People with a labeled keypoint, and crowd regions (human labels too: evaluation ignores what they cover).
        kept = [a for a in coco.annotations if a.get("iscrowd") or any(v > 0 for v in a["keypoints"][2::3])]
        annotations += [{**a, "split": split} for a in kept]
    assert first is not None
    data = {
        "info": {
            "description": "poseloop labels: seed labels, merged corrections and the held-out val / test labels",
            "images_dir": str((project / PREPARED).resolve()),
        },
        "images": sorted(images.values(), key=lambda im: im["id"]),
        "annotations": annotations,
        "categories": [first.schema.to_coco_category()],
    }
    return CocoKeypoints.from_dict(data, project / LABEL_FILES["train"], images_dir=project / PREPARED)


def export_coco(labels: CocoKeypoints, out: Path) -> Path:
    """The labels as one COCO keypoint file, provenance fields as merge wrote them; ``info.images_dir`` is the
    folder ``file_name`` is relative to."""
    return write_coco(out, labels, indent=1)


def export_deeplabcut(labels: CocoKeypoints, project_dir: Path) -> list[Path]:
    """The labels into a DeepLabCut project's labeled-data (``write_deeplabcut_labels``). The prepared images of a
    ``data.source: deeplabcut`` round are ``images/<path in the project>``; other images are not the project's
    frames and are left out (counted in the log)."""
    from pipeline.data.deeplabcut import write_deeplabcut_labels

    data = labels.to_dict()
    images, outside = [], 0
    for im in data["images"]:
        parts = PurePosixPath(im["file_name"]).parts
        if parts[:2] == ("images", "labeled-data"):
            images.append({**im, "file_name": PurePosixPath(*parts[1:]).as_posix()})
        else:
            outside += 1
    if not images:
        raise ValueError(
            f"none of the {len(data['images'])} labeled images is a DeepLabCut frame (images/labeled-data/...): "
            "export-labels --format deeplabcut needs a round prepared from data.source: deeplabcut"
        )
    if outside:
        log.warning("%d image(s) are not frames of a DeepLabCut project: left out", outside)
    kept = {im["id"] for im in images}
    subset = {**data, "images": images, "annotations": [a for a in data["annotations"] if a["image_id"] in kept]}
    return write_deeplabcut_labels(project_dir, subset)


def pool_predictions(
    project: Path, schema: KeypointSchema, labeled_ids: set[int]
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """image id -> (predictions (M, K, 2), scores (M, K)) of the teacher's last run over the pool, without the pool
    instances that are labeled by now (``labeled_ids``: a merged correction keeps its pool instance's id) and without
    images the teacher could not read; empty when the pseudolabel stage has not run."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pipeline.data.pool_predictions import list_column, stand_in_rows

    path = project / POOL_PREDICTIONS
    if not path.is_file():
        log.warning("%s: no pool predictions (pseudolabel has not run): the SLEAP file holds the labels only", path)
        return {}
    columns = ["instance_id", "image_id", "keypoints", "scores", "image_readable"]
    if "detection_score" in pq.read_schema(path).names:
        columns.append("detection_score")
    table = pq.read_table(path, columns=columns)
    unlabeled = pc.invert(pc.is_in(table["instance_id"], value_set=pa.array(sorted(labeled_ids), pa.int64())))
    table = table.filter(pc.and_(table["image_readable"], unlabeled))
    table = table.filter(pa.array(~stand_in_rows(table)))  # a whole image where nobody was found: no predicted person
    xy = list_column(table, "keypoints").reshape(-1, schema.num_keypoints, 2)
    scores = list_column(table, "scores")
    image_ids = table["image_id"].to_numpy()
    if not len(image_ids):  # every pool person labeled by now (np.split would give one empty group)
        return {}
    order = np.argsort(image_ids, kind="stable")  # one sort, then slices per image (not a mask per image)
    ids, starts = np.unique(image_ids[order], return_index=True)
    groups = np.split(order, starts[1:])
    return {int(i): (xy[rows], scores[rows]) for i, rows in zip(ids, groups, strict=True)}


def export_sleap(labels: CocoKeypoints, project: Path, out: Path, embed: bool = False) -> Path:
    """Labels as user instances, pool predictions as predicted instances, one frame per image (``write_sleap``)."""
    from pipeline.data.sleap import FramePoses, write_sleap

    schema = labels.schema
    k = schema.num_keypoints
    people = [a for a in labels.annotations if not a.get("iscrowd")]  # SLEAP has no crowd regions
    predictions = pool_predictions(project, schema, {a["id"] for a in people})
    pool_images = (
        {im["id"]: im for im in load_json(project / (POOL if (project / POOL).is_file() else PREPARED_POOL))["images"]}
        if predictions
        else {}
    )
    images = {im["id"]: im for im in labels.images} | pool_images
    by_image: dict[int, list[dict]] = {}
    for a in people:
        by_image.setdefault(a["image_id"], []).append(a)
    frames = []
    for image_id in sorted(images):
        on_image = by_image.get(image_id, [])
        xy, scores = predictions.get(image_id, (np.zeros((0, k, 2)), np.zeros((0, k))))
        if not on_image and not len(xy):
            continue
        kps = np.asarray([a["keypoints"] for a in on_image], dtype=np.float64).reshape(-1, k, 3)
        frames.append(FramePoses(project / PREPARED / images[image_id]["file_name"], kps, xy, scores))
    return write_sleap(out, frames, schema, embed=embed)


def export_labels_command(
    fmt: str, out: Path, project: Path = Path("."), embed: bool = False, force: bool = False
) -> int:
    """The CLI: print what was written and return 0. A COCO or SLEAP file that exists is replaced only with
    ``force`` (it may be someone's edited labels); a DeepLabCut export adds its frames to the project's label files
    and keeps every other row, as DeepLabCut's own tools do."""
    if fmt in ("coco", "sleap"):
        if out.is_dir():
            example = out / ("labels.json" if fmt == "coco" else "labels.slp")
            raise ValueError(f"{out}: is a folder; --format {fmt} writes one file (e.g. {example})")
        if out.exists() and not force:
            raise ValueError(f"{out}: exists; refusing to overwrite it (give --force to replace it)")
    labels = project_labels(project)
    n = sum(1 for a in labels.annotations if not a.get("iscrowd"))
    if fmt == "coco":
        print(f"{export_coco(labels, out)}: {n} labeled instances (COCO, provenance in each annotation)")
    elif fmt == "deeplabcut":
        for path in export_deeplabcut(labels, out):
            print(f"{path}: written")
    elif fmt == "sleap":
        if out.suffix != ".slp":
            raise ValueError(f"{out}: a SLEAP labels file ends in .slp")
        export_sleap(labels, project, out, embed=embed)
        print(f"{out}: {n} labeled instances as user instances" + (", frames embedded" if embed else ""))
    else:
        raise ValueError(f"unknown format {fmt!r}; one of {FORMATS}")
    print(json.dumps({"labels": n, "format": fmt, "out": str(out)}))
    return 0
