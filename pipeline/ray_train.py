"""Ray Train wiring: the per-worker loop of pipeline/training.py on a TorchTrainer, locally or on a cluster;
``train_model``, the round's training step (on Ray Train, or the same loop in this process) and the model it saves.

``RAY_ADDRESS`` unset: a local Ray starts and stops inside the stage. Set: the same code runs on that cluster.
A run is named from its inputs (labels, pool, params); running the stage again after an interruption finds the run
under ``storage_path`` and resumes from its last checkpoint, while a new round (new labels) gets a new run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import Params, to_dict
from pipeline.data.coco import read_coco
from pipeline.files import file_md5
from pipeline.model_store import save_model
from pipeline.ray_cluster import resolve_use_gpu
from pipeline.training import CHECKPOINT_FORMAT, Checkpoint, train_in_process, training_summary

log = logging.getLogger(__name__)


def run_name(params: Params, paths: dict[str, str], init_weights: str | None) -> str:
    """A name that changes with the training inputs and nothing else."""
    digest = hashlib.sha256()
    for key in sorted(paths):
        path = Path(paths[key])
        digest.update(f"{key}={file_md5(path) if path.is_file() else paths[key]};".encode())
    relevant = {k: to_dict(getattr(params, k)) for k in ("codec", "model", "train")}
    relevant["data"] = {k: getattr(params.data, k) for k in ("sigmas", "flip_pairs")}
    digest.update(json.dumps(relevant, sort_keys=True).encode())
    digest.update(f"init={file_md5(Path(init_weights)) if init_weights else None}".encode())
    # the checkpoint layout: a run checkpointed by an older loop (one optimiser group) is not resumed by this one
    digest.update(f"checkpoint={CHECKPOINT_FORMAT}".encode())
    return f"train-{digest.hexdigest()[:12]}"


def fit(
    params: Params,
    paths: dict[str, str],
    storage_path: Path,
    *,
    init_weights: str | None = None,
    name: str | None = None,
    progress: bool = True,
):
    """Run (or resume) training on Ray Train; returns the ``ray.train.Result``. Call inside ``ray_session``."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.util.queue import Queue

    from pipeline.training import train_worker

    cfg = params.train
    # rank 0 puts its progress here and this process draws it: one line that updates, whatever Ray forwards
    queue = Queue(maxsize=64, actor_options={"num_cpus": 0}) if progress else None
    use_gpu = resolve_use_gpu(cfg.use_gpu)
    resources = {"CPU": cfg.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = cfg.gpus_per_worker
    absolute = {k: str(Path(v).resolve()) for k, v in paths.items()}  # workers may start in another directory
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={
            "params": params,
            "paths": absolute,
            "init_weights": str(Path(init_weights).resolve()) if init_weights else None,
            "use_gpu": use_gpu,
            "progress": queue if queue is not None else False,
        },
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(
            name=name or run_name(params, paths, init_weights),
            storage_path=str(Path(storage_path).resolve()),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
        ),
    )
    log.info("Ray Train: %d worker(s), GPU %s, storage %s", cfg.num_workers, use_gpu, storage_path)
    if queue is None:
        return trainer.fit()
    done = threading.Event()
    shower = threading.Thread(target=show_progress, args=(queue, done), daemon=True)
    shower.start()
    try:
        return trainer.fit()
    finally:
        done.set()
        shower.join(timeout=5)
        queue.shutdown()


def show_progress(queue, done: threading.Event) -> None:
    """Draw rank 0's progress messages (pipeline/training.py ``Progress``) as one tqdm line until ``done``."""
    from ray.util.queue import Empty
    from tqdm import tqdm

    from pipeline.training import draw_progress

    bar = None
    while not done.is_set():
        try:
            state = queue.get(timeout=0.5)
        except Empty:
            continue
        except Exception:  # the queue actor went away with the session: nothing more to show
            break
        if "message" in state:
            tqdm.write(state["message"])
            continue
        bar = draw_progress(bar, state)
    if bar is not None:
        bar.close()


@dataclass(frozen=True)
class TrainedModel:
    """What ``train_model`` wrote and measured."""

    model_dir: Path  # model.pt (the kept epoch: best val AP) + model.json (pipeline.model_store)
    history: list[dict]  # one dict per epoch: losses, val metrics, speed
    summary: dict  # training_summary(history): the kept epoch's val metrics (metrics/train.json)
    labeled: int  # labeled instances trained on
    seconds: float

    @property
    def ap(self) -> float:
        """Val AP of the kept weights (the best epoch's)."""
        return float(self.summary["val_ap"])

    @property
    def final_ap(self) -> float:
        """Val AP after the last epoch."""
        return float(self.history[-1]["val_ap"])


def train_model(
    params: Params,
    paths: dict[str, str],
    out: Path,
    *,
    ray_storage: Path | None = None,
    init_weights: Path | str | None = None,
    progress: bool = False,
) -> TrainedModel:
    """Train on ``paths`` (labels, pool, val, images_root[, pseudo]) and save the kept weights to the model folder
    ``out``. ``ray_storage`` given: on Ray Train (call inside ``ray_session``; a run already there resumes), its
    checkpoints kept there; None: in this process, checkpoints in a temporary folder removed afterwards.
    ``init_weights``: a state dict to start from (warm start) instead of the backbone's initialisation."""
    started = time.perf_counter()
    if ray_storage is not None:
        result = fit(
            params, paths, ray_storage, init_weights=str(init_weights) if init_weights else None, progress=progress
        )
        if result.checkpoint is None:
            raise RuntimeError(f"training produced no checkpoint: {result.error}")
        with result.checkpoint.as_directory() as ckpt:
            checkpoint = Checkpoint(Path(ckpt))
            weights, history = checkpoint.best_weights(), checkpoint.history()
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-checkpoints-") as tmp:
            checkpoint = train_in_process(params, paths, Path(tmp), init_weights=init_weights, progress=progress)
            weights, history = checkpoint.best_weights(), checkpoint.history()
    labels = read_coco(Path(paths["labels"]), sigmas=params.data.sigmas, flip_pairs=params.data.flip_pairs)
    summary = training_summary(history)
    extra = {"labeled_instances": len(labels.annotations), "warm_start": str(init_weights) if init_weights else None}
    save_model(out, weights, params, labels.schema, summary, extra=extra)
    return TrainedModel(out, history, summary, len(labels.annotations), time.perf_counter() - started)
