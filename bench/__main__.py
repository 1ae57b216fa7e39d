"""``python -m bench [name ...]``: run the benchmarks (all by default) and rewrite their docs/BENCHMARKS.md sections.

``make bench`` runs every benchmark, ``make bench-<name>`` one of them. ``SLOW`` ones take about an hour on a 2-core
CPU; ``--quick`` leaves them out. A benchmark that fails does not stop the others: the failures are listed at the end
and the exit status is 1, and every section that was written stays written.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback

BENCHMARKS = (
    "recipe",
    "synthetic",
    "codec",
    "evaluation",
    "models",
    "training",
    "ssl_gain",
    "inference",
    "selection",
    "signals",
    "labelstudio",
    "labelstudio_screens",  # skipped with a message without Playwright and Chromium
    "throughput",
    "instance_finder",
)
# Run first in a full run: the figures people wait for, and an hour that should not come after a quick failure.
SLOW = ("label_efficiency", "hard_people", "ssl_schedule", "finder_data")


def main() -> None:
    known = SLOW + BENCHMARKS
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*", help=f"benchmarks to run, of {', '.join(known)} (default: all)")
    parser.add_argument("--quick", action="store_true", help=f"leave out the slow ones ({', '.join(SLOW)})")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(known))
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(known)}")
    names = args.names or (BENCHMARKS if args.quick else known)
    failed: list[str] = []
    total = time.perf_counter()
    for name in names:
        start = time.perf_counter()
        print(f"[bench] {name} ...", flush=True)
        try:
            importlib.import_module(f"bench.{name}").run()
        except Exception:  # reported below; the other benchmarks still run
            traceback.print_exc()
            failed.append(name)
            print(f"[bench] {name} FAILED after {time.perf_counter() - start:.1f} s", flush=True)
            continue
        print(f"[bench] {name} done in {time.perf_counter() - start:.1f} s", flush=True)
    print(
        f"[bench] {len(names) - len(failed)}/{len(names)} benchmarks in {(time.perf_counter() - total) / 60:.1f} min"
        + (f"; FAILED: {', '.join(failed)}" if failed else ""),
        flush=True,
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
