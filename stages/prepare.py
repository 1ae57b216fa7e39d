"""DVC stage `prepare`: params.data -> data/prepared/ (labeled, pool, val, test, oracle + images)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from pipeline.config import load_params
from pipeline.console import add_json_flag, stage_logging, stage_result
from pipeline.data.prepare import prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("data/prepared"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    add_json_flag(parser)
    args = parser.parse_args()
    stage_logging()
    params = load_params(args.params).data
    # DVC removes outputs before a run; when run by hand, start clean too so no file of an older split survives.
    shutil.rmtree(args.out, ignore_errors=True)
    counts = prepare(params, args.out)
    line = ", ".join(f"{n} {split}" for split, n in counts.items()) + f" people -> {args.out}"
    stage_result("prepare", line, {"prepared": str(args.out), "instances": counts}, args.json)


if __name__ == "__main__":
    main()
