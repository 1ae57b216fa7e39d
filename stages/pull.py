"""DVC stage `pull` (always runs): what annotators did -> data/corrections/ (append-only) and
data/labelstudio/pending.json.

Sources: the Label Studio project (when LABEL_STUDIO_URL is set) and Label Studio JSON exports dropped into
data/inbox/. Completed annotations become corrections (pixels, with provenance), skipped / cancelled tasks are
recorded so they are not sent again, bad records are reported by task and annotation id while the rest is imported.
A new corrections file is written only when something is new, so with nothing new both outputs are byte-identical and
DVC skips every stage downstream. Nothing already stored is ever rewritten or deleted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pipeline.config import load_params
from pipeline.console import add_json_flag, stage_result
from pipeline.corrections import AnnotationProblem, Correction, Skip, read_store, write_pull
from pipeline.data.coco import read_coco
from pipeline.data.labelstudio.annotations import parse_export_file
from pipeline.files import atomic_write
from pipeline.labelstudio.client import (
    ENV_API_KEY,
    ENV_URL,
    LabelStudioError,
    connect,
    fetch_annotations,
    find_project,
)


def report(problems: list[AnnotationProblem], source: str) -> None:
    for p in problems:
        print(f"pull ({source}): task {p.task_id} annotation {p.annotation_id}: {p.message}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corrections", type=Path, default=Path("data/corrections"))
    parser.add_argument("--pending", type=Path, default=Path("data/labelstudio/pending.json"))
    parser.add_argument("--inbox", type=Path, default=Path("data/inbox"))
    parser.add_argument("--export", type=Path, default=Path("artifacts/export.json"), help="what export sent")
    parser.add_argument(
        "--pool",
        type=Path,
        default=Path("data/prepared/pool.json"),
        help="the prepared pool: its keypoint schema (the found people are not needed, so find can come after pull)",
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    add_json_flag(parser)
    args = parser.parse_args()
    cfg = load_params(args.params).export
    schema = read_coco(args.pool).schema
    args.corrections.mkdir(parents=True, exist_ok=True)
    pending: list[int] | None = None

    # Everything is read first and stored as one file: one pull is one round (corrections.round_number), and a
    # source that fails cannot leave the store half-written.
    corrections: list[Correction] = []
    skips: list[Skip] = []
    problems: list[AnnotationProblem] = []
    sources: list[str] = []
    last_export = json.loads(args.export.read_text()) if args.export.is_file() else {}
    if not os.environ.get(ENV_URL) and last_export.get("mode") == "server":
        # the round would silently read only the inbox while the annotators' work waits on the server (issue #25)
        print(
            f"warning: the last export sent {len(last_export.get('tasks', {}))} tasks to the Label Studio project "
            f"{last_export.get('project_title')!r}, but {ENV_URL} is not set: this pull reads only {args.inbox}/ and "
            f"the annotations on the server stay there. Set {ENV_URL} and {ENV_API_KEY} (`python -m pipeline "
            "labelstudio serve` prints both) and run `dvc repro` again to bring them in.",
            file=sys.stderr,
        )
    if os.environ.get(ENV_URL):
        ls = connect()
        try:
            project = find_project(ls, cfg.project_title)
        except LabelStudioError:
            project = None  # nothing exported yet (round 1)
        if project is not None:
            c, s, found, pending = fetch_annotations(ls, project, schema)
            report(found, "labelstudio")
            corrections, skips, problems, sources = list(c), list(s), list(found), ["labelstudio"]
    unreadable: list[str] = []
    for export_file in sorted(args.inbox.glob("*.json")) if args.inbox.is_dir() else []:
        try:
            c, s, found = parse_export_file(export_file, schema)
        except (OSError, ValueError, TypeError, OverflowError) as exc:  # one broken file must not keep the rest out
            unreadable.append(f"{export_file}: {exc}" if str(export_file) not in str(exc) else str(exc))
            continue
        report(found, export_file.name)
        corrections += c
        skips += s
        problems += found
        sources.append(f"inbox:{export_file.name}")
    path = write_pull(args.corrections, corrections, skips, problems, ", ".join(sources) or "nothing")
    written = [path] if path else []

    if pending is None:  # file hand-off: what was exported and is neither corrected nor skipped yet
        exported = last_export.get("tasks", {})
        done, skipped = read_store(args.corrections)
        finished = {c.instance_id for c in done} | {s.instance_id for s in skipped}
        pending = [int(i) for i in exported if int(i) not in finished]
    content = json.dumps({"pending": sorted(pending)}, indent=1) + "\n"
    if not args.pending.is_file() or args.pending.read_text() != content:
        atomic_write(args.pending, content)
    result = {"new_files": [p.name for p in written], "pending": len(pending), "unreadable": len(unreadable)}
    line = f"{len(written)} new correction files, {len(pending)} tasks still waiting for an annotator" + (
        f", {len(unreadable)} files unreadable (below)" if unreadable else ""
    )
    stage_result("pull", line, result, args.json)
    # The stage succeeds with the broken files named: what was readable is stored and DVC caches it with this run
    # (failing here would leave the new store file outside dvc.lock). A broken file stays in the inbox and is read
    # again at every pull, so fixing it is all it takes.
    for message in unreadable:
        print(
            f"warning: not imported: {message} (fix or remove the file; it is read again at every pull)",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
