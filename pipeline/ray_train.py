"""Ray Train wiring: the per-worker loop of pipeline/training.py on a TorchTrainer, locally or on a cluster.

``RAY_ADDRESS`` unset: a local Ray starts and stops inside the stage. Set: the same code runs on that cluster.
A run is named from its inputs (labels, pool, params); running the stage again after an interruption finds the run
under ``storage_path`` and resumes from its last checkpoint, while a new round (new labels) gets a new run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from pipeline.config import Params
from pipeline.ray_logs import LOG_DIR, keep_worker_logs, route_ray_logs, verbose

log = logging.getLogger(__name__)

# Quiet, fast local Ray (DESIGN.md §11): no usage stats, no auth. The controller's health check stays at Ray's own
# interval: polling it 5 times a second (an earlier setting) cost the 2-core training loop measurable time.
LOCAL_RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_DEDUP_LOGS": "0",
}


@contextmanager
def _this_machine_only() -> Iterator[None]:
    """A local Ray serves this machine only: its node address becomes the loopback one, and every server of it
    (GCS, raylet, object manager, workers) binds to that address, which nothing outside can reach (measured: they
    listened on '::' before). A cluster is the explicit choice of RAY_ADDRESS.

    The switch is Ray's own single-machine mode (its default on macOS and Windows); ``_node_ip_address="127.0.0.1"``
    does not do it, Ray replaces a loopback address by the host's. The constant is read when Ray is imported, and the
    stages may have imported it already, so both the environment (for the processes Ray starts) and the constant are
    set, for the session only: a later ``ray start`` of a real cluster from the same process must not inherit it.
    """
    from ray._private import ray_constants

    key = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
    before_env, before_constant = os.environ.get(key), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[key] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before_constant
        if before_env is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before_env


@contextmanager
def ray_session(num_cpus: int | None = None, log_to_driver: bool | None = None, stage: str = "ray") -> Iterator[None]:
    """Connect to RAY_ADDRESS, or start a local Ray for the duration of the block (reuse one already running).

    Quiet unless ``POSELOOP_VERBOSE=1``: the workers' stdout/stderr stay in Ray's session logs (their errors reach
    the driver as exceptions, in full), Ray's driver logs go to ``artifacts/logs/<stage>.log``, and progress is the
    stage's own single line. ``log_to_driver`` forces the workers' output on or off.
    """
    import ray

    for key, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(key, value)
    if ray.is_initialized():
        yield
        return
    forward = verbose() if log_to_driver is None else log_to_driver
    log_file = LOG_DIR / f"{stage}.log"
    route_ray_logs(log_file)
    address = os.environ.get("RAY_ADDRESS")
    with nullcontext() if address else _this_machine_only():
        if address:
            ray.init(address=address, log_to_driver=forward, logging_level=logging.INFO)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=forward, logging_level=logging.INFO)
        route_ray_logs(log_file)  # ray.init (re)installs its terminal handler
        try:
            yield
        finally:
            if not forward:
                keep_worker_logs(LOG_DIR / stage)
            ray.shutdown()


def resolve_use_gpu(setting: bool | str) -> bool:
    """``auto``: use GPUs when the Ray cluster has any."""
    if setting != "auto":
        return bool(setting)
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def run_name(params_raw: dict, paths: dict[str, str], init_weights: str | None) -> str:
    """A name that changes with the training inputs and nothing else."""
    digest = hashlib.sha256()
    for key in sorted(paths):
        path = Path(paths[key])
        digest.update(f"{key}={file_md5(path) if path.is_file() else paths[key]};".encode())
    relevant = {k: params_raw.get(k) for k in ("codec", "model", "train")}
    relevant["data"] = {k: params_raw.get("data", {}).get(k) for k in ("sigmas", "flip_pairs")}
    digest.update(json.dumps(relevant, sort_keys=True).encode())
    digest.update(f"init={file_md5(Path(init_weights)) if init_weights else None}".encode())
    return f"train-{digest.hexdigest()[:12]}"


def fit(
    params: Params,
    params_raw: dict,
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
            "params": params_raw,
            "paths": absolute,
            "init_weights": str(Path(init_weights).resolve()) if init_weights else None,
            "use_gpu": use_gpu,
            "progress": queue if queue is not None else False,
        },
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(
            name=name or run_name(params_raw, paths, init_weights),
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
