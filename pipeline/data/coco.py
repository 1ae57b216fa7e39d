"""Read, validate and write COCO keypoint files (docs/DESIGN.md section 3: every annotation file is COCO keypoint JSON).

Validation collects every problem instead of stopping at the first one, so a broken file is fixed in one pass.
Each ``Problem`` names the file, the record (``image 7``, ``annotation 42``, ``category 1``, or ``annotations[3]``
when the record has no usable id), the field and what is wrong, e.g.::

    person_keypoints.json: annotation 42: field 'keypoints': length 50, expected 3*17=51

Severity. Everything is an error except these warnings, which are reported and logged but do not stop a run:

* ``num_keypoints`` that disagrees with the visibility flags, or is missing. COCO's own files are consistent, but
  other tools' exports often get the count wrong while the keypoints themselves are fine. It still matters: pycocotools
  ignores ground truth whose ``num_keypoints`` is 0, so evaluation should recount from the flags, not trust the field.
* a missing ``area`` (pycocotools evaluation needs it; training does not): computed from the box. AIC and CrowdPose
  files have none. A missing ``iscrowd``: 0 (published files other than COCO's often omit it).
* skeleton edges that are not pairs of keypoint indices in 1..K: dropped (the skeleton only draws lines; CrowdPose's
  files carry COCO's 17-keypoint skeleton on 14 keypoints).
* a box, or a labeled keypoint, more than ``OUTSIDE_IMAGE_TOLERANCE`` pixels outside its image: kept as it is.

Everything that would change what a label says (ids, keypoint values and counts, visibility flags, boxes that are not
boxes) stays an error.

Accepted as valid: crowd annotations (``iscrowd`` 1) and people without keypoints (all zeros, ``num_keypoints`` 0),
which is also how unlabeled pool instances are stored (an annotation always carries ``3*K`` keypoint values).

Several categories: only categories that define ``keypoints`` names matter. Annotations of other categories (e.g. a
``car`` next to ``person``) are checked for ids and box, kept in ``CocoKeypoints.other_annotations`` and written back.
When several categories define keypoints, the caller picks one (``category=`` id or name).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np

from pipeline.checks import is_int, is_number
from pipeline.files import JsonFileError, atomic_write, read_json
from pipeline.keypoints import KeypointSchema

log = logging.getLogger(__name__)

REQUIRED_TOP_LEVEL = ("images", "annotations", "categories")
# ``source`` of an annotation a reader brings along without labels: a pool instance (prepare.split_dataset).
UNLABELED = "unlabeled"
VISIBILITY_FLAGS = (0, 1, 2)

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a COCO file. ``field`` is None for problems about a whole record or the file."""

    file: str
    record: str
    field: str | None
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        where = f"{self.file}: {self.record}"
        if self.field is not None:
            where += f": field '{self.field}'"
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{where}: {prefix}{self.message}"


class CocoFormatError(ValueError):
    """A COCO file is invalid. ``problems`` holds every problem found (warnings included); the message lists them."""

    def __init__(self, problems: Sequence[Problem], summary: str | None = None) -> None:
        self.problems = list(problems)
        errors = self.errors
        head = summary or f"{len(errors)} error(s) in {self.problems[0].file if self.problems else 'COCO data'}"
        # Errors first: they are why this was raised; warnings follow so one message shows the whole picture.
        ordered = errors + [p for p in self.problems if p.severity != "error"]
        super().__init__("\n".join([head + ":", *(f"  {p}" for p in ordered)]))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


def _json_default(value: Any) -> Any:
    """numpy values -> plain JSON values, for data built in memory by the stages."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _fmt(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------------------------------------- validate


class _Collector:
    """Accumulates problems for one file."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def add(self, record: str, fld: str | None, message: str, severity: Severity = "error") -> None:
        self.problems.append(Problem(self.file, record, fld, message, severity))


def _normalised(ann: dict) -> dict:
    """What validation warned about, made consistent (a new dict; the input is not changed): a missing ``area``
    computed from the box (AIC and CrowdPose files have none; pycocotools needs it), a missing ``iscrowd`` set to 0
    (a person, not a crowd region: pycocotools needs the field), ``num_keypoints`` recounted from the visibility flags
    (pycocotools skips ground truth whose count is 0)."""
    fixes: dict[str, Any] = {}
    if "iscrowd" not in ann:
        fixes["iscrowd"] = 0
    if "area" not in ann:
        fixes["area"] = float(ann["bbox"][2] * ann["bbox"][3])
    count = sum(1 for v in ann["keypoints"][2::3] if v > 0)
    if ann.get("num_keypoints") != count:
        fixes["num_keypoints"] = count
    return {**ann, **fixes} if fixes else ann


