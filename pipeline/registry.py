"""The MLflow model registry (docs/DESIGN.md §8): one version per round, the ``challenger`` / ``champion`` aliases,
a review report on every version, and explicit promotion.

``register_version`` opens one run (stage ``register``, tags round, git commit, data hash) that logs the model folder
(``model.pt`` + ``model.json``, read back by ``model_store.load_model``; not ``mlflow.pytorch.log_model``,
docs/DESIGN.md §11) as artifacts under ``model/`` and the eval metrics, then adds a model version whose source is
``runs:/<run id>/model``. The version carries the tags round, ap (val OKS AP), labeled_instances, train_md5,
data_hash, weights_md5 and model_version (``"<name>/<version>"``: the string Label Studio and pseudo-labels name
the model by).

Aliases: ``challenger`` always moves to the new version. ``champion`` moves to it when

* no version has the alias yet: the first model of a fresh project is champion (and challenger), so a teacher
  (``pseudolabel.teacher: champion``) exists from round 1 on and there is something to compare round 2 with;
* ``auto_promote`` is on and the val AP gain over the champion is strictly greater than ``promote_margin``
  (a champion without an ``ap`` tag is never replaced automatically: there is nothing to compare with);

otherwise it stays until someone reviews the report and runs ``python -m pipeline promote`` (``promote``).

The review report (``review.md``, this version's ``eval.json``, the evaluate stage's worst-examples picture and
list) is written to ``review_dir``, logged as run artifacts under ``review/``, and its markdown is the version's
description (cut to ``DESCRIPTION_LIMIT`` characters). The champion's numbers come from the ``review/eval.json`` of
the champion's run, so a report compares exactly what the evaluate stage measured for both models.

Quirks of MLflow 3.17 (sqlite) this module works around: ``search_model_versions`` returns versions without their
aliases (``get_registered_model(name).aliases`` has them); a missing alias raises ``INVALID_PARAMETER_VALUE`` rather
than ``RESOURCE_DOES_NOT_EXIST``; the version description column is ``VARCHAR(5000)``.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.files import atomic_path, file_md5
from pipeline.tracking import REGISTERED_MODEL, flat_eval_metrics, local_sqlite_file, stage_run, tracking_uri
from pipeline.viz import load_png, rounds_curve

CHAMPION = "champion"
CHALLENGER = "challenger"
DESCRIPTION_LIMIT = 5000  # MLflow's SQL schema: model_versions.description VARCHAR(5000)
REVIEW_FILE = "review.md"
EVAL_FILE = "eval.json"
WORST_IMAGE = "worst_examples.png"
WORST_TABLE = "worst_examples.csv"
# (eval.json key, label) of the side-by-side table; higher is better for all of them
METRIC_ROWS = (
    ("ap", "AP"),
    ("ap50", "AP50"),
    ("ap75", "AP75"),
    ("apm", "APm"),
    ("apl", "APl"),
    ("ar", "AR"),
    ("pck05", "PCK@0.05"),
    ("pck10", "PCK@0.1"),
)


@dataclass(frozen=True)
class RegisteredVersion:
    """What ``register_version`` did. ``previous_champion`` is None for a fresh registry."""

    name: str
    version: int
    model_version: str
    run_id: str
    weights_md5: str
    round: int
    ap: float
    champion_version: int
    challenger_version: int
    previous_champion: int | None
    promoted: bool
    promotion_reason: str
    review_dir: Path

    def registry_json(self) -> dict:
        """The content of artifacts/registry.json (``model_store.model_version`` reads weights_md5 / model_version)."""
        keys = (
            "name",
            "version",
            "model_version",
            "weights_md5",
            "run_id",
            "champion_version",
            "challenger_version",
            "promoted",
            "round",
        )
        return {k: getattr(self, k) for k in keys}


# --------------------------------------------------------------------------------------------------- helpers


def _client(uri: str | None = None) -> object:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per small file in stage logs
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri or tracking_uri())


def _aliases(client: object, name: str) -> dict[str, int] | None:
    """alias -> version number of a registered model; None when the model is not registered."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return {alias: int(version) for alias, version in (model.aliases or {}).items()}


