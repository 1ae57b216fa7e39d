"""DVC stage `train`: labels + pool + params.train -> artifacts/model/, metrics/train.json, plots/train_curve.csv.

Training runs on Ray Train (pipeline/ray_train.py): a local Ray when RAY_ADDRESS is unset, the cluster when set.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from pipeline.config import Params, load_params
from pipeline.console import add_json_flag, stage_logging, stage_result
from pipeline.data.coco import read_coco
from pipeline.data.dataset import TopDownDataset, instances_from_coco
from pipeline.files import write_json
from pipeline.inference import predict
from pipeline.model_store import WEIGHTS_FILE, load_model
from pipeline.ray_cluster import ray_session
from pipeline.ray_train import train_model
from pipeline.tracking import log_training, stage_run
from pipeline.viz import learning_curve, prediction_sheet, save_png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--labels", type=Path, required=True, help="COCO file of human labels")
    parser.add_argument("--pool", type=Path, required=True, help="COCO file of unlabeled instances (SSL)")
    parser.add_argument("--val", type=Path, required=True)
    parser.add_argument("--images-root", type=Path, required=True, help="folder the file_names are relative to")
    parser.add_argument("--out", type=Path, default=Path("artifacts/model"))
    parser.add_argument("--ray-storage", type=Path, default=Path("artifacts/ray"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/train.json"))
    parser.add_argument("--curve", type=Path, default=Path("plots/train_curve.csv"))
    parser.add_argument(
        "--pseudo",
        type=Path,
        default=Path("artifacts/pseudo_labels.json"),
        help="the last round's confident pseudo-labels (read when train.pseudo_labels is true)",
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    add_json_flag(parser)
    args = parser.parse_args()
    stage_logging()

    params = load_params(args.params)
    previous = args.out / WEIGHTS_FILE
    init_weights = str(previous) if params.train.warm_start == "previous" and previous.is_file() else None
    paths = {
        "labels": str(args.labels),
        "pool": str(args.pool),
        "val": str(args.val),
        "images_root": str(args.images_root),
        "pseudo": str(args.pseudo),
    }
    with ray_session(stage="train"):
        trained = train_model(
            params, paths, args.out, ray_storage=args.ray_storage, init_weights=init_weights, progress=True
        )
    history, final = trained.history, trained.summary
    write_json(args.metrics, final)
    args.curve.parent.mkdir(parents=True, exist_ok=True)
    columns = sorted({k for h in history for k in h})
    with open(args.curve, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
    pictures = [learning_curve(history, args.curve.with_suffix(".png")), _val_predictions(args, params)]
    with stage_run("train", tags={"labeled_instances": str(trained.labeled)}):
        log_training(history, params, args.out, pictures)
    line = (
        f"val AP {final['val_ap']:.3f} at epoch {final['best_epoch'] + 1} of {final['epochs']} -> {args.out} "
        f"(all figures: {args.metrics})"
    )
    stage_result("train", line, {"model": str(args.out), **final}, args.json)


def _val_predictions(args: argparse.Namespace, params: Params, count: int = 8) -> Path:
    """A picture of the trained model's predictions on the first val instances (for people, and MLflow)."""
    model = load_model(args.out)
    val = read_coco(args.val, sigmas=params.data.sigmas, flip_pairs=params.data.flip_pairs)
    records = instances_from_coco(val.images, val.annotations, args.images_root, model.schema.num_keypoints)[:count]
    dataset = TopDownDataset(
        records, model.schema, model.codec, input_size=model.codec.input_size, padding=params.codec.box_padding
    )
    pred = predict(model, dataset)
    sheet = prediction_sheet(
        [r.image_path for r in records], np.array([r.bbox for r in records]), pred.keypoints, pred.scores, model.schema
    )
    return save_png(args.curve.parent / "val_predictions.png", sheet)


if __name__ == "__main__":
    main()
