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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.config import load_params
from pipeline.data.coco import read_coco
from pipeline.files import atomic_write, write_json
from pipeline.labelstudio.client import ENV_URL, connect, export_tasks, get_or_create_project
from pipeline.labelstudio.config import labeling_config
from pipeline.labelstudio.tasks import instance_to_task
from pipeline.model_store import model_version
from pipeline.scoring import list_column


def pending_ids(path: Path) -> list[int]:
    return json.loads(path.read_text())["pending"] if path.is_file() else []


def build_tasks(selection: Path, predictions: Path, pending: list[int], pool_file: Path, images_root: Path,
                document_root: Path, version: str, min_score: float) -> list[dict]:  # fmt: skip
    """Tasks in the order annotators should get them: the selection by rank, then older pending instances with the
    current teacher's prediction (from the pool predictions)."""
    pool = read_coco(pool_file)
    images = {int(im["id"]): im for im in pool.images}
    chosen = pq.read_table(selection).sort_by("rank")
    chosen_ids = set(chosen.column("instance_id").to_pylist())
    refresh = [i for i in pending if i not in chosen_ids]
    if refresh:
        table = pq.read_table(predictions)
        older = table.filter(pc.is_in(table.column("instance_id"), value_set=pa.array(refresh, pa.int64())))
        tables = [(chosen, chosen.column("uncertainty").to_numpy()), (older, np.zeros(older.num_rows))]
    else:
        tables = [(chosen, chosen.column("uncertainty").to_numpy())]
    tasks = []
    for table, uncertainty in tables:
        keypoints, scores, boxes = (list_column(table, c) for c in ("keypoints", "scores", "bbox"))
        ids, image_ids = table.column("instance_id").to_pylist(), table.column("image_id").to_pylist()
        queues = table.column("queue").to_pylist() if "queue" in table.column_names else ["correct"] * len(ids)
        for row, (iid, image_id) in enumerate(zip(ids, image_ids, strict=True)):
            image = images[int(image_id)]
            relative = os.path.relpath(images_root / image["file_name"], document_root)
            tasks.append(instance_to_task(
                instance_id=iid, image_id=image_id, image_path=relative, width=int(image["width"]),
                height=int(image["height"]), bbox=boxes[row], keypoints=keypoints[row], scores=scores[row],
                schema=pool.schema, model_version=version, uncertainty=float(uncertainty[row]), min_score=min_score,
                image_file=image["file_name"], queue=queues[row],
            ))  # fmt: skip
    return tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--selection", type=Path, default=Path("artifacts/selection.parquet"))
    parser.add_argument("--predictions", type=Path, default=Path("artifacts/pool_predictions.parquet"))
    parser.add_argument("--pending", type=Path, default=Path("data/labelstudio/pending.json"))
    parser.add_argument("--pool", type=Path, default=Path("data/prepared/pool.json"))
    parser.add_argument("--images-root", type=Path, default=Path("data/prepared"))
    parser.add_argument("--model", type=Path, default=Path("artifacts/model"))
    parser.add_argument("--registry", type=Path, default=Path("artifacts/registry.json"))
    parser.add_argument("--out", type=Path, default=Path("artifacts/export.json"))
    parser.add_argument("--tasks-file", type=Path, default=Path("artifacts/labelstudio_tasks.json"))
    parser.add_argument("--config-file", type=Path, default=Path("artifacts/labelstudio_config.xml"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    cfg = load_params(args.params).export
    document_root = Path(cfg.document_root)
    version = model_version(args.model, args.registry)
    tasks = build_tasks(args.selection, args.predictions, pending_ids(args.pending), args.pool, args.images_root,
                        document_root, version, cfg.min_score)  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    schema = read_coco(args.pool).schema
    # the tasks file and the labeling config are written in both modes: with a server they are a record of what was
    # sent, without one they are what a person imports by hand
    atomic_write(args.tasks_file, json.dumps(tasks, indent=1) + "\n")
    config_file = args.config_file
    atomic_write(config_file, labeling_config(schema))
    if os.environ.get(ENV_URL):
        ls = connect()
        project = get_or_create_project(ls, cfg.project_title, schema, document_root, version,
                                        image_root=args.images_root / "images")  # fmt: skip
        mapping: dict[int, int | None] = dict(export_tasks(ls, project, tasks, version, batch_size=cfg.batch_size))
        record = {"mode": "server", "project_id": project, "project_title": cfg.project_title}
        message = f"exported {len(tasks)} tasks to Label Studio project {cfg.project_title!r} (id {project})"
    else:
        mapping = {int(t["data"]["instance_id"]): None for t in tasks}
        record = {"mode": "file", "tasks_file": str(args.tasks_file), "labeling_config": str(config_file)}
        message = (f"{ENV_URL} is not set: wrote {len(tasks)} tasks to {args.tasks_file}; import them into a Label "
                   f"Studio project made with the labeling config {config_file} (or start a server with `python -m "
                   "pipeline labelstudio serve` and set the two variables it prints)")  # fmt: skip
    record.update(model_version=version, tasks={str(k): v for k, v in sorted(mapping.items())})
    write_json(args.out, record)
    print(message)


if __name__ == "__main__":
    main()
