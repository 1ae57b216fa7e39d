"""``python -m bench [name ...]``: run the benchmarks (all by default) and rewrite their docs/BENCHMARKS.md sections.

``SLOW`` benchmarks take tens of minutes on a 2-core CPU, so a bare ``python -m bench`` (``make bench``) leaves them
out; run one by naming it (``python -m bench label_efficiency``), or everything with ``--all``.
"""

from __future__ import annotations

import argparse
import importlib
import time

BENCHMARKS = (
    "synthetic",
    "codec",
    "models",
    "training",
    "ssl_gain",
    "inference",
    "selection",
    "signals",
    "labelstudio",
    "throughput",
)
SLOW = ("label_efficiency",)  # not in the default run: ~tens of minutes on 2 cores (see each module's docstring)


def main() -> None:
    known = BENCHMARKS + SLOW
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*", help=f"benchmarks to run, of {', '.join(known)} (default: all but "
                        f"the slow {', '.join(SLOW)})")  # fmt: skip
    parser.add_argument("--all", action="store_true", help=f"also run the slow ones ({', '.join(SLOW)})")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(known))
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(known)}")
    for name in args.names or (known if args.all else BENCHMARKS):
        start = time.perf_counter()
        print(f"[bench] {name} ...", flush=True)
        importlib.import_module(f"bench.{name}").run()
        print(f"[bench] {name} done in {time.perf_counter() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main()
