"""Training for real: Ray Train with 2 CPU workers, a SIGKILLed worker, an interrupted and resumed stage, a two-node
Ray cluster started with `ray start`.

The stage runs as a subprocess (``python -m stages.train``), exactly as `dvc repro` runs it, each with its own local
Ray (or the external cluster). Small crops (96x128) and few steps keep this within CI's budget. The training loop in
one plain process (SSL steps, old checkpoints) is tested in tests/unit/test_training.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import psutil
import pytest
import torch
import yaml

from pipeline.config import params_from_dict
from pipeline.model_store import load_model, model_from_params
from pipeline.training import load_data, validate
from tests.support import training_project
from tests.support.teacher import REPO
from tests.support.training_project import training_params as _params

prepared = training_project.prepared  # the fixture, shared with tests/unit/test_training.py


def _write_params(project: Path, raw: dict) -> Path:
    path = project / f"params-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _stage(project: Path, params_file: Path, out: str = "model") -> subprocess.Popen:
    prepared = project / "data" / "prepared"
    cmd = [
        sys.executable,
        "-m",
        "stages.train",
        "--labels",
        str(prepared / "labeled.json"),
        "--pool",
        str(prepared / "pool.json"),
        "--val",
        str(prepared / "val.json"),
        "--images-root",
        str(prepared),
        "--out",
        str(project / out),
        "--ray-storage",
        str(project / "ray"),
        "--params",
        str(params_file),
        "--metrics",
        str(project / f"{out}-metrics.json"),
        "--curve",
        str(project / f"{out}-curve.csv"),
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO), MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}")
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def _finish(proc: subprocess.Popen, timeout: float = 420) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def _untrained_metrics(project: Path, raw: dict) -> dict:
    params = params_from_dict(raw)
    prepared = project / "data" / "prepared"
    data = load_data(
        params,
        {"labels": str(prepared / "labeled.json"), "val": str(prepared / "val.json"), "images_root": str(prepared)},
    )
    torch.manual_seed(0)
    return validate(model_from_params(params, data.codec, data.schema).eval(), data, flip_test=False)


EPOCHS_2W = 6


def _check_two_worker_run(project: Path, out: Path, metrics_file: Path, curve_file: Path, raw: dict) -> None:
    """What a finished two-worker training leaves: a model that beats the untrained one, its folder, the curve and
    its pictures, and an MLflow run with per-epoch val AP and the model files."""
    metrics = json.loads(metrics_file.read_text())
    untrained = _untrained_metrics(project, raw)
    print(
        f"trained val AP {metrics['val_ap']:.3f} PCK@0.1 {metrics['val_pck10']:.3f}; untrained AP "
        f"{untrained['ap']:.3f} PCK@0.1 {untrained['pck10']:.3f}"
    )
    assert metrics["val_ap"] > untrained["ap"] and metrics["val_pck10"] > untrained["pck10"] + 0.1
    load_model(out)  # raises unless the folder rebuilds the network it describes
    description = json.loads((out / "model.json").read_text())
    assert description["input_size"] == [96, 128] and description["schema"]["names"][0] == "nose"
    assert description["params"]["train"]["num_workers"] == 2
    curve = curve_file.read_text().splitlines()
    assert len(curve) == 1 + EPOCHS_2W and "val_ap" in curve[0]
    assert curve_file.with_suffix(".png").stat().st_size > 1000
    assert (curve_file.parent / "val_predictions.png").stat().st_size > 1000
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{curve_file.parent / 'mlflow.db'}")
    runs = client.search_runs(
        client.get_experiment_by_name("poseloop").experiment_id,
        filter_string="tags.stage = 'train' and params.`train.num_workers` = '2'",
    )
    assert len(runs) == 1
    ap_history = client.get_metric_history(runs[0].info.run_id, "val_ap")
    assert len(ap_history) == EPOCHS_2W and max(m.value for m in ap_history) == pytest.approx(metrics["val_ap"])
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id, "model")}
    assert {"model/model.pt", "model/model.json"} <= artifacts


def _checkpoints(project: Path) -> list[Path]:
    return sorted((project / "ray").glob("train-*/checkpoint_*"))


def _wait_for_checkpoints(proc: subprocess.Popen, project: Path, count: int, timeout: float = 300) -> None:
    start = time.monotonic()
    while len(_checkpoints(project)) < count:
        assert proc.poll() is None, f"training ended before {count} checkpoint(s): {proc.stdout.read()[-3000:]}"
        assert time.monotonic() - start < timeout, "no checkpoint in time"
        time.sleep(0.5)


def _train_worker_pids(stage: subprocess.Popen) -> list[int]:
    """The Ray Train workers of this stage's own local Ray (its descendants): a worker of an earlier test that is
    still shutting down also matches "RayTrainWorker", and killing it would leave this training untouched."""
    pids = []
    for child in psutil.Process(stage.pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if "RayTrainWorker" in " ".join(child.cmdline()):
                pids.append(child.pid)
    return pids


def test_a_killed_worker_is_replaced_and_a_killed_stage_resumes(prepared):
    """Two failures in one training (one Ray start, one training: they used to be two tests of ~70 s each):
    a worker killed with SIGKILL is replaced and the worker group resumes from the last checkpoint; then the
    whole stage and its local Ray are killed (a Ctrl-C'd or preempted job), and running the stage again resumes
    from its last checkpoint instead of starting over."""
    raw = _params(prepared, epochs=5, max_failures=2, seed=5)
    params_file = _write_params(prepared, raw)
    proc = _stage(prepared, params_file, out="model_kill")
    before = len(_checkpoints(prepared))
    # the second folder on disk means the first is registered: Ray Train's controller takes a report in at its
    # health-check interval (2 s by default), so a kill right after the first folder appears may predate it
    _wait_for_checkpoints(proc, prepared, before + 2)
    pids = _train_worker_pids(proc)
    assert pids, "no Ray Train worker process found"
    os.kill(pids[-1], signal.SIGKILL)
    _wait_for_checkpoints(proc, prepared, before + 4)  # the replaced group has written checkpoints of its own
    os.killpg(proc.pid, signal.SIGKILL)  # the stage and its local Ray
    proc.wait()
    first_run = proc.stdout.read()
    assert re.search(r"resumed from the checkpoint of epoch [1-9]/5", first_run), (
        f"the worker group did not resume:\n{first_run[-4000:]}"
    )
    out = _finish(_stage(prepared, params_file, out="model_kill"))
    # Four checkpoint folders were on disk at the kill; the newest may not have been committed yet, so the run
    # continues after epoch 2 or later, never from scratch. The stage says so on its terminal (the one line of the
    # worker that reaches it, through the progress queue).
    assert re.search(r"resumed from the checkpoint of epoch [2-4]/5", out), f"restarted from scratch:\n{out[-3000:]}"
    assert (prepared / "model_kill" / "model.pt").is_file()
    assert json.loads((prepared / "model_kill-metrics.json").read_text())["epochs"] == 5
    curve = (prepared / "model_kill-curve.csv").read_text().splitlines()
    assert len(curve) == 1 + 5


def test_two_worker_training_on_an_external_ray_cluster_beats_the_untrained_model(prepared, tmp_path):
    """A head and a worker node started with `ray start` on 127.0.0.1, RAY_ADDRESS set: the cluster user's path,
    the stage unchanged. Two workers, one per node, train a model that beats the untrained one and leave the model
    folder, the curve and the MLflow run (the local-Ray path is the killed-worker test's and the loop's)."""
    ray_bin = str(Path(sys.executable).parent / "ray")
    port = 6391
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    # A private session directory, so this cluster never meets another test's; short, because Ray's socket paths
    # must fit in 107 bytes.
    temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    try:
        for cmd in (
            [
                ray_bin,
                "start",
                "--head",
                f"--port={port}",
                "--node-ip-address=127.0.0.1",
                "--num-cpus=1",
                "--include-dashboard=false",
                "--disable-usage-stats",
                f"--temp-dir={temp}",
            ],
            [
                ray_bin,
                "start",
                f"--address=127.0.0.1:{port}",
                "--node-ip-address=127.0.0.1",
                "--num-cpus=1",
                "--disable-usage-stats",
            ],
        ):
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stdout + done.stderr
        raw = _params(prepared, epochs=EPOCHS_2W, num_workers=2)
        prepared_dir = prepared / "data" / "prepared"
        cmd = [
            sys.executable,
            "-m",
            "stages.train",
            "--labels",
            str(prepared_dir / "labeled.json"),
            "--pool",
            str(prepared_dir / "pool.json"),
            "--val",
            str(prepared_dir / "val.json"),
            "--images-root",
            str(prepared_dir),
            "--out",
            str(tmp_path / "model"),
            "--ray-storage",
            str(tmp_path / "storage"),
            "--params",
            str(_write_params(prepared, raw)),
            "--metrics",
            str(tmp_path / "metrics.json"),
            "--curve",
            str(tmp_path / "curve.csv"),
        ]
        run_env = dict(
            env,
            PYTHONPATH=str(REPO),
            RAY_ADDRESS=f"127.0.0.1:{port}",
            MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
        )
        done = subprocess.run(cmd, cwd=REPO, env=run_env, capture_output=True, text=True, timeout=420)
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
        _check_two_worker_run(prepared, tmp_path / "model", tmp_path / "metrics.json", tmp_path / "curve.csv", raw)
        status = subprocess.run(
            [ray_bin, "status", f"--address=127.0.0.1:{port}"], env=env, capture_output=True, text=True, timeout=60
        )
        assert status.stdout.count("node_") >= 2, status.stdout  # both nodes were there
    finally:
        _stop_cluster(port)
        shutil.rmtree(temp, ignore_errors=True)


def _stop_cluster(port: int) -> None:
    """Stop the Ray processes of the cluster this test started, and only those: `ray stop` would end every Ray on the
    host (another test's, a user's). Ray's GCS server, raylets and workers name the GCS port in their command line."""
    import psutil

    marks = (f"127.0.0.1:{port}", f"--gcs_server_port={port}")
    ours = [p for p in psutil.process_iter(["cmdline"]) if any(m in " ".join(p.info["cmdline"] or ()) for m in marks)]
    for process in ours:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(ours, timeout=20)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