def _ensure_registered_model(client: object, name: str) -> None:
    from mlflow.exceptions import MlflowException

    if _aliases(client, name) is not None:
        return
    try:
        client.create_registered_model(name, description="poseloop keypoint model: one version per labeling round")
    except MlflowException as exc:  # registered meanwhile by another process
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def _float_tag(tags: dict[str, str], key: str) -> float | None:
    try:
        return float(tags[key])
    except (KeyError, ValueError):
        return None


def _int_tag(tags: dict[str, str], key: str) -> int | None:
    try:
        return int(tags[key])
    except (KeyError, ValueError):
        return None


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _run_eval_metrics(run_id: str | None, uri: str) -> dict | None:
    """The eval.json a register run logged under review/, or None (a version registered some other way)."""
    if not run_id:
        return None
    import mlflow
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=f"review/{EVAL_FILE}", dst_path=tmp, tracking_uri=uri
            )
        except (MlflowException, OSError):
            return None
        return json.loads(Path(local).read_text())


def round_number(merge_report: Path, corrections_dir: Path) -> int:
    """The labeling round: the merge report's ``round`` when it has one, else the store's own count
    (``corrections.round_number``: 1 + the pulls that brought something new)."""
    from pipeline.corrections import round_number as store_round

    if Path(merge_report).is_file():
        report = json.loads(Path(merge_report).read_text())
        if isinstance(report.get("round"), int):
            return int(report["round"])
    return store_round(Path(corrections_dir))


def data_hash(files: Sequence[Path]) -> str:
    """md5 of the files' names and md5s, in the order given (the register stage: pool.json and train.json, the
    data the model was trained from). Same content -> same hash, wherever the checkout is."""
    lines = [f"{Path(f).name} {file_md5(Path(f))}" for f in files]
    return hashlib.md5("\n".join(lines).encode()).hexdigest()


# --------------------------------------------------------------------------------------------------- register


