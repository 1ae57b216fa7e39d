"""A Label Studio keypoint project's JSON export as COCO keypoints: the seed labels of a team that labeled in Label
Studio before it used this loop (``data.source: labelstudio``).

Any keypoint project works, not only the ones poseloop made: the control names are not ours to know, so a result
item is read by its ``type`` alone.

* ``keypointlabels`` items are keypoints, named by their one label; the schema is those names: in COCO's (CrowdPose's,
  AIC's, MPII's) order when they are all names of that schema, else in the order they first appear in the export; or
  ``data.labelstudio.keypoints`` when given (then every label must be one of them).
* People: keypoints with a ``parentID`` belong to that region (a ``rectanglelabels`` box, whose rectangle is the
  person's box); keypoints without one are one person per task. A person without a rectangle gets the box around its
  keypoints (``coco.box_around``).
* A placed keypoint is visibility 2, or 1 when a per-region choice ``occluded`` is set on it (poseloop's own labeling
  config has one); a rotated rectangle or a point outside the image is an error, as pull refuses them.
* The annotation used is the task's latest one that was not cancelled (Label Studio's skip). A task with none gives
  an unlabeled pool instance whose box is the whole image (the loop's teacher labels it first, an annotator
  corrects); so does a person rectangle without keypoints, with its own box. An annotation submitted with no region
  says nobody is there: the task gives no instance.
* Coordinates: percent of ``original_width`` / ``original_height`` -> pixels with the convention of
  ``pipeline.data.labelstudio.coordinates.percent_to_px`` (integer = pixel centre), the one the export and pull stages
  use.
* Images: ``data.image`` (or the task's one data value that names a file): ``/data/local-files/?d=PATH`` is PATH under
  ``images``; an uploaded file (``/data/upload/3/1a2b3c4d-name.jpg``) or a URL is found by its file name, with or
  without the 8-character prefix Label Studio's upload adds.

Errors (``CocoFormatError``) name the export file and the task (and annotation) at fault.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from PIL import Image

from pipeline.checks import is_finite_number
from pipeline.data.coco import (
    UNLABELED,
    CocoFormatError,
    Problem,
    box_around,
    keypoint_annotation,
    load_json,
    path_escape,
)
from pipeline.data.labelstudio.coordinates import percent_to_px
from pipeline.keypoints import canonical_order

_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")


def looks_like_labelstudio_export(data: Any) -> bool:
    """A JSON list of tasks (``data`` and ``annotations`` fields): what Label Studio's JSON export writes."""
    return isinstance(data, list) and bool(data) and isinstance(data[0], dict) and "annotations" in data[0]


def read_labelstudio_export(
    path: str | os.PathLike[str], images_dir: str | os.PathLike[str], keypoints: list[str] | None = None
) -> dict:
    """Read a Label Studio JSON export as a COCO keypoint dict (``file_name`` relative to ``images_dir``)."""
    return export_to_coco(load_json(path), str(path), Path(images_dir), keypoints)


def export_to_coco(tasks: Any, file: str, images_dir: Path, keypoints: list[str] | None = None) -> dict:
    problems: list[Problem] = []
    if not isinstance(tasks, list):
        message = f"expected Label Studio's JSON export (a list of tasks), got {type(tasks).__name__}"
        raise CocoFormatError([Problem(file, "top level", None, message)])
    names: list[str] = list(keypoints or [])
    people: list[tuple[int, str, list[dict] | None]] = []  # (task position, image file, ``_persons``)
    for i, task in enumerate(tasks):
        where = f"task {task.get('id')}" if isinstance(task, dict) and task.get("id") is not None else f"tasks[{i}]"
        before = len(problems)
        image = _image_file(task, where, file, images_dir, problems)
        persons = _persons(task, where, file, problems, names, fixed=keypoints is not None)
        if len(problems) == before and image is not None:
            people.append((i, image, persons))
    problems += _near_duplicate_names(tasks, names, file)
    if keypoints is None:
        names = canonical_order(names)
    if not names and not problems:
        problems.append(Problem(file, "tasks", None, "no keypointlabels result in any annotation"))
    sizes: dict[str, tuple[int, int]] = {}
    for _, image, _ in people:
        if image not in sizes:
            try:
                with Image.open(images_dir / image) as im:
                    sizes[image] = im.size
            except Exception as exc:  # PIL raises OSError, SyntaxError, DecompressionBombError, ...
                problems.append(Problem(file, f"image {image}", None, f"cannot read {images_dir / image}: {exc}"))
    for i, image, persons in people:
        drawn_on = {size for person in persons or () for size in person["sizes"]}
        if image in sizes and drawn_on - {sizes[image]}:
            where = f"task {tasks[i].get('id')}"
            message = (
                f"regions drawn on a {'/'.join(f'{w:g}x{h:g}' for w, h in sorted(drawn_on))} image, but "
                f"{images_dir / image} is {sizes[image][0]}x{sizes[image][1]} (another file of the same name?)"
            )
            problems.append(Problem(file, where, "original_width", message))
    if problems:
        raise CocoFormatError(problems)

    image_ids = {name: n for n, name in enumerate(sorted(sizes), start=1)}
    images = [{"id": image_ids[n], "file_name": n, "width": sizes[n][0], "height": sizes[n][1]} for n in sorted(sizes)]
    annotations: list[dict] = []
    for i, image, persons in people:
        width, height = sizes[image]
        whole = [0.0, 0.0, float(width), float(height)]
        origin = {"labelstudio_task": tasks[i].get("id")}
        empty = [0.0] * 3 * len(names)
        if persons is None:  # nobody annotated this task: a pool instance, the whole frame as its box
            ann = keypoint_annotation(len(annotations) + 1, image_ids[image], empty, whole, source=UNLABELED, **origin)
            annotations.append(ann)
            continue
        for person in persons:
            points = person["points"]
            if not points:  # a person rectangle nobody placed keypoints in: a pool instance with that box
                ann_id = len(annotations) + 1
                annotations.append(
                    keypoint_annotation(ann_id, image_ids[image], empty, person["box"], source=UNLABELED, **origin)
                )
                continue
            flat: list[float] = []
            for name in names:
                flat += list(points[name]) if name in points else [0.0, 0.0, 0]
            xy = [p[:2] for p in points.values()]
            box = person["box"] or box_around(xy, width, height) or whole
            ann_id = len(annotations) + 1
            annotations.append(keypoint_annotation(ann_id, image_ids[image], flat, box, source="labelstudio", **origin))
    category = {"id": 1, "name": "person", "supercategory": "person", "keypoints": names, "skeleton": []}
    info = {"description": f"Label Studio export {Path(file).name} converted to COCO by poseloop"}
    return {"info": info, "images": images, "annotations": annotations, "categories": [category]}


