"""Top-down geometry: box -> crop affine matrix, augmentation sampling, and the inverse back to image pixels.

Conventions (shared with ``pipeline.codec`` and ``pipeline.data.dataset``):

* **Pixel centres are integers.** Pixel ``i`` covers the continuous interval ``[i - 0.5, i + 0.5)``; this is the
  convention of ``cv2.warpAffine`` (and of MMPose / COCO keypoints). An image point ``(x, y)`` maps to crop
  coordinates ``M @ [x, y, 1]`` and ``cv2.warpAffine(image, M, (w, h), flags=cv2.INTER_LINEAR)`` samples the crop
  pixel ``(u, v)`` at the image point ``M^-1 @ [u, v, 1]``, so keypoints and pixels stay consistent end to end.
* **Sizes are ``(width, height)``** everywhere (input size, heatmap size, box size); arrays are ``(H, W, ...)``.
* A crop of ``W x H`` pixels spans the continuous extent ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``; its geometric centre
  is ``((W - 1) / 2, (H - 1) / 2)``. The box region of ``size = (sw, sh)`` image pixels around ``center`` fills that
  extent exactly: scale ``W / sw`` (not ``(W - 1) / sw``).
* **Horizontal flip** mirrors inside the crop: crop ``x -> W - 1 - x`` (pixel ``i`` <-> pixel ``W - 1 - i``, exactly
  what ``cv2.flip(crop, 1)`` does). A flipped crop also swaps left/right keypoint indices: keypoint ``j`` of the
  flipped crop is keypoint ``flip_index[j]`` of the image (``KeypointSchema.flip_index``, an involution).
* **Rotation** ``rotation_deg > 0`` turns the image content counter-clockwise as seen on screen (y axis down), about
  the box centre.

Keypoints are ``(K, 2)`` or ``(N, K, 2)`` float in pixels, visibility ``(K,)`` with COCO flags 0/1/2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.keypoints import KeypointSchema

Size = tuple[int, int]  # (width, height)

# Name fragments used to split a schema into upper / lower body for half-body augmentation. Matching by name keeps
# the augmentation schema-agnostic: a schema without such names (animals, objects) simply has half-body off.
_UPPER_BODY_WORDS = ("nose", "eye", "ear", "mouth", "chin", "head", "neck", "shoulder", "elbow", "wrist", "hand")
_LOWER_BODY_WORDS = ("hip", "knee", "ankle", "foot", "heel", "toe")
HALF_BODY_PADDING = 1.5  # MMPose's value: a half body box is tighter than a full one, so pad it more


def box_to_center_scale(
    box_xywh: Sequence[float] | np.ndarray, aspect_ratio: float, padding: float = 1.25
) -> tuple[np.ndarray, np.ndarray]:
    """Crop region of a box: centre and size in image pixels, aspect ratio fixed to the model input's.

    Args:
        box_xywh: (4,) ``[x, y, w, h]`` (COCO box, top-left corner and size).
        aspect_ratio: width / height of the model input.
        padding: enlargement factor applied to both sides after fixing the aspect.

    Returns:
        center (2,) float64, size (2,) float64 ``(width, height)``; the short side (relative to ``aspect_ratio``) is
        grown, never the long one shrunk, so the whole box stays inside the crop.
    """
    x, y, w, h = (float(v) for v in box_xywh)
    center = np.array([x + 0.5 * w, y + 0.5 * h], dtype=np.float64)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    else:
        w = h * aspect_ratio
    return center, np.array([w, h], dtype=np.float64) * padding


def get_affine_matrix(
    center: Sequence[float] | np.ndarray,
    size: Sequence[float] | np.ndarray,
    output_size: Size,
    rotation_deg: float = 0.0,
    flip: bool = False,
) -> np.ndarray:
    """Image -> crop affine matrix (2, 3) float64.

    ``crop = S @ R @ (p - center) + crop_centre`` with ``S = diag(W / sw, H / sh)``, ``R`` the rotation about the
    centre and ``crop_centre = ((W - 1) / 2, (H - 1) / 2)``; then, when ``flip``, ``x -> W - 1 - x``.
    """
    out_w, out_h = output_size
    cx, cy = float(center[0]), float(center[1])
    sx, sy = out_w / float(size[0]), out_h / float(size[1])
    theta = math.radians(rotation_deg)
    cos, sin = math.cos(theta), math.sin(theta)
    # R = [[cos, sin], [-sin, cos]] turns content counter-clockwise on screen because the y axis points down.
    linear = np.array([[sx * cos, sx * sin], [-sy * sin, sy * cos]], dtype=np.float64)
    crop_centre = np.array([(out_w - 1) * 0.5, (out_h - 1) * 0.5])
    matrix = np.empty((2, 3), dtype=np.float64)
    matrix[:, :2] = linear
    matrix[:, 2] = crop_centre - linear @ np.array([cx, cy])
    if flip:
        matrix[0] = -matrix[0]
        matrix[0, 2] += out_w - 1
    return matrix


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine matrix, or of a batch (B, 2, 3), float64."""
    m = np.asarray(matrix, dtype=np.float64)
    linear_inv = np.linalg.inv(m[..., :2])
    out = np.empty_like(m)
    out[..., :2] = linear_inv
    out[..., 2] = -np.einsum("...ij,...j->...i", linear_inv, m[..., 2])
    return out


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply an affine matrix to points.

    Args:
        points: (..., 2) when ``matrix`` is (2, 3); (B, ..., 2) when ``matrix`` is a batch (B, 2, 3).
    Returns:
        Transformed points, same shape as ``points``, float64.
    """
    p = np.asarray(points, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim == 2:
        return p @ m[:, :2].T + m[:, 2]
    if m.ndim != 3 or p.shape[0] != m.shape[0]:
        raise ValueError(f"points {p.shape} and matrices {m.shape}: a batch of matrices needs points (B, ..., 2)")
    flat = p.reshape(p.shape[0], -1, 2)
    out = np.einsum("bij,bnj->bni", m[:, :, :2], flat) + m[:, None, :, 2]
    return out.reshape(p.shape)


def warp_crop(image: np.ndarray, matrix: np.ndarray, output_size: Size) -> np.ndarray:
    """Crop (H, W, C) or (H, W) image with ``matrix`` to ``output_size = (w, h)``: (h, w, C); outside is 0."""
    return cv2.warpAffine(
        image,
        np.asarray(matrix, dtype=np.float64),
        (int(output_size[0]), int(output_size[1])),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


def flip_keypoints_order(keypoints: np.ndarray, flip_index: np.ndarray) -> np.ndarray:
    """Swap left/right keypoints along axis 0: (K, ...) -> (K, ...); ``out[j] = keypoints[flip_index[j]]``."""
    return np.asarray(keypoints)[np.asarray(flip_index)]


def crop_to_image(
    points_crop: np.ndarray,
    matrix: np.ndarray,
    flipped: bool | np.ndarray,
    flip_index: np.ndarray,
) -> np.ndarray:
    """Map keypoints predicted on a crop back to image pixels, undoing geometry and the flip's index swap.

    Args:
        points_crop: (K, 2) with ``matrix`` (2, 3) and ``flipped`` a bool, or (B, K, 2) with ``matrix`` (B, 2, 3)
            and ``flipped`` (B,) bool. Index ``j`` is "keypoint j as seen in the (maybe flipped) crop".
        flip_index: (K,) from ``KeypointSchema.flip_index``.
    Returns:
        Keypoints in image pixels, same shape, indexed by the image's keypoint order.
    """
    points = apply_affine(points_crop, invert_affine(matrix))
    idx = np.asarray(flip_index)
    flipped_arr = np.asarray(flipped, dtype=bool)
    if flipped_arr.ndim == 0:
        return points[..., idx, :] if bool(flipped_arr) else points
    # Keypoint j of a flipped crop is image keypoint flip_index[j]; flip_index is an involution, so gathering with
    # it (rather than scattering) is the inverse too.
    return np.where(flipped_arr.reshape((-1,) + (1,) * (points.ndim - 1)), points[..., idx, :], points)


def half_body_ids(schema: KeypointSchema | None) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """Upper / lower body keypoint indices derived from the schema's names, or None when it has no such names."""
    if schema is None:
        return None
    names = [n.lower() for n in schema.names]
    lower = tuple(i for i, n in enumerate(names) if any(w in n for w in _LOWER_BODY_WORDS))
    upper = tuple(i for i, n in enumerate(names) if i not in lower and any(w in n for w in _UPPER_BODY_WORDS))
    return (upper, lower) if upper and lower else None


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation of the top-down crop. All probabilities are per sample.

    ``scale_range`` multiplies the crop size (> 1 zooms out); rotation is uniform in ``[-rotation_deg,
    rotation_deg]`` with probability ``rotation_prob``; ``shift_factor`` moves the centre by up to that fraction of
    the crop size with probability ``shift_prob``. Half-body: with ``half_body_prob``, when more than
    ``half_body_min_keypoints`` are labeled, the crop covers only the upper or the lower body. The body parts come
    from ``upper_body_ids`` / ``lower_body_ids`` when given, else from the schema's names; none -> half-body off.
    """

    scale_range: tuple[float, float] = (0.75, 1.25)
    rotation_deg: float = 30.0
    rotation_prob: float = 0.6
    flip_prob: float = 0.5
    half_body_prob: float = 0.0
    half_body_min_keypoints: int = 8
    upper_body_ids: tuple[int, ...] | None = None
    lower_body_ids: tuple[int, ...] | None = None
    shift_factor: float = 0.0
    shift_prob: float = 0.0

    def __post_init__(self) -> None:
        lo, hi = self.scale_range
        if not (0 < lo <= hi):
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {self.scale_range}")
        for name in ("rotation_prob", "flip_prob", "half_body_prob", "shift_prob"):
            p = getattr(self, name)
            if not (0.0 <= p <= 1.0):
                raise ValueError(f"{name} must be in [0, 1], got {p}")


@dataclass(frozen=True)
class TopDownTransform:
    """One sampled crop: ``matrix`` (2, 3) image -> crop, ``center`` (2,), ``size`` (2,) (w, h) in image pixels."""

    matrix: np.ndarray
    flipped: bool
    center: np.ndarray
    size: np.ndarray
    rotation: float


def _half_body_region(
    keypoints: np.ndarray, ids: Sequence[int], aspect_ratio: float
) -> tuple[np.ndarray, np.ndarray] | None:
    pts = keypoints[list(ids)]
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    box = (lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1])
    if box[2] <= 0 and box[3] <= 0:
        return None
    return box_to_center_scale(box, aspect_ratio, padding=HALF_BODY_PADDING)


def sample_transform(
    rng: np.random.Generator | None,
    box: Sequence[float] | np.ndarray,
    visibility: np.ndarray | None,
    keypoints: np.ndarray | None,
    aug: Augment | None,
    input_size: Size,
    schema: KeypointSchema | None = None,
    padding: float = 1.25,
) -> TopDownTransform:
    """Sample the crop of one instance; ``aug=None`` gives the deterministic evaluation crop.

    Args:
        rng: the only source of randomness (same generator state -> same transform); unused when ``aug`` is None.
        box: (4,) ``[x, y, w, h]``.
        visibility: (K,) COCO flags, or None (unlabeled: no half-body).
        keypoints: (K, 2) image pixels, or None.
        input_size: model input ``(w, h)``.
    """
    aspect = input_size[0] / input_size[1]
    center, size = box_to_center_scale(box, aspect, padding)
    if aug is None:
        return TopDownTransform(get_affine_matrix(center, size, input_size), False, center, size, 0.0)
    if rng is None:
        raise ValueError("sample_transform needs a numpy Generator when augmenting")

    if aug.half_body_prob > 0 and keypoints is not None and visibility is not None:
        ids = (
            (aug.upper_body_ids, aug.lower_body_ids)
            if aug.upper_body_ids is not None and aug.lower_body_ids is not None
            else half_body_ids(schema)
        )
        labeled = (np.asarray(visibility) > 0) & np.isfinite(keypoints).all(axis=-1)
        if ids is not None and labeled.sum() > aug.half_body_min_keypoints and rng.random() < aug.half_body_prob:
            upper = [i for i in ids[0] if labeled[i]]
            lower = [i for i in ids[1] if labeled[i]]
            chosen = upper if (rng.random() < 0.5 and len(upper) > 2) else (lower if len(lower) > 2 else upper)
            region = _half_body_region(np.asarray(keypoints, dtype=np.float64), chosen, aspect) if chosen else None
            if region is not None:
                center, size = region

    if aug.shift_prob > 0 and rng.random() < aug.shift_prob:
        center = center + rng.uniform(-1.0, 1.0, size=2) * aug.shift_factor * size
    size = size * rng.uniform(*aug.scale_range)
    rotation = float(rng.uniform(-aug.rotation_deg, aug.rotation_deg)) if rng.random() < aug.rotation_prob else 0.0
    flipped = bool(rng.random() < aug.flip_prob)
    matrix = get_affine_matrix(center, size, input_size, rotation, flipped)
    return TopDownTransform(matrix, flipped, center, size, rotation)