def register_version(
    model_dir: Path,
    eval_metrics: dict,
    *,
    name: str,
    round: int,
    labeled_instances: int,
    train_md5: str,
    data_hash: str,
    auto_promote: bool,
    promote_margin: float,
    review_dir: Path,
    worst_examples: Path | None = None,
    worst_table: Path | None = None,
) -> RegisteredVersion:
    """Log ``model_dir`` and ``eval_metrics`` (metrics/eval.json: ``{"val": {...}, "test": {...} | None}``) in one
    run, add a model version of ``name``, move the aliases (module doc) and attach the review report.

    ``worst_examples`` / ``worst_table``: the evaluate stage's plots/eval_worst.png and .csv (optional).
    Raises ValueError when ``eval_metrics`` has no val AP or ``model_dir`` has no model.

    Long because it is one registration read top to bottom (run, artifacts, version, tags, aliases, report), each
    step recoverable where it stands.
    """
    import mlflow

    from pipeline.model_store import DESCRIPTION_FILE, WEIGHTS_FILE  # here: model_store imports torch

    model_dir, review_dir = Path(model_dir), Path(review_dir)
    for required in (WEIGHTS_FILE, DESCRIPTION_FILE):
        if not (model_dir / required).is_file():
            raise ValueError(f"{model_dir / required}: missing (train a model first)")
    val = eval_metrics.get("val")
    if not isinstance(val, dict) or not isinstance(val.get("ap"), (int, float)):
        raise ValueError("eval metrics have no val AP (expected metrics/eval.json of the evaluate stage)")
    ap = float(val["ap"])
    weights_md5 = file_md5(model_dir / WEIGHTS_FILE)
    uri = tracking_uri()
    client = _client(uri)
    _ensure_registered_model(client, name)
    before = _aliases(client, name) or {}
    champion = before.get(CHAMPION)
    existing = client.search_model_versions(f"name = '{name}' and tags.weights_md5 = '{weights_md5}'")
    if existing:
        # the same weights again (e.g. only a downstream stage's definition changed): one model, one version
        mv = min(existing, key=lambda v: int(v.version))
        version = int(mv.version)
        _restore_review(mv.run_id, review_dir, uri)
        challenger = before.get(CHALLENGER)
        return RegisteredVersion(
            name=name,
            version=version,
            model_version=f"{name}/{version}",
            run_id=mv.run_id,
            weights_md5=weights_md5,
            round=int(mv.tags.get("round", round)),
            ap=ap,
            champion_version=int(champion) if champion is not None else version,
            challenger_version=int(challenger) if challenger is not None else version,
            previous_champion=champion,
            promoted=False,
            promotion_reason=f"these weights are already version {version}: not registered again",
            review_dir=review_dir,
        )
    champion_mv = client.get_model_version(name, str(champion)) if champion is not None else None
    champion_ap = _float_tag(champion_mv.tags, "ap") if champion_mv is not None else None
    champion_eval = _run_eval_metrics(champion_mv.run_id, uri) if champion_mv is not None else None

    run_tags = {"round": str(round), "data_hash": data_hash, "labeled_instances": str(labeled_instances)}
    with stage_run("register", tags=run_tags, round_index=round) as run:
        run_id = run.info.run_id
        mlflow.log_artifacts(str(model_dir), artifact_path="model")
        mlflow.log_metrics(flat_eval_metrics(eval_metrics))
        mlflow.log_params({"auto_promote": auto_promote, "promote_margin": promote_margin, "model_name": name})
        tags = {
            "round": str(round),
            "ap": f"{ap:.6f}",
            "labeled_instances": str(labeled_instances),
            "train_md5": train_md5,
            "data_hash": data_hash,
            "weights_md5": weights_md5,
        }
        mv = client.create_model_version(name, source=f"runs:/{run_id}/model", run_id=run_id, tags=tags)
        version = int(mv.version)
        model_version = f"{name}/{version}"
        client.set_model_version_tag(name, str(version), "model_version", model_version)
        mlflow.set_tags({"model_version": model_version, "registered_version": str(version)})

        client.set_registered_model_alias(name, CHALLENGER, str(version))
        gain = None if champion_ap is None else ap - champion_ap
        if champion is None:
            promoted, reason = True, f"first version of {name}: no champion yet, so it becomes the champion"
        elif auto_promote and gain is not None and gain > promote_margin:
            promoted, reason = True, f"auto_promote: val AP gain {gain:+.4f} > margin {promote_margin}"
        elif not auto_promote:
            promoted = False
            reason = (
                f"champion stays version {champion}: auto_promote is off; review this report and run "
                f"`python -m pipeline promote --version {version}` to promote"
            )
        else:
            promoted = False
            why = f"val AP gain {gain:+.4f} <= margin {promote_margin}" if gain is not None else "it has no ap tag"
            reason = f"champion stays version {champion}: {why}"
        if promoted:
            _set_champion(client, name, version, previous=champion, how="register")

        report = review_markdown(
            name,
            version,
            round,
            eval_metrics,
            champion_eval,
            champion,
            reason,
            labeled_instances=labeled_instances,
            train_md5=train_md5,
            data_hash=data_hash,
            keypoints=_keypoint_names(model_dir / DESCRIPTION_FILE),
            worst_table=worst_table,
            has_picture=worst_examples is not None and Path(worst_examples).is_file(),
        )
        files = _write_review(review_dir, report, eval_metrics, worst_examples, worst_table)
        for path in files:
            mlflow.log_artifact(str(path), artifact_path="review")
            if path.name == WORST_IMAGE:  # on the run page itself, not two clicks into its artifacts
                mlflow.log_image(load_png(path), key="worst_examples")
        # the version page resolves a relative image against the UI's URL: the picture stays in the file's copy
        description = "\n".join(line for line in report.splitlines() if not line.startswith("![")) + "\n"
        client.update_model_version(name, str(version), description=_truncate(description))

    return RegisteredVersion(
        name=name,
        version=version,
        model_version=model_version,
        run_id=run_id,
        weights_md5=weights_md5,
        round=round,
        ap=ap,
        champion_version=version if promoted else int(champion),
        challenger_version=version,
        previous_champion=champion,
        promoted=promoted,
        promotion_reason=reason,
        review_dir=review_dir,
    )


