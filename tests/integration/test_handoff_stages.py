"""The export / pull / merge stages without a server (the file hand-off), as DVC runs them: tasks written for a manual
import, a Label Studio JSON export dropped into data/inbox/, pulled into the append-only store, merged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.data.pool_predictions import list_column, to_table
from pipeline.selection import select, selection_table
from tests.support.teacher import REPO, make_project, small_params, untrained_teacher

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    raw = small_params()
    root = make_project(tmp_path_factory.mktemp("handoff"), raw)
    untrained_teacher(root, raw, root / "artifacts" / "model")
    return root


def _stage(project: Path, module: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}")
    env.pop("LABEL_STUDIO_URL", None)
    env.pop("LABEL_STUDIO_API_KEY", None)
    done = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=project, env=env, capture_output=True, text=True, timeout=300
    )
    if check:
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def _pool_predictions(project: Path, count: int) -> None:
    """Pool predictions = the oracle truth plus noise for the first ``count`` pool instances, and a selection."""
    prepared = project / "data" / "prepared"
    pool = json.loads((prepared / "pool.json").read_text())["annotations"][:count]
    truth = {a["id"]: a for a in json.loads((prepared / "oracle.json").read_text())["annotations"]}
    rng = np.random.default_rng(0)
    kp = np.stack([np.asarray(truth[a["id"]]["keypoints"], float).reshape(-1, 3)[:, :2] for a in pool])
    scores = rng.random((count, 17)).astype(np.float32)
    table = to_table(
        {
            "instance_id": np.array([a["id"] for a in pool], np.int64),
            "image_id": np.array([a["image_id"] for a in pool], np.int64),
            "bbox": np.array([a["bbox"] for a in pool], float),
            "keypoints": kp.reshape(count, -1) + rng.normal(0, 2, (count, 34)),
            "scores": scores,
            "response": scores.mean(1).astype(float),
            "min_response": scores.min(1).astype(float),
            "sahr_sigma": np.full(count, np.nan),
            "difficulty": rng.random(count),
            "flip_disagreement": rng.random(count) / 5,
            "image_readable": np.ones(count, bool),
        }
    )
    (project / "artifacts").mkdir(exist_ok=True)
    pq.write_table(table, project / "artifacts" / "pool_predictions.parquet")
    chosen = select(table.to_pandas(), policy="uncertainty", budget=count, weights={"response": 1.0})
    pq.write_table(selection_table(table, chosen), project / "artifacts" / "selection.parquet")


def _accept(task: dict, task_id: int, annotation_id: int, **extra) -> dict:
    """Label Studio's JSON export of a task whose annotator accepted the prediction (or skipped it)."""
    annotation = {
        "id": annotation_id,
        "result": task["predictions"][0]["result"],
        "was_cancelled": False,
        "completed_by": 1,
        "created_at": "2026-11-22T10:00:00Z",
        "updated_at": "2026-11-22T10:00:05Z",
        **extra,
    }
    return {"id": task_id, **task, "annotations": [annotation]}


