"""``python -m pipeline status``: where the loop stands, from the project's files and the model registry.

Read-only: nothing is created (a missing file counts as empty; a missing local MLflow database as an empty registry).
Sources: round (``registry.round_number``: merge report, else the corrections store), labeled instances
(data/train.json, before the first merge data/prepared/labeled.json), pool size (data/pool.json, the find stage's;
in a project made before it data/prepared/pool.json), tasks pending in Label Studio
(data/labelstudio/pending.json: ``{"pending": [instance ids]}``, what the last pull found unanswered; the table's
``waiting`` line gives the server's live count instead when ``LABEL_STUDIO_URL`` is set), corrected and skipped
instances (the corrections store), champion and challenger (the registry: version, round, val AP, labeled count).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pipeline.tracking import REGISTERED_MODEL, tracking_uri


def _count_annotations(path: Path) -> int | None:
    if not path.is_file():
        return None
    # a plain count: status must stay quick on a large pool, so no validation (the stages validate)
    return len(json.loads(path.read_text()).get("annotations", []))


def label_studio_state(project_title: str = "poseloop") -> dict | None:
    """What the configured Label Studio server says about the project: tasks, completed, skipped, waiting, and the
    model_version annotators see. None when ``LABEL_STUDIO_URL`` is unset; {"error": ...} when the server cannot be
    asked (the message never carries the API key: client errors are built without it)."""
    if not os.environ.get("LABEL_STUDIO_URL"):
        return None
    from pipeline.labelstudio.client import LabelStudioError, connect, find_project, task_index

    try:
        ls = connect(attempts=2)
        project_id = find_project(ls, project_title)
        tasks = task_index(ls, project_id).values()
        project = ls.projects.get(id=project_id)
    except LabelStudioError as exc:
        return {"error": str(exc)}
    done = sum(1 for t in tasks if t["total_annotations"] > 0)
    skipped = sum(1 for t in tasks if t["total_annotations"] == 0 and t["cancelled_annotations"] > 0)
    return {
        "project": f"{project_title} (id {project_id})",
        "tasks": len(tasks),
        "completed": done,
        "skipped": skipped,
        "waiting": len(tasks) - done - skipped,
        "model_version": getattr(project, "model_version", None) or "-",
    }


def status_dict(project_root: Path = Path(".")) -> dict:
    """The status as data: round, labeled, labeled_file, pool, pending (what the last pull found unanswered),
    waiting and waiting_source (the server's live count when it answers, else ``pending``), corrected, corrections,
    skipped, registry
    (``registry.registry_summary``, or ``{"error": ...}`` when the store cannot be read), label_studio."""
    from pipeline.corrections import read_store
    from pipeline.merge import effort_summary
    from pipeline.registry import registry_summary, round_number

    root = Path(project_root)
    data = root / "data"
    labeled_file = data / "train.json" if (data / "train.json").is_file() else data / "prepared" / "labeled.json"
    pending_file = data / "labelstudio" / "pending.json"
    pending = json.loads(pending_file.read_text()).get("pending", []) if pending_file.is_file() else []
    corrections, skips = read_store(data / "corrections")
    params_file = root / "params.yaml"
    name, project_title = REGISTERED_MODEL, "poseloop"
    if params_file.is_file():
        from pipeline.config import load_params

        params = load_params(params_file)
        name, project_title = params.register.model_name, params.export.project_title
    uri = tracking_uri(root)
    try:
        registry = registry_summary(name, uri=uri)
    except Exception as exc:  # an unreachable tracking server must not hide the rest of the status
        registry = {"name": name, "tracking_uri": uri, "error": f"{type(exc).__name__}: {exc}"}
    ls_state = label_studio_state(project_title)
    live = ls_state is not None and "error" not in ls_state
    return {
        "project": str(root.resolve()),
        "round": round_number(data / "merge_report.json", data / "corrections"),
        "labeled": _count_annotations(labeled_file),
        "labeled_file": str(labeled_file.relative_to(root)),
        "pool": _count_annotations(
            data / "pool.json" if (data / "pool.json").is_file() else data / "prepared" / "pool.json"
        ),
        "pending": len(pending),
        # the one answer to "how many tasks wait for an annotator": the server's count now, else the last pull's
        "waiting": ls_state["waiting"] if live else len(pending),
        "waiting_source": "label_studio" if live else "last_pull",
        "corrected": len({c.instance_id for c in corrections}),
        "corrections": len(corrections),
        "skipped": len({s.instance_id for s in skips}),
        "effort": effort_summary(corrections),
        "registry": registry,
        "label_studio": ls_state,
    }


def _model_line(info: dict | None) -> str:
    if info is None:
        return "none"
    ap = f"{info['ap']:.4f}" if info.get("ap") is not None else "-"
    labeled = info.get("labeled_instances")
    return (
        f"v{info['version']} ({info['model_version']}), round {info.get('round') or '-'}, val AP {ap}, "
        f"{labeled if labeled is not None else '-'} labeled"
    )


def status_table(project_root: Path = Path("."), status: dict | None = None) -> str:
    """The status as aligned text lines (``status``: a ``status_dict`` result, computed when None)."""
    s = status if status is not None else status_dict(project_root)
    registry = s["registry"]

    def count(value: int | None, what: str) -> str:
        return f"{value} {what}" if value is not None else "- (file not there yet)"

    ls = s["label_studio"]
    live = ls is not None and "error" not in ls
    # One line about the tasks that wait for an annotator (issue #25: "pending 0" beside "waiting 20" read as two
    # answers): the server's count now when it can be asked, else what the last pull found unanswered.
    waiting = (
        f"{ls['waiting']} tasks (Label Studio now: {ls['completed']} completed, {ls['skipped']} skipped of "
        f"{ls['tasks']})"
        if live
        else f"{s['pending']} tasks at the last pull [data/labelstudio/pending.json]"
    )
    rows = [
        ("round", str(s["round"])),
        ("labeled", f"{count(s['labeled'], 'instances')} [{s['labeled_file']}]"),
        ("pool", count(s["pool"], "instances")),
        ("waiting", waiting),
        ("corrected", f"{s['corrected']} instances ({s['corrections']} corrections)"),
        ("skipped", f"{s['skipped']} instances"),
    ]
    effort = s.get("effort") or {}
    if effort.get("tasks"):
        per_task = (
            f"{effort['moved_per_task']:.1f} moved, {effort['added_per_task']:.1f} added, "
            f"{effort['deleted_per_task']:.1f} deleted"
        )
        rows.append(("effort", f"{per_task} keypoints per task ({effort['tasks']} tasks)"))
    if "error" in registry:
        rows.append(("registry", f"unavailable: {registry['error']}"))
    else:
        rows.append(("champion", _model_line(registry["champion"])))
        rows.append(("challenger", _model_line(registry["challenger"])))
        rows.append(("registry", f"{registry['name']}, {registry['versions']} versions [{registry['tracking_uri']}]"))
    if ls is None:
        unset = not os.environ.get("LABEL_STUDIO_URL")
        rows.append(("label studio", "not connected (LABEL_STUDIO_URL unset)" if unset else "no state read"))
    elif not live:
        rows.append(("label studio", f"unavailable: {ls['error']}"))
    else:
        rows.append(("label studio", f"project {ls['project']}, annotators see model {ls['model_version']}"))
    width = max(len(key) for key, _ in rows)
    return "\n".join([f"poseloop status: {s['project']}", *(f"  {key:<{width}}  {value}" for key, value in rows)])


def status_command(project_root: Path = Path("."), as_json: bool = False) -> int:
    """``python -m pipeline status [--project DIR] [--json]``."""
    status = status_dict(project_root)
    print(json.dumps(status, indent=1) if as_json else status_table(project_root, status))
    return 0