def _near_duplicate_names(tasks: list, names: list[str], file: str) -> list[Problem]:
    """Keypoint labels that differ only by case or whitespace (``Nose`` beside ``nose``) would each become a keypoint
    of their own: an error naming the tasks that use each spelling."""

    def key(name: str) -> str:
        return " ".join(name.split()).casefold()

    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(key(name), []).append(name)
    clashes = {k: v for k, v in groups.items() if len(v) > 1}
    if not clashes:
        return []
    used_in: dict[str, list[str]] = {}
    for i, task in enumerate(tasks):
        if not isinstance(task, dict):
            continue
        where = f"task {task.get('id')}" if task.get("id") is not None else f"tasks[{i}]"
        for annotation in task.get("annotations") or ():
            for item in (annotation.get("result") or ()) if isinstance(annotation, dict) else ():
                value = item.get("value") if isinstance(item, dict) else None
                labels = value.get("keypointlabels") if isinstance(value, dict) else None
                for label in labels if isinstance(labels, list) else ():
                    if isinstance(label, str) and key(label) in clashes and where not in used_in.get(label, []):
                        used_in.setdefault(label, []).append(where)
    problems = []
    for spellings in clashes.values():
        detail = "; ".join(
            f"{n!r} in {', '.join(used_in.get(n, [])[:5])}{' ...' if len(used_in.get(n, [])) > 5 else ''}"
            for n in spellings
        )
        message = f"keypoint labels {spellings} differ only by case or spaces: {detail}; use one spelling"
        problems.append(Problem(file, "tasks", "keypointlabels", message))
    return problems


def _image_file(task: Any, where: str, file: str, images_dir: Path, problems: list[Problem]) -> str | None:
    """The task's image as a path relative to ``images_dir`` (which must exist), or None with a problem added."""
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        problems.append(Problem(file, where, "data", "expected a task object with a 'data' object"))
        return None
    data = task["data"]
    url = data.get("image")
    if not isinstance(url, str):
        candidates = [v for v in data.values() if isinstance(v, str) and PurePosixPath(urlparse(v).path).suffix]
        url = candidates[0] if len(candidates) == 1 else None
    if not url:
        problems.append(Problem(file, where, "data", f"no image: expected data.image, got keys {sorted(data)}"))
        return None
    parsed = urlparse(url)
    local = parse_qs(parsed.query).get("d")
    tried = [unquote(local[0])] if local else []
    base = PurePosixPath(unquote(parsed.path)).name
    tried += [base, _UPLOAD_PREFIX.sub("", base)]
    for name in dict.fromkeys(tried):
        if name and path_escape(name) is None and (images_dir / name).is_file():
            return name
    problems.append(Problem(file, where, "data.image", f"{url!r:.80}: no such file in {images_dir} (tried {tried})"))
    return None


# Per-region choice that marks a placed keypoint as hidden (COCO visibility 1); poseloop's own labeling config uses it.
OCCLUDED = "occluded"
_PERCENT_TOLERANCE = 1e-6  # float noise of the frontend, as pull allows it