def path_escape(name: str) -> str | None:
    """Why ``name`` (a path from a data file) could point outside the folder it is relative to; None when it cannot.

    Refused: absolute paths (also Windows drive and UNC forms), any ``..`` part (a backslash counts as a separator:
    it is one on Windows, where DeepLabCut projects write them) and NUL. Checked as text, before any file system
    call; ``prepare`` also checks the resolved path, so a symlinked folder cannot lead outside either.
    """
    if "\x00" in name:
        return "contains a NUL character"
    posix = name.replace("\\", "/")
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":"):
        return f"{name!r:.80}: must be a path relative to the image folder, not an absolute path"
    if ".." in PurePosixPath(posix).parts:
        return f"{name!r:.80}: '..' would leave the image folder"
    return None


def _record_name(kind: str, rec: Any, index: int, plural: str) -> str:
    """``annotation 42`` when the record has a usable id, else its JSON position ``annotations[3]``."""
    if isinstance(rec, dict) and (is_int(rec.get("id")) or isinstance(rec.get("id"), str)):
        return f"{kind} {rec['id']}"
    return f"{plural}[{index}]"


def validate_coco(
    data: Any,
    path: str | os.PathLike[str] | None = None,
    images_dir: str | os.PathLike[str] | None = None,
    check_images: bool = False,
) -> list[Problem]:
    """Check a parsed COCO keypoint file; returns every problem found (empty list when clean), never raises on bad data.

    ``path`` only names the file in the problems. With ``images_dir`` every image file must exist under it
    (``images_dir / file_name``); ``check_images`` also decodes each file (catches truncated / corrupt images) and
    compares its size with the JSON ``width`` / ``height``. ``check_images`` without ``images_dir`` is a ValueError.
    """
    if check_images and images_dir is None:
        raise ValueError("check_images=True needs images_dir (the folder the images' file_name is relative to)")
    out = _Collector(str(path) if path is not None else "<coco>")
    if not isinstance(data, dict):
        hint = ""
        if isinstance(data, list):
            hint = (
                " (a list of records: MPII's layout is data.source: mpii, a Label Studio export data.source: "
                "labelstudio; `python -m pipeline validate` reads both)"
            )
        out.add(
            "top level",
            None,
            f"expected a JSON object with {list(REQUIRED_TOP_LEVEL)}, got {type(data).__name__}{hint}",
        )
        return out.problems
    missing = False
    for key in REQUIRED_TOP_LEVEL:
        if key not in data:
            out.add("top level", key, "missing")
            missing = True
        elif not isinstance(data[key], list):
            out.add("top level", key, f"expected a list, got {type(data[key]).__name__}")
            missing = True
    if missing:
        return out.problems

    num_kps = _check_categories(data["categories"], out)
    image_sizes = _check_images(data["images"], out)
    _check_annotations(data["annotations"], image_sizes, num_kps, set(_category_ids(data["categories"])), out)
    if images_dir is not None:
        _check_image_files(data["images"], Path(images_dir), check_images, out)
    return out.problems


def _category_ids(categories: list[Any]) -> list[int]:
    return [c["id"] for c in categories if isinstance(c, dict) and is_int(c.get("id"))]


def _check_categories(categories: list[Any], out: _Collector) -> dict[int, int]:
    """Returns category id -> number of keypoints K for the categories that define keypoints."""
    num_kps: dict[int, int] = {}
    seen: set[int] = set()
    broken = False  # a category tried to define keypoints and failed: that problem is the one to report
    for i, cat in enumerate(categories):
        rec = _record_name("category", cat, i, "categories")
        if not isinstance(cat, dict):
            out.add(rec, None, f"expected an object, got {type(cat).__name__}")
            continue
        cid = cat.get("id")
        if not is_int(cid):
            out.add(rec, "id", f"expected an integer id, got {_fmt(cid)}")
            continue
        if cid in seen:
            out.add(rec, "id", "duplicate category id")
            continue
        seen.add(cid)
        if "keypoints" not in cat:
            continue  # a plain detection category (e.g. 'car' next to 'person'): allowed, has no keypoints
        names = cat["keypoints"]
        if not isinstance(names, list) or not names:
            out.add(rec, "keypoints", f"expected a non-empty list of keypoint names, got {_fmt(names)}")
            broken = True
            continue
        if not all(isinstance(n, str) and n for n in names):
            out.add(rec, "keypoints", f"keypoint names must be non-empty strings, got {_fmt(names)}")
            broken = True
            continue
        dupes = sorted(n for n, c in Counter(names).items() if c > 1)
        if dupes:
            out.add(rec, "keypoints", f"duplicate keypoint names {dupes}")
            broken = True
            continue
        k = len(names)
        # The skeleton only draws lines: a bad one is a warning and the bad edges are dropped (``skeleton_edges``).
        # CrowdPose's files, for one, carry COCO's 17-keypoint skeleton on their 14 keypoints.
        skeleton = cat.get("skeleton", [])
        if not isinstance(skeleton, list):
            out.add(rec, "skeleton", f"expected a list of pairs, got {_fmt(skeleton)}: ignored", "warning")
        else:
            dropped = [e for e in skeleton if _skeleton_edge(e, k) is None]
            if dropped:
                out.add(
                    rec,
                    "skeleton",
                    f"{len(dropped)} of {len(skeleton)} edge(s) are not pairs of 1-based keypoint indices in 1..{k}, "
                    f"first {_fmt(dropped[0])}: dropped",
                    "warning",
                )
        num_kps[cid] = k
    if not num_kps and not broken:
        out.add("categories", "keypoints", "no category defines 'keypoints' names: not a COCO keypoint file")
    return num_kps


