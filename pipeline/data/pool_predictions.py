"""The pool predictions table, ``artifacts/pool_predictions.parquet``: one contract, one module.

The pseudolabel stage writes it (``pipeline.pseudolabel``: the teacher over the pool on Ray Data); the select stage
ranks its rows (``pipeline.selection``), the export stage pre-annotates tasks with them, ``export-labels --format
sleap`` writes them as predicted instances, and the benchmarks read it. Each of those imports this module, and only
this module knows the columns.

One row per pool instance; N rows, K keypoints:

=================== ===================================== ====================================================
column              type                                  meaning
=================== ===================================== ====================================================
instance_id         int64                                 the pool annotation's id (pool.json)
image_id            int64                                 its image
bbox                fixed list<float64>[4]                the person's box, x, y, w, h image px
keypoints           fixed list<float64>[2K]               predicted keypoints, image px, x0, y0, x1, y1, ...
scores              fixed list<float32>[K]                per-keypoint score (NaN where the image is unreadable)
response            float64 (null: absent)                mean heatmap peak (ASLA: its keypoint scores)
min_response        float64                               lowest heatmap peak
sahr_sigma          float64 (null without a SAHR head)    mean effective SAHR sigma, heatmap px
difficulty          float64                               adaptive-mask difficulty, 1 - easy / K
flip_disagreement   float64 (null without flip test)      plain vs flipped prediction, box units
detection_score     float64 (null: the box was given)     the instance finder's score of a found person; 0: the
                                                          whole image of an image where it found nobody, a
                                                          stand-in for a person to look (``nobody_found``)
keypoint_jump       float64 (null: not a video frame)     keypoint jump to the nearest person of the video's
                                                          neighbouring drawn frames, box units (``keypoint_jump``)
image_readable      bool                                  false: the image did not decode; signals are null
embedding           fixed list<float32>[C] (absent in     the teacher's backbone features averaged over the
                    files written before it)              crop, C channels (NaN where unreadable): the learned
                                                          embedding of ``select.embedding: features``
=================== ===================================== ====================================================
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.data.coco import coco_results

SIGNAL_COLUMNS = (
    "response",
    "min_response",
    "sahr_sigma",
    "difficulty",
    "flip_disagreement",
    "detection_score",
    "keypoint_jump",
)
# detection_score and keypoint_jump came with the instance finder and video pools: a file written before them reads
# as one without found people or video frames
ADDED_COLUMNS = ("detection_score", "keypoint_jump")
REQUIRED_COLUMNS = ("instance_id", "image_id", "image_readable", *(c for c in SIGNAL_COLUMNS if c not in ADDED_COLUMNS))


# The detection_score of the stand-in the find stage puts on an image where the finder found nobody: the whole image
# as one pool instance, so a person can look at it (select's queue "nobody_found", export's task without keypoints)
# and draw whoever is there. A found person scores above it (pipeline/finding.py rounds up to MIN_FOUND_SCORE).
NOBODY_FOUND_SCORE = 0.0
NOBODY_FOUND_QUEUE = "nobody_found"  # selection.parquet's queue of those stand-ins


def nobody_found(detection_score: np.ndarray) -> np.ndarray:
    """(N,) bool: the rows that are an image's stand-in (``NOBODY_FOUND_SCORE``); ``detection_score`` (N,), NaN for
    a given box."""
    return np.asarray(detection_score, np.float64) == NOBODY_FOUND_SCORE


def stand_in_rows(rows: pa.Table | pd.DataFrame) -> np.ndarray:
    """(N,) bool ``nobody_found`` of a pool predictions table or its scalar frame; all False without a
    ``detection_score`` column (no found people, or a file written before it)."""
    if isinstance(rows, pa.Table):
        if "detection_score" not in rows.column_names:
            return np.zeros(rows.num_rows, bool)
        return nobody_found(rows.column("detection_score").to_numpy(zero_copy_only=False))
    if "detection_score" not in rows:
        return np.zeros(len(rows), bool)
    return nobody_found(rows["detection_score"].to_numpy(np.float64, na_value=np.nan))


def is_stand_in(annotation: dict) -> bool:
    """A pool.json annotation that is the stand-in of an image where the finder found nobody."""
    return annotation.get("detection_score") == NOBODY_FOUND_SCORE


def list_column(table: pa.Table, name: str) -> np.ndarray:
    """A fixed-size list column -> (N, L) numpy array without a Python loop over rows."""
    column = table.column(name).combine_chunks()
    width = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), width)


def to_table(columns: dict[str, np.ndarray]) -> pa.Table:
    """Columns of one batch (``inference.prediction_columns``: (B,) scalars, (B, L) arrays) -> an Arrow table with
    fixed-size list columns for the arrays. NaN in a float column becomes null (an absent signal)."""
    arrays, names = [], []
    for name, values in columns.items():
        values = np.asarray(values)
        if values.ndim == 2:
            flat = pa.array(values.ravel())
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, values.shape[1]))
        elif values.dtype.kind == "f":
            arrays.append(pa.array(values, mask=np.isnan(values)))
        else:
            arrays.append(pa.array(values))
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


def read_pool_predictions(path: Path) -> tuple[pd.DataFrame, pa.Table]:
    """pool_predictions.parquet -> (its scalar columns as a DataFrame, the whole Arrow table for the list columns)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no pool predictions (run the pseudolabel stage first)")
    table = pq.read_table(path)
    missing = set(REQUIRED_COLUMNS) - set(table.column_names)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    for name in ADDED_COLUMNS:
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, pa.float64()))
    scalars = [c for c in table.column_names if not pa.types.is_fixed_size_list(table.schema.field(c).type)]
    return table.select(scalars).to_pandas(), table