def _restore_review(run_id: str, review_dir: Path, uri: str) -> None:
    """The review report of an already registered version, back in ``review_dir`` (the stage's declared output)."""
    import tempfile

    import mlflow

    review_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path="review", dst_path=tmp, tracking_uri=uri
            )
        except Exception as exc:  # the run's artifacts are gone (e.g. a pruned store): say so in the report
            (review_dir / REVIEW_FILE).write_text(f"The review report of run {run_id} could not be read: {exc}\n")
            return
        for path in Path(local).iterdir():
            if path.is_file():
                shutil.copyfile(path, review_dir / path.name)


def _set_champion(client: object, name: str, version: int, previous: int | None, how: str) -> None:
    client.set_registered_model_alias(name, CHAMPION, str(version))
    client.set_model_version_tag(name, str(version), "promoted_at", _now())
    client.set_model_version_tag(name, str(version), "promoted_by", how)
    client.set_model_version_tag(name, str(version), "promoted_from", "" if previous is None else str(previous))


def _keypoint_names(description_file: Path) -> list[str]:
    """The model's keypoint names in schema order (eval.json is written with sorted keys)."""
    return list(json.loads(description_file.read_text()).get("schema", {}).get("names", []))


def _write_review(
    review_dir: Path, report: str, eval_metrics: dict, worst_examples: Path | None, worst_table: Path | None
) -> list[Path]:
    """The review files in ``review_dir``; only files written now are returned (and logged)."""
    review_dir.mkdir(parents=True, exist_ok=True)
    (review_dir / REVIEW_FILE).write_text(report)
    (review_dir / EVAL_FILE).write_text(json.dumps(eval_metrics, indent=1, sort_keys=True) + "\n")
    files = [review_dir / REVIEW_FILE, review_dir / EVAL_FILE]
    for source, target in ((worst_examples, WORST_IMAGE), (worst_table, WORST_TABLE)):
        if source is not None and Path(source).is_file():
            shutil.copyfile(source, review_dir / target)
            files.append(review_dir / target)
        else:
            # a picture left from an earlier call would be logged as this version's
            (review_dir / target).unlink(missing_ok=True)
    return files


def _truncate(text: str, limit: int = DESCRIPTION_LIMIT) -> str:
    if len(text) <= limit:
        return text
    note = f"\n\n... (cut to {limit} characters: the full report is the run artifact review/{REVIEW_FILE})\n"
    return text[: limit - len(note)] + note


def _fmt(value: object, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _delta(new: object, old: object, digits: int = 4) -> str:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (new, old))
    return f"{new - old:+.{digits}f}" if numbers else "-"


def _ap_difference_se(mine: dict, theirs: dict) -> float | None:
    """One standard error of (my AP - their AP) from the two bootstrap s.e.s (``ap_se`` of eval.json); a champion
    evaluated before ``ap_se`` existed is taken to be as uncertain as this version. None without my s.e."""
    se = mine.get("ap_se")
    if not isinstance(se, (int, float)) or not math.isfinite(se):
        return None
    other = theirs.get("ap_se")
    other = other if isinstance(other, (int, float)) and math.isfinite(other) else se
    return math.hypot(se, other)


