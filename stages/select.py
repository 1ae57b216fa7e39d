"""DVC stage `select`: pool predictions -> the instances annotators should correct next.

Writes artifacts/selection.parquet (the selected rows, ``rank`` 0 first, then the review queue's hopeless ones with
``queue`` "review": docs/contracts/labelstudio.md),
metrics/selection.json and plots/selection_scores.png (each signal, selected against not selected). Never selects an
instance that is labeled (--labeled), corrected or skipped (data/corrections), ruled "no person" (--no-person) or
pending in Label Studio (--pending).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.config import load_params
from pipeline.console import add_json_flag, stage_result
from pipeline.files import write_json
from pipeline.selection import select_next, selection_metrics
from pipeline.tracking import stage_run
from pipeline.viz import score_histograms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--predictions", type=Path, default=Path("artifacts/pool_predictions.parquet"))
    parser.add_argument("--labeled", type=Path, nargs="+", default=[Path("data/train.json")])
    parser.add_argument("--corrections", type=Path, default=Path("data/corrections"))
    parser.add_argument("--pending", type=Path, default=Path("data/labelstudio/pending.json"))
    parser.add_argument("--no-person", type=Path, default=Path("data/no_person.json"))
    parser.add_argument("--out", type=Path, default=Path("artifacts/selection.parquet"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/selection.json"))
    parser.add_argument("--plot", type=Path, default=Path("plots/selection_scores.png"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    add_json_flag(parser)
    args = parser.parse_args()

    params = load_params(args.params)
    cfg = params.select
    # the people merge ruled "no person", re-mapped to this round's ids (a false find a retrained finder moved)
    report = json.loads(args.no_person.read_text()) if args.no_person.is_file() else {}
    selection, scores, _ = select_next(
        cfg,
        args.predictions,
        args.labeled,
        args.corrections,
        args.pending,
        args.out,
        no_person_ids=report.get("no_person_ids", []),
    )

    metrics, signals, chosen = selection_metrics(scores, selection, cfg.policy, cfg.budget)
    write_json(args.metrics, metrics)
    plot = score_histograms(signals, chosen, args.plot)
    with stage_run("select", tags={"policy": cfg.policy}):
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
        mlflow.log_artifact(str(plot), artifact_path="plots")
    line = (
        f"{metrics['selected']} of {metrics['eligible']} eligible people sent (policy {metrics['policy']}"
        + (f", the {metrics['skipped_top']} it ranks first left out" if metrics.get("skipped_top") else "")
        + f"), {metrics.get('review_queue', 0)} of them to review"
    )
    stage_result("select", line, metrics, args.json)


if __name__ == "__main__":
    main()
