"""DVC stage `select`: pool predictions -> the instances annotators should correct next.

Writes artifacts/selection.parquet (the selected rows, ``rank`` 0 first, then the review queue's hopeless ones with
``queue`` "review": docs/contracts/labelstudio.md),
metrics/selection.json and plots/selection_scores.png (each signal, selected against not selected). Never selects an
instance that is labeled (--labeled), corrected or skipped (data/corrections) or pending in Label Studio (--pending).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipeline.config import load_params
from pipeline.corrections import read_store
from pipeline.files import atomic_path, write_json
from pipeline.scoring import SIGNALS, read_scores, select_with_params, selection_table
from pipeline.tracking import stage_run
from pipeline.viz import score_histograms


def excluded_instances(labeled: list[Path], corrections: Path, pending: Path | None) -> dict[str, set[int]]:
    """{reason: instance ids} that must not be selected again."""
    labeled_ids: set[int] = set()
    for path in labeled:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: labeled set not found")
        labeled_ids |= {int(a["id"]) for a in json.loads(path.read_text())["annotations"]}
    done, skips = read_store(corrections)
    pending_ids: set[int] = set()
    if pending is not None and pending.is_file():
        pending_ids = {int(i) for i in json.loads(pending.read_text())["pending"]}
    return {"labeled": labeled_ids | {c.instance_id for c in done}, "skipped": {s.instance_id for s in skips},
            "pending": pending_ids}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--predictions", type=Path, default=Path("artifacts/pool_predictions.parquet"))
    parser.add_argument("--labeled", type=Path, nargs="+", default=[Path("data/train.json")])
    parser.add_argument("--corrections", type=Path, default=Path("data/corrections"))
    parser.add_argument("--pending", type=Path, default=Path("data/labelstudio/pending.json"))
    parser.add_argument("--out", type=Path, default=Path("artifacts/selection.parquet"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/selection.json"))
    parser.add_argument("--plot", type=Path, default=Path("plots/selection_scores.png"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    cfg = load_params(args.params).select

    scores, table = read_scores(args.predictions)
    exclude = excluded_instances(args.labeled, args.corrections, args.pending)
    selection = select_with_params(scores, table, cfg, exclude=exclude, labeled_count=len(exclude["labeled"]))
    with atomic_path(args.out) as tmp:
        pq.write_table(selection_table(table, selection), tmp)

    chosen = np.zeros(len(scores), bool)
    chosen[selection.rows] = True
    signals = {s: scores[s].to_numpy(np.float64, na_value=np.nan) for s in SIGNALS}
    signals["uncertainty"] = selection.uncertainty
    metrics = {"policy": cfg.policy, "budget": cfg.budget, **selection.counts,
               "images_selected": int(scores["image_id"][chosen].nunique())}  # fmt: skip
    for name, values in signals.items():
        if np.isfinite(values).any() and chosen.any():
            metrics[f"{name}_selected_mean"] = round(float(np.nanmean(values[chosen])), 5)
            metrics[f"{name}_rest_mean"] = round(float(np.nanmean(values[~chosen])), 5) if (~chosen).any() else None
    write_json(args.metrics, metrics)
    plot = score_histograms(signals, chosen, args.plot)
    with stage_run("select", tags={"policy": cfg.policy}):
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
        mlflow.log_artifact(str(plot), artifact_path="plots")
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
