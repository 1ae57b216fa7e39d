"""DVC stage `merge`: seed labels + pool + data/corrections/ -> data/train.json, data/merge_report.json.

The rules are in pipeline/merge.py (``merge``). A missing corrections folder is an empty store: in round 1
train.json holds the seed labels only.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pipeline.corrections import read_store, round_number
from pipeline.data.coco import read_coco, write_coco
from pipeline.files import write_json
from pipeline.merge import merge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=Path, default=Path("data/prepared/labeled.json"), help="COCO seed labels")
    parser.add_argument("--pool", type=Path, default=Path("data/pool.json"), help="COCO unlabeled instances")
    parser.add_argument("--corrections", type=Path, default=Path("data/corrections"), help="corrections store folder")
    parser.add_argument("--out", type=Path, default=Path("data/train.json"))
    parser.add_argument("--report", type=Path, default=Path("data/merge_report.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    # read_coco validates both inputs, so a broken prepared file fails here with every problem listed.
    seed = read_coco(args.seed).to_dict()
    pool = read_coco(args.pool).to_dict()
    corrections, skips = read_store(args.corrections)
    train, report = merge(seed, pool, corrections, skips)
    # the round a model trained on this file belongs to: round 1 has the seed labels only, and every pull that
    # brought something new starts the next one
    report["round"] = round_number(args.corrections)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_coco(args.out, train)
    write_json(args.report, report)
    summary = {
        k: report[k] for k in ("round", "labeled_total", "seed", "human_instances", "conflicts", "removed_no_person")
    }
    print(
        json.dumps(
            {
                "train": str(args.out),
                **summary,
                "unknown_instances": len(report["unknown_instances"]),
                "remapped": len(report["remapped"]),
                "mismatched": len(report["mismatched"]),
            }
        )
    )
    for m in report["mismatched"]:  # human work that cannot be placed: say so where the user looks
        print(f"merge: {m['record']} of instance {m['instance_id']} not applied: {m['message']}", file=sys.stderr)


if __name__ == "__main__":
    main()
