"""The teacher over the pool on real Ray Data: image-pixel predictions, their quality against oracle.json, the
selection signals, and the pseudolabel / select stages as DVC runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from pipeline.config import params_from_dict
from pipeline.data.coco import read_coco
from pipeline.data.dataset import TopDownDataset, instances_from_coco
from pipeline.data.pool_predictions import list_column, read_pool_predictions, to_coco_results
from pipeline.evaluation import evaluate_keypoints, oks
from pipeline.inference import predict
from pipeline.model_store import load_model
from pipeline.pseudolabel import predict_pool, predict_pool_in_process
from pipeline.ray_cluster import ray_session
from pipeline.selection import combined_uncertainty
from pipeline.training import load_data
from tests.support.teacher import REPO, make_project, small_params, train_teacher, untrained_teacher

WEIGHTS = {"response": 1.0, "min_response": 0.0, "sahr_sigma": 1.0, "difficulty": 1.0, "flip_disagreement": 1.0}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    raw = small_params()
    root = make_project(tmp_path_factory.mktemp("pseudolabel"), raw)
    train_teacher(root, raw, root / "artifacts" / "model")
    untrained_teacher(root, raw, root / "untrained")
    return root


@pytest.fixture(scope="module")
def ray_local():
    with ray_session(num_cpus=2, log_to_driver=False):
        yield


def _run_pool(project: Path, model: Path, out: Path, **kwargs) -> tuple[pd.DataFrame, object]:
    prepared = project / "data" / "prepared"
    pool = json.loads((prepared / "pool.json").read_text())
    run = predict_pool(model, pool, prepared, out, batch_size=32, threads_per_actor=2, **kwargs)
    assert run.rows == len(pool["annotations"])
    return read_pool_predictions(out)


def test_stages_write_predictions_pseudo_labels_and_a_selection_without_excluded_instances(project):
    # first in the file: the stage starts its own Ray, before the module's shared one exists
    prepared = project / "data" / "prepared"
    pool_ids = [a["id"] for a in json.loads((prepared / "pool.json").read_text())["annotations"]]
    pending = project / "pending.json"
    pending.write_text(json.dumps({"pending": pool_ids[:10]}))
    env = dict(os.environ, PYTHONPATH=str(REPO), MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}")
    env.pop("RAY_ADDRESS", None)
    common = ["--params", str(project / "params.yaml")]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "stages.pseudolabel",
            "--model",
            str(project / "artifacts" / "model"),
            "--pool",
            str(prepared / "pool.json"),
            "--images-root",
            str(prepared),
            "--out",
            str(project / "pp.parquet"),
            "--pseudo-labels",
            str(project / "pseudo.json"),
            "--metrics",
            str(project / "pl.json"),
            *common,
        ],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    metrics = json.loads((project / "pl.json").read_text())
    assert metrics["instances"] == len(pool_ids) and metrics["model_version"].startswith("local/")
    pseudo = read_coco(project / "pseudo.json")  # a valid COCO file training can read
    assert len(pseudo.annotations) == metrics["confident_pseudo_labels"]
    assert all(a["source"] == "pseudo" for a in pseudo.annotations)

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "stages.select",
            "--predictions",
            str(project / "pp.parquet"),
            "--labeled",
            str(prepared / "labeled.json"),
            "--corrections",
            str(project / "none"),
            "--pending",
            str(pending),
            "--out",
            str(project / "sel.parquet"),
            "--metrics",
            str(project / "sel.json"),
            "--plot",
            str(project / "sel.png"),
            *common,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    selection = pq.read_table(project / "sel.parquet").to_pandas()
    budget = params_from_dict(yaml.safe_load((project / "params.yaml").read_text())).select.budget
    assert len(selection) == budget and selection["rank"].tolist() == list(range(budget))
    assert not set(selection["instance_id"]) & set(pool_ids[:10])
    assert selection["policy_score"].is_monotonic_decreasing  # ranked by what the policy (params.yaml's) ranks by
    assert json.loads((project / "sel.json").read_text())["excluded_pending"] == 10
    assert (project / "sel.png").stat().st_size > 5000


def test_ray_data_predictions_are_image_pixels_and_beat_an_untrained_teacher(project, ray_local, tmp_path):
    prepared = project / "data" / "prepared"
    oracle = read_coco(prepared / "oracle.json")
    scores, table = _run_pool(project, project / "artifacts" / "model", tmp_path / "trained.parquet")
    _, untrained_table = _run_pool(project, project / "untrained", tmp_path / "untrained.parquet")
    category = oracle.schema.category_id
    trained = evaluate_keypoints(oracle.to_dict(), to_coco_results(table, category), oracle.schema)
    baseline = evaluate_keypoints(oracle.to_dict(), to_coco_results(untrained_table, category), oracle.schema)
    print(
        f"pool AP trained {trained['ap']:.3f} (PCK@0.1 {trained['pck10']:.3f}) vs untrained {baseline['ap']:.3f} "
        f"(PCK@0.1 {baseline['pck10']:.3f})"
    )
    assert trained["ap"] > baseline["ap"] + 0.005 and trained["pck10"] > baseline["pck10"] + 0.2
    # rows in pool order, every instance once, signals present for the heatmap head with flip test
    assert scores["image_id"].is_monotonic_increasing and scores["instance_id"].is_unique
    assert scores[["response", "min_response", "sahr_sigma", "difficulty", "flip_disagreement"]].notna().all().all()

    # the Ray Data path gives the same image-pixel keypoints as the in-process path of training's validation
    model = load_model(project / "artifacts" / "model")
    raw = yaml.safe_load((project / "params.yaml").read_text())
    params = params_from_dict(raw)
    pool = read_coco(prepared / "pool.json")
    records = instances_from_coco(pool.images, pool.annotations, prepared, 17, require_keypoints=False)
    data = load_data(
        params,
        {"labels": str(prepared / "labeled.json"), "val": str(prepared / "val.json"), "images_root": str(prepared)},
    )
    dataset = TopDownDataset(records, data.schema, data.codec, padding=params.codec.box_padding)
    direct = predict(model, dataset, batch_size=32, flip_test=True)
    ray_kp = {
        r["instance_id"]: np.asarray(r["keypoints"]).reshape(-1, 3)[:, :2] for r in to_coco_results(table, category)
    }
    diff = max(np.abs(ray_kp[int(i)] - kp).max() for i, kp in zip(direct.instance_id, direct.keypoints, strict=True))
    assert diff < 0.01, diff
    # the learned embedding (select.embedding: features): the backbone's pooled features of each person, the same
    # on both paths, and not one vector for everyone
    embedding = list_column(table, "embedding")
    order = np.argsort(direct.instance_id)
    assert embedding.shape == (len(scores), direct.embedding.shape[1]) and np.isfinite(embedding).all()
    np.testing.assert_allclose(
        embedding[np.argsort(scores["instance_id"].to_numpy())], direct.embedding[order], atol=1e-4
    )
    assert np.linalg.norm(embedding - embedding.mean(0), axis=1).mean() > 1e-3

    # without Ray (the library round of the benchmarks): the same batches through the same code, the same file
    here = tmp_path / "in_process.parquet"
    run = predict_pool_in_process(
        project / "artifacts" / "model", pool.to_dict(), prepared, here, batch_size=32, threads=2
    )
    assert run.rows == len(scores)
    here_scores, here_table = read_pool_predictions(here)
    assert here_table.column_names == table.column_names
    pd.testing.assert_frame_equal(here_scores, scores, check_exact=False, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        list_column(here_table, "keypoints"), list_column(table, "keypoints"), rtol=1e-5, atol=1e-4
    )
    np.testing.assert_allclose(list_column(here_table, "embedding"), embedding, rtol=1e-5, atol=1e-4)


def test_combined_uncertainty_correlates_with_the_true_error(project, ray_local, tmp_path):
    prepared = project / "data" / "prepared"
    oracle = read_coco(prepared / "oracle.json")
    scores, table = _run_pool(project, project / "artifacts" / "model", tmp_path / "trained.parquet")
    truth = {a["id"]: a for a in oracle.annotations}
    results = {r["instance_id"]: r for r in to_coco_results(table, oracle.schema.category_id)}
    error = []
    for iid in scores["instance_id"]:
        gt = truth[int(iid)]
        gt_kp = np.asarray(gt["keypoints"], float).reshape(-1, 3)
        pred = np.asarray(results[int(iid)]["keypoints"]).reshape(-1, 3)[:, :2]
        error.append(1.0 - oks(pred, gt_kp, gt["area"], oracle.schema.sigma_array) if gt_kp[:, 2].any() else np.nan)
    frame = pd.DataFrame({"uncertainty": combined_uncertainty(scores, WEIGHTS), "error": error}).dropna()
    rho = frame["uncertainty"].corr(frame["error"], method="spearman")
    print(f"Spearman rho(combined uncertainty, 1 - OKS) = {rho:.3f} over {len(frame)} pool instances")
    assert rho > 0.1


def test_asla_teacher_rows_have_null_sahr_and_selection_adapts(project, ray_local, tmp_path):
    raw = yaml.safe_load((project / "params.yaml").read_text())
    model = untrained_teacher(project, raw, tmp_path / "asla", head="asla")
    scores, _ = _run_pool(project, model, tmp_path / "asla.parquet", flip_test=False)
    assert scores["sahr_sigma"].isna().all() and scores["flip_disagreement"].isna().all()
    assert scores["response"].notna().all() and scores["difficulty"].between(0, 1).all()
    assert pq.read_schema(tmp_path / "asla.parquet").field("sahr_sigma").nullable
    u = combined_uncertainty(scores, WEIGHTS)
    assert np.isfinite(u).all()


def test_training_reads_confident_pseudo_labels_only_when_asked(project, tmp_path):
    prepared = project / "data" / "prepared"
    pool = json.loads((prepared / "pool.json").read_text())
    labeled = json.loads((prepared / "labeled.json").read_text())
    ann = {**pool["annotations"][0], "keypoints": [50.0, 60.0, 2.0] * 17, "num_keypoints": 17, "source": "pseudo"}
    human_twin = {**labeled["annotations"][0], "source": "pseudo"}  # a pseudo label of a human-labeled instance
    images = pool["images"] + [im for im in labeled["images"] if im["id"] == human_twin["image_id"]]
    (tmp_path / "pseudo.json").write_text(json.dumps({**pool, "images": images, "annotations": [ann, human_twin]}))
    raw = yaml.safe_load((project / "params.yaml").read_text())
    paths = {
        "labels": str(prepared / "labeled.json"),
        "val": str(prepared / "val.json"),
        "images_root": str(prepared),
        "pseudo": str(tmp_path / "pseudo.json"),
    }
    torch.set_num_threads(1)
    base = len(load_data(params_from_dict(raw), paths).labeled)
    raw["train"]["pseudo_labels"] = True
    with_pseudo = load_data(params_from_dict(raw), paths).labeled
    assert len(with_pseudo) == base + 1  # the human label of the twin wins
    assert with_pseudo.records[-1].instance_id == ann["id"]


def test_the_finders_ray_data_pass_finds_what_the_in_process_pass_finds(project, ray_local, tmp_path):
    """The find stage's pool pass on Ray Data (two actors, batches that split the images unevenly) gives every
    image, in order, the boxes and scores the saved finder gives in this process; the finder with its keypoint
    maps survives save and load."""
    from models.pose_model import build_finder
    from pipeline.codec import CentreCodec
    from pipeline.config import FindParams
    from pipeline.finding import find_instances, find_saved, load_finder, save_finder
    from pipeline.ray_find import find_on_ray

    torch.manual_seed(0)
    finder = build_finder(
        backbone="tiny", variant=None, codec=CentreCodec((64, 64), min_score=0.0, max_instances=5), num_keypoints=17
    ).eval()
    prepared = project / "data" / "prepared"
    images = json.loads((prepared / "pool.json").read_text())["images"][:7]
    # a threshold inside the untrained finder's scores, so images keep different numbers of people (the Ray pass pads
    # each image's rows to max_instances and must cut them back)
    threshold = float(np.median(np.concatenate([s for _, s in find_instances(finder, images, prepared)])))
    finder.codec.min_score = threshold
    save_finder(finder, FindParams(input_size=[64, 64], min_score=threshold, max_instances=5), tmp_path / "finder", {})
    here = find_saved(tmp_path / "finder", images, prepared)
    assert len({len(b) for b, _ in here}) > 1, [len(b) for b, _ in here]
    for (a, sa), (b, sb) in zip(here, find_instances(finder, images, prepared), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(sa, sb)
    assert load_finder(tmp_path / "finder").head.keypoints is not None
    on_ray = find_on_ray(tmp_path / "finder", images, prepared, batch_size=3, actors=2, threads_per_actor=1)
    assert len(on_ray) == len(images)
    for (a, sa), (b, sb) in zip(here, on_ray, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
        np.testing.assert_allclose(sa, sb, atol=1e-6)