def to_coco_results(table: pa.Table, category_id: int) -> list[dict]:
    """``coco.coco_results`` of the readable rows (what evaluation and the benchmarks score)."""
    readable = table.column("image_readable").to_numpy(zero_copy_only=False)
    ids, image_ids = (table.column(c).to_numpy()[readable] for c in ("instance_id", "image_id"))
    keypoints = list_column(table, "keypoints")[readable].reshape(len(ids), -1, 2)
    return coco_results(ids, image_ids, keypoints, list_column(table, "scores")[readable], category_id)


def confident_rows(
    scores: pd.DataFrame, keypoint_scores: np.ndarray, *, min_score: float, min_keypoints: int, max_flip: float
) -> np.ndarray:
    """(N,) bool: instances whose prediction can serve as a label without a person looking at it.

    At least ``min_keypoints`` keypoints score >= ``min_score`` and (where flip test ran) the plain and flipped
    predictions agree within ``max_flip`` box units. ``keypoint_scores`` (N, K).
    """
    confident_keypoints = (np.nan_to_num(keypoint_scores, nan=0.0) >= min_score).sum(axis=1)
    flip = scores["flip_disagreement"].to_numpy(dtype=np.float64, na_value=np.nan)
    agree = np.where(np.isfinite(flip), flip <= max_flip, True)
    readable = scores["image_readable"].to_numpy(bool)
    # a whole image where the finder found nobody is nobody to pseudo-label
    return readable & agree & ~stand_in_rows(scores) & (confident_keypoints >= min_keypoints)


def pseudo_label_coco(
    pool: dict, table: pa.Table, rows: np.ndarray, *, min_score: float, model_version: str | None
) -> dict:
    """COCO keypoints of the confident rows (``source: "pseudo"``): keypoints scoring below ``min_score`` get v=0 so
    training ignores them; the others v=2. Images and categories from pool.json; annotations keep the pool's ids."""
    keypoints = list_column(table, "keypoints")[rows]
    keypoint_scores = list_column(table, "scores")[rows]
    ids = table.column("instance_id").to_numpy()[rows]
    by_id = {int(a["id"]): a for a in pool["annotations"]}
    annotations = []
    for iid, kp, sc in zip(ids, keypoints, keypoint_scores, strict=True):
        base = by_id[int(iid)]
        xy = kp.reshape(-1, 2)
        keep = np.nan_to_num(sc, nan=0.0) >= min_score
        flat = np.concatenate([np.where(keep[:, None], xy, 0.0), np.where(keep, 2.0, 0.0)[:, None]], axis=1)
        annotations.append(
            {
                **base,
                "keypoints": [round(float(v), 3) for v in flat.ravel()],
                "num_keypoints": int(keep.sum()),
                "source": "pseudo",
                "model_version": model_version,
                "score": round(float(np.nanmean(sc)), 4),
            }
        )
    image_ids = {a["image_id"] for a in annotations}
    images = [im for im in pool["images"] if im["id"] in image_ids]
    return {"images": images, "annotations": annotations, "categories": pool["categories"]}
