"""DVC stage `find`: data/prepared/pool.json + the people the instance finder finds on its unboxed images (a team's
own images and video frames, ``data.pool``) -> data/pool.json, the pool every later stage reads.

Without unboxed images the pool passes through unchanged and no finder is trained. The finder, what it learns from
and its output are described in pipeline/finding.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.config import load_params
from pipeline.console import add_json_flag, stage_logging, stage_result
from pipeline.data.coco import load_json
from pipeline.files import write_json
from pipeline.finding import find_pool
from pipeline.ray_cluster import ray_session, resolve_use_gpu
from pipeline.ray_find import find_on_ray


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"), help="the prepare stage's folder")
    parser.add_argument("--out", type=Path, default=Path("data/pool.json"), help="the pool with the found people")
    parser.add_argument("--finder", type=Path, default=Path("artifacts/finder"), help="the trained finder")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/find.json"))
    parser.add_argument(
        "--completed", type=Path, default=Path("data/completed.json"), help="pool images annotators completed"
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="the parameters file")
    add_json_flag(parser)
    args = parser.parse_args()
    stage_logging()

    params = load_params(args.params)
    cfg = params.pseudolabel  # the pool pass runs on Ray Data with the teacher's actor settings

    def on_ray(finder_dir: Path, images: list[dict], images_root: Path) -> list:
        with ray_session(stage="find"):
            return find_on_ray(
                finder_dir,
                images,
                images_root,
                batch_size=params.find.batch_size,
                actors=cfg.actors,
                cpus_per_actor=cfg.cpus_per_actor,
                gpus_per_actor=cfg.gpus_per_actor if resolve_use_gpu(cfg.use_gpu) else 0.0,
                threads_per_actor=cfg.threads_per_actor,
                progress=True,
            )

    completed = load_json(args.completed) if args.completed.is_file() else None
    metrics = find_pool(params, args.prepared, args.out, args.finder, pool_pass=on_ray, completed=completed)
    write_json(args.metrics, metrics)
    line = (
        f"{metrics['found']} people found in {metrics['unboxed_images']} images without boxes (finder "
        f"{metrics['finder']})"
        + (
            f"; nobody found on {metrics['images_without_people']}: each stands in whole (select's nobody_found queue)"
            if metrics["images_without_people"]
            else ""
        )
        if metrics["unboxed_images"]
        else "every pool image comes with its boxes: nothing to find"
    )
    stage_result("find", line, {k: metrics[k] for k in ("unboxed_images", "finder", "found")}, args.json)


if __name__ == "__main__":
    main()
