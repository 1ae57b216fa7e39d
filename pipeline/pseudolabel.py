"""The teacher over the unlabeled pool on Ray Data -> artifacts/pool_predictions.parquet (``score_pool``: the round's
step, on Ray Data or in this process).

Instance rows -> crop tasks (CPU, any node) -> predictor actors
(one model load per actor; GPU when asked) -> the driver streams each batch into one parquet file. The crops and
the predictions never accumulate: memory stays flat however large the pool is.

Per batch it runs what ``pipeline.inference`` runs on any crops (``predict_batch``, ``prediction_columns``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from pipeline.config import Params
from pipeline.data import pool_predictions
from pipeline.data.coco import read_coco
from pipeline.data.images import load_image
from pipeline.data.pool_predictions import read_pool_predictions
from pipeline.data.transforms import sample_transform, warp_crop
from pipeline.inference import normalize_crops, predict_batch, prediction_columns
from pipeline.model_store import DESCRIPTION_FILE, load_model
from pipeline.ray_cluster import resolve_use_gpu, route_ray_logs, verbose
from pipeline.selection import keypoint_jump

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolRun:
    """What ``predict_pool`` did: rows written, wall seconds, and seconds until the first batch came back (actor
    start-up and model load; the rest is the steady state)."""

    rows: int
    seconds: float
    first_batch_seconds: float


def pool_frame(pool: dict, images_root: Path) -> pd.DataFrame:
    """Pool instances (COCO dict) -> one row each: instance_id, image_id, image_path, bbox (4 floats x, y, w, h).

    Sorted by image then instance, so a crop batch reads each image once; boxes with w or h <= 1 are left out (no
    crop exists), as in ``instances_from_coco``.
    """
    files = {int(im["id"]): str(Path(images_root) / im["file_name"]) for im in pool["images"]}
    rows = []
    for ann in pool["annotations"]:
        x, y, w, h = (float(v) for v in ann["bbox"])
        image_id = int(ann["image_id"])
        if w <= 1 or h <= 1 or image_id not in files or ann.get("iscrowd", 0):
            continue
        score = float(ann.get("detection_score", np.nan))
        rows.append((int(ann["id"]), image_id, files[image_id], [x, y, w, h], score))
    frame = pd.DataFrame(rows, columns=["instance_id", "image_id", "image_path", "bbox", "detection_score"])
    return frame.sort_values(["image_id", "instance_id"], kind="stable").reset_index(drop=True)


def crop_batch(batch: dict[str, np.ndarray], input_size: tuple[int, int], padding: float) -> dict[str, np.ndarray]:
    """Ray Data map_batches function: instance rows -> their evaluation crops.

    Adds ``crop`` (B, H, W, 3) uint8 RGB (uint8 keeps the object store traffic 4x below float), ``matrix`` (B, 2, 3)
    image -> crop and ``image_readable`` (B,) bool; an unreadable image gives a zero crop and is logged.
    """
    w, h = input_size
    count = len(batch["instance_id"])
    crops = np.zeros((count, h, w, 3), np.uint8)
    matrices = np.zeros((count, 2, 3), np.float64)
    readable = np.zeros(count, bool)
    image, image_path = None, None
    for i in range(count):
        path = str(batch["image_path"][i])
        if path != image_path:
            image_path = path
            image = load_image(path)  # the stored pixel grid the boxes refer to (EXIF orientation not applied)
            if image is None:
                log.warning("cannot read image %s: its instances get no prediction", path)
        box = np.asarray(batch["bbox"][i], dtype=np.float64)
        matrices[i] = sample_transform(None, box, None, None, None, (w, h), padding=padding).matrix
        if image is not None:
            crops[i] = warp_crop(image, matrices[i], (w, h))
            readable[i] = True
    return {**batch, "crop": crops, "matrix": matrices, "image_readable": readable}


class TeacherPredictor:
    """Ray Data callable class: loads the teacher once per actor, then predicts crop batches.

    Output columns: those of ``pipeline.data.pool_predictions`` for B rows. Unreadable rows get NaN scores.
    """

    def __init__(self, model_dir: str, flip_test: bool, tau: float, threads: int, use_gpu: bool) -> None:
        torch.set_num_threads(threads)
        device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        self.model = load_model(Path(model_dir), device)
        self.flip_test, self.tau = flip_test, tau

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        count = len(batch["instance_id"])
        torch_batch = {
            "image": normalize_crops(batch["crop"]),
            "matrix": torch.from_numpy(np.ascontiguousarray(batch["matrix"])),
            "flipped": torch.zeros(count, dtype=torch.bool),
            "instance_id": torch.from_numpy(np.array(batch["instance_id"], np.int64)),  # a writable copy
            "bbox": torch.from_numpy(np.stack(batch["bbox"]).astype(np.float32)),
        }
        pred = predict_batch(self.model, torch_batch, flip_test=self.flip_test)
        return prediction_columns(batch, pred, self.tau)


def _write_batches(
    batches: Iterable[dict[str, np.ndarray]], path: Path, total: int, progress: bool
) -> tuple[int, float | None]:
    """Stream the predicted batches into one parquet file; (rows written, when the first batch came)."""
    written, first = 0, None
    writer: pq.ParquetWriter | None = None
    bar = tqdm(total=total, desc="pseudolabel", unit="person", disable=not progress, dynamic_ncols=True)
    try:
        for batch in batches:
            table = pool_predictions.to_table(batch)
            if writer is None:
                first = time.perf_counter()
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
            written += table.num_rows
            bar.update(table.num_rows)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    return written, first


def _add_keypoint_jump(path: Path, pool_images: list[dict]) -> None:
    """The video signal needs every row (neighbouring frames may be in other batches): computed over the written
    table, whose null column is then replaced. Only a pool with video frames pays for the second write."""
    if not any("video" in im for im in pool_images):
        return
    table = pq.read_table(path)
    jump = keypoint_jump(table, pool_images)
    column = table.column_names.index("keypoint_jump")
    pq.write_table(table.set_column(column, "keypoint_jump", pa.array(jump, pa.float64(), mask=np.isnan(jump))), path)


@dataclass(frozen=True)
class _PoolJob:
    """What both pool passes read before the first batch: the rows, the teacher's crop geometry, the temp file."""

    frame: pd.DataFrame  # pool_frame: one row per instance with a usable box
    input_size: tuple[int, int]  # (w, h) of the teacher's crops
    padding: float  # the box padding the teacher was trained with
    tmp: Path  # written batch by batch, renamed to the output at the end

    @classmethod
    def of(cls, model_dir: Path, pool: dict, images_root: Path, out_path: Path) -> _PoolJob:
        description = json.loads((Path(model_dir) / DESCRIPTION_FILE).read_text())
        frame = pool_frame(pool, images_root)
        if frame.empty:
            raise ValueError(f"the pool has no instance with a usable box ({len(pool['annotations'])} annotations)")
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        return cls(
            frame,
            tuple(description["input_size"]),
            float(description["params"]["codec"].get("box_padding", 1.25)),
            out_path.with_name(out_path.name + ".tmp"),
        )