def _persons(
    task: Any, where: str, file: str, problems: list[Problem], names: list[str], fixed: bool
) -> list[dict] | None:
    """The people of the task's latest annotation that was not cancelled, each ``{"points": {name: (x, y, v)},
    "box": [x, y, w, h] or None, "sizes": {(width, height) drawn on}}``; a rectangle without keypoints is a person
    with no points (a pool instance with that box). None when nobody annotated the task; [] when the annotation says
    nobody is there (submitted with no region).

    ``names`` grows with every new keypoint label (unless ``fixed``: then an unknown label is a problem).

    Long because every check of one task's regions sits beside the problem it reports, naming task and region.
    """
    annotations = task.get("annotations") if isinstance(task, dict) else None
    kept = [a for a in annotations or () if isinstance(a, dict) and not a.get("was_cancelled")]
    if not kept:
        return None
    annotation = max(kept, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0))
    where = f"{where}: annotation {annotation.get('id')}"
    result = annotation.get("result")
    if not isinstance(result, list):
        problems.append(Problem(file, where, "result", f"expected a list, got {type(result).__name__}"))
        return []
    boxes: dict[str, list[float]] = {}
    groups: dict[str | None, dict[str, tuple[float, float, int]]] = {}
    region_of: dict[str, tuple[str | None, str]] = {}  # keypoint region id -> (group, name), for occluded choices
    occluded: set[str] = set()
    sizes: set[tuple[float, float]] = set()  # original_width / height the regions were drawn on
    for j, item in enumerate(result):
        if not isinstance(item, dict) or not isinstance(item.get("value"), dict):
            continue
        value, kind = item["value"], item.get("type")
        if kind == "choices":
            picked = value.get("choices")
            if isinstance(picked, list) and any(isinstance(c, str) and c.lower() == OCCLUDED for c in picked):
                occluded.add(str(item.get("id")))
            continue
        if kind not in ("keypointlabels", "rectanglelabels"):
            continue  # text, relations, other controls: nothing a keypoint label needs
        rid = f"result[{j}] (region {item.get('id')})"
        w, h = item.get("original_width"), item.get("original_height")
        if not (is_finite_number(w) and is_finite_number(h) and w > 0 and h > 0):
            problems.append(Problem(file, where, rid, "missing original_width / original_height"))
            continue
        sizes.add((float(w), float(h)))
        geometry = [value.get(k) for k in (("x", "y") if kind == "keypointlabels" else ("x", "y", "width", "height"))]
        if not all(is_finite_number(g) for g in geometry):
            problems.append(Problem(file, where, rid, f"geometry is not finite numbers: {geometry}"))
            continue
        if not all(-_PERCENT_TOLERANCE <= g <= 100 + _PERCENT_TOLERANCE for g in geometry[:2]):
            problems.append(Problem(file, where, rid, f"at x={geometry[0]:g}%, y={geometry[1]:g}%: outside the image"))
            continue
        if kind == "rectanglelabels":
            if value.get("rotation") not in (None, 0, 0.0):
                problems.append(Problem(file, where, rid, f"rotated by {value.get('rotation')} degrees: not a box"))
                continue
            x, y, bw, bh = geometry
            # As pull reads a person rectangle (annotations._read_regions): the corner through percent_to_px.
            corner = [float(percent_to_px(x, w)), float(percent_to_px(y, h))]
            boxes[str(item.get("id"))] = [*corner, bw * w / 100, bh * h / 100]
            continue
        labels = value.get("keypointlabels")
        if not (isinstance(labels, list) and len(labels) == 1 and isinstance(labels[0], str) and labels[0]):
            problems.append(Problem(file, where, rid, f"expected exactly one keypoint label, got {labels!r:.60}"))
            continue
        name = labels[0]
        if name not in names:
            if fixed:
                problems.append(Problem(file, where, rid, f"label {name!r} is not in data.labelstudio.keypoints"))
                continue
            names.append(name)
        parent = str(item["parentID"]) if item.get("parentID") else None
        person = groups.setdefault(parent, {})
        if name in person:
            problems.append(
                Problem(
                    file, where, rid, f"keypoint {name!r} placed twice for one person ({parent or 'without parentID'})"
                )
            )
            continue
        px, py = (round(float(percent_to_px(g, size)), 6) for g, size in zip(geometry, (w, h), strict=True))
        person[name] = (px, py, 2)
        region_of[str(item.get("id"))] = (parent, name)
    for rid in occluded & region_of.keys():
        parent, name = region_of[rid]
        groups[parent][name] = (*groups[parent][name][:2], 1)
    people = [
        {"points": points, "box": boxes.get(parent) if parent else None, "sizes": sizes}
        for parent, points in groups.items()
    ]
    people += [{"points": {}, "box": box, "sizes": sizes} for rid, box in boxes.items() if rid not in groups]
    return people