def _skeleton_edge(edge: Any, k: int) -> tuple[int, int] | None:
    """A COCO skeleton edge as a 0-based pair, or None when it is not a pair of 1-based indices in 1..k."""
    if isinstance(edge, list | tuple) and len(edge) == 2 and all(is_int(j) and 1 <= j <= k for j in edge):
        return edge[0] - 1, edge[1] - 1
    return None


def skeleton_edges(category: dict) -> list[list[int]]:
    """The category's valid skeleton edges, 1-based as COCO writes them; what validation warned about is gone."""
    skeleton = category.get("skeleton")
    k = len(category.get("keypoints") or ())
    if not isinstance(skeleton, list):
        return []
    pairs = [_skeleton_edge(e, k) for e in skeleton]
    return [[a + 1, b + 1] for a, b in filter(None, pairs)]


def _check_images(images: list[Any], out: _Collector) -> dict[Any, tuple[Any, Any]]:
    """Returns image id -> (width, height) as written (checked below), for the annotation checks."""
    ids: dict[Any, tuple[Any, Any]] = {}
    first_with_file: dict[str, Any] = {}
    for i, img in enumerate(images):
        rec = _record_name("image", img, i, "images")
        if not isinstance(img, dict):
            out.add(rec, None, f"expected an object, got {type(img).__name__}")
            continue
        iid = img.get("id")
        if not is_int(iid):
            out.add(rec, "id", f"expected an integer id, got {_fmt(iid)}")
        elif iid in ids:
            out.add(rec, "id", "duplicate image id")
        else:
            ids[iid] = (img.get("width"), img.get("height"))
        name = img.get("file_name")
        if not isinstance(name, str) or not name:
            out.add(rec, "file_name", f"expected a non-empty string, got {_fmt(name)}")
        else:
            escape = path_escape(name)
            if escape:
                out.add(rec, "file_name", escape)
            elif name in first_with_file:
                # Kept (each id is a record of its own), but its people may be labeled twice or split across ids.
                message = f"{name!r} is also image {first_with_file[name]}: one file under two image ids"
                out.add(rec, "file_name", message, "warning")
            else:
                first_with_file[name] = iid
        for key in ("width", "height"):
            value = img.get(key)
            if not is_int(value) or value <= 0:
                out.add(rec, key, f"expected a positive integer, got {_fmt(value)}")
    return ids


def _check_annotations(
    annotations: list[Any],
    image_sizes: dict[Any, tuple[Any, Any]],
    num_kps: dict[int, int],
    category_ids: set[int],
    out: _Collector,
) -> None:
    ids: set[Any] = set()
    # Problems per annotation position, so each record's problems are reported together and in file order even
    # though the keypoint values are checked afterwards, vectorised.
    found: dict[int, list[Problem]] = {}
    # Keypoint lists whose structure is right, grouped by K, for the vectorised value checks.
    by_k: dict[int, list[tuple[int, str, dict]]] = {}

    for i, ann in enumerate(annotations):
        rec = _record_name("annotation", ann, i, "annotations")

        def add(fld: str | None, message: str, severity: Severity = "error", i: int = i, rec: str = rec) -> None:
            found.setdefault(i, []).append(Problem(out.file, rec, fld, message, severity))

        if not isinstance(ann, dict):
            add(None, f"expected an object, got {type(ann).__name__}")
            continue
        aid = ann.get("id")
        if not is_int(aid):
            add("id", f"expected an integer id, got {_fmt(aid)}")
        elif aid in ids:
            add("id", "duplicate annotation id")
        else:
            ids.add(aid)
        if "image_id" not in ann:
            add("image_id", "missing")
        elif not is_int(ann["image_id"]) or ann["image_id"] not in image_sizes:  # int first: a list is unhashable
            add("image_id", f"no image with id {_fmt(ann['image_id'])}")
        cid = ann.get("category_id")
        if "category_id" not in ann:
            add("category_id", "missing")
        elif not is_int(cid) or cid not in category_ids:
            add("category_id", f"no category with id {_fmt(cid)}")
        _check_bbox(ann, add, _size_of(image_sizes, ann))
        if "area" not in ann:
            add("area", "missing: computed from the box (width x height)", "warning")
        elif not is_number(ann["area"]) or not math.isfinite(ann["area"]) or ann["area"] < 0:
            add("area", f"expected a finite number >= 0, got {_fmt(ann['area'])}")
        if "iscrowd" not in ann:
            add("iscrowd", "missing: 0 (a person, not a crowd region)", "warning")
        elif ann["iscrowd"] not in (0, 1) or isinstance(ann["iscrowd"], bool):
            add("iscrowd", f"expected 0 or 1, got {_fmt(ann['iscrowd'])}")

        k = num_kps.get(cid) if is_int(cid) else None
        if k is None:
            continue  # not a keypoint category (or an unknown one, reported above)
        kps = ann.get("keypoints")
        if not isinstance(kps, list):
            add("keypoints", f"expected a list of 3*{k}={3 * k} numbers, got {_fmt(kps)}")
        elif len(kps) != 3 * k:
            add("keypoints", f"length {len(kps)}, expected 3*{k}={3 * k}")
        else:
            by_k.setdefault(k, []).append((i, rec, ann))

    for k, rows in by_k.items():
        _check_keypoint_values(k, rows, found, out.file, image_sizes)
    for i in sorted(found):
        out.problems.extend(found[i])


