"""Shared plumbing for benchmarks: machine description and the docs/BENCHMARKS.md sections.

docs/BENCHMARKS.md is a set of sections, one per benchmark, each replaced when that benchmark runs again, so the
file always holds the latest figure of every benchmark with the machine and command that produced it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
from pathlib import Path

import torch

BENCH_FILE = Path("docs/BENCHMARKS.md")
RESULTS_DIR = Path("docs/bench")
HEADER = (
    "# Benchmarks\n\n"
    "Written by `make bench` (bench/). Each section names the machine, the command and the date; raw numbers are in "
    "docs/bench/. Comparisons are side by side in one run, as ratios, because these machines are noisy.\n"
)


def machine() -> str:
    """One line naming the machine a figure was measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    cores = available_cores()
    return f"{cpu}, {cores} cores available, {gpu}, Python {platform.python_version()}, torch {torch.__version__}"


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def write_section(name: str, title: str, command: str, body: str, raw: dict | None = None) -> None:
    """Replace (or add) the section ``name`` of docs/BENCHMARKS.md; store ``raw`` as docs/bench/<name>.json."""
    BENCH_FILE.parent.mkdir(parents=True, exist_ok=True)
    text = BENCH_FILE.read_text() if BENCH_FILE.exists() else HEADER
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = f"{start}\n## {title}\n\n_{stamp} · {machine()}_\n\nCommand: `{command}`\n\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    BENCH_FILE.write_text(text)
    if raw is not None:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        (RESULTS_DIR / f"{name}.json").write_text(json.dumps(raw, indent=1, sort_keys=True) + "\n")
