"""DVC stage `register`: model + metrics/eval.json -> a new MLflow model version (tags, aliases, review report) and
artifacts/registry.json.

What identifies the version (pipeline/registry.py has the alias rules):

* round: the merge report's ``round`` when it has one, else 1 + the number of files in the corrections store
  (``registry.round_number``);
* labeled_instances: the annotations of train.json; train_md5: its md5;
* data_hash: md5 over pool.json's and train.json's md5s (``registry.data_hash``): the data the model learned from,
  independent of dvc.lock's format and of where the checkout lives.

artifacts/registry.json (sorted keys) holds name, version, model_version, weights_md5 (md5 of model.pt, what
``model_store.model_version`` checks before it trusts model_version), run_id, champion_version,
challenger_version, promoted and round. It records the aliases as this stage left them: ``python -m pipeline
promote`` moves the champion later without rewriting it (``python -m pipeline status`` reads the registry itself).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.config import load_params
from pipeline.console import add_json_flag, stage_result
from pipeline.data.coco import read_coco
from pipeline.files import file_md5, write_json
from pipeline.registry import data_hash, record_round, register_version, round_number


def _headline(eval_metrics: dict) -> dict:
    val, test = eval_metrics.get("val") or {}, eval_metrics.get("test") or {}
    return {"val_ap": val.get("ap"), "val_pck10": val.get("pck10"), "test_ap": test.get("ap")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("artifacts/model"))
    parser.add_argument("--eval", type=Path, default=Path("metrics/eval.json"), help="the evaluate stage's metrics")
    parser.add_argument("--train", type=Path, default=Path("data/train.json"), help="the labels the model saw")
    parser.add_argument("--pool", type=Path, default=Path("data/pool.json"), help="for the data hash")
    parser.add_argument("--merge-report", type=Path, default=Path("data/merge_report.json"))
    parser.add_argument("--corrections", type=Path, default=Path("data/corrections"), help="round fallback")
    parser.add_argument("--out", type=Path, default=Path("artifacts/registry.json"))
    parser.add_argument("--review-dir", type=Path, default=Path("artifacts/review"))
    parser.add_argument("--plots-dir", type=Path, default=Path("plots"), help="the evaluate stage's plots")
    parser.add_argument("--rounds", type=Path, default=Path("plots/rounds.csv"), help="AP per round (appended)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    add_json_flag(parser)
    args = parser.parse_args()

    cfg = load_params(args.params).register
    eval_metrics = json.loads(args.eval.read_text())
    train = read_coco(args.train)
    result = register_version(
        args.model,
        eval_metrics,
        name=cfg.model_name,
        round=round_number(args.merge_report, args.corrections),
        labeled_instances=len(train.annotations),
        train_md5=file_md5(args.train),
        data_hash=data_hash([args.pool, args.train]),
        auto_promote=cfg.auto_promote,
        promote_margin=cfg.promote_margin,
        review_dir=args.review_dir,
        worst_examples=args.plots_dir / "eval_worst.png",
        worst_table=args.plots_dir / "eval_worst.csv",
    )
    registry = result.registry_json()
    record_round(
        args.rounds,
        {
            "round": registry["round"],
            "version": registry["version"],
            "labeled_instances": len(train.annotations),
            **_headline(eval_metrics),
        },
    )
    write_json(args.out, registry)
    line = f"{registry['model_version']} (round {registry['round']}, val AP {result.ap:.3f}): {result.promotion_reason}"
    stage_result("register", line, {**registry, "ap": result.ap, "decision": result.promotion_reason}, args.json)


if __name__ == "__main__":
    main()
