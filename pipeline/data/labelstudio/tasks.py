"""Person instances -> Label Studio tasks: the task format and its coordinates. Pure functions, no network.

Coordinates. poseloop keypoints are image pixels with integer pixel centres (pixel ``i`` covers ``[i - 0.5, i + 0.5)``,
see ``pipeline.data.transforms``); the image spans ``[-0.5, W - 0.5]``. Label Studio stores region positions in
percent of the original image, 0 % being the image's left / top edge and 100 % its right / bottom edge. So::

    percent = (x + 0.5) * 100 / W          x = percent * W / 100 - 0.5

for keypoints and for a box's top-left corner (one affine map for every point); box widths and heights are lengths,
``w * 100 / W``. Percentages are never rounded (Label Studio keeps the floats as sent; its own COCO export rounds to
whole pixels and loses visibility 1, which is why we never use it); pixels read back are rounded to 1e-6 px, so
px -> percent -> px agrees to 1e-6 px.

Task (``instance_to_task``)::

    {"data": {"image": "/data/local-files/?d=<path relative to the document root>", "instance_id": 7, "image_id": 3,
              "bbox": [x, y, w, h],
              "uncertainty": 0.71, "note": "Model confidence 62%. Check or place first: left wrist (least sure)."},
     "predictions": [{"model_version": "poseloop-pose/3", "score": <mean keypoint confidence>, "result": [
         {"id": "box", "type": "rectanglelabels", "from_name": "box", ..., "value": {"x", "y", "width", "height",
          "rotation": 0, "rectanglelabels": ["person"]}},
         {"id": "kp0", "parentID": "box", "type": "keypointlabels", "from_name": "kp", "score": 0.93, ...,
          "value": {"x", "y", "width": <point size %>, "keypointlabels": ["nose"]}},
         {"id": "kp3", "type": "choices", "from_name": "occluded",
          "value": {"x", "y", "width", "choices": ["occluded"]}}
     ]}]}

``parentID`` nests the keypoints under their box in Label Studio's region list (the frontend of 1.23 reads and writes
it); every item carries ``original_width`` / ``original_height`` / ``image_rotation``. A per-region choice shares the
id of its keypoint region, as the frontend writes it.

The annotations that come back are read by ``pipeline.data.labelstudio.annotations``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.data.labelstudio.config import (
    BOX_NAME,
    IMAGE_NAME,
    KEYPOINT_NAME,
    NOTE_FIELD,
    OCCLUDED_CHOICE,
    OCCLUDED_NAME,
    PERSON_LABEL,
)
from pipeline.data.labelstudio.coordinates import px_to_percent
from pipeline.data.pool_predictions import NOBODY_FOUND_QUEUE, list_column, stand_in_rows
from pipeline.keypoints import KeypointSchema

log = logging.getLogger(__name__)

LOCAL_FILES_PREFIX = "/data/local-files/?d="
BOX_REGION_ID = "box"
POINT_SIZE_PX = 3.0  # largest drawn keypoint; Label Studio stores it as value.width in percent of the image width
# A keypoint is drawn at this share of the person's size (sqrt of the box area), at most POINT_SIZE_PX: on a
# 19x41 px person fixed 3 px dots covered the body (issue #25).
POINT_SIZE_OF_BOX = 0.03
UNSURE_BELOW = 0.5  # keypoint confidence under which the task's note names the keypoint to check first
UNSURE_NAMED = 4  # at most this many named, least sure first


# ------------------------------------------------------------------------------------------------------ coordinates


def image_url(relative_path: str | PurePath) -> str:
    """The URL Label Studio serves a local file under: ``/data/local-files/?d=<path relative to the document root>``.

    The path is POSIX and percent-quoted (a space or ``&`` in a file name would otherwise end the parameter).
    """
    rel = PurePath(relative_path).as_posix()
    if rel.startswith("/") or rel.startswith("../") or "/../" in rel:
        raise ValueError(f"image path must be relative to the document root and inside it, got {rel!r}")
    return LOCAL_FILES_PREFIX + quote(rel, safe="/")


# ------------------------------------------------------------------------------------------------- building results


def _region_base(region_id: str, from_name: str, kind: str, width: int, height: int) -> dict:
    return {
        "id": region_id,
        "from_name": from_name,
        "to_name": IMAGE_NAME,
        "type": kind,
        "original_width": int(width),
        "original_height": int(height),
        "image_rotation": 0,
    }


def box_region(bbox: Sequence[float], width: int, height: int, region_id: str = BOX_REGION_ID) -> dict:
    """A ``person`` rectangle result item for a box ``(x, y, w, h)`` in image pixels, clipped to the image.

    Clipped because the server validates prediction geometry against [0, 100] % and, in ``import_predictions``,
    silently drops a prediction that fails (1.23.2: only its log says so).
    """
    x, y, w, h = (float(v) for v in bbox)
    x0, x1 = (min(max(v, -0.5), width - 0.5) for v in (x, x + w))
    y0, y1 = (min(max(v, -0.5), height - 0.5) for v in (y, y + h))
    item = _region_base(region_id, BOX_NAME, "rectanglelabels", width, height)
    item["value"] = {
        "x": px_to_percent(x0, width),
        "y": px_to_percent(y0, height),
        "width": (x1 - x0) * 100.0 / width,
        "height": (y1 - y0) * 100.0 / height,
        "rotation": 0,
        "rectanglelabels": [PERSON_LABEL],
    }
    return item


def keypoint_regions(
    xy: np.ndarray,
    visibility: np.ndarray,
    width: int,
    height: int,
    schema: KeypointSchema,
    scores: np.ndarray | None = None,
    parent_id: str | None = BOX_REGION_ID,
    point_size_px: float = POINT_SIZE_PX,
) -> list[dict]:
    """Result items for the keypoints of one instance.

    ``xy`` (K, 2) image pixels, ``visibility`` (K,) COCO flags: 0 -> no item, 1 -> keypoint + ``occluded`` choice,
    2 -> keypoint. ``scores`` (K,) per-point confidence, written as the item's ``score`` clipped to [0, 1] (a heatmap
    peak can overshoot 1, and Label Studio shows the score as a percentage), or None. Points outside the image are
    clipped onto its border so the annotator sees (and fixes) them instead of Label Studio hiding them.
    ``point_size_px``: the drawn size of each point (``point_size``).
    """
    items: list[dict] = []
    point_width = point_size_px * 100.0 / width
    for j, name in enumerate(schema.names):
        v = int(visibility[j])
        if v <= 0:
            continue
        px = min(max(float(xy[j, 0]), -0.5), width - 0.5)
        py = min(max(float(xy[j, 1]), -0.5), height - 0.5)
        geometry = {"x": px_to_percent(px, width), "y": px_to_percent(py, height), "width": point_width}
        region_id = f"kp{j}"
        item = _region_base(region_id, KEYPOINT_NAME, "keypointlabels", width, height)
        if parent_id is not None:
            item["parentID"] = parent_id
        item["value"] = {**geometry, "keypointlabels": [name]}
        if scores is not None and math.isfinite(float(scores[j])):
            item["score"] = min(max(float(scores[j]), 0.0), 1.0)
        items.append(item)
        if v == 1:
            choice = _region_base(region_id, OCCLUDED_NAME, "choices", width, height)
            choice["value"] = {**geometry, "choices": [OCCLUDED_CHOICE]}
            items.append(choice)
    return items


def point_size(bbox: Sequence[float]) -> float:
    """The drawn keypoint size in pixels for a person boxed ``(x, y, w, h)``: ``POINT_SIZE_OF_BOX`` of the person's
    size, between 1 px and ``POINT_SIZE_PX``, so small people stay visible under their dots."""
    w, h = (max(float(v), 0.0) for v in bbox[2:4])
    return min(max(POINT_SIZE_OF_BOX * math.sqrt(w * h), 1.0), POINT_SIZE_PX)


def task_note(scores: np.ndarray | None, schema: KeypointSchema, queue: str | None = None) -> str:
    """The line an annotator reads above the image (the config's ``$note``): the model's confidence and the
    keypoints it is least sure of, which the eye should check first. ``scores`` (K,) per-keypoint confidence (NaN:
    no prediction) or None."""
    parts = []
    if queue == NOBODY_FOUND_QUEUE:
        return (
            "The model found nobody in this image. Someone there? Fit the magenta box to one person and place their "
            "keypoints; draw a missed person box for anyone else. Nobody? Delete the box and Submit."
        )
    if queue == "review":
        parts.append("The model finds this person very hard: label them if you can, else Skip.")
    finite = None if scores is None else np.isfinite(scores)
    if scores is not None and finite.any():
        confidence = np.clip(scores[finite], 0.0, 1.0).mean()
        unsure = [j for j in np.argsort(scores, kind="stable") if finite[j] and scores[j] < UNSURE_BELOW]
        names = ", ".join(schema.names[j].replace("_", " ") for j in unsure[:UNSURE_NAMED])
        parts.append(f"Model confidence {confidence:.0%}.")
        # a keypoint too unsure to pre-place (min_score) is named too: it is to be placed, not checked
        parts.append(
            f"Check or place first: {names} (least sure)." if names else "The model is fairly sure of every keypoint."
        )
    return " ".join(parts) or "Check every keypoint."


def _keypoint_arrays(keypoints: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(xy (K, 2), visibility (K,)) from a flat 3K COCO list, a flat 2K list, (K, 2) or (K, 3), or None.

    Without flags, a finite point is visible (2) and a NaN point is absent (0).
    """
    if keypoints is None:
        return np.zeros((k, 2)), np.zeros(k, dtype=np.int64)
    arr = np.asarray(keypoints, dtype=np.float64).reshape(-1)
    if arr.size == 3 * k:
        arr = arr.reshape(k, 3)
        vis = np.where(np.isfinite(arr[:, 2]), arr[:, 2], 0).astype(np.int64)
        xy = arr[:, :2]
    elif arr.size == 2 * k:
        xy = arr.reshape(k, 2)
        vis = np.full(k, 2, dtype=np.int64)
    else:
        raise ValueError(f"keypoints: expected 2*{k} (x, y) or 3*{k} (x, y, v) values, got {arr.size}")
    vis[~np.isfinite(xy).all(axis=1)] = 0
    return np.nan_to_num(xy), vis


def instance_to_task(
    *,
    instance_id: int,
    image_id: int,
    image_path: str | PurePath,
    width: int,
    height: int,
    bbox: Sequence[float],
    keypoints: Any,
    schema: KeypointSchema,
    model_version: str,
    uncertainty: float,
    scores: Sequence[float] | np.ndarray | None = None,
    min_score: float = 0.0,
    image_file: str | PurePath | None = None,
    queue: str | None = None,
) -> dict:
    """One Label Studio task (one person instance) with its prediction; format in the module docstring.

    Args:
        image_path: the image file relative to Label Studio's document root (``LOCAL_FILES_DOCUMENT_ROOT``), e.g.
            ``prepared/images/000001.jpg`` when the document root is ``data/``.
        width, height: the image size in pixels (pool.json's ``images``).
        bbox: the person box ``(x, y, w, h)`` in image pixels.
        keypoints: predicted keypoints in image pixels: a flat ``2K`` list (selection.parquet's column), ``(K, 2)``,
            or COCO ``3K`` with flags (v=0 -> not pre-placed, v=1 -> pre-placed as occluded). NaN = no prediction.
            None: the task gets the box only.
        scores: ``(K,)`` per-keypoint confidence, written as each keypoint's ``score`` (clipped to [0, 1]); their
            mean is the prediction's ``score`` (the model's confidence), the lowest are named in ``data.note``.
        min_score: keypoints scoring below it are not pre-placed (0 pre-places every predicted keypoint).
        uncertainty: selection's ``uncertainty`` (higher = more uncertain), written as ``data.uncertainty``.
        model_version: the MLflow ``name/version`` that produced the prediction.
        image_file: the image's ``file_name`` in pool.json (e.g. ``images/000001.jpg``); written as
            ``data.image_file`` and carried by the correction, so it lands on this person even if ids change.
        queue: selection.parquet's ``queue`` ("correct", "review" for a person the teacher finds hopeless: look,
            label it if it can be labeled, else skip, or "nobody_found" for an image where the finder found nobody:
            the box is the whole image and keypoints are not pre-placed), written as ``data.queue`` so the data
            manager can filter it.
    """
    k = schema.num_keypoints
    if queue == NOBODY_FOUND_QUEUE:  # the teacher's guess at a whole image: nothing worth pre-placing
        keypoints = scores = None
    xy, vis = _keypoint_arrays(keypoints, k)
    score_arr = None
    if scores is not None:
        score_arr = np.asarray(scores, dtype=np.float64).reshape(-1)
        if score_arr.size != k:
            raise ValueError(f"instance {instance_id}: {score_arr.size} scores for {k} keypoints")
        vis[np.isfinite(score_arr) & (score_arr < min_score)] = 0
    if width <= 0 or height <= 0:
        raise ValueError(f"instance {instance_id}: image size {width}x{height} must be positive")
    box = [float(v) for v in bbox]
    if len(box) != 4:
        raise ValueError(f"instance {instance_id}: bbox needs 4 numbers (x, y, w, h), got {box}")
    result = [box_region(box, width, height)]
    result += keypoint_regions(xy, vis, width, height, schema, score_arr, point_size_px=point_size(box))
    prediction: dict = {"model_version": str(model_version), "result": result}
    if score_arr is not None and np.isfinite(score_arr).any():
        # the model's confidence in this person, which Label Studio shows as the prediction's percentage (and its
        # "uncertainty sampling" serves lowest first); the selection's uncertainty is data.uncertainty
        prediction["score"] = float(np.clip(score_arr[np.isfinite(score_arr)], 0.0, 1.0).mean())
    return {
        "data": {
            IMAGE_NAME: image_url(image_path),
            "instance_id": int(instance_id),
            "image_id": int(image_id),
            "bbox": box,
            # what identifies the person beside our numbering (corrections.py): the prepared file_name of the image
            **({"image_file": str(image_file)} if image_file is not None else {}),  # as pool.json spells it
            **({"queue": str(queue)} if queue is not None else {}),
            "uncertainty": round(float(uncertainty), 4),
            NOTE_FIELD: task_note(score_arr, schema, queue),
        },
        "predictions": [prediction],
    }


def tasks_for_selection(
    selection: pa.Table,
    predictions: pa.Table,
    pending: Sequence[int],
    images: Mapping[int, dict],
    schema: KeypointSchema,
    images_root: Path,
    document_root: Path,
    version: str,
    min_score: float,
) -> list[dict]:
    """Tasks in the order annotators should get them: the selection (selection.parquet) by rank, then the instances
    still ``pending`` from earlier rounds with the current teacher's prediction (pool_predictions.parquet rows).

    ``images``: pool.json's images by id (file_name relative to ``images_root``); image URLs are relative to the
    server's ``document_root``.
    """
    chosen = selection.sort_by("rank")
    chosen_ids = set(chosen.column("instance_id").to_pylist())
    refresh = [i for i in pending if i not in chosen_ids]
    tables = [(chosen, chosen.column("uncertainty").to_numpy())]
    if refresh:
        older = predictions.filter(pc.is_in(predictions.column("instance_id"), value_set=pa.array(refresh, pa.int64())))
        tables.append((older, np.zeros(older.num_rows)))
    out = []
    for table, uncertainty in tables:
        keypoints, scores, boxes = (list_column(table, c) for c in ("keypoints", "scores", "bbox"))
        ids, image_ids = table.column("instance_id").to_pylist(), table.column("image_id").to_pylist()
        queues = table.column("queue").to_pylist() if "queue" in table.column_names else ["correct"] * len(ids)
        # a stand-in still pending from an earlier round keeps its queue
        queues = [NOBODY_FOUND_QUEUE if s else q for q, s in zip(queues, stand_in_rows(table), strict=True)]
        for row, (iid, image_id) in enumerate(zip(ids, image_ids, strict=True)):
            image = images[int(image_id)]
            relative = os.path.relpath(Path(images_root) / image["file_name"], document_root)
            out.append(
                instance_to_task(
                    instance_id=iid,
                    image_id=image_id,
                    image_path=relative,
                    width=int(image["width"]),
                    height=int(image["height"]),
                    bbox=boxes[row],
                    keypoints=keypoints[row],
                    scores=scores[row],
                    schema=schema,
                    model_version=version,
                    uncertainty=float(uncertainty[row]),
                    min_score=min_score,
                    image_file=image["file_name"],
                    queue=queues[row],
                )
            )
    return out