# How far (pixels) a box or a labeled keypoint may lie outside the image before it is worth a warning: annotation
# tools place points on pixel edges and round boxes outwards.
OUTSIDE_IMAGE_TOLERANCE = 1.0


def _size_of(image_sizes: dict[Any, tuple[Any, Any]], ann: dict) -> tuple[Any, Any] | None:
    image_id = ann.get("image_id")
    return image_sizes.get(image_id) if is_int(image_id) else None  # int first: a list is unhashable


def _image_size(size: tuple[Any, Any] | None) -> tuple[float, float] | None:
    if size is None or not all(is_int(v) and v > 0 for v in size):
        return None  # no such image, or a bad width / height (reported with the image)
    return float(size[0]), float(size[1])


def _check_bbox(ann: dict, add: Any, image_size: tuple[Any, Any] | None) -> None:
    if "bbox" not in ann:
        add("bbox", "missing")
        return
    box = ann["bbox"]
    if not isinstance(box, list) or len(box) != 4 or not all(is_number(v) for v in box):
        add("bbox", f"expected [x, y, width, height] (4 numbers), got {_fmt(box)}")
    elif not all(math.isfinite(v) for v in box):
        add("bbox", f"not finite: {_fmt(box)}")
    elif box[2] <= 0 or box[3] <= 0:
        add("bbox", f"width and height must be > 0, got width {box[2]}, height {box[3]}")
    elif (size := _image_size(image_size)) is not None:
        # A box reaching past the border is kept as it is: the crop pads, and a truncated person is a real label.
        tol = OUTSIDE_IMAGE_TOLERANCE
        if box[0] < -tol or box[1] < -tol or box[0] + box[2] > size[0] + tol or box[1] + box[3] > size[1] + tol:
            add("bbox", f"{_fmt(box)} reaches outside the {size[0]:g}x{size[1]:g} image: kept", "warning")


