"""DVC stage `pseudolabel`: the teacher over pool.json on Ray Data -> artifacts/pool_predictions.parquet (one row per
instance: keypoints in image px, per-keypoint scores and the selection signals) and artifacts/pseudo_labels.json (the
confident predictions as COCO, ``source: pseudo``).

The teacher is this round's model (``pseudolabel.teacher: latest``) or the registry's champion (``champion``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pipeline.config import load_params
from pipeline.console import add_json_flag, stage_result
from pipeline.data.coco import read_coco, write_coco
from pipeline.data.pool_predictions import (
    SIGNAL_COLUMNS,
    confident_rows,
    list_column,
    pseudo_label_coco,
)
from pipeline.files import write_json
from pipeline.model_store import model_version
from pipeline.pseudolabel import score_pool
from pipeline.ray_cluster import ray_session
from pipeline.tracking import download_model_alias, stage_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=Path("artifacts/model"), help="this round's model (latest)")
    parser.add_argument("--pool", type=Path, default=Path("data/pool.json"))
    parser.add_argument("--images-root", type=Path, default=Path("data/prepared"))
    parser.add_argument("--out", type=Path, default=Path("artifacts/pool_predictions.parquet"))
    parser.add_argument("--pseudo-labels", type=Path, default=Path("artifacts/pseudo_labels.json"))
    parser.add_argument("--registry", type=Path, default=Path("artifacts/registry.json"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/pseudolabel.json"))
    parser.add_argument(
        "--teacher-dir",
        type=Path,
        default=Path("artifacts/teacher"),
        help="where pseudolabel.teacher: champion downloads the champion's files",
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    add_json_flag(parser)
    args = parser.parse_args()
    params = load_params(args.params)
    cfg = params.pseudolabel

    if cfg.teacher == "champion":  # the registered model's alias (register.model_name), downloaded to --teacher-dir
        model_dir, version = download_model_alias("champion", args.teacher_dir, name=params.register.model_name)
    else:
        model_dir, version = args.model, model_version(args.model, args.registry)
    pool = read_coco(args.pool)
    started = time.perf_counter()
    with ray_session(stage="pseudolabel"):
        run, scores, table = score_pool(
            params, model_dir, args.pool, args.images_root, args.out, on_ray=True, progress=True
        )
    seconds = time.perf_counter() - started

    confident = confident_rows(
        scores,
        list_column(table, "scores"),
        min_score=cfg.pseudo_min_score,
        min_keypoints=cfg.pseudo_min_keypoints,
        max_flip=cfg.pseudo_max_flip,
    )
    pseudo = pseudo_label_coco(
        pool.to_dict(), table, confident.nonzero()[0], min_score=cfg.pseudo_min_score, model_version=version
    )
    write_coco(args.pseudo_labels, pseudo)
    rows = run.rows
    metrics = {
        "instances": rows,
        "seconds": round(seconds, 2),
        "instances_per_s": round(rows / seconds, 2),
        "startup_seconds": round(run.first_batch_seconds, 2),
        "teacher": cfg.teacher,
        "model_version": version,
        "confident_pseudo_labels": int(confident.sum()),
        "unreadable": int((~scores["image_readable"]).sum()),
    }
    metrics.update({f"mean_{s}": round(float(scores[s].mean()), 5) for s in SIGNAL_COLUMNS if scores[s].notna().any()})
    write_json(args.metrics, metrics)
    with stage_run("pseudolabel", tags={"model_version": version}):
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
    line = (
        f"{metrics['instances']} people scored by {metrics['model_version']} in {metrics['seconds']:.0f} s, "
        f"{metrics['confident_pseudo_labels']} confident pseudo-labels"
        + (f", {metrics['unreadable']} unreadable" if metrics["unreadable"] else "")
    )
    stage_result("pseudolabel", line, metrics, args.json)


if __name__ == "__main__":
    main()
