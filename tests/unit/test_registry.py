"""The MLflow model registry on a real sqlite store: versions, tags, the challenger / champion aliases, review reports,
promotion, the champion's download, the status summary, and the evaluate stage in process. The evaluate and register
stages as DVC runs them (subprocesses) are tested in tests/integration/test_registry_stages.py."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from pipeline import registry
from pipeline.corrections import Correction, Skip, write_pull
from pipeline.files import file_md5
from pipeline.model_store import load_model, model_version
from pipeline.registry import promote, register_version, registry_summary
from pipeline.status import status_dict, status_table
from pipeline.tracking import download_model_alias
from pipeline.viz import save_png
from tests.support import registry_project
from tests.support.registry_project import NAME

project = registry_project.project  # the fixture, shared with tests/integration/test_registry_stages.py


@pytest.fixture
def store(tmp_path, monkeypatch) -> Path:
    """A fresh sqlite MLflow store for this test; the working directory is tmp_path, so nothing lands in the repo."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _eval(ap: float, error: float = 10.0) -> dict:
    """A metrics/eval.json as the evaluate stage writes it (test split empty)."""
    val = {
        "ap": ap,
        "ap50": ap + 0.2,
        "ap75": ap - 0.1,
        "apm": ap,
        "apl": -1.0,
        "ar": ap + 0.05,
        "pck05": 0.4,
        "pck10": 0.6,
        "instances": 10,
        "sigma_source": "coco",
        "per_keypoint_error": {"nose": error, "left_eye": error + 1.0, "right_eye": None},
    }
    return {"val": val, "test": None}


def _distinct_model(project: Path, store: Path) -> Path:
    """A copy of the project's model with weights of its own (the registry keeps one version per weights)."""
    target = store / f"model-{len(list(store.glob('model-*')))}"
    shutil.copytree(project / "artifacts" / "model", target)
    weights = torch.load(target / "model.pt", weights_only=True)
    first = next(k for k, v in weights.items() if v.is_floating_point())
    weights[first] = weights[first] + 1e-3 * (1 + len(list(store.glob("model-*"))))
    torch.save(weights, target / "model.pt")
    return target


def _register(
    project: Path,
    store: Path,
    ap: float,
    *,
    round: int = 1,
    auto: bool = False,
    margin: float = 0.01,
    worst: Path | None = None,
) -> registry.RegisteredVersion:
    return register_version(
        _distinct_model(project, store),
        _eval(ap, error=20.0 - 10 * ap),
        name=NAME,
        round=round,
        labeled_instances=40 + round,
        train_md5="0" * 32,
        data_hash="d" * 32,
        auto_promote=auto,
        promote_margin=margin,
        review_dir=store / f"review-{round}",
        worst_examples=worst,
    )


def _client() -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])