def predict_pool(
    model_dir: Path,
    pool: dict,
    images_root: Path,
    out_path: Path,
    *,
    batch_size: int = 64,
    actors: int = 1,
    cpus_per_actor: float = 0.5,
    gpus_per_actor: float = 0.0,
    threads_per_actor: int = 2,
    flip_test: bool = True,
    tau: float = 0.5,
    progress: bool = False,
) -> PoolRun:
    """Run the teacher in ``model_dir`` over every pool instance on Ray Data; write ``out_path`` (parquet, one row
    per instance in pool order: image then instance id) atomically. Needs a running Ray (``ray_session``).
    ``gpus_per_actor`` > 0 puts each actor on a GPU. ``progress``: one tqdm line of instances done (Ray Data's own
    progress bars and execution banner are off unless POSELOOP_VERBOSE=1).
    """
    import ray

    job = _PoolJob.of(model_dir, pool, images_root, out_path)
    frame, input_size, padding, tmp = job.frame, job.input_size, job.padding, job.tmp
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # rows in pool order: the same pool gives the same file
    if not verbose():
        context.enable_progress_bars = False
        context.print_on_execution_start = False
    # metadata blocks of one batch each, so crop tasks start at once and run beside the predictors
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.set_column(3, "bbox", pa.FixedSizeListArray.from_arrays(pa.array(np.concatenate(frame["bbox"])), 4))
    dataset = ray.data.from_arrow([table.slice(i, batch_size) for i in range(0, len(frame), batch_size)])
    dataset = dataset.map_batches(
        crop_batch, fn_kwargs={"input_size": input_size, "padding": padding}, batch_size=batch_size, num_cpus=0.5
    )
    predictor_kwargs = {
        "model_dir": str(Path(model_dir).resolve()),
        "flip_test": flip_test,
        "tau": tau,
        "threads": threads_per_actor,
        "use_gpu": gpus_per_actor > 0,
    }
    dataset = dataset.map_batches(
        TeacherPredictor,
        fn_constructor_kwargs=predictor_kwargs,
        batch_size=batch_size,
        num_cpus=cpus_per_actor,
        num_gpus=gpus_per_actor,
        compute=ray.data.ActorPoolStrategy(size=actors),
    )
    started = time.perf_counter()
    route_ray_logs(None)  # Ray Data configures its loggers on first use: keep their INFO off the terminal
    batches = dataset.iter_batches(batch_size=None, batch_format="numpy")
    written, first = _write_batches(batches, tmp, len(frame), progress)
    if written:
        _add_keypoint_jump(tmp, pool["images"])
    os.replace(tmp, out_path)
    finished = time.perf_counter()
    return PoolRun(rows=written, seconds=finished - started, first_batch_seconds=(first or finished) - started)