def _check_keypoint_values(
    k: int,
    rows: list[tuple[int, str, dict]],
    found: dict[int, list[Problem]],
    file: str,
    image_sizes: dict[Any, tuple[Any, Any]],
) -> None:
    """Values of n keypoint lists of length 3K: numbers, finite, visibility in {0,1,2}, num_keypoints consistent,
    labeled keypoints inside their image (a warning: such a point is kept, the model learns it as given).

    Vectorised because a pool file can hold a million instances; Python only touches the rows whose values are not
    all int / float (the types of a row are collected by a C-speed ``map``). A bool among the numbers (``true`` in
    the JSON) is an error: numpy would fold it into 1, and whether ``true`` meant "visible" (2) or "labeled" (1) is a
    guess.

    Long because one vectorised pass over every row (a pool file can hold a million people): split into checks, the
    arrays would be rebuilt for each.
    """

    def add(i: int, rec: str, fld: str, message: str, severity: Severity = "error") -> None:
        found.setdefault(i, []).append(Problem(file, rec, fld, message, severity))

    # Plain int / float rows go straight to numpy; the rest (None, str, a nested list, a bool) are looked at in Python.
    numeric = []
    for i, rec, ann in rows:
        if set(map(type, ann["keypoints"])) <= {int, float}:
            numeric.append((i, rec, ann))
            continue
        bad = [(j, v) for j, v in enumerate(ann["keypoints"]) if not is_number(v)]
        if not bad:  # numpy scalars from a reader
            numeric.append((i, rec, ann))
        elif isinstance(bad[0][1], bool):
            j, v = bad[0]
            what = "visibility" if j % 3 == 2 else "xy"[j % 3]
            add(i, rec, "keypoints", f"{what} of keypoint {j // 3} is {str(v).lower()}: expected a number (0, 1 or 2)")
        else:
            j, v = bad[0]
            add(i, rec, "keypoints", f"{len(bad)} non-numeric value(s), first at index {j}: {_fmt(v)}")
    rows = numeric
    if not rows:
        return
    arr = np.array([ann["keypoints"] for _, _, ann in rows])
    arr = arr.astype(np.float64, copy=False).reshape(len(rows), k, 3)
    finite = np.isfinite(arr)
    vis = arr[:, :, 2]
    bad_vis = finite[:, :, 2] & ~np.isin(vis, VISIBILITY_FLAGS)
    counts = ((vis > 0) & finite[:, :, 2]).sum(axis=1)
    for pos in np.flatnonzero(~finite.all(axis=(1, 2)) | bad_vis.any(axis=1)).tolist():
        i, rec, _ = rows[pos]
        nonfinite = np.argwhere(~finite[pos])
        if len(nonfinite):
            j, c = nonfinite[0]
            message = f"{len(nonfinite)} NaN/inf value(s), first at keypoint {j} ({'xyv'[c]}): {arr[pos, j, c]}"
            add(i, rec, "keypoints", message)
        bad = np.flatnonzero(bad_vis[pos])
        if len(bad):
            j = int(bad[0])
            message = (
                f"visibility must be 0, 1 or 2: {len(bad)} keypoint(s) are not, first keypoint {j}: {vis[pos, j]:g}"
            )
            add(i, rec, "keypoints", message)
    sizes = np.array(
        [_image_size(_size_of(image_sizes, ann)) or (np.inf, np.inf) for _, _, ann in rows], dtype=np.float64
    ).reshape(len(rows), 1, 2)
    with np.errstate(invalid="ignore"):
        tol = OUTSIDE_IMAGE_TOLERANCE
        outside = (vis > 0) & finite.all(axis=2) & ((arr[:, :, :2] < -tol) | (arr[:, :, :2] > sizes + tol)).any(axis=2)
    for pos in np.flatnonzero(outside.any(axis=1)).tolist():
        i, rec, _ = rows[pos]
        j = int(np.flatnonzero(outside[pos])[0])
        w, h = sizes[pos, 0]
        message = (
            f"{int(outside[pos].sum())} labeled keypoint(s) outside the {w:g}x{h:g} image, first keypoint {j} at "
            f"({arr[pos, j, 0]:g}, {arr[pos, j, 1]:g}): kept"
        )
        add(i, rec, "keypoints", message, "warning")
    for pos, (i, rec, ann) in enumerate(rows):
        nk = ann.get("num_keypoints")
        if nk is None:
            add(i, rec, "num_keypoints", "missing: recounted from the visibility flags", "warning")
        elif not is_int(nk) or nk != counts[pos]:
            add(
                i,
                rec,
                "num_keypoints",
                f"{_fmt(nk)} but {counts[pos]} keypoint(s) have visibility > 0: recounted",
                "warning",
            )


def _check_image_files(images: list[Any], images_dir: Path, decode: bool, out: _Collector) -> None:
    from pipeline.data.images import probe_images

    # (position, record, image, file): problems are reported in image order, whichever check found them.
    found: list[tuple[int, Problem]] = []
    todo: list[tuple[int, str, dict, Path]] = []
    root = images_dir.resolve()
    for i, img in enumerate(images):
        if not isinstance(img, dict) or not isinstance(img.get("file_name"), str) or not img["file_name"]:
            continue  # already reported
        rec = _record_name("image", img, i, "images")
        file = images_dir / img["file_name"]
        if not file.is_file():
            found.append((i, Problem(out.file, rec, "file_name", f"image file missing: {file}")))
        elif not file.resolve().is_relative_to(root):
            message = f"{file} resolves to {file.resolve()}, outside the image folder {root} (a symlink): refused"
            found.append((i, Problem(out.file, rec, "file_name", message)))
        elif decode:
            todo.append((i, rec, img, file))

    results = probe_images([t[3] for t in todo])
    for (i, rec, img, file), result in zip(todo, results, strict=True):
        if isinstance(result, str):
            found.append((i, Problem(out.file, rec, "file_name", result)))
            continue
        width, height, orientation = result
        turned = orientation in (5, 6, 7, 8)  # these tags turn the picture by 90 degrees to view it
        for key, actual, viewed in (("width", width, height), ("height", height, width)):
            if is_int(img.get(key)) and img[key] != actual:
                hint = (
                    f" (EXIF orientation {orientation} shows it turned, {key} {viewed}: labels must refer to the "
                    "stored pixels, as COCO's do)"
                    if turned and img[key] == viewed
                    else ""
                )
                found.append((i, Problem(out.file, rec, key, f"{img[key]} in the JSON but {actual} in {file}{hint}")))
        if orientation != 1:
            message = (
                f"EXIF orientation {orientation}: labels refer to the stored pixels; prepare writes a copy whose tag "
                "is 1, so every viewer shows those"
            )
            found.append((i, Problem(out.file, rec, "file_name", message, "warning")))
    out.problems.extend(p for _, p in sorted(found, key=lambda t: t[0]))


