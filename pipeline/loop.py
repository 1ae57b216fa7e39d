"""One round of the loop in one process, for the benchmarks: select -> annotate -> merge -> train -> score the pool.

Each step is the library function its DVC stage calls, reading and writing the stage's files:

    select_next   (pipeline.selection)   pool_predictions.parquet + store -> selection.parquet   stage select
    annotate      people in Label Studio (export, pull), or ``annotate_from_truth`` here -> new records in the store
    merge_labels  (pipeline.merge)       seed labels + store -> train.json                        stage merge
    train_model   (pipeline.ray_train)   train.json, pool, val -> model/ (weights + model.json)   stage train
    score_pool    (pipeline.pseudolabel) model/ + pool.json -> pool_predictions.parquet           stage pseudolabel

``run_round`` chains them with training and scoring in this process instead of on Ray and the simulated annotator
in place of Label Studio: the steps of ``dvc repro`` minus the process boundaries, and minus what a benchmark sets
itself: warm start is the ``init_weights`` argument (not ``train.warm_start``), and no pseudo_labels.json is written
(``train.pseudo_labels`` has nothing to read). bench/label_efficiency.py and bench/hard_people.py call it round
after round.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import Params
from pipeline.corrections import Correction, Skip, write_pull
from pipeline.data.labelstudio.annotations import keypoint_effort
from pipeline.keypoints import KeypointSchema
from pipeline.labelstudio.oracle import is_unlabelable
from pipeline.merge import merge_labels
from pipeline.model_store import WEIGHTS_FILE
from pipeline.pseudolabel import score_pool
from pipeline.ray_train import TrainedModel, train_model
from pipeline.selection import Selection, select_next


@dataclass(frozen=True)
class RoundFiles:
    """The inputs every round reads, as dvc.yaml names them."""

    seed: Path  # COCO seed labels (data/prepared/labeled.json)
    pool: Path  # COCO pool instances with boxes (data/pool.json)
    val: Path  # COCO val labels (data/prepared/val.json)
    images_root: Path  # the folder the file_names are relative to (data/prepared)
    corrections: Path  # the corrections store (data/corrections): append-only human work
    pending: Path | None = None  # Label Studio's pending tasks (data/labelstudio/pending.json); None: file hand-off

    def train_paths(self, labels: Path) -> dict[str, str]:
        """The ``paths`` training reads (``pipeline.training.load_data``) with ``labels`` as the labeled set."""
        return {
            "labels": str(labels),
            "pool": str(self.pool),
            "val": str(self.val),
            "images_root": str(self.images_root),
        }


def annotate_from_truth(
    chosen: pa.Table,
    truth: dict[int, dict],
    schema: KeypointSchema,
    store: Path,
    at: datetime,
    *,
    model_version: str,
    skip_below_visible: int = 0,
) -> dict[str, int]:
    """The simulated annotator of the file hand-off: answers every row of ``chosen`` (the rows of selection.parquet,
    both queues: ``instance_id`` and, when the model pre-annotated them, ``keypoints``) from ``truth`` (instance id ->
    the pool's true COCO annotation: oracle.json) and writes one pull into ``store`` dated ``at``. A person whose
    truth is unlabelable (``is_unlabelable``: < 3 labeled or < ``skip_below_visible`` clearly visible keypoints) is
    skipped, as a person would; every other one is corrected to the truth. Effort is counted as in Label Studio
    (``keypoint_effort``) against the pre-placed keypoints (every one the model placed; none without the column).
    Returns the counts: tasks, skipped, moved, added, deleted."""
    ids = chosen.column("instance_id").to_pylist()
    shown = chosen.column("keypoints").to_pylist() if "keypoints" in chosen.column_names else [None] * len(ids)
    stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    corrections, skips = [], []
    effort = Counter(tasks=len(ids), skipped=0, moved=0, added=0, deleted=0)
    for iid, placed_xy in zip(ids, shown, strict=True):
        ann = truth[int(iid)]
        if is_unlabelable(ann["keypoints"], min_visible=skip_below_visible):
            skips.append(
                Skip(
                    instance_id=int(iid),
                    task_id=None,
                    annotation_id=None,
                    annotator="oracle",
                    at=stamp,
                    reason="skipped",
                )
            )
            effort["skipped"] += 1
            continue
        xy = np.full((schema.num_keypoints, 2), np.nan) if placed_xy is None else np.asarray(placed_xy, np.float64)
        xy = xy.reshape(-1, 2)  # (K, 2) image px, NaN where the model placed nothing
        placed = {
            n: (float(x), float(y)) for n, (x, y) in zip(schema.names, xy, strict=True) if np.isfinite([x, y]).all()
        }
        moved, added, deleted = keypoint_effort(placed, ann["keypoints"], ann["bbox"], schema)
        effort.update(moved=moved, added=added, deleted=deleted)
        corrections.append(
            Correction(
                instance_id=int(iid),
                image_id=int(ann["image_id"]),
                bbox=tuple(ann["bbox"]),
                keypoints=tuple(ann["keypoints"]),
                task_id=None,
                annotation_id=None,
                annotator="oracle",
                completed_at=stamp,
                model_version=model_version,
            )
        )
    write_pull(store, corrections, skips, [], source="inbox:simulated-annotator", now=at)
    return dict(effort)


@dataclass(frozen=True)
class Round:
    """What one ``run_round`` did; its files are in ``folder``."""

    folder: Path
    selection: Selection | None  # None in round 0: no teacher to select with yet
    effort: dict[str, int] | None  # what ``annotate`` returned
    merge_report: dict
    trained: TrainedModel
    scores: pd.DataFrame | None  # the new model's pool predictions, scalar columns (None: the pool was not scored)
    table: pa.Table | None  # the whole pool predictions table

    @property
    def labels(self) -> Path:
        return self.folder / "train.json"

    @property
    def predictions(self) -> Path:
        return self.folder / "pool_predictions.parquet"

    @property
    def selected(self) -> Path:
        return self.folder / "selection.parquet"

    @property
    def weights(self) -> Path:
        return self.trained.model_dir / WEIGHTS_FILE


def run_round(
    params: Params,
    files: RoundFiles,
    folder: Path,
    *,
    teacher: Round | None = None,
    annotate: Callable[[pa.Table], dict[str, int]] | None = None,
    init_weights: Path | None = None,
    select_seed: int | None = None,
    budget: int | None = None,
    score: bool = True,
) -> Round:
    """One round in this process, its files in ``folder``. With a ``teacher`` (the previous round): select from the
    teacher's pool predictions (``params.select``; ``select_seed`` / ``budget`` override its seed and budget) ->
    ``annotate`` (given the selection.parquet table; it writes the answers into ``files.corrections``) -> merge ->
    train (from ``init_weights`` when given) -> score the pool with the new model, unless ``score`` is False (a last
    round nobody selects from). Without a teacher (round 0): merge -> train -> score."""
    folder.mkdir(parents=True, exist_ok=True)
    selection = effort = None
    if teacher is not None:
        if teacher.scores is None:
            raise ValueError(f"{teacher.folder}: the teacher round did not score the pool (score=False)")
        selection, _, _ = select_next(
            params.select,
            teacher.predictions,
            [teacher.labels],
            files.corrections,
            files.pending,
            folder / "selection.parquet",
            seed=select_seed,
            budget=budget,
            no_person_ids=teacher.merge_report.get("no_person_ids", []),
        )
        if annotate is not None:
            effort = annotate(pq.read_table(folder / "selection.parquet"))
    _, report = merge_labels(files.seed, files.pool, files.corrections, folder / "train.json")
    trained = train_model(params, files.train_paths(folder / "train.json"), folder / "model", init_weights=init_weights)
    scores = table = None
    if score:
        _, scores, table = score_pool(
            params, trained.model_dir, files.pool, files.images_root, folder / "pool_predictions.parquet", on_ray=False
        )
    return Round(folder, selection, effort, report, trained, scores, table)