def predict_pool_in_process(
    model_dir: Path,
    pool: dict,
    images_root: Path,
    out_path: Path,
    *,
    batch_size: int = 64,
    threads: int = 2,
    use_gpu: bool = False,
    flip_test: bool = True,
    tau: float = 0.5,
    progress: bool = False,
) -> PoolRun:
    """``predict_pool`` without Ray: the same crop and predictor code batch after batch in this process (benchmarks
    and the library's ``run_round``). Writes the same file."""
    job = _PoolJob.of(model_dir, pool, images_root, out_path)
    frame, input_size, padding, tmp = job.frame, job.input_size, job.padding, job.tmp
    predictor = TeacherPredictor(str(model_dir), flip_test, tau, threads, use_gpu=use_gpu)

    def batches() -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(frame), batch_size):
            rows = frame.iloc[start : start + batch_size]
            batch = {name: rows[name].to_numpy() for name in frame.columns}
            batch["bbox"] = np.stack(batch["bbox"]).astype(np.float64)
            yield predictor(crop_batch(batch, input_size, padding))

    started = time.perf_counter()
    written, first = _write_batches(batches(), tmp, len(frame), progress)
    _add_keypoint_jump(tmp, pool["images"])
    os.replace(tmp, out_path)
    finished = time.perf_counter()
    return PoolRun(rows=written, seconds=finished - started, first_batch_seconds=(first or finished) - started)


def score_pool(
    params: Params, model_dir: Path, pool: Path, images_root: Path, out: Path, *, on_ray: bool, progress: bool = False
) -> tuple[PoolRun, pd.DataFrame, pa.Table]:
    """The model over every pool instance -> ``out`` (pool_predictions.parquet: keypoints, scores and the selection
    signals per instance, docs/contracts); returns three things: the run (rows, seconds), the scalar columns and the
    whole table (``read_pool_predictions(out)``). ``on_ray``: on Ray Data with the ``pseudolabel`` section's actors
    (call inside ``ray_session``); else the same per-batch code in this process, with the process's training threads
    (``train.threads_per_worker``: benchmarks run several single-thread processes side by side) and a GPU when
    ``pseudolabel.use_gpu`` is true, or "auto" and torch sees one."""
    cfg = params.pseudolabel
    pool_coco = read_coco(pool).to_dict()
    if on_ray:
        use_gpu = resolve_use_gpu(cfg.use_gpu)
        run = predict_pool(
            model_dir,
            pool_coco,
            images_root,
            out,
            batch_size=cfg.batch_size,
            actors=cfg.actors,
            cpus_per_actor=cfg.cpus_per_actor,
            gpus_per_actor=cfg.gpus_per_actor if use_gpu else 0.0,
            threads_per_actor=cfg.threads_per_actor,
            flip_test=cfg.flip_test,
            tau=cfg.tau,
            progress=progress,
        )
    else:
        run = predict_pool_in_process(
            model_dir,
            pool_coco,
            images_root,
            out,
            batch_size=cfg.batch_size,
            threads=params.train.threads_per_worker,
            use_gpu=torch.cuda.is_available() if cfg.use_gpu == "auto" else bool(cfg.use_gpu),
            flip_test=cfg.flip_test,
            tau=cfg.tau,
            progress=progress,
        )
    return (run, *read_pool_predictions(out))
