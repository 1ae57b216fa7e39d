"""The loop end to end, as a user runs it: real `dvc repro` in a fresh git + DVC project, a real Label Studio server
(the test session's, its document root holding the project), a real MLflow store, the simulated annotator through
the API.

round 1 -> simulate -> round 2 -> a no-op repro -> pseudolabel with teacher = champion -> promote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import mlflow
import pytest
import yaml

from tests.support.teacher import copy_project, small_params

BUDGET = 6
MODEL = "poseloop-pose"
TITLE = "loop end to end"


@pytest.fixture(scope="module")
def loop(labelstudio):
    """A fresh project inside the session's Label Studio document root (export.document_root says where that is,
    as a user's params.yaml does for a server started elsewhere); yields (project, env, server)."""
    root = labelstudio.document_root
    project = root / "loop-project"
    project.mkdir()
    copy_project(project)
    raw = small_params(epochs=2, min_steps_per_epoch=12)
    raw["select"] = {**raw.get("select", {}), "budget": BUDGET}
    raw["export"] = {**raw.get("export", {}), "project_title": TITLE, "document_root": str(root)}
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (project / "data").mkdir()
    server = labelstudio.server
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}",
        LABEL_STUDIO_URL=server.url,
        LABEL_STUDIO_API_KEY=server.token,
        PYTHONPATH=str(project),
    )
    env.pop("RAY_ADDRESS", None)
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"]):
        subprocess.run(cmd, cwd=project, env=env, check=True, capture_output=True)
    return project, env, server


def _run(project: Path, env: dict, *cmd: str, timeout: float = 900) -> str:
    done = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done.stdout + done.stderr


def _tasks(server) -> list[dict]:
    from label_studio_sdk import LabelStudio

    ls = LabelStudio(base_url=server.url, api_key=server.token)
    project = next(p for p in ls.projects.list() if p.title == TITLE)
    return [
        t.model_dump() if hasattr(t, "model_dump") else dict(t) for t in ls.tasks.list(project=project.id, fields="all")
    ]


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_two_rounds_with_simulated_annotation_then_a_noop_then_promote(loop):
    project, env, server = loop
    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])

    # ---- round 1: seed labels only; the selected people become pre-annotated tasks
    out = _run(project, env, "dvc", "repro")
    # a clean run: the workers' output and Ray's own logs stay off the terminal (artifacts/logs/<stage>.log)
    for chatter in (
        "PlacementGroupCleaner",
        "State API",
        "(RayTrainWorker",
        "(TrainController",
        "Running Dataset",
        "Started a local Ray instance",
    ):
        assert chatter not in out, f"{chatter!r} on the terminal:\n{out[-3000:]}"
    assert (project / "artifacts" / "logs" / "train.log").is_file()
    assert (project / "artifacts" / "logs" / "pseudolabel.log").is_file()
    seed = len(_json(project / "data" / "train.json")["annotations"])
    registry = _json(project / "artifacts" / "registry.json")
    assert registry["version"] == 1 and registry["model_version"] == f"{MODEL}/1"
    tasks = _tasks(server)
    assert len(tasks) == BUDGET
    assert {p["model_version"] for t in tasks for p in t["predictions"]} == {f"{MODEL}/1"}
    assert _json(project / "artifacts" / "export.json")["mode"] == "server"

    # ---- the annotator corrects every exported task (through the API, from the hidden truth)
    _run(
        project,
        env,
        sys.executable,
        "-m",
        "pipeline",
        "labelstudio",
        "simulate",
        "--oracle",
        "data/prepared/oracle.json",
        "--noise",
        "0.5",
        "--project",
        TITLE,
    )

    # ---- round 2: pull -> merge -> retrain -> register v2 -> new selection exported with v2's predictions
    _run(project, env, "dvc", "repro")
    train = _json(project / "data" / "train.json")
    assert len(train["annotations"]) == seed + BUDGET
    assert Counter(a["source"] for a in train["annotations"])["human"] == BUDGET
    assert _json(project / "data" / "merge_report.json")["round"] == 2
    files = sorted((project / "data" / "corrections").glob("*.json"))
    assert len(files) == 1
    corrected = [c["instance_id"] for c in _json(files[0])["corrections"]]
    assert len(corrected) == len(set(corrected)) == BUDGET
    version = client.get_model_version(MODEL, "2")
    assert version.tags["round"] == "2" and version.tags["model_version"] == f"{MODEL}/2"
    assert int(version.tags["labeled_instances"]) == seed + BUDGET
    assert int(client.get_model_version_by_alias(MODEL, "challenger").version) == 2
    assert int(client.get_model_version_by_alias(MODEL, "champion").version) == 1  # promotion waits for review
    tasks = _tasks(server)
    instance_ids = [t["data"]["instance_id"] for t in tasks]
    assert len(tasks) == 2 * BUDGET and len(set(instance_ids)) == 2 * BUDGET  # nothing duplicated
    new = [t for t in tasks if not t["annotations"]]
    assert len(new) == BUDGET and all(p["model_version"] == f"{MODEL}/2" for t in new for p in t["predictions"])
    assert not set(corrected) & {t["data"]["instance_id"] for t in new}

    # ---- nothing new: only the two always-changed stages run (pull, and inputs listing the source's files), the
    # model is not retrained
    weights = project / "artifacts" / "model" / "model.pt"
    stamp = weights.stat().st_mtime_ns
    out = _run(project, env, "dvc", "repro")
    ran = [line for line in out.splitlines() if line.startswith("Running stage")]
    assert ran == ["Running stage 'inputs':", "Running stage 'pull':"], ran
    assert weights.stat().st_mtime_ns == stamp
    assert sorted((project / "data" / "corrections").glob("*.json")) == files
    status = _run(project, env, "dvc", "status")
    assert "train" not in status and "changed" not in status.replace("always changed", ""), status

    # ---- pseudolabel with teacher = champion uses the champion (v1), not the latest model (v2); promote moves it.
    # (A pseudolabel run after promote would use v2, which is also the latest: it could not tell the two apart.)
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["pseudolabel"]["teacher"] = "champion"
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    _run(project, env, "dvc", "repro", "--single-item", "pseudolabel")
    assert _json(project / "metrics" / "pseudolabel.json")["model_version"] == f"{MODEL}/1"
    _run(project, env, sys.executable, "-m", "pipeline", "promote")
    assert int(client.get_model_version_by_alias(MODEL, "champion").version) == 2
    status = _run(project, env, sys.executable, "-m", "pipeline", "status")
    assert "champion" in status and f"{MODEL}/2" in status
