"""Where Ray runs and where its output goes: a local single-machine Ray or RAY_ADDRESS's cluster, and its logs.

Imports nothing of the project, so training (pipeline/ray_train.py), the Ray Data pool run (pipeline/pseudolabel.py)
and the stages share it without importing each other.

    artifacts/logs/<stage>.log   Ray's driver-side loggers (ray, ray.data, ray.train, ...), INFO and up, and the
                                 lines the driver's C++ core worker writes to stderr (``core_worker_lines_to``)
    artifacts/logs/<stage>/      the local session's worker and actor stdout/stderr, copied before shutdown
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import BinaryIO

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
    # Ray Data may hang the root logger's own handlers on its loggers too: those are the application's (and pytest's
    # log capture) and keep their level
    root_handlers = set(logging.root.handlers)
    for name in names:
        logger = logging.getLogger(name)
        for h in logger.handlers:
            if (
                isinstance(h, logging.StreamHandler)
                and not isinstance(h, logging.FileHandler)
                and h not in root_handlers
            ):
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


# Quiet, fast local Ray (docs/DESIGN.md §11): no usage stats, no auth. The controller's health check stays at Ray's own
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
    quiet = nullcontext() if forward else core_worker_lines_to(log_file)
    with quiet, nullcontext() if address else _this_machine_only():
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


# A line of Ray's C++ logging below fatal: "[2026-12-06 19:03:31,660 E 29512 29512] core_worker.cc:2465: ...". Ray
# Data's actor pools print one at level E on every run (ray-project/ray#57733: a spurious warning about constructor
# arguments), which reads as an error in the middle of the stage's progress line (issue #25). Fatal lines (C, F) and
# anything else pass through.
_CPP_LOG_LINE = re.compile(rb"\[\d{4}-\d\d-\d\d [\d:,]+ [TDIWE] \d+ \d+\] [\w./]+\.cc:\d+: [^\n]*\n?")


def filter_cpp_log_lines(source: BinaryIO, terminal: BinaryIO, log: BinaryIO) -> None:
    """Copy ``source`` to ``terminal`` as it arrives, moving Ray's C++ log lines (``_CPP_LOG_LINE``) to ``log``;
    until end of file. A C++ line is one write of under 4 KiB, which a pipe delivers whole (POSIX PIPE_BUF), so a
    line is never split across two reads. A write that fails (the terminal gone) does not stop the copy: the writers
    must never block on a full pipe."""
    while chunk := source.read1(65536):
        lines = _CPP_LOG_LINE.findall(chunk)
        with contextlib.suppress(OSError):
            if lines:
                log.write(b"".join(lines))
                log.flush()
        with contextlib.suppress(OSError):
            terminal.write(_CPP_LOG_LINE.sub(b"", chunk) if lines else chunk)
            terminal.flush()


def _filter_main() -> None:
    """The filter process of ``core_worker_lines_to``: stdin -> stderr, C++ log lines -> the file in argv[1]."""
    import signal
    import sys

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the stage: drain until it closes the pipe
    with open(sys.argv[1], "ab") as log:
        filter_cpp_log_lines(sys.stdin.buffer, sys.stderr.buffer, log)


@contextmanager
def core_worker_lines_to(log_file: Path) -> Iterator[None]:
    """Inside the block, lines of Ray's C++ logging written to this process's stderr (file descriptor 2, where
    Python's logging cannot reach them) go to ``log_file``; everything else, the progress line included, passes
    through as written.

    The filtering runs in a small child process reading a pipe that replaces fd 2, not in a thread: when this process
    dies (a segfault, an abort), the child still drains what was written before the crash to the terminal, and it
    ends when the last writer closes the pipe."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    child = subprocess.Popen(
        [sys.executable, "-c", "from pipeline.ray_cluster import _filter_main; _filter_main()", str(log_file)],
        stdin=subprocess.PIPE,
        stderr=saved,
        stdout=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parent.parent,  # imports this project's pipeline wherever the stage runs
    )
    os.dup2(child.stdin.fileno(), 2)
    child.stdin.close()  # fd 2 is now the pipe's only write end in this process
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last write end here closes: the child drains and exits
        os.close(saved)
        with contextlib.suppress(subprocess.TimeoutExpired):  # a grandchild still holds the pipe: the filter goes
            child.wait(timeout=10)  # on draining it, detached


def resolve_use_gpu(setting: bool | str) -> bool:
    """``auto``: use GPUs when the Ray cluster has any."""
    if setting != "auto":
        return bool(setting)
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0
