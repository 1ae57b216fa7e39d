"""Label Studio annotations -> corrections, skips and problems (the store's records). Pure functions, no network.

Coordinates and the task format: ``pipeline.data.labelstudio.tasks``.

Annotation -> record (``annotation_to_correction``): a placed keypoint is v=2, a placed keypoint with the ``occluded``
choice v=1, a keypoint not placed v=0 with x = y = 0. The box is the annotation's rectangle, or the task's box when
the annotator deleted the rectangle but placed keypoints. A submitted annotation with no region at all means "no
person here" (Skip reason ``no_person``). ``was_cancelled`` is Label Studio's skip flag (the UI's Skip button posts the
current regions with ``was_cancelled: true``, so the result may be non-empty): Skip reason ``skipped``. Label Studio
1.23 has no separate "cancel", so ``cancelled`` is never produced here (the contract keeps it for other tools).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.corrections import AnnotationProblem, Correction, Skip, added_instance_id
from pipeline.data.labelstudio.config import (
    ADDED_KEYPOINT_NAME,
    ADDED_LABEL,
    BOX_NAME,
    KEYPOINT_NAME,
    OCCLUDED_CHOICE,
    OCCLUDED_NAME,
    PERSON_LABEL,
)
from pipeline.data.labelstudio.coordinates import percent_to_px
from pipeline.files import JsonFileError, read_json
from pipeline.keypoints import KeypointSchema

log = logging.getLogger(__name__)

# Percent coordinates a hair outside [0, 100] are float noise from the frontend, not an annotator's mistake.
_PERCENT_TOLERANCE = 1e-6
_NOT_OURS = "the task has no integer data.instance_id (it was not exported by poseloop)"


# ------------------------------------------------------------------------------------------ annotations -> records


class AnnotationError(ValueError):
    """An annotation that cannot become a correction; ``problem`` names its task and annotation."""

    def __init__(self, problem: AnnotationProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def _utc(text: Any) -> str | None:
    """An ISO-8601 time from Label Studio -> ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``; None when absent or unparseable."""
    if not isinstance(text, str) or not text:
        return None
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return None
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    return t.isoformat().replace("+00:00", "Z")


def _annotator(completed_by: Any, annotators: Mapping[int, str] | None) -> str | None:
    """The annotator's email: ``completed_by`` is a user id (API, JSON export) or a user object (some exports)."""
    if isinstance(completed_by, dict):
        for key in ("email", "username"):  # only text: a stored non-string would make the store unreadable
            if isinstance(completed_by.get(key), str) and completed_by[key]:
                return completed_by[key]
        return _annotator(completed_by.get("id"), None)
    if isinstance(completed_by, int) and not isinstance(completed_by, bool):
        if annotators is not None and completed_by in annotators:
            return annotators[completed_by]
        return f"user {completed_by}"
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)  # an int too large for a float raises OverflowError here, not in isfinite
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _task_int(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def annotation_model_version(task: Mapping[str, Any], annotation: Mapping[str, Any]) -> str | None:
    """The model_version of the prediction the annotator started from, as far as the task tells.

    The annotation's embedded ``prediction`` object (Label Studio's JSON export embeds the parent prediction there,
    while it lists the task's predictions by id only); else the prediction named by ``parent_prediction`` when the
    task lists predictions as objects (API, snapshot export); else the only model_version among them; else the only
    one in the task's ``predictions_model_versions`` column (Data Manager listing). None when it cannot be told.
    """
    embedded = annotation.get("prediction")
    if isinstance(embedded, dict) and isinstance(embedded.get("model_version"), str):
        return embedded["model_version"]
    listed = task.get("predictions") if isinstance(task.get("predictions"), list) else []
    predictions = [p for p in listed if isinstance(p, dict)]
    parent = annotation.get("parent_prediction")
    for p in predictions:
        if parent is not None and p.get("id") == parent and isinstance(p.get("model_version"), str):
            return p["model_version"]
    versions = {p.get("model_version") for p in predictions if isinstance(p.get("model_version"), str)}
    if not versions:
        versions = set(parse_model_versions(task.get("predictions_model_versions")))
    return versions.pop() if len(versions) == 1 else None


def parse_model_versions(column: Any) -> list[str]:
    """The Data Manager's ``predictions_model_versions`` string -> the distinct versions (sorted).

    Label Studio 1.23 joins the versions with ``,`` on SQLite and ``, `` on PostgreSQL and cuts the string at 500
    characters, so a model version must not contain a comma (``client.send_tasks`` refuses one).
    """
    if not isinstance(column, str) or not column.strip():
        return []
    return sorted({part.strip() for part in column.split(",") if part.strip()})


def _px(value: float) -> float:
    """Pixels read back from percent, rounded to 1e-6 px: the float noise of the division (2.0000000000000004) would
    otherwise reach the corrections store, while 1e-6 px is far below any annotator's precision."""
    return round(float(value), 6)


@dataclass
class _Regions:
    """The regions of one annotation, after validation."""

    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    points: dict[str, tuple[str, float, float]] = field(default_factory=dict)  # region id -> (label, x px, y px)
    occluded_ids: set[str] = field(default_factory=set)
    added_boxes: list[tuple[float, float, float, float]] = field(default_factory=list)  # "missed person" boxes
    added_points: list[tuple[str, float, float]] = field(default_factory=list)  # their keypoints (kp_missed)
    issues: list[str] = field(default_factory=list)


def _original_size(item: Mapping[str, Any], what: str, issues: list[str]) -> tuple[float, float] | None:
    w, h = _number(item.get("original_width")), _number(item.get("original_height"))
    if w is None or h is None or w <= 0 or h <= 0:
        issues.append(f"{what}: missing original_width / original_height (cannot convert percent to pixels)")
        return None
    return w, h


def _read_regions(result: Any, names: set[str]) -> _Regions:
    """One annotation's ``result`` list -> its regions (person rectangles, keypoints, choices) and the issues found.

    Long because every check of one annotation's regions sits beside the problem message it raises."""
    out = _Regions()
    if not isinstance(result, list):
        out.issues.append(f"result is not a list ({type(result).__name__})")
        return out
    choices: list[tuple[str, list[Any]]] = []
    for i, item in enumerate(result):
        if not isinstance(item, dict):
            out.issues.append(f"result[{i}] is not an object")
            continue
        kind, from_name = item.get("type"), item.get("from_name")
        rid = str(item.get("id", f"result[{i}]"))
        value = item.get("value") if isinstance(item.get("value"), dict) else {}
        if kind == "relation":
            continue  # a drawn relation arrow between regions: carries no geometry we use
        if kind == "keypointlabels" and from_name in (KEYPOINT_NAME, ADDED_KEYPOINT_NAME):
            labels = value.get("keypointlabels")
            if not isinstance(labels, list) or len(labels) != 1:
                out.issues.append(f"keypoint region {rid} has labels {labels!r}, expected exactly one")
                continue
            label = labels[0]
            if not isinstance(label, str) or label not in names:
                out.issues.append(f"unknown label {label!r} (region {rid})")
                continue
            size = _original_size(item, f"keypoint {label!r} (region {rid})", out.issues)
            px, py = _number(value.get("x")), _number(value.get("y"))
            if px is None or py is None:
                out.issues.append(f"keypoint {label!r} (region {rid}): x / y are not finite numbers")
                continue
            if size is None:
                continue
            if not (-_PERCENT_TOLERANCE <= px <= 100 + _PERCENT_TOLERANCE) or not (
                -_PERCENT_TOLERANCE <= py <= 100 + _PERCENT_TOLERANCE
            ):
                out.issues.append(f"keypoint {label!r} (region {rid}) at x={px:g}%, y={py:g}% is outside the image")
                continue
            px, py = min(max(px, 0.0), 100.0), min(max(py, 0.0), 100.0)
            point = (label, _px(percent_to_px(px, size[0])), _px(percent_to_px(py, size[1])))
            if from_name == ADDED_KEYPOINT_NAME:
                out.added_points.append(point)
            else:
                out.points[rid] = point
        elif kind == "rectanglelabels" and from_name == BOX_NAME:
            labels = value.get("rectanglelabels")
            if labels not in ([PERSON_LABEL], [ADDED_LABEL]):
                out.issues.append(
                    f"box region {rid} has labels {labels!r}, expected [{PERSON_LABEL!r}] or [{ADDED_LABEL!r}]"
                )
                continue
            size = _original_size(item, f"box (region {rid})", out.issues)
            geometry = [_number(value.get(key)) for key in ("x", "y", "width", "height")]
            if any(g is None for g in geometry):
                out.issues.append(f"box (region {rid}): x / y / width / height are not finite numbers")
                continue
            if _number(value.get("rotation")) not in (None, 0.0):
                out.issues.append(f"box (region {rid}) is rotated by {value.get('rotation')} degrees")
                continue
            if size is None:
                continue
            bx, by, bw, bh = (float(g) for g in geometry)  # type: ignore[arg-type]  # None excluded above
            if bw <= 0 or bh <= 0:
                out.issues.append(f"box (region {rid}) has width {bw:g}% and height {bh:g}%")
                continue
            limit = 100 + _PERCENT_TOLERANCE
            if not (-limit <= bx <= limit and -limit <= by <= limit and bw <= 2 * limit and bh <= 2 * limit):
                out.issues.append(f"box (region {rid}) at x={bx:g}%, y={by:g}%, {bw:g}% x {bh:g}% is off the image")
                continue
            w, h = size
            box = (_px(percent_to_px(bx, w)), _px(percent_to_px(by, h)), _px(bw * w / 100.0), _px(bh * h / 100.0))
            (out.added_boxes if labels == [ADDED_LABEL] else out.boxes).append(box)
        elif kind == "choices" and from_name == OCCLUDED_NAME:
            picked = value.get("choices")
            choices.append((rid, picked if isinstance(picked, list) else [picked]))
        else:
            out.issues.append(f"unknown control {from_name!r} of type {kind!r} (region {rid})")
    for rid, picked in choices:
        unknown = [c for c in picked if c != OCCLUDED_CHOICE]
        if unknown:
            out.issues.append(f"unknown choice {unknown[0]!r} (region {rid})")
        elif rid in out.points:
            if picked:
                out.occluded_ids.add(rid)
        elif rid not in _box_ids(result):  # an 'occluded' choice on the box means nothing for COCO: ignored
            out.issues.append(f"'occluded' choice for region {rid}, which is not a keypoint of this annotation")
    counts = Counter(label for label, _, _ in out.points.values())
    for label, n in sorted(counts.items()):
        if n > 1:
            out.issues.append(f"label {label!r} placed {n} times")
    if len(out.boxes) > 1:
        out.issues.append(f"{len(out.boxes)} person boxes, expected one")
    return out


def _box_ids(result: list[Any]) -> set[str]:
    return {
        str(item.get("id"))
        for item in result
        if isinstance(item, dict) and item.get("type") == "rectanglelabels" and item.get("from_name") == BOX_NAME
    }


# An annotator "moved" a pre-placed keypoint when its final place is farther from the prediction than this
# per-keypoint OKS (exp(-d^2 / (2 s^2 k^2)), s^2 the box area, k = 2 sigma of the keypoint): 0.5 is about 1.2 sigma
# of COCO's own spread between human annotators, a correction no one would make by hand-jitter alone.
MOVED_BELOW_OKS = 0.5


def _prediction_result(task: Mapping[str, Any], annotation: Mapping[str, Any]) -> list | None:
    """The result of the prediction the annotator started from: the annotation's embedded ``prediction`` (JSON
    export), the task's prediction named by ``parent_prediction``, or the task's only prediction; None when unknown."""
    embedded = annotation.get("prediction")
    if isinstance(embedded, dict) and isinstance(embedded.get("result"), list):
        return embedded["result"]
    listed = task.get("predictions") if isinstance(task.get("predictions"), list) else []
    predictions = [p for p in listed if isinstance(p, dict) and isinstance(p.get("result"), list)]
    parent = annotation.get("parent_prediction")
    for p in predictions:
        if parent is not None and p.get("id") == parent:
            return p["result"]
    return predictions[0]["result"] if len(predictions) == 1 else None


def keypoint_effort(
    predicted: Mapping[str, tuple[float, float]],
    final: Sequence[float],
    bbox: Sequence[float],
    schema: KeypointSchema,
) -> tuple[int, int, int]:
    """(moved, added, deleted) keypoints between what was pre-placed and what the annotator submitted.

    ``predicted``: keypoint name -> (x, y) image px of the pre-placed points (absent = not pre-placed); ``final``: the
    submitted COCO (3K,) x, y, v list; ``bbox``: the person box (x, y, w, h), whose area is the OKS scale. Moved: placed
    in both, per-keypoint OKS below ``MOVED_BELOW_OKS``; added: labeled without a pre-placed point; deleted:
    pre-placed, not labeled. A perfect pre-annotation costs (0, 0, 0); one with every point far off costs (K, 0, 0).
    """
    area = max(float(bbox[2]) * float(bbox[3]), 1.0)
    moved = added = deleted = 0
    for j, name in enumerate(schema.names):
        x, y, v = final[3 * j : 3 * j + 3]
        guess = predicted.get(name)
        if v > 0 and guess is None:
            added += 1
        elif v <= 0 and guess is not None:
            deleted += 1
        elif v > 0 and guess is not None:
            d2 = (x - guess[0]) ** 2 + (y - guess[1]) ** 2
            kappa = 2 * float(schema.sigma_array[j])
            moved += math.exp(-d2 / (2 * area * kappa**2)) < MOVED_BELOW_OKS
    return int(moved), added, deleted


def annotation_to_correction(
    task: Mapping[str, Any],
    annotation: Mapping[str, Any],
    schema: KeypointSchema,
    *,
    annotators: Mapping[int, str] | None = None,
    model_version: str | None = None,
    origin: str | None = None,
) -> Correction | Skip:
    """One Label Studio annotation of one of our tasks -> a Correction, or a Skip (skipped / no person).

    ``task`` and ``annotation`` are plain dicts as the API or a JSON export gives them (task: ``id``, ``data`` with
    ``instance_id`` / ``image_id`` / ``bbox``, optionally ``predictions``; annotation: ``id``, ``result``,
    ``was_cancelled``, ``completed_by``, ``created_at`` / ``updated_at``, optionally ``parent_prediction``).
    ``annotators`` maps user ids to emails; ``model_version`` overrides ``annotation_model_version``.
    ``completed_at`` / ``at`` is the annotation's ``updated_at`` (the version read), else ``created_at``.
    ``origin`` (where the task lives: server and project, or the inbox file) and the task's ``data.image_file`` /
    ``data.bbox`` go into the record as its provenance (pipeline/corrections.py).

    Raises AnnotationError, whose ``problem`` lists every issue found (unknown label or control, point outside the
    image, missing original size, duplicate label, several boxes, a task without ``instance_id``), each message
    starting with ``task <id>, annotation <id>:``.

    Long because every rule that turns one annotation into a record (skip, no person, box, keypoints, effort) is
    read in the order it applies.
    """
    task_id = _task_int(task, "id")
    annotation_id = _task_int(annotation, "id")
    data = task.get("data") if isinstance(task.get("data"), dict) else {}
    issues: list[str] = []

    def fail(found: list[str]) -> AnnotationError:
        message = f"task {task_id}, annotation {annotation_id}: " + "; ".join(found)
        return AnnotationError(AnnotationProblem(task_id=task_id, annotation_id=annotation_id, message=message))

    instance_id = _task_int(data, "instance_id")
    if instance_id is None:
        raise fail([_NOT_OURS])
    annotator = _annotator(annotation.get("completed_by"), annotators)
    when = _utc(annotation.get("updated_at")) or _utc(annotation.get("created_at"))
    if when is None:
        raise fail(["no valid updated_at / created_at time"])

    image_file = data.get("image_file") if isinstance(data.get("image_file"), str) else None
    task_box = data.get("bbox")
    task_numbers = [_number(v) for v in task_box] if isinstance(task_box, list) and len(task_box) == 4 else []
    instance_bbox = tuple(task_numbers) if len(task_numbers) == 4 and None not in task_numbers else None
    provenance = {"origin": origin, "image_file": image_file, "instance_bbox": instance_bbox}

    if annotation.get("was_cancelled"):
        return Skip(instance_id, task_id, annotation_id, annotator, when, "skipped", **provenance)

    regions = _read_regions(annotation.get("result"), set(schema.names))
    issues.extend(regions.issues)
    if issues:
        raise fail(issues)
    if not regions.boxes and not regions.points:
        return Skip(instance_id, task_id, annotation_id, annotator, when, "no_person", **provenance)

    image_id = _task_int(data, "image_id")
    if image_id is None:
        issues.append("the task has no integer data.image_id")
    if regions.boxes:
        bbox = regions.boxes[0]
    elif instance_bbox is None:
        issues.append("no person box in the annotation and no valid data.bbox in the task")
        bbox = (0.0, 0.0, 0.0, 0.0)
    else:
        bbox = instance_bbox
    if issues:
        raise fail(issues)

    index = {name: j for j, name in enumerate(schema.names)}
    keypoints = [0.0] * (3 * schema.num_keypoints)
    for rid, (label, x, y) in regions.points.items():
        j = index[label]
        keypoints[3 * j : 3 * j + 3] = [x, y, 1 if rid in regions.occluded_ids else 2]
    effort: dict[str, int | None] = {"moved_keypoints": None, "added_keypoints": None, "deleted_keypoints": None}
    started_from = _prediction_result(task, annotation)
    if started_from is not None:
        guess = _read_regions(started_from, set(schema.names))
        if not guess.issues:
            points = {label: (x, y) for label, x, y in guess.points.values()}
            moved, added, deleted = keypoint_effort(points, keypoints, bbox, schema)
            effort = {"moved_keypoints": moved, "added_keypoints": added, "deleted_keypoints": deleted}
    return Correction(
        instance_id=instance_id,
        image_id=image_id,  # type: ignore[arg-type]  # None reported above
        bbox=bbox,
        keypoints=tuple(keypoints),
        task_id=task_id,
        annotation_id=annotation_id,
        annotator=annotator,
        completed_at=when,
        model_version=model_version if model_version is not None else annotation_model_version(task, annotation),
        **provenance,
        **effort,
    )


def added_people(
    task: Mapping[str, Any],
    annotation: Mapping[str, Any],
    schema: KeypointSchema,
    *,
    annotators: Mapping[int, str] | None = None,
    model_version: str | None = None,
    origin: str | None = None,
) -> list[Correction] | AnnotationProblem:
    """The people an annotator added in a task ("missed person" boxes, their keypoints from ``kp_missed``), one
    Correction each with ``added`` set; an empty list when there are none.

    A missed person's keypoints are the ``kp_missed`` points inside its box (the smallest box when boxes overlap);
    a point inside no such box, or one label twice in one box, is an AnnotationProblem naming task and annotation,
    as are the main person's problems (``annotation_to_correction`` reports those for the task's own person).
    Added people keep visibility 2 (the ``occluded`` choice is the task person's).
    """
    task_id, annotation_id = _task_int(task, "id"), _task_int(annotation, "id")
    data = task.get("data") if isinstance(task.get("data"), dict) else {}
    if annotation.get("was_cancelled"):
        return []
    regions = _read_regions(annotation.get("result"), set(schema.names))
    if regions.issues or (not regions.added_boxes and not regions.added_points):
        return []  # an annotation with problems is reported once, by annotation_to_correction
    issues: list[str] = []
    image_file = data.get("image_file") if isinstance(data.get("image_file"), str) else None
    image_id = _task_int(data, "image_id")
    when = _utc(annotation.get("updated_at")) or _utc(annotation.get("created_at"))
    if image_file is None or image_id is None or when is None:
        issues.append("a missed person needs the task's data.image_file and data.image_id and the annotation's time")
    index = {name: j for j, name in enumerate(schema.names)}
    people = [[0.0] * (3 * schema.num_keypoints) for _ in regions.added_boxes]
    for label, x, y in regions.added_points:
        inside = [
            (w * h, i)
            for i, (bx, by, w, h) in enumerate(regions.added_boxes)
            if bx <= x <= bx + w and by <= y <= by + h
        ]
        if not inside:
            issues.append(f"missed-person keypoint {label!r} at ({x:g}, {y:g}) px is inside no {ADDED_LABEL!r} box")
            continue
        person, j = people[min(inside)[1]], index[label]
        if person[3 * j + 2] > 0:
            issues.append(f"missed-person keypoint {label!r} placed twice in one {ADDED_LABEL!r} box")
        person[3 * j : 3 * j + 3] = [x, y, 2]
    if issues:
        message = f"task {task_id}, annotation {annotation_id}: " + "; ".join(issues)
        return AnnotationProblem(task_id=task_id, annotation_id=annotation_id, message=message)
    return [
        Correction(
            instance_id=added_instance_id(image_file, box),  # type: ignore[arg-type]  # None reported above
            image_id=image_id,  # type: ignore[arg-type]
            bbox=box,
            keypoints=tuple(keypoints),
            task_id=task_id,
            annotation_id=annotation_id,
            annotator=_annotator(annotation.get("completed_by"), annotators),
            completed_at=when,  # type: ignore[arg-type]
            model_version=model_version if model_version is not None else annotation_model_version(task, annotation),
            origin=origin,
            image_file=image_file,
            instance_bbox=box,
            added=True,
        )
        for box, keypoints in zip(regions.added_boxes, people, strict=True)
    ]


def convert_annotation(
    task: Mapping[str, Any],
    annotation: Mapping[str, Any],
    schema: KeypointSchema,
    *,
    annotators: Mapping[int, str] | None = None,
    model_version: str | None = None,
    origin: str | None = None,
) -> Correction | Skip | AnnotationProblem:
    """``annotation_to_correction`` that returns the AnnotationProblem instead of raising it."""
    try:
        return annotation_to_correction(
            task, annotation, schema, annotators=annotators, model_version=model_version, origin=origin
        )
    except AnnotationError as exc:
        return exc.problem
    except ValueError as exc:  # a record the store would refuse (a field of the wrong type): a problem too
        task_id, annotation_id = _task_int(task, "id"), _task_int(annotation, "id")
        return AnnotationProblem(
            task_id=task_id, annotation_id=annotation_id, message=f"task {task_id}, annotation {annotation_id}: {exc}"
        )


@dataclass
class TaskRecords:
    """What a set of tasks holds: corrections, skips and problems (each sorted), and the pending instance ids."""

    corrections: list[Correction] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    problems: list[AnnotationProblem] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)