def _metric_tables(version: int, other: str, eval_metrics: dict, champion_eval: dict | None) -> list[str]:
    """The review report's metrics tables (val, and test when present): this version beside the champion, the
    delta, and the AP difference's bootstrap standard error."""
    lines: list[str] = []
    for split in ("val", "test"):
        mine = eval_metrics.get(split)
        if not isinstance(mine, dict):
            continue
        theirs = (champion_eval or {}).get(split) or {}
        lines += [
            f"## Metrics ({split}, {mine.get('instances', '?')} instances)",
            "",
            f"| metric | v{version} | {other} | delta |",
            "|---|---:|---:|---:|",
        ]
        for key, label in METRIC_ROWS:
            delta = _delta(mine.get(key), theirs.get(key))
            noise = _ap_difference_se(mine, theirs) if key == "ap" and delta != "-" else None
            lines.append(
                f"| {label} | {_fmt(mine.get(key))} | {_fmt(theirs.get(key))} | "
                f"{delta}{f' ± {noise:.4f}' if noise is not None else ''} |"
            )
        if isinstance(mine.get("ap_se"), (int, float)) and math.isfinite(mine["ap_se"]):
            lines += [
                "",
                f"± : one standard error of the AP difference from a bootstrap over the {split} people (each "
                f"model's AP s.e., v{version}: {_fmt(mine.get('ap_se'))}; unpaired, so on the safe side). A "
                "difference inside two of them can come from which people the split happens to hold, not the model.",
            ]
        lines.append("")
    return lines


def review_markdown(
    name: str,
    version: int,
    round: int,
    eval_metrics: dict,
    champion_eval: dict | None,
    champion: int | None,
    decision: str,
    *,
    labeled_instances: int,
    train_md5: str,
    data_hash: str,
    keypoints: Sequence[str] = (),
    worst_table: Path | None = None,
    has_picture: bool = False,
) -> str:
    """The review report of one version: metrics beside the champion's with deltas (val, and test when present),
    per-keypoint error deltas (val, px: negative is better; rows in ``keypoints`` order, then any others), the
    worst val examples (``worst_table``: the evaluate stage's eval_worst.csv) and the alias decision."""
    other = f"champion v{champion}" if champion is not None else "champion (none)"
    lines = [
        f"# {name} version {version} (round {round})",
        "",
        f"- model_version: `{name}/{version}`",
        f"- labeled instances: {labeled_instances}",
        f"- train.json md5: `{train_md5}`, data hash: `{data_hash}`",
        f"- champion before this version: {f'version {champion}' if champion is not None else 'none'}",
        f"- decision: {decision}",
        "",
    ]
    lines += _metric_tables(version, other, eval_metrics, champion_eval)
    errors = eval_metrics["val"].get("per_keypoint_error") or {}
    champion_errors = ((champion_eval or {}).get("val") or {}).get("per_keypoint_error") or {}
    lines += [
        "## Per-keypoint error (val, px; a negative delta is better)",
        "",
        f"| keypoint | v{version} | {other} | delta |",
        "|---|---:|---:|---:|",
    ]
    order = [k for k in keypoints if k in errors] + [k for k in errors if k not in keypoints]
    for keypoint in order:
        value, old = errors[keypoint], champion_errors.get(keypoint)
        lines.append(f"| {keypoint} | {_fmt(value, 2)} | {_fmt(old, 2)} | {_delta(value, old, 2)} |")
    lines += ["", "## Worst val examples (lowest OKS)", ""]
    if has_picture:
        lines += [
            f"![the worst val examples: ground truth left, prediction right]({WORST_IMAGE})",
            "",
            f"Ground truth (left) and this version's prediction (right): `{WORST_IMAGE}` beside this report (run "
            "artifact `review/`), and the run's image `worst_examples` on its model-metrics tab.",
            "",
        ]
    else:
        lines += ["No picture (the evaluate stage's plots/eval_worst.png was not given).", ""]
    if worst_table is not None and Path(worst_table).is_file():
        rows = Path(worst_table).read_text().splitlines()
        if len(rows) > 1:
            header = rows[0].split(",")
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(row.split(",")) + " |" for row in rows[1:]]
            lines.append("")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------- promote


def _known_versions(client: object, name: str) -> list[int]:
    return sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))


