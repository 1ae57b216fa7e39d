"""DVC stage `export`: the selected instances (plus those still pending) -> Label Studio tasks pre-annotated with the
teacher's keypoints, or, with no server configured, artifacts/labelstudio_tasks.json to import by hand.

One task per person instance, keyed by instance_id: re-running creates no duplicate, and tasks still waiting for an
annotator get the new model's prediction. Writes artifacts/export.json (mode, project, model_version, instance ->
task). LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY come from the environment only and are never written anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.config import load_params
from pipeline.console import add_json_flag, stage_result
from pipeline.data.coco import read_coco
from pipeline.data.labelstudio.config import labeling_config
from pipeline.data.labelstudio.tasks import tasks_for_selection
from pipeline.files import atomic_write, write_json
from pipeline.labelstudio.client import ENV_URL, connect, get_or_create_project, send_tasks
from pipeline.model_store import model_version


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--selection", type=Path, default=Path("artifacts/selection.parquet"))
    parser.add_argument("--predictions", type=Path, default=Path("artifacts/pool_predictions.parquet"))
    parser.add_argument("--pending", type=Path, default=Path("data/labelstudio/pending.json"))
    parser.add_argument("--pool", type=Path, default=Path("data/pool.json"))
    parser.add_argument("--images-root", type=Path, default=Path("data/prepared"))
    parser.add_argument("--model", type=Path, default=Path("artifacts/model"))
    parser.add_argument("--registry", type=Path, default=Path("artifacts/registry.json"))
    parser.add_argument("--out", type=Path, default=Path("artifacts/export.json"))
    parser.add_argument("--tasks-file", type=Path, default=Path("artifacts/labelstudio_tasks.json"))
    parser.add_argument("--config-file", type=Path, default=Path("artifacts/labelstudio_config.xml"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    add_json_flag(parser)
    args = parser.parse_args()
    cfg = load_params(args.params).export
    document_root = Path(cfg.document_root)
    version = model_version(args.model, args.registry)
    pool = read_coco(args.pool)
    pending = json.loads(args.pending.read_text())["pending"] if args.pending.is_file() else []
    tasks = tasks_for_selection(
        pq.read_table(args.selection),
        pq.read_table(args.predictions),
        pending,
        {int(im["id"]): im for im in pool.images},
        pool.schema,
        args.images_root,
        document_root,
        version,
        cfg.min_score,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    schema = pool.schema
    # the tasks file and the labeling config are written in both modes: with a server they are a record of what was
    # sent, without one they are what a person imports by hand
    atomic_write(args.tasks_file, json.dumps(tasks, indent=1) + "\n")
    config_file = args.config_file
    atomic_write(config_file, labeling_config(schema))
    if os.environ.get(ENV_URL):
        ls = connect()
        project = get_or_create_project(
            ls, cfg.project_title, schema, document_root, version, image_root=args.images_root / "images"
        )
        mapping: dict[int, int | None] = dict(send_tasks(ls, project, tasks, version, batch_size=cfg.batch_size))
        record = {"mode": "server", "project_id": project, "project_title": cfg.project_title}
        message = f"{len(tasks)} tasks in Label Studio project {cfg.project_title!r} (id {project})"
    else:
        mapping = {int(t["data"]["instance_id"]): None for t in tasks}
        record = {"mode": "file", "tasks_file": str(args.tasks_file), "labeling_config": str(config_file)}
        message = (
            f"{len(tasks)} tasks written to {args.tasks_file} for a Label Studio project made with {config_file} "
            f"({ENV_URL} is not set; `python -m pipeline labelstudio serve` prints the two variables)"
        )
    record.update(model_version=version, tasks={str(k): v for k, v in sorted(mapping.items())})
    write_json(args.out, record)
    stage_result("export", message, {k: v for k, v in record.items() if k != "tasks"} | {"sent": len(tasks)}, args.json)


if __name__ == "__main__":
    main()
