"""The simulated annotator: completes pending Label Studio tasks from the pool's hidden truth (``oracle.json``).

It goes through the same API an annotator's browser uses (``annotations.create`` on the task), so tests and benchmarks
run the whole loop against a real server: the result it posts has the shape the editor writes (a ``person`` box, one
``keypointlabels`` region per labeled keypoint, the per-region ``occluded`` choice for COCO v=1),
``parent_prediction`` is the prediction shown (the project's ``model_version``), and a skip is
``was_cancelled: true``, exactly what the editor's Skip button posts.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from label_studio_sdk import LabelStudio

from pipeline.data.labelstudio.tasks import box_region, keypoint_regions
from pipeline.keypoints import KeypointSchema
from pipeline.labelstudio.client import LabelStudioError, base_url, find_project, iter_tasks, with_retries

log = logging.getLogger(__name__)

# ``include`` applies at every nesting level (see client): "model_version" keeps it in the listed predictions.
_TASK_FIELDS = "id,data,total_annotations,cancelled_annotations,predictions,model_version"


def _truth_index(oracle: Mapping[str, Any]) -> dict[int, tuple[dict, dict]]:
    """annotation id (= instance id) -> (annotation, its image) of a COCO dict."""
    images = {im["id"]: im for im in oracle.get("images", [])}
    out = {}
    for ann in oracle.get("annotations", []):
        image = images.get(ann.get("image_id"))
        if image is not None:
            out[int(ann["id"])] = (ann, image)
    return out


def oracle_result(
    annotation: Mapping[str, Any],
    image: Mapping[str, Any],
    schema: KeypointSchema,
    rng: np.random.Generator | None = None,
    noise_px: float = 0.0,
) -> list[dict]:
    """The result an annotator would submit for one true COCO annotation.

    Keypoints with v > 0 are placed (v=1 with the ``occluded`` choice); with ``noise_px`` > 0 each placed point moves
    by N(0, noise_px^2) per axis (clipped into the image). The box is the true box.
    """
    width, height = int(image["width"]), int(image["height"])
    kps = np.asarray(annotation["keypoints"], dtype=np.float64).reshape(schema.num_keypoints, 3)
    xy, vis = kps[:, :2].copy(), kps[:, 2].astype(np.int64)
    if noise_px > 0:
        if rng is None:
            raise ValueError("noise_px > 0 needs an rng")
        xy += rng.normal(0.0, noise_px, size=xy.shape)
    return [box_region(annotation["bbox"], width, height), *keypoint_regions(xy, vis, width, height, schema)]


def is_unlabelable(keypoints: Sequence[float], min_keypoints: int = 3, min_visible: int = 0) -> bool:
    """The simulated annotator's skip rule for a person's true COCO (3K,) keypoints: fewer than ``min_keypoints``
    labeled (v > 0) or fewer than ``min_visible`` clearly visible (v = 2). Below either, placing the points is
    guesswork: a person would skip the task, which costs a look and teaches nothing."""
    flags = keypoints[2::3]
    return sum(v > 0 for v in flags) < min_keypoints or sum(v == 2 for v in flags) < min_visible


def simulate(
    ls: LabelStudio,
    project_id: int,
    oracle: Mapping[str, Any],
    schema: KeypointSchema,
    noise_px: float = 0.0,
    miss_rate: float = 0.0,
    seed: int = 0,
    *,
    delay_s: float = 0.0,
    limit: int | None = None,
    min_keypoints: int = 3,
) -> dict[str, int]:
    """Annotate every pending task (no annotation, no skip) of the project from ``oracle``; returns counts.

    ``oracle``: a COCO dict whose annotation ids are the instance ids (data/prepared/oracle.json). Each pending task,
    in task id order: a person with fewer than ``min_keypoints`` labeled keypoints in the truth is skipped as
    unlabelable (what an annotator does with a figure they cannot place: it costs a look, teaches nothing); else with
    probability ``miss_rate`` it is skipped (``was_cancelled``); else annotated from the truth with ``noise_px``
    Gaussian noise. ``delay_s`` waits between tasks (a human's pace, for benchmarks); ``limit``
    stops after that many tasks. Deterministic in ``seed`` for the same set of pending tasks.

    Counts: ``pending`` (tasks found pending), ``annotated``, ``skipped`` (``unlabelable`` of them by the rule above),
    ``no_truth`` (pending tasks whose instance is not in the oracle: left pending). The effort of each annotation
    (keypoints moved, added, deleted against the prediction shown) is measured when it is pulled, as for a person.
    """
    if not 0.0 <= miss_rate <= 1.0:
        raise ValueError(f"miss_rate must be in [0, 1], got {miss_rate}")
    if noise_px < 0:
        raise ValueError(f"noise_px must be >= 0, got {noise_px}")
    url = base_url(ls)
    truth = _truth_index(oracle)
    rng = np.random.default_rng(seed)
    project = with_retries(lambda: ls.projects.get(id=project_id), url=url, what="get project")
    shown_version = getattr(project, "model_version", None) or None
    counts = {"pending": 0, "annotated": 0, "skipped": 0, "unlabelable": 0, "no_truth": 0}
    pending = [
        t
        for t in iter_tasks(ls, project_id, include=_TASK_FIELDS)
        if not t.get("total_annotations") and not t.get("cancelled_annotations")
    ]
    for task in sorted(pending, key=lambda t: t["id"]):
        if limit is not None and counts["annotated"] + counts["skipped"] >= limit:
            break
        counts["pending"] += 1
        iid = task["data"].get("instance_id") if isinstance(task.get("data"), dict) else None
        if iid not in truth:
            counts["no_truth"] += 1
            continue
        predictions = [p for p in task.get("predictions") or () if isinstance(p, dict)]
        parent = next((p["id"] for p in predictions if p.get("model_version") == shown_version), None)
        ann, image = truth[iid]
        unlabelable = is_unlabelable(ann["keypoints"], min_keypoints)
        skip = unlabelable or rng.random() < miss_rate
        counts["unlabelable"] += unlabelable
        result = [] if skip else oracle_result(ann, image, schema, rng, noise_px)
        kwargs: dict[str, Any] = {"result": result, "was_cancelled": skip, "lead_time": float(delay_s)}
        if parent is not None:
            kwargs["parent_prediction"] = parent
        # One attempt: a create is not idempotent, and a half-done simulation resumes by running again.
        with_retries(
            lambda kw=kwargs, tid=task["id"]: ls.annotations.create(id=tid, **kw),
            1,
            url=url,
            what=f"annotate task {task['id']}",
        )
        counts["skipped" if skip else "annotated"] += 1
        if delay_s > 0:
            time.sleep(delay_s)
    log.info("simulated annotator on project %s: %s", project_id, counts)
    return counts


def simulate_command(
    oracle_path: Path,
    project: str,
    noise_px: float,
    miss_rate: float,
    seed: int,
    delay_s: float = 0.0,
    min_keypoints: int = 3,
) -> int:
    """``python -m pipeline labelstudio simulate``: complete the project's pending tasks from oracle.json."""
    from pipeline.data.coco import read_coco
    from pipeline.labelstudio.client import connect

    coco = read_coco(oracle_path)
    try:
        ls = connect()
        project_id = find_project(ls, project)
        counts = simulate(
            ls,
            project_id,
            coco.to_dict(),
            coco.schema,
            noise_px,
            miss_rate,
            seed,
            delay_s=delay_s,
            min_keypoints=min_keypoints,
        )
    except LabelStudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"project {project!r}: {counts['annotated']} annotated, {counts['skipped']} skipped "
        f"({counts['unlabelable']} unlabelable), {counts['no_truth']} without truth (of {counts['pending']} pending)"
    )
    return 0