def test_file_handoff_export_inbox_pull_and_merge(project):
    _pool_predictions(project, 5)
    _stage(project, "stages.export")
    export = json.loads((project / "artifacts" / "export.json").read_text())
    tasks = json.loads((project / "artifacts" / "labelstudio_tasks.json").read_text())
    assert export["mode"] == "file" and len(tasks) == 5 and export["model_version"].startswith("local/")
    ranked = pq.read_table(project / "artifacts" / "selection.parquet").column("instance_id").to_pylist()
    assert [t["data"]["instance_id"] for t in tasks] == ranked
    for task in tasks:  # every image URL names a file under the document root (params: export.document_root)
        relative = task["data"]["image"].split("?d=", 1)[1]
        assert (project / "data" / relative).is_file()
    assert "<KeyPointLabels" in (project / "artifacts" / "labelstudio_config.xml").read_text()

    # before anyone annotates: everything exported is pending
    _stage(project, "stages.pull")
    assert json.loads((project / "data" / "labelstudio" / "pending.json").read_text())["pending"] == sorted(ranked)
    assert list((project / "data" / "corrections").glob("*.json")) == []

    # an annotator's export: three accepted, one skipped, one untouched
    inbox = project / "data" / "inbox"
    inbox.mkdir(parents=True)
    done = [_accept(t, 10 + i, 100 + i) for i, t in enumerate(tasks[:3])]
    done.append(_accept(tasks[3], 13, 103, was_cancelled=True))
    (inbox / "batch1.json").write_text(json.dumps(done))
    out = _stage(project, "stages.pull", "--json").stdout
    files = sorted((project / "data" / "corrections").glob("*.json"))
    assert len(files) == 1 and json.loads(out.splitlines()[-1])["new_files"] == [files[0].name]
    stored = json.loads(files[0].read_text())
    assert sorted(c["instance_id"] for c in stored["corrections"]) == sorted(ranked[:3])
    assert [s["instance_id"] for s in stored["skipped"]] == [ranked[3]]
    pending = project / "data" / "labelstudio" / "pending.json"
    assert json.loads(pending.read_text())["pending"] == [ranked[4]]
    before = {p: p.read_bytes() for p in [*files, pending]}

    # the same inbox again: nothing new, byte-identical outputs
    _stage(project, "stages.pull")
    assert sorted((project / "data" / "corrections").glob("*.json")) == files
    assert {p: p.read_bytes() for p in [*files, pending]} == before

    # a broken inbox file: named on stderr, the stage succeeds (DVC caches what it stored), the good work stays
    (inbox / "broken.json").write_text('{"not": "a list"}')
    warned = _stage(project, "stages.pull")
    assert "broken.json" in warned.stderr and "1 files unreadable (below)" in warned.stdout  # the one line
    assert json.loads(_stage(project, "stages.pull", "--json").stdout.splitlines()[-1])["unreadable"] == 1
    assert sorted((project / "data" / "corrections").glob("*.json")) == files
    assert {p: p.read_bytes() for p in files} == {p: before[p] for p in files}
    (inbox / "broken.json").unlink()

    # issue #25: the last export went to a server, but this shell has no LABEL_STUDIO_URL: said, not silent
    export_file = project / "artifacts" / "export.json"
    file_export = export_file.read_bytes()
    export_file.write_text(json.dumps({**export, "mode": "server", "project_title": "poseloop"}))
    unset = _stage(project, "stages.pull")
    assert "the last export sent 5 tasks to the Label Studio project 'poseloop'" in unset.stderr
    assert "LABEL_STUDIO_URL is not set" in unset.stderr and "run `dvc repro` again" in unset.stderr
    export_file.write_bytes(file_export)
    assert "warning" not in _stage(project, "stages.pull").stderr  # the file hand-off needs no server

    # merge: the seed labels plus the three human corrections
    _stage(project, "stages.merge")
    train = json.loads((project / "data" / "train.json").read_text())
    seed = json.loads((project / "data" / "prepared" / "labeled.json").read_text())
    humans = [a for a in train["annotations"] if a["source"] == "human"]
    assert len(train["annotations"]) == len(seed["annotations"]) + 3 and len(humans) == 3
    assert all(a["model_version"] == export["model_version"] for a in humans)
    assert json.loads((project / "data" / "merge_report.json").read_text())["round"] == 2


def test_select_stage_sends_hopeless_people_to_a_review_queue_that_export_marks(project):
    import yaml

    _pool_predictions(project, 12)
    path = project / "artifacts" / "pool_predictions.parquet"
    table = pq.read_table(path)
    columns = {
        c: list_column(table, c)
        if pa.types.is_fixed_size_list(table.schema.field(c).type)
        else table.column(c).to_numpy(zero_copy_only=False)
        for c in table.column_names
    }
    scores = columns["scores"] = columns["scores"].copy()
    scores[8:] = 0.05  # the teacher finds nothing in the last four people: hopeless (the first five are already
    scores[:8] = np.maximum(scores[:8], 0.5)  # corrected, skipped or pending from the test above)
    columns["response"] = scores.mean(1).astype(float)
    table = to_table(columns)
    pq.write_table(table, path)
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["select"].update(policy="skip_hopeless", budget=3, review_budget=2)
    (project / "params_review.yaml").write_text(yaml.safe_dump(raw))
    out = json.loads(
        _stage(
            project,
            "stages.select",
            "--params",
            "params_review.yaml",
            "--labeled",
            "data/prepared/labeled.json",
            "--json",
        ).stdout.splitlines()[-1]
    )
    assert out["excluded_hopeless"] == 4 and out["review_queue"] == 2 and out["selected"] == 3
    selection = pq.read_table(project / "artifacts" / "selection.parquet")
    ids = table.column("instance_id").to_pylist()
    assert selection.column("queue").to_pylist() == ["correct"] * 3 + ["review"] * 2
    assert not set(selection.column("instance_id").to_pylist()[:3]) & set(ids[8:])
    assert set(selection.column("instance_id").to_pylist()[3:]) <= set(ids[8:])
    _stage(project, "stages.export")
    tasks = json.loads((project / "artifacts" / "labelstudio_tasks.json").read_text())
    # the selection in rank order, then older pending tasks refreshed with this teacher's prediction
    assert [t["data"]["queue"] for t in tasks] == ["correct"] * 3 + ["review"] * 2 + ["correct"] * (len(tasks) - 5)
