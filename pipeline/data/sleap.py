"""SLEAP labels files (``.slp``) in and out, through sleap-io (the SLEAP team's own reader and writer).

In (``data.source: sleap``, ``read_sleap``): every labeled frame with a user instance or a prediction becomes one image
(decoded from the file's embedded frames or from its video, written as PNG into the prepared folder):

* user instances are labels: a placed (finite) point gets visibility 2 when SLEAP marks it visible and 1 when it is
  marked not visible (SLEAP's "occluded": placed where the hidden point is, COCO's visibility 1); a NaN point 0 at
  (0, 0). The writer maps back the same way, so the flags survive a round trip.
* predicted instances that no user instance replaced (``LabeledFrame.unused_predictions``) are the pool: their box
  (around their points) is kept, their points are not (they are the old model's guess, not a label); annotation
  ``source: "unlabeled"`` tells prepare to keep them as the pool.
* boxes: SLEAP has none; ``coco.box_around`` the points, as for DeepLabCut.
* coordinates as SLEAP stores them; sleap-io's own COCO and DeepLabCut converters shift nothing either.
* the skeleton's nodes are the keypoint names, its edges the COCO skeleton; flip pairs come from the names (or
  ``data.flip_pairs``), not from SLEAP's symmetries, so every source follows one rule.

Why poseloop keeps its own readers for the other formats although sleap-io has them (checked with sleap-io 0.9.5 on
../shared/data): ``sio.load_dlc`` orders the bodyparts alphabetically instead of as config.yaml lists them (the
schema would change), and loads a non-numeric coordinate cell without an error; ``sio.load_coco`` turns a crowd region
into an ordinary instance and drops boxes, ``area`` and every provenance field (its boxes are the points' extent);
``sio.load_labelstudio`` fails (KeyError) on an export whose keypoints are children of a person rectangle. Ours keep
the file's order, boxes and fields and name the file, line or record at fault. For SLEAP's own format sleap-io is the
reference implementation, and it is used here.

Out (``write_sleap``): labels as user instances, the teacher's pool predictions as predicted instances (with point
scores), in one labels file, on an image-sequence video of the frames they are on; the skeleton gets the schema's
edges and flip pairs as symmetries. ``embed`` stores the frames in the file (a self-contained package SLEAP can
train from); without it the file points at the images by absolute path.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.data.coco import UNLABELED, box_around, keypoint_annotation
from pipeline.files import atomic_path
from pipeline.keypoints import KeypointSchema, flip_pairs_from_names

log = logging.getLogger(__name__)


class SleapFormatError(ValueError):
    """A SLEAP file cannot be converted; the message names the file (and video / frame)."""


def read_sleap(path: str | os.PathLike[str], out_dir: Path | None, image_subdir: str = "images") -> dict:
    """Read a ``.slp`` labels file as a COCO keypoint dict; frames are written to ``out_dir / image_subdir`` and
    ``file_name`` is relative to ``out_dir``. Without ``out_dir`` (validate) no frame is decoded: the sizes come
    from the videos' shapes.

    Long because one pass over the file: frames, user and predicted instances and the skeleton are read together, as
    sleap-io hands them over.
    """
    import sleap_io as sio

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such SLEAP labels file")
    try:
        labels = sio.load_slp(str(path))
    except Exception as exc:  # h5py / sleap-io raise OSError, KeyError, ValueError, ... on a broken file
        raise SleapFormatError(f"{path}: not a readable SLEAP labels file: {type(exc).__name__}: {exc}") from exc
    if len(labels.skeletons) != 1:
        names = [s.name for s in labels.skeletons]
        raise SleapFormatError(f"{path}: {len(names)} skeletons {names}: one keypoint schema is needed (exactly one)")
    skeleton = labels.skeletons[0]
    names = list(skeleton.node_names)
    symmetries = sorted(tuple(sorted(pair)) for pair in skeleton.symmetry_inds)
    from_names = sorted(flip_pairs_from_names(names))
    if symmetries != from_names:  # the loop derives flip pairs from the names (or data.flip_pairs), one rule for all
        log.warning(
            "%s: the skeleton's symmetries %s are not the pairs the names give %s: set data.flip_pairs: %s in "
            "params.yaml to flip by the symmetries",
            path,
            [[names[a], names[b]] for a, b in symmetries],
            [[names[a], names[b]] for a, b in from_names],
            [list(p) for p in symmetries],
        )
    video_index = {id(v): i for i, v in enumerate(labels.videos)}

    images: list[dict] = []
    annotations: list[dict] = []
    frames = sorted(labels.labeled_frames, key=lambda f: (video_index[id(f.video)], f.frame_idx))
    for lf in frames:
        users = [inst for inst in lf.user_instances if _labeled_points(inst)]
        predictions = list(lf.unused_predictions)
        if not users and not predictions:
            continue
        vi = video_index[id(lf.video)]
        where = f"{path}: video {vi} ({_video_name(lf.video)}) frame {lf.frame_idx}"
        name = f"{image_subdir}/sleap/video{vi:02d}/frame{lf.frame_idx:06d}.png"
        try:
            if out_dir is None:
                height, width = lf.video.shape[1:3]
            else:
                pixels = np.asarray(lf.image)
                pixels = pixels[..., 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels
                (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels.astype(np.uint8)).save(out_dir / name)
                height, width = pixels.shape[:2]
        except Exception as exc:  # a missing video, an unknown codec, a truncated embedded frame
            raise SleapFormatError(f"{where}: cannot read the frame: {type(exc).__name__}: {exc}") from exc
        image_id = len(images) + 1
        source_frame = {"sleap_video": _video_name(lf.video), "sleap_frame": int(lf.frame_idx)}
        images.append({"id": image_id, "file_name": name, "width": int(width), "height": int(height), **source_frame})
        for inst in users:
            points = _labeled_points(inst)
            keypoints: list[float] = []
            for j in range(len(names)):
                keypoints += list(points[j]) if j in points else [0.0, 0.0, 0]
            box = box_around([p[:2] for p in points.values()], width, height)
            if box is None:
                raise SleapFormatError(f"{where}: a user instance lies outside the {width}x{height} frame")
            annotations.append(keypoint_annotation(len(annotations) + 1, image_id, keypoints, box, source="sleap"))
        for inst in predictions:
            xy = inst.numpy()[:, :2]
            box = box_around([tuple(p) for p in xy[np.isfinite(xy).all(axis=1)]], width, height)
            if box is None:
                continue  # a prediction with no point inside the frame: nothing to crop
            empty = [0.0] * 3 * len(names)
            ann_id = len(annotations) + 1
            annotations.append(
                keypoint_annotation(ann_id, image_id, empty, box, source=UNLABELED, sleap_score=float(inst.score))
            )
    if not annotations:
        raise SleapFormatError(f"{path}: no user instance and no prediction in any labeled frame")
    category = {
        "id": 1,
        "name": skeleton.name or "animal",
        "supercategory": skeleton.name or "animal",
        "keypoints": names,
        "skeleton": [[a + 1, b + 1] for a, b in skeleton.edge_inds],
    }
    info = {"description": f"SLEAP labels {path.name} converted to COCO by poseloop"}
    return {"info": info, "images": images, "annotations": annotations, "categories": [category]}


def _video_name(video: object) -> str:
    filename = getattr(video, "filename", "")
    return str(filename[0] if isinstance(filename, list) and filename else filename)


def _labeled_points(inst: object) -> dict[int, tuple[float, float, int]]:
    """Node index -> (x, y, COCO visibility) for the placed (finite) points: 2 visible, 1 marked not visible."""
    points = inst.points  # structured array: xy (2,), visible, complete, name
    out = {}
    for j, (xy, visible) in enumerate(zip(points["xy"], points["visible"], strict=True)):
        if np.isfinite(xy).all():
            out[j] = (float(xy[0]), float(xy[1]), 2 if visible else 1)
    return out


@dataclass(frozen=True)
class FramePoses:
    """The poses on one image, for ``write_sleap``: ``labels`` (N, K, 3) x, y, COCO visibility; ``predictions``
    (M, K, 2) x, y and ``prediction_scores`` (M, K)."""

    image: Path
    labels: np.ndarray
    predictions: np.ndarray
    prediction_scores: np.ndarray


def write_sleap(path: Path, frames: Sequence[FramePoses], schema: KeypointSchema, embed: bool = False) -> Path:
    """Write ``frames`` as a SLEAP labels file (atomically: an existing file is replaced only by a complete one)."""
    import sleap_io as sio

    names = list(schema.names)
    skeleton = sio.Skeleton(
        names,
        edges=[(names[a], names[b]) for a, b in schema.skeleton],
        symmetries=[(names[a], names[b]) for a, b in schema.flip_pairs],
        name=schema.category_name,
    )
    video = sio.Video.from_filename([str(f.image.resolve()) for f in frames])
    labeled_frames = []
    for index, frame in enumerate(frames):
        instances: list = []
        for person in frame.labels:
            xy = np.where((person[:, 2] > 0)[:, None], person[:, :2], np.nan)
            instance = sio.Instance.from_numpy(xy, skeleton=skeleton)
            instance.points["visible"][person[:, 2] == 1] = False  # placed but hidden (see the module doc)
            instances.append(instance)
        for xy, scores in zip(frame.predictions, frame.prediction_scores, strict=True):
            instances.append(
                sio.PredictedInstance.from_numpy(
                    xy, skeleton=skeleton, point_scores=scores, score=float(np.mean(scores)) if len(scores) else 0.0
                )
            )
        labeled_frames.append(sio.LabeledFrame(video=video, frame_idx=index, instances=instances))
    labels = sio.Labels(labeled_frames=labeled_frames, videos=[video], skeletons=[skeleton])
    path = Path(path)
    with atomic_path(path, keep_suffix=True) as tmp:
        sio.save_slp(labels, str(tmp), embed="all" if embed else False, verbose=False)
    return path
