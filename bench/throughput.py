"""One table of how fast the loop runs: throughput figures from the latest runs of the other benches, plus, measured
here on a fresh copy of the project with the default params, each stage's wall time and peak memory (the resident
memory of the stage's whole process tree, local Ray's workers included, sampled every 0.2 s) and a no-op `dvc repro`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench.report import RESULTS_DIR, write_section

STAGES = (
    "inputs",
    "prepare",
    "pull",
    "completed",
    "find",
    "merge",
    "train",
    "evaluate",
    "register",
    "pseudolabel",
    "select",
    "export",
)
PROJECT_FILES = ("pipeline", "models", "stages", "dvc.yaml", "params.yaml", "pyproject.toml", ".dvcignore")


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    for p in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def _measure(cmd: list[str], cwd: Path, env: dict) -> tuple[float, float]:
    """(wall seconds, peak resident MB of the process tree) of one command."""
    started = time.perf_counter()
    # the output goes to a file: a pipe nobody reads fills up and blocks the stage (Ray and DVC log a lot)
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        handle, peak = psutil.Process(proc.pid), 0
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                peak = max(peak, _tree_rss(handle))
            time.sleep(0.2)
        if proc.returncode != 0:
            log.seek(0)
            raise RuntimeError(f"{cmd} failed: {log.read()[-3000:]}")
    return time.perf_counter() - started, peak / 2**20


def _earlier(name: str) -> list | dict | None:
    path = RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def run() -> None:
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for key in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "RAY_ADDRESS"):
        env.pop(key, None)
    stages = []
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        for name in PROJECT_FILES:
            src = Path(name)
            if src.is_dir():
                shutil.copytree(src, project / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(src, project / name)
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{project / 'mlflow.db'}"
        for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"]):
            subprocess.run(cmd, cwd=project, env=env, check=True, capture_output=True)
        for stage in STAGES:
            print(f"  stage {stage} ...", flush=True)
            seconds, peak_mb = _measure(["dvc", "repro", "--single-item", stage], project, env)
            stages.append({"stage": stage, "seconds": seconds, "peak_mb": peak_mb})
        noop, noop_mb = _measure(["dvc", "repro"], project, env)

    table = "| stage (`dvc repro -s <stage>`, default params) | wall s | peak memory, MB |\n|---|---|---|\n"
    table += "".join(f"| {r['stage']} | {r['seconds']:.1f} | {r['peak_mb']:.0f} |\n" for r in stages)
    table += (
        f"| **a whole round** | {sum(r['seconds'] for r in stages):.1f} | {max(r['peak_mb'] for r in stages):.0f} |\n"
    )
    table += f"| `dvc repro` with nothing new (only pull and inputs run) | {noop:.1f} | {noop_mb:.0f} |\n"

    rates = []
    training = _earlier("training")
    if training:
        rates += [f"| training, {r['setup']} | {r['images_per_s']:.1f} images/s |" for r in training]
    inference = _earlier("inference")
    if inference:
        rates += [f"| pool inference, {r['setup']} | {r['instances_per_s']:.1f} instances/s |" for r in inference]
    selection = _earlier("selection")
    if selection:
        rates += [f"| scoring + selection, {r['setting']} | {r['rows_per_s'] / 1e6:.2f} M rows/s |" for r in selection]
    ls = _earlier("labelstudio")
    if ls:
        rates += [
            f"| Label Studio export (10,000 tasks) | {ls['tasks'] / ls['export_s']:.0f} tasks/s |",
            f"| Label Studio pull (10,000 annotations) | {ls['pulled_corrections'] / ls['pull_s']:.0f} annotations/s |",
        ]
    body = (
        "Each stage of one round of the default loop (synthetic data, tiny model, SSL on, file hand-off), run by DVC "
        "in a fresh copy of the project; peak memory is the resident memory of the stage's process tree (DVC, the "
        f"stage, local Ray and its workers).\n\n{table}\n"
        "Throughput, from the latest run of each benchmark (their sections above have the setups and ratios):\n\n"
        "| what | rate |\n|---|---|\n" + "\n".join(rates) + "\n"
    )
    write_section(
        "throughput",
        "Throughput and memory of the loop",
        "make bench  # python -m bench throughput",
        body,
        {"stages": stages, "noop_s": noop, "noop_peak_mb": noop_mb},
    )