def collect_task_records(
    tasks: Iterable[Mapping[str, Any]],
    schema: KeypointSchema,
    *,
    annotators: Mapping[int, str] | None = None,
    model_version_of: Callable[[Mapping[str, Any], Mapping[str, Any]], str | None] | None = None,
    origin: str | None = None,
) -> TaskRecords:
    """Turn tasks with their ``annotations`` (API dicts or a JSON export) into records.

    Per task: every completed annotation (``was_cancelled`` false), ordered by id, is converted: several annotators'
    work is all kept, and merge picks the latest. No completed annotation but a skipped one: one Skip. Neither: the
    instance is pending. A task whose completed annotations are all problems stays pending too (the annotator has to
    fix it in Label Studio). Annotations of a task without ``data.instance_id`` (not
    exported by poseloop) are problems; such tasks without annotations are ignored.
    ``model_version_of(task, annotation)`` resolves the model version (default ``annotation_model_version``);
    ``origin`` is written into every record.
    """
    out = TaskRecords()
    resolve = model_version_of or annotation_model_version
    pending: set[int] = set()
    for task in tasks:
        annotations = [a for a in task.get("annotations") or () if isinstance(a, dict)]
        annotations.sort(key=lambda a: (a.get("id") is None, a.get("id") or 0))
        data = task.get("data") if isinstance(task.get("data"), dict) else {}
        instance_id = _task_int(data, "instance_id")
        if instance_id is None:
            for a in annotations:
                message = f"task {task.get('id')}, annotation {a.get('id')}: {_NOT_OURS}"
                out.problems.append(
                    AnnotationProblem(task_id=_task_int(task, "id"), annotation_id=_task_int(a, "id"), message=message)
                )
            continue
        completed = [a for a in annotations if not a.get("was_cancelled")]
        cancelled = [a for a in annotations if a.get("was_cancelled")]
        if completed:
            # Every completed annotation is human work and is kept, each under its own annotation id (a second
            # annotator, a reviewer's version); merge decides which one labels the person (the later wins, the
            # instance is counted as a conflict).
            converted = False
            for annotation in completed:
                record = convert_annotation(
                    task,
                    annotation,
                    schema,
                    annotators=annotators,
                    model_version=resolve(task, annotation),
                    origin=origin,
                )
                _add(out, record)
                converted |= not isinstance(record, AnnotationProblem)
                added = added_people(
                    task,
                    annotation,
                    schema,
                    annotators=annotators,
                    model_version=resolve(task, annotation),
                    origin=origin,
                )
                for person in [added] if isinstance(added, AnnotationProblem) else added:
                    _add(out, person)
            if not converted:
                pending.add(instance_id)
        elif cancelled:
            _add(out, convert_annotation(task, cancelled[0], schema, annotators=annotators, origin=origin))
        else:
            pending.add(instance_id)
    out.corrections.sort(key=lambda c: (c.instance_id, c.task_id or 0, c.annotation_id or 0))
    out.skips.sort(key=lambda s: (s.instance_id, s.task_id or 0, s.annotation_id or 0))
    out.problems.sort(key=lambda p: (p.task_id or 0, p.annotation_id or 0, p.message))
    out.pending = sorted(pending)
    return out


def _add(out: TaskRecords, record: Correction | Skip | AnnotationProblem) -> None:
    if isinstance(record, Correction):
        out.corrections.append(record)
    elif isinstance(record, Skip):
        out.skips.append(record)
    else:
        out.problems.append(record)


def parse_export_file(
    path: str | Path, schema: KeypointSchema
) -> tuple[list[Correction], list[Skip], list[AnnotationProblem]]:
    """Records of a Label Studio JSON export (``[{"id", "data", "annotations": [...], "predictions": [...]}, ...]``),
    e.g. a file dropped into ``data/inbox/``. Same rules as ``collect_task_records``; the annotator is the user object's
    email when the export has one, else ``user <id>``. Raises ValueError when the file is not such a list.
    """
    path = Path(path)
    try:
        tasks = read_json(path)
    except (OSError, JsonFileError) as exc:
        raise ValueError(f"not a Label Studio JSON export: {exc}") from exc
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise ValueError(f"{path}: not a Label Studio JSON export (expected a list of task objects)")
    records = collect_task_records(tasks, schema, origin=f"inbox:{path.name}")
    return records.corrections, records.skips, records.problems
