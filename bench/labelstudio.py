"""Label Studio hand-off throughput against a real local server: tasks exported per second (with predictions) and
annotations pulled per second, for 10,000 person instances (target: 10,000 exported in < 60 s).

The annotations to pull are imported together with their tasks into a second project (creating 10,000 annotations
one API call at a time would take ~20 min and measure the simulated annotator, not the pull).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from bench.report import write_section
from pipeline.data.labelstudio.tasks import instance_to_task
from pipeline.keypoints import KeypointSchema
from pipeline.labelstudio.client import fetch_annotations, get_or_create_project, send_tasks
from pipeline.labelstudio.server import LocalLabelStudio, free_port

TASKS = 10_000
WIDTH, HEIGHT = 640, 480


def _tasks(schema: KeypointSchema, count: int, version: str) -> list[dict]:
    rng = np.random.default_rng(0)
    k = schema.num_keypoints
    tasks = []
    for i in range(count):
        x, y = rng.uniform(0, 400), rng.uniform(0, 200)
        keypoints = np.c_[rng.uniform(x, x + 200, k), rng.uniform(y, y + 250, k)]
        tasks.append(
            instance_to_task(
                instance_id=100_000 + i,
                image_id=i,
                image_path=f"prepared/images/{i:06d}.jpg",
                width=WIDTH,
                height=HEIGHT,
                bbox=[x, y, 200, 250],
                keypoints=keypoints.ravel(),
                scores=rng.random(k),
                schema=schema,
                model_version=version,
                uncertainty=float(rng.random()),
            )
        )
    return tasks


def run() -> None:
    from label_studio_sdk import LabelStudio

    schema = KeypointSchema.coco17()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "docs" / "prepared" / "images").mkdir(parents=True)
        server = LocalLabelStudio(data_dir=root / "ls", document_root=root / "docs", port=free_port())
        started = time.perf_counter()
        server.start()
        start_s = time.perf_counter() - started
        try:
            ls = LabelStudio(base_url=server.url, api_key=server.token)
            tasks = _tasks(schema, TASKS, "bench/1")
            project = get_or_create_project(ls, "bench export", schema, root / "docs")
            t0 = time.perf_counter()
            mapping = send_tasks(ls, project, tasks, "bench/1")
            export_s = time.perf_counter() - t0
            assert len(mapping) == TASKS
            t0 = time.perf_counter()
            send_tasks(ls, project, tasks, "bench/1")
            noop_s = time.perf_counter() - t0

            annotated = get_or_create_project(ls, "bench pull", schema, root / "docs")
            with_annotations = [
                {**t, "annotations": [{"result": t["predictions"][0]["result"], "was_cancelled": False}]} for t in tasks
            ]
            for i in range(0, TASKS, 1000):
                ls.projects.import_tasks(id=annotated, request=with_annotations[i : i + 1000])
            t0 = time.perf_counter()
            corrections, _, problems, pending = fetch_annotations(ls, annotated, schema)
            pull_s = time.perf_counter() - t0
        finally:
            server.stop()
    rows = {
        "tasks": TASKS,
        "server_first_start_s": start_s,
        "export_s": export_s,
        "export_noop_s": noop_s,
        "pull_s": pull_s,
        "pulled_corrections": len(corrections),
        "pull_problems": len(problems),
    }
    body = (
        f"A fresh local Label Studio 1.23.2 (sqlite) on this machine, {TASKS:,} person instances with 17 keypoints "
        f"each (a box + 17 points per prediction, 640x480 images).\n\n"
        "| step | seconds | per second |\n|---|---|---|\n"
        f"| export {TASKS:,} new tasks with predictions (batches of 500) | {export_s:.1f} | {TASKS / export_s:.0f} "
        f"tasks/s |\n"
        f"| export again (idempotent: nothing new to send) | {noop_s:.1f} | - |\n"
        f"| pull {len(corrections):,} completed annotations (percent -> px, validation) | {pull_s:.1f} | "
        f"{len(corrections) / pull_s:.0f} annotations/s |\n"
        f"| server first start (migrations) | {start_s:.1f} | - |\n\n"
        f"Target: 10,000 tasks exported in < 60 s: **{'met' if export_s < 60 else 'NOT met'}** ({export_s:.1f} s). "
        f"Pull problems: {len(problems)}; pending after the pull: {len(pending)}."
    )
    write_section(
        "labelstudio", "Label Studio export and pull", "make bench  # python -m bench labelstudio", body, rows
    )