def promote(name: str, version: int | None = None, *, uri: str | None = None) -> tuple[int | None, int]:
    """Move the ``champion`` alias of ``name`` to ``version`` (None: the current challenger); tag the version
    ``promoted_at``. Returns (previous champion or None, new champion).

    Raises ValueError naming the model, the store and the versions that exist when there is no such version (or no
    challenger, or no registered model).
    """
    uri = uri or tracking_uri()
    client = _client(uri)
    aliases = _aliases(client, name)
    if aliases is None:
        raise ValueError(f"no registered model {name!r} in {uri} (run the register stage first)")
    known = _known_versions(client, name)
    if version is None:
        if CHALLENGER not in aliases:
            raise ValueError(f"{name!r} has no {CHALLENGER!r} alias in {uri}; name a version (have: {known})")
        version = aliases[CHALLENGER]
    if int(version) not in known:
        listing = ", ".join(map(str, known)) or "none"
        raise ValueError(f"{name!r} has no version {version} in {uri} (versions: {listing})")
    previous = aliases.get(CHAMPION)
    _set_champion(client, name, int(version), previous=previous, how="promote")
    return previous, int(version)


def promote_command(name: str | None, version: int | None, params_path: Path = Path("params.yaml")) -> int:
    """``python -m pipeline promote [--version N] [--name NAME]``: prints what moved; ValueError on a bad version."""
    name = name or _model_name(params_path)
    previous, new = promote(name, version)
    before = f"version {previous}" if previous is not None else "none"
    if previous == new:
        print(f"{name}: version {new} already was the champion (promoted_at updated)")
    else:
        print(f"{name}: champion {before} -> version {new} ({name}/{new})")
    return 0


def _model_name(params_path: Path) -> str:
    """params.register.model_name, or the default when there is no params.yaml (a look at another store)."""
    from pipeline.config import load_params

    return load_params(params_path).register.model_name if Path(params_path).is_file() else REGISTERED_MODEL


# --------------------------------------------------------------------------------------------------- summary


def _version_info(client: object, name: str, version: int) -> dict:
    mv = client.get_model_version(name, str(version))
    tags = mv.tags or {}
    return {
        "version": int(mv.version),
        "round": _int_tag(tags, "round"),
        "ap": _float_tag(tags, "ap"),
        "labeled_instances": _int_tag(tags, "labeled_instances"),
        "model_version": tags.get("model_version", f"{name}/{mv.version}"),
        "promoted_at": tags.get("promoted_at"),
    }


def registry_summary(name: str, *, uri: str | None = None) -> dict:
    """``{"name", "tracking_uri", "versions", "champion", "challenger"}``; champion / challenger are
    ``{"version", "round", "ap", "labeled_instances", "model_version", "promoted_at"}`` or None.

    A local sqlite store that does not exist yet reads as empty and is not created (status is read-only).
    """
    uri = uri or tracking_uri()
    empty = {"name": name, "tracking_uri": uri, "versions": 0, CHAMPION: None, CHALLENGER: None}
    db_file = local_sqlite_file(uri)
    if db_file is not None and not db_file.is_file():
        return empty
    client = _client(uri)
    aliases = _aliases(client, name)
    if aliases is None:
        return empty
    out = {**empty, "versions": len(_known_versions(client, name))}
    for alias in (CHAMPION, CHALLENGER):
        if alias in aliases:
            out[alias] = _version_info(client, name, aliases[alias])
    return out


def record_round(path: Path, row: dict) -> None:
    """Keep one row per round in ``path`` (the latest model of a round wins) and draw AP against labels as a PNG.

    The file is the loop's history (persist: true in dvc.yaml, so DVC does not delete it before the stage runs).
    """
    rows = {}
    if path.is_file():
        with open(path, newline="") as f:
            rows = {int(r["round"]): r for r in csv.DictReader(f)}
    rows[int(row["round"])] = row
    ordered = [rows[k] for k in sorted(rows)]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:  # the history: a crash keeps the old file
        writer = csv.DictWriter(f, fieldnames=list(row))
        writer.writeheader()
        writer.writerows({k: r.get(k) for k in row} for r in ordered)
    rounds_curve(ordered, path.with_suffix(".png"))
