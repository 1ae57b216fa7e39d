"""Top-down torch Dataset: one person instance -> normalised crop, heatmap targets and the crop's geometry.

Coordinates follow ``pipeline.data.transforms`` (integer = pixel centre; sizes are ``(width, height)``). A sample
carries its image -> crop ``matrix`` and ``flipped`` flag so predictions come back to image pixels with
``transforms.crop_to_image(points, matrix, flipped, schema.flip_index)``.

Randomness: the augmentation of sample ``index`` is drawn from ``np.random.default_rng([seed, epoch, index])``, so it
does not depend on which DataLoader worker loads it or in which order (workers are reproducible); call
``set_epoch`` at the start of every epoch. The DataLoader's worker seeding plays no part.

A missing or undecodable image is logged with its path and replaced by a zero image with zero target weight, so one
bad file never stops a run.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.codec import HeatmapCodec, KeypointCodec
from pipeline.data.images import load_image
from pipeline.data.transforms import Augment, Size, apply_affine, flip_keypoints_order, sample_transform, warp_crop
from pipeline.keypoints import KeypointSchema

log = logging.getLogger(__name__)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)  # RGB
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass(frozen=True)
class InstanceRecord:
    """One person instance.

    ``bbox`` is ``(x, y, w, h)`` in image pixels; ``keypoints`` (K, 3) float ``[x, y, v]`` with COCO flags, or None
    for an unlabeled pool instance.
    """

    instance_id: int
    image_path: Path
    bbox: tuple[float, float, float, float]
    keypoints: np.ndarray | None = None
    image_id: int | None = None


def instances_from_coco(
    images: Sequence[dict],
    annotations: Iterable[dict],
    images_root: Path,
    num_keypoints: int,
    require_keypoints: bool = True,
    category_id: int | None = None,
) -> list[InstanceRecord]:
    """Instance records from COCO ``images`` and ``annotations`` lists.

    Skips crowd annotations, boxes with w or h <= 1, annotations of other categories (when ``category_id`` is
    given) and of unknown images. ``require_keypoints=True`` (training) also skips annotations without any labeled
    keypoint; with False they are kept, ``keypoints=None`` when the annotation has no keypoint array at all.
    """
    by_id = {int(im["id"]): im for im in images}
    records: list[InstanceRecord] = []
    skipped_unknown = 0
    for ann in annotations:
        if ann.get("iscrowd", 0) or (category_id is not None and int(ann.get("category_id", -1)) != category_id):
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        if w <= 1 or h <= 1:
            continue
        image = by_id.get(int(ann["image_id"]))
        if image is None:
            skipped_unknown += 1
            continue
        raw = ann.get("keypoints")
        keypoints = None
        if raw:
            keypoints = np.asarray(raw, dtype=np.float64)
            if keypoints.size != 3 * num_keypoints:
                raise ValueError(
                    f"annotation {ann.get('id')}: {keypoints.size} keypoint values, expected 3 x {num_keypoints}"
                )
            keypoints = keypoints.reshape(num_keypoints, 3)
        if require_keypoints and (keypoints is None or not (keypoints[:, 2] > 0).any()):
            continue
        records.append(
            InstanceRecord(
                instance_id=int(ann["id"]),
                image_path=Path(images_root) / image["file_name"],
                bbox=(x, y, w, h),
                keypoints=keypoints,
                image_id=int(ann["image_id"]),
            )
        )
    if skipped_unknown:
        log.warning("skipped %d annotations whose image_id is not in the images list", skipped_unknown)
    return records


def normalize_image(crop_rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 normalised with ImageNet mean/std."""
    x = (crop_rgb.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


class TopDownDataset(Dataset):
    """Top-down samples of person instances.

    ``__getitem__`` returns a dict of tensors (shapes for K keypoints, input ``(W, H)``, heatmap ``(w, h)``):

    - ``image`` (3, H, W) float32, RGB normalised with ImageNet mean/std (all zeros for an unreadable image)
    - the targets of ``codec.encode_targets``: always ``target_weight`` (K,) float32 (zero for unlabeled instances,
      unlabeled or out-of-crop keypoints, and unreadable images: use it, not ``visibility``, to mask losses); the
      heatmap codec adds ``heatmaps`` (K, h, w) float32
    - ``keypoints`` (K, 2) float32 crop pixels and ``visibility`` (K,) float32 COCO flags, both in the crop's
      keypoint order (left/right swapped when ``flipped``)
    - ``matrix`` (2, 3) float64 image -> crop, ``flipped`` bool, ``instance_id`` int64, ``bbox`` (4,) float32

    Args:
        records: instances (``InstanceRecord``).
        schema: keypoint schema (K and flip pairs).
        codec: the head's target codec (``models.heads.target_codec``: a ``HeatmapCodec`` or a ``KeypointCodec``);
            its ``input_size`` is the crop size.
        input_size: optional ``(w, h)``, must equal ``codec.input_size`` (a guard against mismatched configs).
        augment: training augmentation, or None for the deterministic evaluation crop.
        seed: base seed of the per-sample augmentation.
        cache_size: decoded images kept in a per-worker LRU cache (0 = off; each worker holds its own copy).
        padding: box enlargement before the crop.
    """

    def __init__(
        self,
        records: Sequence[InstanceRecord],
        schema: KeypointSchema,
        codec: HeatmapCodec | KeypointCodec,
        input_size: Size | None = None,
        augment: Augment | None = None,
        seed: int = 0,
        cache_size: int = 0,
        padding: float = 1.25,
    ) -> None:
        if input_size is not None and tuple(input_size) != codec.input_size:
            raise ValueError(f"input_size {tuple(input_size)} differs from the codec's {codec.input_size}")
        k = schema.num_keypoints
        for r in records:
            if r.keypoints is not None and np.shape(r.keypoints) != (k, 3):
                raise ValueError(f"instance {r.instance_id}: keypoints {np.shape(r.keypoints)}, expected ({k}, 3)")
        self.records = list(records)
        self.schema = schema
        self.codec = codec
        self.input_size: Size = codec.input_size
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self.padding = float(padding)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[Path, np.ndarray] = OrderedDict()
        self._flip_index = schema.flip_index

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of this epoch.

        Call it before creating the epoch's DataLoader iterator: workers get a copy of the dataset when they start,
        so with ``persistent_workers=True`` they would keep the old epoch.
        """
        self.epoch = int(epoch)

    def _load_rgb(self, path: Path) -> np.ndarray | None:
        cached = self._cache.get(path)
        if cached is not None:
            self._cache.move_to_end(path)
            return cached
        rgb = load_image(path)  # the stored pixel grid the labels refer to (EXIF orientation not applied)
        if rgb is None:
            log.warning("cannot read image %s: using a zero image with zero target weight", path)
            return None
        if self.cache_size > 0:
            self._cache[path] = rgb
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return rgb

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        k = self.schema.num_keypoints
        if record.keypoints is not None:
            kps = np.asarray(record.keypoints, dtype=np.float64)
            xy, vis = kps[:, :2], kps[:, 2].copy()
        else:
            xy, vis = np.zeros((k, 2)), np.zeros(k)

        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.augment is not None else None
        t = sample_transform(
            rng, record.bbox, vis, xy, self.augment, self.input_size, self.schema, padding=self.padding
        )
        crop_xy = apply_affine(xy, t.matrix)
        if t.flipped:
            crop_xy = flip_keypoints_order(crop_xy, self._flip_index)
            vis = flip_keypoints_order(vis, self._flip_index)

        image = self._load_rgb(record.image_path)
        w, h = self.input_size
        if image is None:
            image_t = torch.zeros((3, h, w), dtype=torch.float32)
            vis_for_target = np.zeros(k)
        else:
            image_t = normalize_image(warp_crop(image, t.matrix, self.input_size))
            vis_for_target = vis
        targets = self.codec.encode_targets(crop_xy, vis_for_target)

        return {
            "image": image_t,
            **{name: torch.from_numpy(target) for name, target in targets.items()},
            "keypoints": torch.from_numpy(crop_xy.astype(np.float32)),
            "visibility": torch.from_numpy(vis.astype(np.float32)),
            "matrix": torch.from_numpy(t.matrix),
            "flipped": torch.tensor(t.flipped),
            "instance_id": torch.tensor(record.instance_id, dtype=torch.int64),
            "bbox": torch.tensor(record.bbox, dtype=torch.float32),
        }
