"""MLflow tracking: one run per stage execution, grouped by round (docs/DESIGN.md §8).

The tracking URI is ``MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db`` in the project (the registry works on it).
Only the stage's driver process logs: Ray workers report to the driver, so a cluster's workers never need to reach
the tracking store, and nothing is logged twice.

Artifacts of a local sqlite store go to ``mlruns/`` beside the database file (``experiment_id``). MLflow's own default
is ``./mlruns`` of whatever folder the process that first creates the experiment runs in, so a test's temporary
database run from the repository would leave its artifacts in the repository's ``mlruns/``. For the project's own
``mlflow.db`` the two are the same folder.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.config import Params, to_dict

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
EXPERIMENT = "poseloop"
# MLflow 3's UI opens an experiment without a kind in its GenAI view (traces, token usage), where the runs, their
# metrics and the models are a toggle away (issue #25); this kind opens it on them.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


def tracking_uri(project_root: Path | None = None) -> str:
    """``MLFLOW_TRACKING_URI``, else the project's sqlite file (relative to the working directory, or in
    ``project_root`` when given, for commands that look at a project from elsewhere)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    if project_root is not None:
        return f"sqlite:///{(Path(project_root) / 'mlflow.db').resolve()}"
    return DEFAULT_TRACKING_URI


def local_sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (absolute or relative to the working directory), else None."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri[len(prefix) :].startswith(":memory:"):
        return None
    return Path(uri[len(prefix) :]).resolve()


def experiment_id(client: object, name: str = EXPERIMENT) -> str:
    """The id of experiment ``name``, created on first use; a local sqlite store keeps its artifacts beside the
    database file (see the module doc). ``client`` is an ``mlflow.MlflowClient``."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # made before the tag (or by hand)
            client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return found.experiment_id
    db_file = local_sqlite_file(client.tracking_uri)
    location = (db_file.parent / "mlruns").as_uri() if db_file is not None else None
    try:
        return client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    except MlflowException:  # created meanwhile by another stage process
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def _flatten(prefix: str, value: object, out: dict[str, object]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def flat_params(params_raw: dict, sections: tuple[str, ...]) -> dict[str, object]:
    """{"train.ssl.mode": ..., ...} for MLflow params (which are flat strings)."""
    out: dict[str, object] = {}
    for section in sections:
        _flatten(section, params_raw.get(section), out)
    return out


def current_round(merge_report: Path = Path("data/merge_report.json")) -> int | None:
    """The round the merge stage last wrote (``round`` of data/merge_report.json), None before the first merge.
    Read only to name a stage's MLflow run: no stage output depends on it."""
    try:
        value = json.loads(merge_report.read_text()).get("round")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None


@contextmanager
def stage_run(stage: str, tags: dict[str, str] | None = None, round_index: int | None = None) -> Iterator[object]:
    """An MLflow run for one stage execution, tagged with the stage, the round and the git commit, and named
    "round <r> <stage>" so the runs table reads in order (``round_index``: default ``current_round()``)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id=experiment_id(mlflow.MlflowClient(tracking_uri=uri)))
    round_index = current_round() if round_index is None else round_index
    name = stage if round_index is None else f"round {round_index} {stage}"
    round_tag = {} if round_index is None else {"round": str(round_index)}
    with mlflow.start_run(
        run_name=name, tags={"stage": stage, "git_commit": git_commit(), **round_tag, **(tags or {})}
    ) as run:
        yield run


def log_training(history: list[dict], params: Params, model_dir: Path, images: list[Path]) -> None:
    """Params, per-epoch losses and val metrics, final metrics, the model files and pictures, in the active run."""
    import mlflow

    mlflow.log_params({k: str(v)[:500] for k, v in flat_params(to_dict(params), ("codec", "model", "train")).items()})
    for entry in history:
        step = int(entry["epoch"])
        mlflow.log_metrics(
            {k: float(v) for k, v in entry.items() if isinstance(v, (int, float)) and k != "epoch"}, step=step
        )
    mlflow.log_artifacts(str(model_dir), artifact_path="model")
    for image in images:
        if Path(image).is_file():
            mlflow.log_artifact(str(image), artifact_path="plots")


_METRIC_UNSAFE = re.compile(r"[^A-Za-z0-9_.\- /]")  # MLflow metric names: letters, digits, _ - . space /


def flat_eval_metrics(eval_metrics: dict) -> dict[str, float]:
    """metrics/eval.json ({"val": {...}, "test": {...} | None}) -> flat MLflow metrics: ``val_ap``, ``test_pck10``,
    ``val_error.<keypoint>``, ... Non-numbers (sigma source, missing errors, an empty test split) are left out.

    Keypoint names come from the data set; characters MLflow refuses in a metric name become ``_``.
    """
    out: dict[str, float] = {}
    for split, metrics in eval_metrics.items():
        if not isinstance(metrics, dict):
            continue
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"{split}_{key}"] = float(value)
        for name, value in (metrics.get("per_keypoint_error") or {}).items():
            if isinstance(value, (int, float)):
                out[f"{split}_error.{_METRIC_UNSAFE.sub('_', str(name))}"] = float(value)
    return out


REGISTERED_MODEL = "poseloop-pose"  # params.register.model_name default


def download_model_alias(alias: str, dest: Path, name: str = REGISTERED_MODEL) -> tuple[Path, str]:
    """The model files of the registered version behind ``alias`` -> (local folder, "name/version").

    Raises ValueError naming the alias and the store when there is none (e.g. nothing promoted yet).
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri=tracking_uri())
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise ValueError(
            f"no model version of {name!r} has the alias {alias!r} in {tracking_uri()} "
            f"(promote one with `python -m pipeline promote`): {exc.message}"
        ) from None
    Path(dest).mkdir(parents=True, exist_ok=True)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=version.source, dst_path=str(dest), tracking_uri=tracking_uri()
    )
    return Path(local), f"{name}/{version.version}"
