"""``python -m pipeline validate FILE``: check a keypoint file the way prepare will read it, and say what is in it.

COCO files are checked as they are; an MPII list, a Label Studio export, a SLEAP file or a DeepLabCut project is
converted first, as its ``data.source`` does, so what validate accepts is what prepare accepts. A video or a folder
without config.yaml is checked as ``data.pool`` input (pipeline/data/unlabeled.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline.data.coco import CocoFormatError, CocoKeypoints, load_json, summarize, validate_coco, warning_lines
from pipeline.data.formats import detect_format, read_format
from pipeline.data.unlabeled import VIDEO_SUFFIXES


def read_as_coco(path: Path, fmt: str, images: Path | None) -> tuple[Any, Path | None]:
    """(parsed data as COCO, the folder its images are in or None), through ``formats.read_format`` as prepare reads
    it; ``fmt`` ``auto``: ``formats.detect_format``. Raises what the readers raise."""
    parsed = None
    if fmt == "auto" and not (path.is_dir() or path.suffix == ".slp"):
        parsed = load_json(path)
        fmt = detect_format(path, parsed)
    data, folder = read_format(fmt, path, images, parsed=parsed)
    if fmt in ("mpii", "labelstudio"):
        print(f"{path}: read as {fmt} (converted to COCO keypoints as data.source: {fmt} does)")
    return data, folder


def validate_pool_input(path: Path) -> int:
    """A video (frames, fps, size) or a folder of images (how many, the unreadable ones named) as ``data.pool``
    reads it; 0 when usable, 2 when not."""
    from pipeline.data.images import probe_images
    from pipeline.data.unlabeled import IMAGE_SUFFIXES, PoolInputError, list_inputs, probe_video

    try:
        if not path.is_dir():
            info = probe_video(path)
            seconds = f", {info.frames / info.fps:.1f} s" if info.fps > 0 else ""
            print(f"{path}: OK (a video for data.pool.videos)")
            print(f"  frames: {info.frames} at {info.fps:g} fps{seconds}; size {info.width} x {info.height}")
            return 0
        files = list_inputs([str(path)], IMAGE_SUFFIXES, Path("."), "images")
    except (PoolInputError, OSError) as exc:
        print(f"{path}: INVALID: {exc}")
        return 2
    broken = [result for result in probe_images(files) if isinstance(result, str)]
    if broken:
        print(f"{path}: INVALID, {len(broken)} of {len(files)} image(s) cannot be used (prepare would stop):")
        for line in broken:
            print(f"  {line}")
        return 2
    print(f"{path}: OK (a folder for data.pool.images): {len(files)} image(s), every one decodes")
    return 0


def validate_command(
    annotations: str | os.PathLike[str],
    images: str | os.PathLike[str] | None = None,
    category: int | str | None = None,
    fmt: str = "auto",
) -> int:
    """``python -m pipeline validate FILE [--images DIR] [--category NAME] [--format ...]``: print a summary and
    return 0 when the file is valid (warnings are printed too); print every problem and return 2 when it is not.

    FILE is a COCO file, an MPII list or a Label Studio export (JSON), a SLEAP ``.slp`` or a DeepLabCut project
    folder (one with config.yaml; another folder or a video is ``data.pool`` input: ``validate_pool_input``); all
    but COCO are converted first, as prepare does (MPII and Label Studio need ``images`` for the image sizes). With
    ``images`` (a DeepLabCut project: always) every image is checked: present, decodable, size as in the file.
    """
    path = Path(annotations)
    project = path.is_dir() and ((path / "config.yaml").is_file() or (path / "CollectedData.csv").is_file())
    if path.suffix.lower() in VIDEO_SUFFIXES or (path.is_dir() and not project):
        return validate_pool_input(path)
    try:
        data, images = read_as_coco(path, fmt, Path(images) if images is not None else None)
    except CocoFormatError as exc:
        print(exc)
        return 2
    except (OSError, ValueError, NotImplementedError) as exc:  # unreadable file, a reader's format error
        print(f"{path}: cannot read: {exc}" if isinstance(exc, OSError) else str(exc))
        return 2
    problems = validate_coco(data, path, images_dir=images, check_images=images is not None)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        print(f"{path}: INVALID, {len(errors)} error(s), {len(problems) - len(errors)} warning(s)")
        for line in [*map(str, errors), *warning_lines(problems)]:
            print(f"  {line}")
        return 2
    try:
        # Re-validating in from_dict is cheap next to the image check, which is not repeated (no images_dir).
        coco = CocoKeypoints.from_dict(data, path, category=category)
    except CocoFormatError as exc:
        print(exc)
        return 2
    s = summarize(coco)
    vis = s["keypoints_by_visibility"]
    if not any(a.get("num_keypoints", 0) > 0 and not a.get("iscrowd") for a in coco.annotations):
        # prepare would stop on it later with a message about splits; say what is wrong here
        print(
            f"{path}: INVALID, nothing to train on: none of its {s['instances']} instance(s) has a labeled keypoint "
            "(a DeepLabCut CSV with headers only, a SLEAP file with predictions but no user instances, ...)"
        )
        return 2
    print(f"{path}: OK" + (f" ({len(problems)} warning(s))" if problems else ""))
    print(
        f"  images:     {s['images']} ({s['images_with_instances']} with instances)"
        + ("" if images is None else f", files checked in {images}")
    )
    print(
        f"  instances:  {s['instances']} of category {s['category']['id']} {s['category']['name']!r}: "
        f"{s['instances_with_keypoints']} with keypoints, {s['crowd']} crowd"
        + (f"; {s['other_category_instances']} of other categories" if s["other_category_instances"] else "")
    )
    print(f"  keypoints by visibility: 0 (unlabeled) {vis[0]}, 1 (occluded) {vis[1]}, 2 (visible) {vis[2]}")
    print(f"  schema:     {len(s['keypoint_names'])} keypoints: {', '.join(s['keypoint_names'])}")
    print(f"  flip pairs: {', '.join(f'{a}<->{b}' for a, b in s['flip_pairs']) or 'none'}")
    print(f"  skeleton:   {s['skeleton_edges']} edges")
    print(f"  OKS sigmas: {s['sigma_source']}: " + ", ".join(f"{n}={v:g}" for n, v in s["sigmas"].items()))
    for line in warning_lines(problems):
        print(f"  {line}")
    return 0
