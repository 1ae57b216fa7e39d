"""MPII Human Pose in the JSON layout MMPose and many repositories publish (``mpii_train.json``, ``mpii_val.json``),
converted to COCO keypoints so the rest of the loop only sees COCO.

The file is a JSON list with one record per person::

    {"image": "015601864.jpg", "joints": [[x, y], ...16], "joints_vis": [1, ...16], "center": [x, y], "scale": s}

Conversion, per record: one annotation on the image named by ``image`` (images get ids 1..N by sorted name).

* joints: MPII's 16 joints in MPII's order (``MPII_KEYPOINT_NAMES``). The coordinates come from MPII's MATLAB files,
  1-based; COCO's (and our codecs') pixel centres are integers from 0, so 1 is subtracted, as MMPose does.
* visibility: ``joints_vis`` 1 -> 2 (labeled), 0 -> 0 at (0, 0). MPII's own "visible" flag is not in this layout;
  ``joints_vis`` says whether the joint was annotated.
* box: MPII has none. ``scale`` is the person's height / 200 px and ``center`` roughly the body's centre; as in
  MMPose the centre moves down by 15 * scale (MPII's centres sit high, on the chest) and the box is the square of
  side 200 * scale around it, clipped to the image. The codec's ``box_padding`` then enlarges it as for any box.
* ``area`` = box area (no masks); width / height from the image file's header.

The sigmas used are MMPose's for MPII (``pipeline.keypoints.KNOWN_SIGMAS``); ``prepare`` logs them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PIL import Image

from pipeline.checks import is_finite_number
from pipeline.data.coco import CocoFormatError, Problem, box_around, keypoint_annotation, load_json, path_escape
from pipeline.keypoints import MPII_KEYPOINT_NAMES, MPII_SKELETON

MPII_FIELDS = ("image", "joints", "joints_vis", "center", "scale")
NUM_JOINTS = len(MPII_KEYPOINT_NAMES)


def looks_like_mpii(data: Any) -> bool:
    """A JSON list whose first record has MPII's fields (for ``validate``'s hint and format detection)."""
    return isinstance(data, list) and bool(data) and isinstance(data[0], dict) and "joints" in data[0]


def read_mpii(path: str | os.PathLike[str], images_dir: str | os.PathLike[str]) -> dict:
    """Read an MPII JSON list as a COCO keypoint dict (``file_name`` relative to ``images_dir``).

    Raises ``CocoFormatError`` listing every bad record (``record 3 (image 015601864.jpg): field 'joints': ...``) and
    every image that is missing or unreadable.
    """
    return mpii_to_coco(load_json(path), str(path), Path(images_dir))


def mpii_to_coco(records: Any, file: str, images_dir: Path) -> dict:
    problems: list[Problem] = []
    if not isinstance(records, list):
        message = f"expected a JSON list of MPII records {list(MPII_FIELDS)}, got {type(records).__name__}"
        raise CocoFormatError([Problem(file, "top level", None, message)])
    good: list[tuple[int, dict]] = []
    for i, rec in enumerate(records):
        before = len(problems)
        _check_record(rec, i, file, problems)
        if len(problems) == before:
            good.append((i, rec))
    names = sorted({rec["image"] for _, rec in good})
    sizes: dict[str, tuple[int, int]] = {}
    for name in names:
        try:
            with Image.open(images_dir / name) as im:
                sizes[name] = im.size
        except Exception as exc:  # PIL raises OSError, SyntaxError, DecompressionBombError, ...
            problems.append(Problem(file, f"image {name}", "image", f"cannot read {images_dir / name}: {exc}"))
    if problems:
        raise CocoFormatError(problems)

    image_ids = {name: i for i, name in enumerate(names, start=1)}
    images = [{"id": image_ids[n], "file_name": n, "width": sizes[n][0], "height": sizes[n][1]} for n in names]
    annotations = []
    for ann_id, (_, rec) in enumerate(good, start=1):
        width, height = sizes[rec["image"]]
        keypoints: list[float] = []
        for (x, y), vis in zip(rec["joints"], rec["joints_vis"], strict=True):
            keypoints += [float(x) - 1, float(y) - 1, 2] if vis else [0.0, 0.0, 0]
        scale = float(rec["scale"])
        cx, cy = float(rec["center"][0]) - 1, float(rec["center"][1]) - 1 + 15 * scale
        half = 100 * scale
        x0, y0 = max(0.0, cx - half), max(0.0, cy - half)
        x1, y1 = min(float(width), cx + half), min(float(height), cy + half)
        box = [x0, y0, x1 - x0, y1 - y0]
        if x1 <= x0 or y1 <= y0:  # a centre outside the image: the box around the labeled joints, as a last resort
            labeled = [
                (px, py) for px, py, v in zip(keypoints[0::3], keypoints[1::3], keypoints[2::3], strict=True) if v
            ]
            box = box_around(labeled, width, height) or [0.0, 0.0, float(width), float(height)]
        origin = {"mpii_center": list(rec["center"]), "mpii_scale": scale}
        annotations.append(keypoint_annotation(ann_id, image_ids[rec["image"]], keypoints, box, **origin))
    category = {
        "id": 1,
        "name": "person",
        "supercategory": "person",
        "keypoints": list(MPII_KEYPOINT_NAMES),
        "skeleton": [[a + 1, b + 1] for a, b in MPII_SKELETON],
    }
    info = {"description": f"MPII records {Path(file).name} converted to COCO by poseloop"}
    return {"info": info, "images": images, "annotations": annotations, "categories": [category]}


def _check_record(rec: Any, i: int, file: str, problems: list[Problem]) -> None:
    name = rec.get("image") if isinstance(rec, dict) else None
    where = f"record {i}" + (f" (image {name})" if isinstance(name, str) else "")

    def bad(fld: str | None, message: str) -> None:
        problems.append(Problem(file, where, fld, message))

    if not isinstance(rec, dict):
        return bad(None, f"expected an object with {list(MPII_FIELDS)}, got {type(rec).__name__}")
    missing = [f for f in MPII_FIELDS if f not in rec]
    if missing:
        return bad(missing[0], f"missing (an MPII record has {list(MPII_FIELDS)})")
    if not isinstance(name, str) or not name:
        bad("image", f"expected a file name, got {rec['image']!r:.60}")
    elif escape := path_escape(name):
        bad("image", escape)
    joints, vis = rec["joints"], rec["joints_vis"]
    if not (
        isinstance(joints, list)
        and len(joints) == NUM_JOINTS
        and all(isinstance(j, list) and len(j) == 2 and all(is_finite_number(v) for v in j) for j in joints)
    ):
        bad("joints", f"expected {NUM_JOINTS} [x, y] pairs of finite numbers, got {joints!r:.60}")
    if not (isinstance(vis, list) and len(vis) == NUM_JOINTS and all(v in (0, 1) for v in vis)):
        bad("joints_vis", f"expected {NUM_JOINTS} flags 0 / 1, got {vis!r:.60}")
    elif not any(vis):
        bad("joints_vis", "no joint is labeled")
    center = rec["center"]
    if not (isinstance(center, list) and len(center) == 2 and all(is_finite_number(v) for v in center)):
        bad("center", f"expected [x, y], got {center!r:.60}")
    if not (is_finite_number(rec["scale"]) and rec["scale"] > 0):
        bad("scale", f"expected a number > 0 (person height / 200 px), got {rec['scale']!r:.60}")
    return None
