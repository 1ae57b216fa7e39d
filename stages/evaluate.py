"""DVC stage `evaluate`: model + val.json + test.json -> metrics/eval.json and plots/ (per-keypoint errors, the worst
val examples).

metrics/eval.json is ``{"val": {...}, "test": {...} | null}`` with ``pipeline.evaluation.evaluate_keypoints``'s keys
(ap, ap50, ap75, apm, apl, ar..., pck05, pck10, per_keypoint_error, the sigmas used) plus ``instances``; a split
without any labeled person gives null. Predictions come from the model's own boxes-in-ground-truth top-down path
(``pipeline.inference.predict``), with flip test when ``params.train.flip_test``, so the val numbers equal what
training's validation reports for the same weights.

plots/eval_per_keypoint.csv (keypoint, val_error, test_error; px) is a DVC plot; plots/eval_worst.png shows the
``params.register.review_examples`` val instances with the lowest OKS, ground truth (left) beside the prediction
(right), and plots/eval_worst.csv lists them. The register stage puts both into each version's review report.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np

from pipeline.config import load_params
from pipeline.console import add_json_flag, stage_logging, stage_result
from pipeline.data.coco import read_coco
from pipeline.evaluation import bootstrap_ap_se, evaluate_keypoints
from pipeline.files import write_json
from pipeline.inference import person_oks, predict_split, to_coco_results, worst_instances
from pipeline.model_store import load_model
from pipeline.tracking import flat_eval_metrics, stage_run
from pipeline.viz import save_png, worst_examples_sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("artifacts/model"))
    parser.add_argument("--val", type=Path, default=Path("data/prepared/val.json"))
    parser.add_argument("--test", type=Path, default=Path("data/prepared/test.json"))
    parser.add_argument("--images-root", type=Path, default=Path("data/prepared"), help="folder of the file_names")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/eval.json"))
    parser.add_argument("--plots-dir", type=Path, default=Path("plots"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    add_json_flag(parser)
    args = parser.parse_args()
    stage_logging()

    params = load_params(args.params)
    model = load_model(args.model)
    flip_test = params.train.flip_test
    results: dict[str, dict | None] = {}
    worst_rows: list[dict] = []
    sheet = np.zeros((64, 128, 3), np.uint8)
    for split, path in (("val", args.val), ("test", args.test)):
        gt = read_coco(path, sigmas=params.data.sigmas, flip_pairs=params.data.flip_pairs)
        try:
            records, pred = predict_split(model, gt, args.images_root, params.codec.box_padding, flip_test)
        except ValueError as exc:  # the file's keypoints are not the model's
            raise SystemExit(str(exc)) from None
        if not records:  # e.g. data.test_images: 0
            results[split] = None
            continue
        metrics = evaluate_keypoints(gt.to_dict(), to_coco_results(pred, records, gt.schema.category_id), gt.schema)
        # how much the AP would move with other people of the same kind in the split (the review report's +-)
        labeled = np.array([(r.keypoints[:, 2] > 0).any() for r in records])
        ap_se = bootstrap_ap_se(person_oks(gt, records, pred)[labeled], pred.scores.mean(axis=1)[labeled])
        ap_se = round(ap_se, 5) if math.isfinite(ap_se) else None  # None: fewer than 2 labeled people
        results[split] = {**metrics, "instances": len(records), "ap_se": ap_se}
        if split == "val":
            worst_rows = worst_instances(gt, records, pred, params.register.review_examples)
            sheet = worst_examples_sheet(worst_rows, records, pred.keypoints, pred.scores, gt.schema)
    if results["val"] is None:
        raise SystemExit(f"{args.val}: no labeled person to evaluate on")

    write_json(args.metrics, results)
    plots = _write_plots(args.plots_dir, results, worst_rows, sheet)
    with stage_run("evaluate", tags={"flip_test": str(flip_test)}):
        import mlflow

        mlflow.log_metrics(flat_eval_metrics(results))
        mlflow.log_artifact(str(args.metrics))
        for plot in plots:
            mlflow.log_artifact(str(plot), artifact_path="plots")
    val, test = results["val"], results["test"]
    result = {
        "metrics": str(args.metrics),
        "val_ap": val["ap"],
        "val_pck10": val["pck10"],
        "test_ap": None if test is None else test["ap"],
        "flip_test": flip_test,
    }
    line = (
        f"val AP {val['ap']:.3f}, PCK@0.1 {val['pck10']:.3f}, test AP "
        + ("-" if test is None else f"{test['ap']:.3f}")
        + (" (flip test)" if flip_test else "")
    )
    stage_result("evaluate", line, result, args.json)


def _write_plots(plots_dir: Path, results: dict, worst_rows: list[dict], sheet: np.ndarray) -> list[Path]:
    plots_dir.mkdir(parents=True, exist_ok=True)
    per_keypoint = plots_dir / "eval_per_keypoint.csv"
    val_err = results["val"]["per_keypoint_error"]
    test_err = (results["test"] or {}).get("per_keypoint_error") or {}
    with open(per_keypoint, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["keypoint", "val_error", "test_error"])
        for name, value in val_err.items():
            # an empty cell, not 0, where a keypoint is never labeled in a split
            writer.writerow([name, _cell(value), _cell(test_err.get(name))])
    worst_csv = plots_dir / "eval_worst.csv"
    with open(worst_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["rank", "instance_id", "image_id", "oks"])
        for rank, row in enumerate(worst_rows):
            writer.writerow([rank, row["instance_id"], row["image_id"], f"{row['oks']:.4f}"])
    return [per_keypoint, worst_csv, save_png(plots_dir / "eval_worst.png", sheet)]


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


if __name__ == "__main__":
    main()