def box_around(
    points: Sequence[tuple[float, float]], width: float, height: float, margin: float = 0.1, min_pad: float = 8.0
) -> list[float] | None:
    """COCO [x, y, w, h] around labeled points, for formats that have no boxes (DeepLabCut, SLEAP, Label Studio
    keypoints without a rectangle): their extent grown on every side by ``margin`` times its longer side, but by at
    least ``min_pad`` pixels (so a single point still gets a box), clipped to the (width, height) image. None when
    nothing is left inside the image. A few points on a mouse (snout, ears, tail base) do not span the body, hence a
    margin relative to the longer side rather than per axis."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    if not xs:
        return None
    pad = max(min_pad, margin * max(max(xs) - min(xs), max(ys) - min(ys)))
    x0, y0 = max(0.0, min(xs) - pad), max(0.0, min(ys) - pad)
    x1, y1 = min(float(width), max(xs) + pad), min(float(height), max(ys) + pad)
    if x1 <= x0 or y1 <= y0:
        return None
    return [x0, y0, x1 - x0, y1 - y0]


def keypoint_annotation(
    ann_id: int, image_id: int, keypoints: Sequence[float], box: Sequence[float], **fields: Any
) -> dict:
    """A COCO keypoint annotation of category 1 from flat keypoints (3K,) and a box, as the format readers build
    them: ``num_keypoints`` counted from the flags, ``area`` = box area (no masks), extra ``fields`` (provenance:
    ``source``, a tool's own ids) after the COCO ones."""
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "keypoints": list(keypoints),
        "num_keypoints": sum(1 for v in keypoints[2::3] if v > 0),
        "bbox": list(box),
        "area": box[2] * box[3],
        "iscrowd": 0,
        **fields,
    }


# ----------------------------------------------------------------------------------------------------------- container


@dataclass(eq=True)
class CocoKeypoints:
    """A validated COCO keypoint file for one keypoint category.

    ``annotations`` are the annotations of ``schema``'s category (in file order); annotations of other categories are
    kept apart in ``other_annotations`` and written back after them. Every record dict is kept as read, unknown fields
    included (``source``, ``correction_id``, ``model_version``, ...); ``extra`` holds the other top-level keys
    (``info``, ``licenses``, ...). Equality compares content, not ``path`` / ``images_dir``.
    The id lookups are cached; after changing ``images`` / ``annotations`` in place call ``reindex()``.
    """

    path: Path | None = field(compare=False)
    images: list[dict]
    annotations: list[dict]
    categories: list[dict]
    schema: KeypointSchema
    extra: dict = field(default_factory=dict)
    other_annotations: list[dict] = field(default_factory=list)
    images_dir: Path | None = field(default=None, compare=False)
    key_order: tuple[str, ...] = field(default=(), compare=False, repr=False)
    _index: tuple[Any, ...] | None = field(default=None, init=False, compare=False, repr=False)

    @classmethod
    def from_dict(
        cls,
        data: Any,
        path: str | os.PathLike[str] | None = None,
        *,
        images_dir: str | os.PathLike[str] | None = None,
        check_images: bool = False,
        category: int | str | None = None,
        sigmas: Sequence[float] | None = None,
        flip_pairs: Sequence[Sequence[int]] | None = None,
    ) -> CocoKeypoints:
        """Validate a parsed COCO dict and wrap it; raises ``CocoFormatError`` listing every error.

        The record dicts are shared with ``data`` (no copy). ``category`` (id or name) picks the keypoint category
        when several define keypoints. ``sigmas`` / ``flip_pairs`` go to ``KeypointSchema.from_coco_category``.
        """
        file = str(path) if path is not None else "<coco>"
        problems = validate_coco(data, file, images_dir=images_dir, check_images=check_images)
        if any(p.severity == "error" for p in problems):
            raise CocoFormatError(problems)
        _log_warnings(problems)
        cat = _pick_category(data["categories"], category, file, problems)
        try:
            schema = KeypointSchema.from_coco_category(
                {**cat, "skeleton": skeleton_edges(cat)}, sigmas=sigmas, flip_pairs=flip_pairs
            )
        except ValueError as exc:  # e.g. sigmas of the wrong length: name the file and category
            raise CocoFormatError(
                [*problems, Problem(file, f"category {cat['id']}", "keypoints", f"bad keypoint schema: {exc}")]
            ) from exc
        mine = [_normalised(a) for a in data["annotations"] if a["category_id"] == cat["id"]]
        others = [a for a in data["annotations"] if a["category_id"] != cat["id"]]
        return cls(
            path=Path(path) if path is not None else None,
            images=data["images"],
            annotations=mine,
            categories=data["categories"],
            schema=schema,
            extra={k: v for k, v in data.items() if k not in REQUIRED_TOP_LEVEL},
            other_annotations=others,
            images_dir=Path(images_dir) if images_dir is not None else None,
            key_order=tuple(data),
        )

    # -- lookups

    def reindex(self) -> None:
        """Drop the cached id lookups (call after changing ``images`` or ``annotations`` in place)."""
        self._index = None

    def _lookup(self) -> tuple[dict[int, dict], dict[int, list[dict]]]:
        # The cache is keyed on the lists' identity and length, which catches replacing or appending to them.
        key = (id(self.images), len(self.images), id(self.annotations), len(self.annotations))
        if self._index is None or self._index[0] != key:
            by_id = {img["id"]: img for img in self.images}
            anns: dict[int, list[dict]] = {}
            for ann in self.annotations:
                anns.setdefault(ann["image_id"], []).append(ann)
            self._index = (key, by_id, anns)
        return self._index[1], self._index[2]

    def image_by_id(self, image_id: int) -> dict:
        """The image record with this id (KeyError when there is none)."""
        return self._lookup()[0][image_id]

    def annotations_of(self, image_id: int) -> list[dict]:
        """This image's annotations of the schema's category, in file order (empty when it has none)."""
        return list(self._lookup()[1].get(image_id, ()))

    def image_path(self, image: dict | int, images_dir: str | os.PathLike[str] | None = None) -> Path:
        """``images_dir / file_name`` for an image record or id; ``images_dir`` defaults to the one given at read."""
        root = images_dir if images_dir is not None else self.images_dir
        if root is None:
            raise ValueError("image_path needs images_dir (none was given to read_coco either)")
        record = self.image_by_id(image) if isinstance(image, int) else image
        return Path(root) / record["file_name"]

    # -- arrays

    def keypoints_array(self) -> np.ndarray:
        """Keypoints of ``annotations`` in order, shape (N, K, 3) float64: x, y in image pixels, COCO visibility."""
        k = self.schema.num_keypoints
        if not self.annotations:
            return np.zeros((0, k, 3), dtype=np.float64)
        return np.asarray([a["keypoints"] for a in self.annotations], dtype=np.float64).reshape(-1, k, 3)

    def boxes_array(self) -> np.ndarray:
        """Boxes of ``annotations`` in order, shape (N, 4) float64, COCO [x, y, width, height] in pixels."""
        if not self.annotations:
            return np.zeros((0, 4), dtype=np.float64)
        return np.asarray([a["bbox"] for a in self.annotations], dtype=np.float64)

    # -- output

    def to_dict(self) -> dict:
        """The COCO dict: top-level keys in the order read (new files: extra keys, images, annotations, categories).

        The record dicts are shared, not copied: deep-copy before changing them if this object must stay as it is.
        """
        content = {
            **self.extra,
            "images": self.images,
            "annotations": [*self.annotations, *self.other_annotations],
            "categories": self.categories,
        }
        order = [k for k in self.key_order if k in content]
        order += [k for k in content if k not in order]
        return {k: content[k] for k in order}


