"""Ray's C++ log lines leave the terminal for the stage's log; nothing else is lost, not even on a crash (issue #25)."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

from pipeline.ray_cluster import filter_cpp_log_lines

REPO = Path(__file__).resolve().parents[2]
SPURIOUS = (
    b"[2026-12-06 19:03:31,660 E 29512 29512] core_worker.cc:2465: Actor with class name: 'MapWorker' has "
    b"constructor arguments in the object store and max_restarts > 0.\n"
)
FATAL = b"[2026-12-06 19:03:31,661 C 29512 29512] core_worker.cc:100: Check failed: something\n"


def test_the_filter_moves_cpp_lines_and_passes_the_rest_byte_for_byte():
    progress = b"pseudolabel:   4%|4         | 64/1529\rpseudolabel:   8%|8         | 128/1529"
    source = io.BytesIO(progress + SPURIOUS + b"Traceback (most recent call last):\n" + FATAL)
    terminal, log = io.BytesIO(), io.BytesIO()
    filter_cpp_log_lines(source, terminal, log)
    assert log.getvalue() == SPURIOUS
    assert terminal.getvalue() == progress + b"Traceback (most recent call last):\n" + FATAL  # fatal stays


def _run(body: str, log: Path) -> subprocess.CompletedProcess:
    code = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        from pipeline.ray_cluster import core_worker_lines_to
        with core_worker_lines_to(Path({str(log)!r})):
        """
    ) + textwrap.indent(textwrap.dedent(body), "    ")
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, timeout=60)


def test_inside_the_block_fd2_is_filtered_and_after_it_restored(tmp_path):
    log = tmp_path / "logs" / "pseudolabel.log"
    done = _run(
        f"""
        os.write(2, b"before " + {SPURIOUS!r} + b"after\\n")
        print("python stderr", file=sys.stderr, flush=True)
        """,
        log,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == b"before after\npython stderr\n"
    assert log.read_bytes() == SPURIOUS


def test_what_was_written_before_a_crash_still_reaches_the_terminal(tmp_path):
    log = tmp_path / "crash.log"
    done = _run(
        f"""
        os.write(2, {SPURIOUS!r} + b"the last words\\n")
        os.abort()
        """,
        log,
    )
    assert done.returncode != 0
    assert b"the last words" in done.stderr and b"core_worker.cc" not in done.stderr