def test_second_version_is_challenger_until_promoted(project, store):
    picture = save_png(store / "worst.png", np.full((8, 16, 3), 200, np.uint8))
    first = _register(project, store, 0.30, round=1)
    # a fresh registry: the first model is champion and challenger
    assert (first.version, first.champion_version, first.challenger_version, first.promoted) == (1, 1, 1, True)
    second = _register(project, store, 0.50, round=2, worst=picture)
    assert (second.version, second.champion_version, second.challenger_version) == (2, 1, 2)
    assert not second.promoted and second.previous_champion == 1 and "auto_promote is off" in second.promotion_reason

    client = _client()
    assert client.get_registered_model(NAME).aliases == {"champion": 1, "challenger": 2}
    mv = client.get_model_version(NAME, "2")
    assert mv.tags["round"] == "2" and float(mv.tags["ap"]) == pytest.approx(0.5)
    assert mv.tags["labeled_instances"] == "42" and mv.tags["train_md5"] == "0" * 32
    assert mv.tags["model_version"] == f"{NAME}/2" == second.model_version
    assert mv.tags["weights_md5"] == second.weights_md5 == file_md5(store / "model-1" / "model.pt")
    run = client.get_run(second.run_id)
    assert run.data.tags["stage"] == "register" and run.data.tags["round"] == "2" and "git_commit" in run.data.tags
    assert run.data.tags["data_hash"] == "d" * 32 and run.data.metrics["val_ap"] == pytest.approx(0.5)
    assert run.data.metrics["val_error.nose"] == pytest.approx(15.0)

    # the review report: files, run artifacts and description, with the champion's numbers beside this version's
    review = (store / "review-2" / "review.md").read_text()
    assert "| AP | 0.5000 | 0.3000 | +0.2000 |" in review
    assert "| nose | 15.00 | 17.00 | -2.00 |" in review and "| right_eye | - | - | - |" in review
    assert "promote --version 2" in review
    assert (store / "review-2" / "worst_examples.png").read_bytes() == picture.read_bytes()
    logged = {a.path for a in client.list_artifacts(second.run_id, "review")}
    assert {"review/review.md", "review/eval.json", "review/worst_examples.png"} <= logged
    assert {a.path for a in client.list_artifacts(second.run_id, "model")} == {"model/model.pt", "model/model.json"}
    assert "![" in review and mv.description == "".join(f"{line}\n" for line in review.splitlines() if line[:2] != "![")
    assert any(a.path == "images" for a in client.list_artifacts(second.run_id))  # the picture on the run's page
    assert not (store / "review-1" / "worst_examples.png").exists()  # none given: none claimed

    summary = registry_summary(NAME)
    assert summary["versions"] == 2
    champion = summary["champion"]
    assert champion == {
        "version": 1,
        "round": 1,
        "ap": 0.3,
        "labeled_instances": 41,
        "model_version": f"{NAME}/1",
        "promoted_at": champion["promoted_at"],
    }
    assert champion["promoted_at"].endswith("Z")
    assert summary["challenger"]["version"] == 2 and summary["challenger"]["ap"] == pytest.approx(0.5)

    assert promote(NAME, None) == (1, 2)  # None: the challenger
    assert client.get_registered_model(NAME).aliases == {"champion": 2, "challenger": 2}
    tags = client.get_model_version(NAME, "2").tags
    assert tags["promoted_at"].endswith("Z") and tags["promoted_by"] == "promote" and tags["promoted_from"] == "1"
    with pytest.raises(ValueError, match=r"no version 7 .*versions: 1, 2"):
        promote(NAME, 7)
    with pytest.raises(ValueError, match="no registered model 'other-model'"):
        promote("other-model", 1)
    assert promote(NAME, 1) == (2, 1)  # back to an older version by number
    assert registry_summary(NAME)["champion"]["version"] == 1


def test_auto_promote_moves_the_champion_only_when_the_gain_exceeds_the_margin(project, store):
    assert _register(project, store, 0.30, round=1, auto=True, margin=0.05).promoted  # first: always
    small = _register(project, store, 0.34, round=2, auto=True, margin=0.05)
    assert not small.promoted and small.champion_version == 1 and "<= margin 0.05" in small.promotion_reason
    large = _register(project, store, 0.36, round=3, auto=True, margin=0.05)
    assert large.promoted and large.champion_version == 3 and large.previous_champion == 1
    # the margin is measured against the champion (0.30), not the last challenger (0.34)
    assert "+0.0600 > margin 0.05" in large.promotion_reason
    assert _client().get_registered_model(NAME).aliases == {"champion": 3, "challenger": 3}
    assert _client().get_model_version(NAME, "3").tags["promoted_by"] == "register"
    # without auto_promote a large gain still waits for review
    assert not _register(project, store, 0.9, round=4).promoted


def test_champion_downloads_as_a_loadable_model_named_by_its_version(project, store, tmp_path):
    result = _register(project, store, 0.25)
    folder, version = download_model_alias("champion", tmp_path / "teacher")
    assert version == f"{NAME}/1"
    model = load_model(folder)
    assert model.schema.num_keypoints == 17
    registry_file = tmp_path / "registry.json"
    registry_file.write_text(json.dumps(result.registry_json(), sort_keys=True))
    assert model_version(folder, registry_file) == version  # the downloaded weights are the registered ones
    with pytest.raises(ValueError, match="alias 'champion'"):
        download_model_alias("champion", tmp_path / "x", name="never-registered")


