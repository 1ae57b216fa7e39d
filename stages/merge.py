"""DVC stage `merge`: seed labels + pool + data/corrections/ -> data/train.json, data/merge_report.json and
data/no_person.json (the instances annotators ruled "no person", which select never sends again: a file of its own,
so that a pull that changes only the report's counts does not make select choose again).

The step is ``pipeline.merge.merge_labels``, its rules ``merge``. A missing corrections folder is an
empty store: in round 1 train.json holds the seed labels only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.console import add_json_flag, stage_logging, stage_result
from pipeline.files import write_json
from pipeline.merge import merge_labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=Path, default=Path("data/prepared/labeled.json"), help="COCO seed labels")
    parser.add_argument("--pool", type=Path, default=Path("data/pool.json"), help="COCO unlabeled instances")
    parser.add_argument("--corrections", type=Path, default=Path("data/corrections"), help="corrections store folder")
    parser.add_argument("--out", type=Path, default=Path("data/train.json"))
    parser.add_argument("--report", type=Path, default=Path("data/merge_report.json"))
    parser.add_argument("--no-person", type=Path, default=Path("data/no_person.json"))
    add_json_flag(parser)
    args = parser.parse_args()
    stage_logging()

    _, report = merge_labels(args.seed, args.pool, args.corrections, args.out)
    write_json(args.report, report)
    write_json(args.no_person, {"no_person_ids": report["no_person_ids"]})
    summary = {
        k: report[k] for k in ("round", "labeled_total", "seed", "human_instances", "conflicts", "removed_no_person")
    }
    result = {
        "train": str(args.out),
        **summary,
        "unknown_instances": len(report["unknown_instances"]),
        "remapped": len(report["remapped"]),
        "mismatched": len(report["mismatched"]),
    }
    line = (
        f"round {report['round']}: {report['labeled_total']} labeled ({report['seed']} seed, "
        f"{report['human_instances']} from annotators), {report['conflicts']} conflicts, "
        f"{report['removed_no_person']} removed as no person"
        + (f", {len(report['mismatched'])} not applied (below)" if report["mismatched"] else "")
    )
    stage_result("merge", line, result, args.json)
    for m in report["mismatched"]:  # human work that cannot be placed: say so where the user looks
        print(f"merge: {m['record']} of instance {m['instance_id']} not applied: {m['message']}", file=sys.stderr)


if __name__ == "__main__":
    main()
