"""``python -m pipeline validate FILE``: check a keypoint file the way prepare will read it, and say what is in it.

COCO files are checked as they are; an MPII list or a Label Studio export is converted first, as ``data.source: mpii``
/ ``labelstudio`` does, so what validate accepts is what prepare accepts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline.data.coco import CocoFormatError, CocoKeypoints, load_json, summarize, validate_coco, warning_lines
from pipeline.data.labelstudio_export import export_to_coco, looks_like_labelstudio_export
from pipeline.data.mpii import looks_like_mpii, mpii_to_coco


def detect_format(data: Any) -> str:
    """``coco``, ``mpii`` or ``labelstudio`` from a parsed file's shape (``coco`` when unsure: its errors explain)."""
    if looks_like_mpii(data):
        return "mpii"
    if looks_like_labelstudio_export(data):
        return "labelstudio"
    return "coco"


def validate_command(
    annotations: str | os.PathLike[str],
    images: str | os.PathLike[str] | None = None,
    category: int | str | None = None,
    fmt: str = "auto",
) -> int:
    """``python -m pipeline validate FILE [--images DIR] [--category NAME] [--format auto|coco|mpii|labelstudio]``:
    print a summary and return 0 when the file is valid (warnings are printed too); print every problem and return 2
    when it is not.

    With ``images`` every image is checked: present, decodable, size as in the JSON. An MPII list or a Label Studio
    export is converted to COCO first (as prepare does), which needs ``images`` for the image sizes.
    """
    path = Path(annotations)
    try:
        data = load_json(path)
    except CocoFormatError as exc:
        print(exc)
        return 2
    except OSError as exc:
        print(f"{path}: cannot read: {exc}")
        return 2
    fmt = detect_format(data) if fmt == "auto" else fmt
    if fmt != "coco":
        if images is None:
            print(f"{path}: {fmt} layout: give --images DIR (the image sizes come from the image files)")
            return 2
        try:
            convert = mpii_to_coco if fmt == "mpii" else export_to_coco
            data = convert(data, str(path), Path(images))
        except CocoFormatError as exc:
            print(exc)
            return 2
        print(f"{path}: read as {fmt} (converted to COCO keypoints as data.source: {fmt} does)")
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
