"""Where Ray's own output goes: a file per stage under artifacts/logs/, not the terminal (unless POSELOOP_VERBOSE=1).

Imports nothing of the project, so the Ray session (pipeline/ray_train.py) and the Ray Data pool run
(pipeline/inference.py) share it without importing each other.

    artifacts/logs/<stage>.log   Ray's driver-side loggers (ray, ray.data, ray.train, ...), INFO and up
    artifacts/logs/<stage>/      the local session's worker and actor stdout/stderr, copied before shutdown
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

LOG_DIR = Path("artifacts/logs")


def verbose() -> bool:
    """``POSELOOP_VERBOSE=1``: Ray's INFO logs and the workers' output on the terminal, as Ray prints them."""
    return os.environ.get("POSELOOP_VERBOSE", "").strip().lower() not in ("", "0", "false", "no")


def route_ray_logs(log_file: Path | None) -> None:
    """Send Ray's driver-side loggers to ``log_file``; on the terminal keep only their errors. Idempotent: call it
    again after anything that (re)installs Ray's terminal handlers (ray.init, Ray Data's first use).

    Ray installs its own terminal handlers (and Ray Data its own logging config), so they are found and turned down
    here instead of configured through logging.basicConfig.
    """
    if verbose():
        return
    target = str(log_file.resolve()) if log_file is not None else None
    handler = None
    names = ["ray", *(n for n in logging.root.manager.loggerDict if n.startswith("ray."))]
    for name in names:
        logger = logging.getLogger(name)
        for h in logger.handlers:
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                h.setLevel(logging.ERROR)
        if target is None or not (name == "ray" or not logger.propagate):
            continue
        if any(isinstance(h, logging.FileHandler) and h.baseFilename == target for h in logger.handlers):
            continue
        if handler is None:
            log_file.parent.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
            handler = logging.FileHandler(target)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)


def keep_worker_logs(out_dir: Path) -> None:
    """Copy the local Ray session's worker and actor output (the lines the terminal no longer shows: the training
    loop's epoch lines, Ray Train's warnings) to ``out_dir`` before the session and its temp folder go away."""
    try:
        import ray._private.worker as ray_worker

        logs = Path(ray_worker._global_node.get_logs_dir_path())
    except Exception:  # a remote cluster, or no node object: its logs stay on the cluster
        return
    shutil.rmtree(out_dir, ignore_errors=True)
    for path in sorted(logs.glob("worker-*")):
        if path.suffix in (".out", ".err") and path.stat().st_size > 0:
            out_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, out_dir / path.name)