def _pick_category(categories: list[dict], wanted: int | str | None, file: str, problems: list[Problem]) -> dict:
    with_kps = [c for c in categories if c.get("keypoints")]

    def fail(message: str) -> CocoFormatError:
        return CocoFormatError([*problems, Problem(file, "categories", "keypoints", message)])

    listing = ", ".join(f"{c['id']} {c.get('name')!r} ({len(c['keypoints'])} keypoints)" for c in with_kps)
    if wanted is None:
        if len(with_kps) > 1:
            raise fail(f"several categories define keypoints: {listing}; pick one with category= (id or name)")
        return with_kps[0]
    match = [c for c in with_kps if (c["id"] == wanted if isinstance(wanted, int) else c.get("name") == wanted)]
    if not match:
        raise fail(f"no keypoint category {wanted!r}; categories with keypoints: {listing}")
    if len(match) > 1:
        raise fail(f"several keypoint categories are named {wanted!r}; pick one by id: {listing}")
    return match[0]


def warning_lines(problems: Sequence[Problem], limit: int = 20) -> list[str]:
    """Warnings as lines for a person to read: the same warning on many records (``area`` missing in a CrowdPose
    file of 20,000 people) is one line with the count and the first record; at most ``limit`` lines."""
    groups: dict[tuple[str | None, str], list[Problem]] = {}
    for p in problems:
        if p.severity == "warning":
            # Group on the message's wording without its numbers, so "3 but 2 keypoint(s)" and "5 but 4" count as one.
            key = (p.field, "".join(ch for ch in p.message if not ch.isdigit()))
            groups.setdefault(key, []).append(p)
    lines = []
    for group in groups.values():
        first = group[0]
        more = f" (and {len(group) - 1} more record(s) like it)" if len(group) > 1 else ""
        lines.append(f"{first}{more}")
    if len(lines) > limit:
        lines = [*lines[:limit], f"... and {len(lines) - limit} more kind(s) of warning"]
    return lines


def _log_warnings(problems: Sequence[Problem], limit: int = 20) -> None:
    for line in warning_lines(problems, limit):
        log.warning("%s", line)


# ------------------------------------------------------------------------------------------------------ read and write


def load_json(path: str | os.PathLike[str]) -> Any:
    """Parse a JSON file (``files.read_json``); what is not readable JSON raises ``CocoFormatError`` naming the file.

    A missing or unreadable file raises the usual ``OSError`` (FileNotFoundError, PermissionError).
    """
    try:
        return read_json(path)
    except JsonFileError as exc:
        raise CocoFormatError([Problem(str(path), "file", None, str(exc).removeprefix(f"{path}: "))]) from None


