"""The one table of keypoint formats the project reads: ``read_format`` turns a file (or a DeepLabCut project folder)
of any of them into a COCO keypoint dict; ``prepare`` (a ``data.source``) and ``validate`` both read through it, so
what validate accepts is what prepare reads. (The writers of ``export-labels`` are in ``pipeline.export_labels``.)

=============== ============================ =================================================================
format          input                        images
=============== ============================ =================================================================
``coco``        a COCO keypoint JSON file    ``images``: the folder ``file_name`` is relative to
``mpii``        an MPII JSON list (MMPose)   ``images``: needed, the sizes come from the image files
``labelstudio`` a Label Studio JSON export   ``images``: needed, as for MPII
``sleap``       a SLEAP ``.slp`` file        embedded or in its video; decoded into ``frames_dir`` when given
``deeplabcut``  a DeepLabCut project folder  the project folder itself
``lightning_pose`` a Lightning Pose project  the project folder itself (CollectedData.csv, no config.yaml)
=============== ============================ =================================================================
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.data.coco import load_json

FORMATS = ("coco", "mpii", "labelstudio", "sleap", "deeplabcut", "lightning_pose")


def detect_format(path: Path, data: Any = None) -> str:
    """The format of ``path``: a folder is a DeepLabCut project, ``.slp`` a SLEAP file, JSON goes by the shape of
    ``data`` (its parsed content): an MPII list, a Label Studio export, else COCO (whose errors then explain)."""
    from pipeline.data.labelstudio.source import looks_like_labelstudio_export
    from pipeline.data.mpii import looks_like_mpii

    if path.is_dir():
        from pipeline.data.deeplabcut import LIGHTNING_POSE_CSV

        is_lightning_pose = (path / LIGHTNING_POSE_CSV).is_file() and not (path / "config.yaml").is_file()
        return "lightning_pose" if is_lightning_pose else "deeplabcut"
    if path.suffix == ".slp":
        return "sleap"
    if looks_like_mpii(data):
        return "mpii"
    return "labelstudio" if looks_like_labelstudio_export(data) else "coco"


def read_format(
    fmt: str,
    path: Path,
    images: Path | None = None,
    *,
    frames_dir: Path | None = None,
    labelstudio_keypoints: list[str] | None = None,
    parsed: Any = None,
) -> tuple[dict, Path | None]:
    """(the file as a COCO keypoint dict, the folder its ``file_name`` values are relative to, or None).

    ``fmt`` is one of ``FORMATS`` or ``"auto"`` (``detect_format``). ``frames_dir``: where a SLEAP file's frames are
    decoded to (``file_name`` then relative to its parent); None reads the labels only. ``parsed``: the JSON file's
    content when the caller has read it already. Raises what the readers raise (``CocoFormatError`` and the other
    ValueErrors name the file and record).
    """
    if fmt == "auto" and (path.is_dir() or path.suffix == ".slp"):
        fmt = detect_format(path)
    if fmt == "deeplabcut":
        from pipeline.data.deeplabcut import read_deeplabcut_project

        return read_deeplabcut_project(path)  # (coco, the project folder: its frames are the images)
    if fmt == "lightning_pose":
        from pipeline.data.deeplabcut import read_lightning_pose_project

        return read_lightning_pose_project(path)
    if fmt == "sleap":
        from pipeline.data.sleap import read_sleap

        if frames_dir is None:
            return read_sleap(path, None), None
        return read_sleap(path, frames_dir.parent, frames_dir.name), frames_dir.parent
    data = load_json(path) if parsed is None else parsed
    if fmt == "auto":
        fmt = detect_format(path, data)
    if fmt == "coco":
        return data, images
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    if images is None:
        raise ValueError(
            f"{path}: {fmt} layout: give --images DIR (params.yaml: data.{fmt}.images); the image sizes come from "
            "the image files"
        )
    if fmt == "mpii":
        from pipeline.data.mpii import mpii_to_coco

        return mpii_to_coco(data, str(path), images), images
    from pipeline.data.labelstudio.source import export_to_coco

    return export_to_coco(data, str(path), images, labelstudio_keypoints), images
