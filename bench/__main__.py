"""``python -m bench [name ...]``: run the benchmarks (all by default) and rewrite their docs/BENCHMARKS.md sections."""

from __future__ import annotations

import argparse
import importlib
import time

BENCHMARKS = ("synthetic", "codec", "models", "training", "ssl_gain", "inference", "selection", "signals", "labelstudio")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*", help=f"benchmarks to run, of {', '.join(BENCHMARKS)} (default: all)")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    for name in args.names or BENCHMARKS:
        start = time.perf_counter()
        print(f"[bench] {name} ...", flush=True)
        importlib.import_module(f"bench.{name}").run()
        print(f"[bench] {name} done in {time.perf_counter() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main()