def read_coco(
    path: str | os.PathLike[str],
    images_dir: str | os.PathLike[str] | None = None,
    check_images: bool = False,
    sigmas: Sequence[float] | None = None,
    flip_pairs: Sequence[Sequence[int]] | None = None,
    category: int | str | None = None,
) -> CocoKeypoints:
    """Read and validate a COCO keypoint file; raises ``CocoFormatError`` (a ValueError) listing every error.

    ``images_dir``: folder that ``file_name`` is relative to; when given, every image file must exist.
    ``check_images``: also decode each image and compare its size with the JSON (needs ``images_dir``).
    ``sigmas`` (K,) / ``flip_pairs`` (0-based pairs) override the schema's defaults (see ``KeypointSchema``).
    ``category``: id or name of the keypoint category, needed only when several categories define keypoints.
    Warnings (see the module doc) are logged, not raised.
    """
    data = load_json(path)
    return CocoKeypoints.from_dict(
        data,
        path,
        images_dir=images_dir,
        check_images=check_images,
        category=category,
        sigmas=sigmas,
        flip_pairs=flip_pairs,
    )


def write_coco(
    path: str | os.PathLike[str],
    coco: CocoKeypoints | dict,
    *,
    indent: int | None = None,
    validate: bool = True,
) -> Path:
    """Write a COCO keypoint file atomically and deterministically; returns the path.

    The JSON goes to a temporary file in the same folder, is flushed to disk, then ``os.replace``-d over ``path``:
    an interrupted write (exception, kill, full disk) leaves any existing file untouched. Output is a pure function of
    the input: keys in the order given, floats written as Python's shortest round-trip repr, so read -> write -> read
    gives equal data and rewriting unchanged data gives identical bytes (DVC sees no change). ``validate`` (default)
    refuses data with errors before touching the disk; NaN / inf are always refused (they are not JSON).
    """
    path = Path(path)
    data = coco.to_dict() if isinstance(coco, CocoKeypoints) else coco
    if validate:
        problems = validate_coco(data, path)
        if any(p.severity == "error" for p in problems):
            errors = sum(p.severity == "error" for p in problems)
            raise CocoFormatError(problems, f"refusing to write {path}: {errors} error(s)")
    # dumps, not dump: json.dump always takes the pure-Python encoder (about 3x slower); dumps uses the C one.
    # Serialising first also means a TypeError (a numpy scalar, a set) fails before any file exists.
    text = json.dumps(
        data,
        indent=indent,
        separators=(",", ": ") if indent is not None else (",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_json_default,
    )
    return atomic_write(path, text + "\n", durable=True)  # people hand-edit these: survive a power cut


# ------------------------------------------------------------------------------------------------------- summary, CLI


def coco_results(
    instance_ids: np.ndarray, image_ids: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, category_id: int
) -> list[dict]:
    """COCO keypoint results, one per instance, with ``instance_id`` kept for paired distance metrics.

    ``instance_ids``, ``image_ids`` (N,); ``keypoints`` (N, K, 2) image px; ``scores`` (N, K). The instance score is
    the mean keypoint score (what pycocotools ranks detections by).
    """
    triples = np.concatenate([keypoints, scores[..., None]], axis=2).reshape(len(instance_ids), 3 * scores.shape[1])
    return [
        {
            "image_id": int(img),
            "category_id": category_id,
            "keypoints": [round(float(v), 3) for v in flat],
            "score": float(np.mean(sc)),
            "instance_id": int(iid),
        }
        for iid, img, flat, sc in zip(instance_ids, image_ids, triples, scores, strict=True)
    ]


def summarize(coco: CocoKeypoints) -> dict:
    """Counts for the CLI and logs: images, instances (of the schema's category), instances with >= 1 labeled
    keypoint, crowd instances, keypoints by visibility {0, 1, 2} over all instances, and the schema."""
    kps = coco.keypoints_array()
    vis = kps[:, :, 2].astype(np.int64)
    schema = coco.schema
    return {
        "images": len(coco.images),
        "images_with_instances": len({a["image_id"] for a in coco.annotations}),
        "instances": len(coco.annotations),
        "instances_with_keypoints": int((vis > 0).any(axis=1).sum()),
        "crowd": sum(1 for a in coco.annotations if a.get("iscrowd", 0) == 1),
        "other_category_instances": len(coco.other_annotations),
        "keypoints_by_visibility": {v: int((vis == v).sum()) for v in VISIBILITY_FLAGS},
        "category": {"id": schema.category_id, "name": schema.category_name},
        "keypoint_names": list(schema.names),
        "flip_pairs": [[schema.names[a], schema.names[b]] for a, b in schema.flip_pairs],
        "skeleton_edges": len(schema.skeleton),
        "sigma_source": schema.sigma_source,
        "sigmas": schema.describe_sigmas(),
    }