def test_round_number_data_hash_and_description_limit(tmp_path):
    report, store_dir = tmp_path / "merge_report.json", tmp_path / "corrections"
    assert registry.round_number(report, store_dir) == 1  # nothing yet: round 1
    store_dir.mkdir()
    for name in ("20260101T000000Z-000000000001.json", "20260102T000000Z-000000000002.json", ".partial.json"):
        (store_dir / name).write_text("{}")
    assert registry.round_number(report, store_dir) == 3  # two pulls; a hidden file is a write in progress
    report.write_text(json.dumps({"round": 7, "seed": 3}))
    assert registry.round_number(report, store_dir) == 7

    a, b = tmp_path / "pool.json", tmp_path / "train.json"
    a.write_text("pool")
    b.write_text("train")
    first = registry.data_hash([a, b])
    assert len(first) == 32 and registry.data_hash([a, b]) == first
    b.write_text("train2")
    assert registry.data_hash([a, b]) != first

    long = "x" * 6000
    cut = registry._truncate(long)
    assert len(cut) == registry.DESCRIPTION_LIMIT and cut.rstrip().endswith("review/review.md)")
    assert registry._truncate("short") == "short"


def test_status_reports_counts_and_the_registry(project, store):
    root = store / "proj"
    (root / "data" / "prepared").mkdir(parents=True)
    prepared = project / "data" / "prepared"
    for name in ("labeled.json", "pool.json"):
        (root / "data" / "prepared" / name).write_bytes((prepared / name).read_bytes())
    (root / "params.yaml").write_bytes((project / "params.yaml").read_bytes())
    empty = status_dict(root)
    assert empty["registry"]["champion"] is None and empty["round"] == 1 and empty["label_studio"] is None
    pool = json.loads((prepared / "pool.json").read_text())["annotations"]
    (root / "data" / "labelstudio").mkdir(parents=True)
    (root / "data" / "labelstudio" / "pending.json").write_text(json.dumps({"pending": [a["id"] for a in pool[:5]]}))
    k = 17
    corrections = [
        Correction(
            instance_id=a["id"],
            image_id=a["image_id"],
            bbox=tuple(a["bbox"]),
            keypoints=(10.0, 10.0, 2) * k,
            task_id=i,
            annotation_id=i,
            annotator="a",
            completed_at="2026-01-01T00:00:00Z",
            model_version=f"{NAME}/1",
        )
        for i, a in enumerate(pool[5:8])
    ]
    skips = [
        Skip(
            instance_id=pool[9]["id"],
            task_id=99,
            annotation_id=None,
            annotator="a",
            at="2026-01-01T00:00:00Z",
            reason="skipped",
        )
    ]
    write_pull(root / "data" / "corrections", corrections, skips, [], source="labelstudio")
    _register(project, store, 0.4, round=1)
    _register(project, store, 0.45, round=2)

    status = status_dict(root)
    labeled = len(json.loads((prepared / "labeled.json").read_text())["annotations"])
    assert (status["round"], status["labeled"], status["pool"]) == (2, labeled, len(pool))
    assert (status["pending"], status["corrected"], status["skipped"]) == (5, 3, 1)
    assert (status["waiting"], status["waiting_source"]) == (5, "last_pull")  # no server: the last pull's count
    assert status["registry"]["champion"]["version"] == 1 and status["registry"]["challenger"]["version"] == 2
    table = status_table(root, status)
    assert f"v1 ({NAME}/1), round 1, val AP 0.4000, 41 labeled" in table
    assert f"v2 ({NAME}/2), round 2, val AP 0.4500, 42 labeled" in table
    assert "LABEL_STUDIO_URL unset" in table
    # one line about the tasks that wait (issue #25): without a server, what the last pull found unanswered
    assert "  waiting       5 tasks at the last pull [data/labelstudio/pending.json]" in table
    assert "pending" not in table.replace("pending.json", "")


def test_evaluate_with_an_empty_test_split_writes_null(project, store, monkeypatch):
    from stages import evaluate

    prepared = project / "data" / "prepared"
    empty = json.loads((prepared / "test.json").read_text())
    empty.update(images=[], annotations=[])
    (store / "test.json").write_text(json.dumps(empty))
    argv = [
        "evaluate",
        "--model",
        str(project / "artifacts" / "model"),
        "--val",
        str(prepared / "val.json"),
        "--test",
        str(store / "test.json"),
        "--images-root",
        str(prepared),
        "--metrics",
        str(store / "eval.json"),
        "--plots-dir",
        str(store / "plots"),
        "--params",
        str(project / "params.yaml"),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    evaluate.main()
    metrics = json.loads((store / "eval.json").read_text())
    assert metrics["test"] is None and 0 <= metrics["val"]["ap"] <= 1 and metrics["val"]["instances"] > 0
    with open(store / "plots" / "eval_per_keypoint.csv") as f:
        assert {r["test_error"] for r in csv.DictReader(f)} == {""}
