"""Keypoints <-> Gaussian heatmap targets, and decoding heatmaps back to keypoints.

Coordinates follow ``pipeline.data.transforms``: integer = pixel centre, sizes are ``(width, height)``.

Crop <-> heatmap mapping. A heatmap of ``w x h`` cells covers the same continuous extent as the ``W x H`` input crop
(``[-0.5, W - 0.5]``), so heatmap cell ``i`` is the block of input pixels ``[i * s - 0.5, (i + 1) * s - 0.5)`` with
stride ``s = W / w`` (per axis), and::

    heatmap_px = (crop_px + 0.5) / s - 0.5        crop_px = (heatmap_px + 0.5) * s - 0.5

(the ``align_corners=False`` mapping of ``cv2.resize`` / ``F.interpolate``). ``encode`` and ``decode`` use exactly
these two formulas, so they are inverses up to the decoder's sub-pixel error. A useful consequence: mirroring the crop
(``x -> W - 1 - x``) mirrors the heatmap as ``x -> w - 1 - x``, i.e. a plain ``flip`` of the last axis with no
one-pixel shift (``flip_merge`` relies on it; tested).

Sigma is in heatmap pixels. The default scales with resolution: ``2.0 * sqrt(w * h / (48 * 64))`` (2.0 at the
standard 48x64 heatmap of a 192x256 input, 3.0 at 72x96). Targets are unit-peak Gaussians centred at the sub-pixel
keypoint location (not rounded) and truncated to a ``±3 sigma`` square window, as in MMPose; the finite support is
what SAHR's "where G > 0" refers to.

Decoding: argmax, then a quarter-pixel step toward the larger neighbour along each axis (standard), or DARK
(Zhang et al., CVPR 2020: blur the heatmap with the target's Gaussian, take the log, and solve the second-order
Taylor expansion at the argmax with finite-difference first and second derivatives). DARK's blur needs the map beyond
its border, so within ``max(2, ceil(1.5 sigma))`` cells of a border the quarter step is kept for that axis (measured at
sigma 2 within 2 cells of the border: DARK alone errs by up to 0.7-1.3 cells, the quarter step by 0.35-0.6). Only the
5x5 blurred values around each argmax are computed, so DARK costs a few microseconds per map whatever the map size.
"""

from __future__ import annotations

import math

import numpy as np
import torch

Size = tuple[int, int]  # (width, height)
ArrayLike = np.ndarray | torch.Tensor

_LOG_FLOOR = 1e-10  # DARK takes log of the blurred map; background cells are floored so the log stays finite
_DARK_MAX_OFFSET = 1.0  # the continuous maximum of a unimodal map is within one cell of the argmax cell


def default_sigma(heatmap_size: Size) -> float:
    """Gaussian sigma in heatmap pixels scaled with resolution: 2.0 at 48x64."""
    return 2.0 * math.sqrt(heatmap_size[0] * heatmap_size[1] / (48 * 64))


def _to_numpy(heatmaps: ArrayLike) -> np.ndarray:
    if isinstance(heatmaps, torch.Tensor):
        return heatmaps.detach().to("cpu", torch.float32).numpy()
    return np.asarray(heatmaps, dtype=np.float32)


def _gaussian_kernel_1d(sigma: float) -> np.ndarray:
    radius = max(1, math.ceil(3.0 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-(x**2) / (2.0 * sigma**2))
    return (k / k.sum()).astype(np.float32)


class HeatmapCodec:
    """keypoints <-> Gaussian heatmaps for a top-down model.

    Args:
        input_size: crop size ``(w, h)`` in pixels.
        heatmap_size: heatmap size ``(w, h)``.
        sigma: Gaussian sigma in heatmap pixels; None -> ``default_sigma(heatmap_size)`` (2.0 at 48x64).
        dark: decode with DARK instead of argmax + quarter-pixel shift.
        occluded_weight: the training target weight of an occluded keypoint (COCO v = 1) against 1 for a visible one
            (``encode_targets``, ``target_weight``; ``train.occluded_weight``): an occluded keypoint's position may
            not be in the picture at all.
    """

    def __init__(
        self,
        input_size: Size,
        heatmap_size: Size,
        sigma: float | None = None,
        dark: bool = False,
        occluded_weight: float = 1.0,
    ) -> None:
        self.input_size: Size = (int(input_size[0]), int(input_size[1]))
        self.heatmap_size: Size = (int(heatmap_size[0]), int(heatmap_size[1]))
        if min(self.input_size) <= 0 or min(self.heatmap_size) <= 0:
            raise ValueError(f"sizes must be positive, got input {input_size} heatmap {heatmap_size}")
        self.sigma = float(sigma) if sigma is not None else default_sigma(self.heatmap_size)
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.dark = bool(dark)
        self.occluded_weight = float(occluded_weight)
        # Per-axis stride (crop pixels per heatmap cell), shape (2,) in (x, y) order.
        self.stride = np.array(
            [self.input_size[0] / self.heatmap_size[0], self.input_size[1] / self.heatmap_size[1]], dtype=np.float64
        )

    def __repr__(self) -> str:
        return (
            f"HeatmapCodec(input_size={self.input_size}, heatmap_size={self.heatmap_size}, "
            f"sigma={self.sigma:g}, dark={self.dark})"
        )

    def to_heatmap(self, points_crop: np.ndarray) -> np.ndarray:
        """Crop pixels (..., 2) -> heatmap pixels (..., 2), float64."""
        return (np.asarray(points_crop, dtype=np.float64) + 0.5) / self.stride - 0.5

    def to_crop(self, points_heatmap: np.ndarray) -> np.ndarray:
        """Heatmap pixels (..., 2) -> crop pixels (..., 2), float64."""
        return (np.asarray(points_heatmap, dtype=np.float64) + 0.5) * self.stride - 0.5

    def encode(
        self,
        keypoints: np.ndarray,
        visibility: np.ndarray,
        sigmas: np.ndarray | float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Gaussian targets of one instance.

        Args:
            keypoints: (K, 2) crop pixels.
            visibility: (K,) COCO flags; > 0 means labeled (1 = occluded still gets a target).
            sigmas: (K,) per-keypoint sigma in heatmap pixels (SAHR, per-keypoint spreads), a scalar, or None
                (the codec's sigma).
        Returns:
            heatmaps (K, H, W) float32 with peak 1 at the sub-pixel location, target_weight (K,) float32 in {0, 1}.
            Unlabeled, non-finite, or farther than 3 sigma outside the heatmap -> all-zero map and weight 0.
        """
        mu, sig, valid = self._placed(keypoints, visibility, sigmas)
        w, h = self.heatmap_size
        safe_sig = sig[:, None]
        # Separable: G(x, y) = gx(x) * gy(y); each factor is truncated to |d| <= 3 sigma (a square window).
        dx = np.arange(w, dtype=np.float64)[None, :] - mu[:, :1]
        dy = np.arange(h, dtype=np.float64)[None, :] - mu[:, 1:]
        gx = np.where(np.abs(dx) <= 3.0 * safe_sig, np.exp(-(dx**2) / (2.0 * safe_sig**2)), 0.0)
        gy = np.where(np.abs(dy) <= 3.0 * safe_sig, np.exp(-(dy**2) / (2.0 * safe_sig**2)), 0.0)
        heatmaps = gy[:, :, None] * gx[:, None, :] * valid[:, None, None]
        return heatmaps.astype(np.float32), valid.astype(np.float32)

    def encode_targets(self, keypoints: np.ndarray, visibility: np.ndarray) -> dict[str, np.ndarray]:
        """What a training sample carries for the heatmap head: ``heatmaps`` (K, h, w) of ``encode`` with the codec's
        sigma (SAHR adapts the target inside the loss) and ``target_weight`` (K,) (``target_weight``)."""
        heatmaps, _ = self.encode(keypoints, visibility)
        return {"heatmaps": heatmaps, "target_weight": self.target_weight(keypoints, visibility)}

    def target_weight(self, keypoints: np.ndarray, visibility: np.ndarray) -> np.ndarray:
        """(K,) float32: ``encode``'s weight (labeled, finite, within 3 sigma of the map), ``occluded_weight`` instead
        of 1 for an occluded keypoint (v = 1)."""
        valid = self._placed(keypoints, visibility, None)[2]
        occluded = np.asarray(visibility).reshape(-1) == 1
        return np.where(valid, np.where(occluded, self.occluded_weight, 1.0), 0.0).astype(np.float32)

    def _placed(
        self, keypoints: np.ndarray, visibility: np.ndarray, sigmas: np.ndarray | float | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(centres (K, 2) heatmap px with non-finite ones at 0, sigmas (K,) with bad ones at 1, valid (K,) bool)."""
        kps = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
        k = kps.shape[0]
        vis = np.asarray(visibility).reshape(-1)
        if vis.shape[0] != k:
            raise ValueError(f"visibility has {vis.shape[0]} entries for {k} keypoints")
        sig = np.broadcast_to(np.asarray(self.sigma if sigmas is None else sigmas, dtype=np.float64), (k,))
        w, h = self.heatmap_size
        mu = self.to_heatmap(kps)
        radius = 3.0 * sig
        finite = np.isfinite(mu).all(axis=1) & np.isfinite(sig) & (sig > 0)
        mu = np.where(finite[:, None], mu, 0.0)  # keep NaN out of the arithmetic; masked below
        inside = (mu[:, 0] >= -radius) & (mu[:, 0] <= w - 1 + radius)
        inside &= (mu[:, 1] >= -radius) & (mu[:, 1] <= h - 1 + radius)
        valid = (vis > 0) & finite & inside
        return mu, np.where(finite, sig, 1.0), valid

    def decode(self, heatmaps: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints from heatmaps.

        Args:
            heatmaps: (B, K, H, W) (or a single (K, H, W)) numpy array or torch tensor (any device; detached).
        Returns:
            keypoints (B, K, 2) crop pixels float32, scores (B, K) float32 = the raw heatmap maximum.
            numpy arrays in both cases (decoding is post-processing).
        """
        hm = _to_numpy(heatmaps)
        single = hm.ndim == 3
        if single:
            hm = hm[None]
        if hm.ndim != 4:
            raise ValueError(f"heatmaps must be (B, K, H, W) or (K, H, W), got {hm.shape}")
        b, k, h, w = hm.shape
        if (w, h) != self.heatmap_size:
            raise ValueError(f"heatmaps are {w}x{h} (w x h), codec expects {self.heatmap_size}")
        flat = hm.reshape(b, k, h * w)
        idx = flat.argmax(axis=-1)
        scores = np.take_along_axis(flat, idx[..., None], axis=-1)[..., 0]
        x, y = idx % w, idx // w
        offset = self._quarter_offset(hm, x, y)
        if self.dark:
            # DARK's blur needs the map beyond its border; near the border the missing tail biases it by up to a
            # cell (see the module docstring), so each axis keeps the quarter step there. The margin scales with
            # sigma because the blur footprint does.
            margin = max(2, math.ceil(1.5 * self.sigma))
            interior = np.stack([(x >= margin) & (x <= w - 1 - margin), (y >= margin) & (y <= h - 1 - margin)], -1)
            offset = np.where(interior, self._dark_offset(hm, x, y), offset)
        points = self.to_crop(np.stack([x, y], axis=-1) + offset).astype(np.float32)
        scores = scores.astype(np.float32)
        return (points[0], scores[0]) if single else (points, scores)

    @staticmethod
    def _quarter_offset(hm: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(B, K, 2): 0.25 px toward the larger neighbour per axis; 0 at the border (one neighbour only)."""
        b, k, h, w = hm.shape
        bi, ki = np.indices((b, k))
        xl, xr = np.clip(x - 1, 0, w - 1), np.clip(x + 1, 0, w - 1)
        yu, yd = np.clip(y - 1, 0, h - 1), np.clip(y + 1, 0, h - 1)
        ox = 0.25 * np.sign(hm[bi, ki, y, xr] - hm[bi, ki, y, xl]) * ((x > 0) & (x < w - 1))
        oy = 0.25 * np.sign(hm[bi, ki, yd, x] - hm[bi, ki, yu, x]) * ((y > 0) & (y < h - 1))
        return np.stack([ox, oy], axis=-1).astype(np.float64)

    def _dark_offset(self, hm: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(B, K, 2): DARK's Newton step -H^-1 g on the log of the blurred heatmap, at the argmax."""
        b, k, h, w = hm.shape
        kernel = _gaussian_kernel_1d(self.sigma)
        reach = len(kernel) // 2 + 2  # blur radius + the +-2 finite-difference stencil
        # Only the 5x5 blurred values around the argmax are needed, so blur a (5 + 2r)^2 patch instead of the map:
        # the cost no longer grows with the heatmap size. Outside the map counts as 0 (zero-padded blur), which also
        # defines the blurred values the stencil needs beyond the border.
        steps = np.arange(-reach, reach + 1)
        cols = x[..., None, None] + steps[None, :]  # (B, K, 1, P)
        rows = y[..., None, None] + steps[:, None]  # (B, K, P, 1)
        inside = (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
        bi, ki = np.indices((b, k))
        patch = hm[bi[..., None, None], ki[..., None, None], np.clip(rows, 0, h - 1), np.clip(cols, 0, w - 1)]
        patch = np.where(inside, patch, 0.0).astype(np.float64)
        for axis in (-1, -2):
            patch = np.lib.stride_tricks.sliding_window_view(patch, len(kernel), axis=axis) @ kernel.astype(np.float64)
        # Blurring with the target's own Gaussian turns the prediction into something close to a Gaussian, whose log
        # is a quadratic: then one Newton step from the argmax is exact.
        log = np.log(np.maximum(patch, _LOG_FLOOR))  # (B, K, 5, 5), centre at [2, 2]

        def at(dx: int, dy: int) -> np.ndarray:
            return log[..., 2 + dy, 2 + dx]

        centre = at(0, 0)
        gx = 0.5 * (at(1, 0) - at(-1, 0))
        gy = 0.5 * (at(0, 1) - at(0, -1))
        hxx = 0.25 * (at(2, 0) - 2.0 * centre + at(-2, 0))
        hyy = 0.25 * (at(0, 2) - 2.0 * centre + at(0, -2))
        hxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
        det = hxx * hyy - hxy**2
        # Only a maximum (negative-definite Hessian) gives a meaningful step; flat or saddle maps keep the argmax.
        ok = (hxx < 0) & (det > 1e-12)
        safe_det = np.where(ok, det, 1.0)
        ox = -(hyy * gx - hxy * gy) / safe_det
        oy = -(hxx * gy - hxy * gx) / safe_det
        offset = np.stack([ox, oy], axis=-1) * ok[..., None]
        return np.clip(offset, -_DARK_MAX_OFFSET, _DARK_MAX_OFFSET)

    @staticmethod
    def flip_back(heatmaps_of_flipped_input: ArrayLike, flip_index: np.ndarray) -> ArrayLike:
        """Un-mirror heatmaps predicted on a horizontally flipped crop: (..., K, H, W) -> same, same type.

        Flips the last axis (no shift: see the module docstring) and swaps left/right channels.
        """
        idx = np.asarray(flip_index)
        if isinstance(heatmaps_of_flipped_input, torch.Tensor):
            t = torch.as_tensor(idx, device=heatmaps_of_flipped_input.device, dtype=torch.long)
            return heatmaps_of_flipped_input.index_select(-3, t).flip(-1)
        return np.asarray(heatmaps_of_flipped_input)[..., idx, :, ::-1]

    @staticmethod
    def flip_merge(heatmaps: ArrayLike, heatmaps_of_flipped_input: ArrayLike, flip_index: np.ndarray) -> ArrayLike:
        """Flip test: mean of ``heatmaps`` (B, K, H, W) and the un-mirrored heatmaps of the flipped input."""
        return (heatmaps + HeatmapCodec.flip_back(heatmaps_of_flipped_input, flip_index)) * 0.5


class KeypointCodec:
    """Training targets for a head that regresses keypoints instead of matching maps (ASLA): only ``target_weight``
    (K,), the same rule as the heatmap codec's, since the sample's ``keypoints`` (K, 2) crop px are the target itself.

    Args:
        grid: the heatmap codec of the output grid (input size, stride, the 3-sigma margin of the weight rule).
    """

    def __init__(self, grid: HeatmapCodec) -> None:
        self.grid = grid
        self.input_size: Size = grid.input_size

    def __repr__(self) -> str:
        return f"KeypointCodec({self.grid!r})"

    def encode_targets(self, keypoints: np.ndarray, visibility: np.ndarray) -> dict[str, np.ndarray]:
        """``target_weight`` (K,) float32 of keypoints (K, 2) crop px with COCO flags (K,)."""
        return {"target_weight": self.grid.target_weight(keypoints, visibility)}


class CentreCodec:
    """Person boxes <-> the instance finder's targets (CenterNet, "Objects as Points", 2019, with TTFNet's box-shaped
    Gaussians): each person is a peak at its box centre on a stride-``stride`` grid, with its box size and the
    centre's sub-cell offset stored at that cell.

    Args:
        input_size: the finder's input ``(W, H)`` in pixels (a whole image, letterboxed).
        stride: input pixels per grid cell.
        min_score: peaks below this are not instances.
        max_instances: at most this many instances per image (the top peaks).

    Shapes: ``h, w = H // stride, W // stride``; boxes are ``(x, y, width, height)`` input pixels.
    """

    ALPHA = 0.54  # TTFNet: Gaussian sigma per axis = ALPHA * box side / 6

    def __init__(self, input_size: Size, stride: int = 4, min_score: float = 0.3, max_instances: int = 20) -> None:
        self.input_size: Size = (int(input_size[0]), int(input_size[1]))
        self.stride = int(stride)
        self.grid: Size = (self.input_size[0] // self.stride, self.input_size[1] // self.stride)
        self.min_score = float(min_score)
        self.max_instances = int(max_instances)

    def __repr__(self) -> str:
        return f"CentreCodec(input_size={self.input_size}, stride={self.stride}, min_score={self.min_score:g})"

    def encode(self, boxes: np.ndarray, keypoints: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Targets of one image from its boxes (N, 4) input px (already clipped to the input; empty is fine):
        ``centre`` (1, h, w) in [0, 1], ``size`` (2, h, w) log of (width, height) in cells, ``offset`` (2, h, w) of
        the centre within its cell, ``centre_mask`` (h, w) 1 at each box's centre cell. With the people's
        ``keypoints`` (N, K, 3) input px + visibility, also ``keypoint_heat`` (K, h, w): a peak of 1 at each visible
        (v = 2) keypoint, the finder's auxiliary task."""
        out = self._encode_boxes(boxes)
        if keypoints is not None:
            out["keypoint_heat"] = self._encode_keypoints(boxes, keypoints)
        return out

    def _encode_keypoints(self, boxes: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
        """(K, h, w): Gaussians of sigma 4% of the person's longer box side (at least 0.75 cell) at each v = 2
        keypoint's cell; CenterNet's multi-person keypoint maps."""
        w, h = self.grid
        heat = np.zeros((keypoints.shape[1], h, w), np.float32)
        xs, ys = np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)
        for box, person in zip(np.asarray(boxes).reshape(-1, 4), keypoints, strict=True):
            sigma = max(0.04 * max(box[2], box[3]) / self.stride, 0.75)
            for k, (x, y, v) in enumerate(person):
                if v != 2:
                    continue
                ix = int(np.clip(round(x / self.stride - 0.5), 0, w - 1))
                iy = int(np.clip(round(y / self.stride - 0.5), 0, h - 1))
                gauss = np.exp(-((xs[None, :] - ix) ** 2 + (ys[:, None] - iy) ** 2) / (2 * sigma**2))
                np.maximum(heat[k], gauss.astype(np.float32), out=heat[k])
        return heat

    def _encode_boxes(self, boxes: np.ndarray) -> dict[str, np.ndarray]:
        w, h = self.grid
        centre = np.zeros((1, h, w), np.float32)
        size = np.zeros((2, h, w), np.float32)
        offset = np.zeros((2, h, w), np.float32)
        mask = np.zeros((h, w), np.float32)
        xs, ys = np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)
        # larger boxes first, so a small person's centre cell keeps its own size when two centres share a cell
        for x, y, bw, bh in sorted(np.asarray(boxes, np.float64).reshape(-1, 4), key=lambda b: -b[2] * b[3]):
            cw, ch = bw / self.stride, bh / self.stride
            if cw <= 0 or ch <= 0:
                continue
            cx, cy = (x + bw / 2) / self.stride - 0.5, (y + bh / 2) / self.stride - 0.5  # cell centres at integers
            ix, iy = int(np.clip(round(cx), 0, w - 1)), int(np.clip(round(cy), 0, h - 1))
            sx, sy = max(self.ALPHA * cw / 6, 0.5), max(self.ALPHA * ch / 6, 0.5)
            gauss = np.exp(-((xs[None, :] - ix) ** 2) / (2 * sx**2) - ((ys[:, None] - iy) ** 2) / (2 * sy**2))
            np.maximum(centre[0], gauss.astype(np.float32), out=centre[0])
            size[:, iy, ix] = np.log(cw), np.log(ch)
            offset[:, iy, ix] = cx - ix, cy - iy
            mask[iy, ix] = 1.0
        return {"centre": centre, "size": size, "offset": offset, "centre_mask": mask}

    def decode(self, outputs: dict[str, torch.Tensor]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per image, (boxes (n, 4) input px, scores (n,)) of the peaks (3 x 3 local maxima of the sigmoid centre
        map) scoring at least ``min_score``, at most ``max_instances``, best first. ``outputs``: ``centre`` logits
        (B, 1, h, w), ``size`` (B, 2, h, w), ``offset`` (B, 2, h, w)."""
        heat = torch.sigmoid(outputs["centre"].float())
        peaks = heat * (torch.nn.functional.max_pool2d(heat, 3, stride=1, padding=1) == heat)
        b, _, h, w = heat.shape
        k = min(self.max_instances, h * w)
        scores, flat = peaks.view(b, -1).topk(k)
        iy, ix = (flat // w).float(), (flat % w).float()
        size = outputs["size"].float().view(b, 2, -1).gather(2, flat[:, None].expand(b, 2, k)).exp()
        offset = outputs["offset"].float().view(b, 2, -1).gather(2, flat[:, None].expand(b, 2, k))
        cx = (ix + offset[:, 0] + 0.5) * self.stride
        cy = (iy + offset[:, 1] + 0.5) * self.stride
        bw, bh = size[:, 0] * self.stride, size[:, 1] * self.stride
        boxes = torch.stack([cx - bw / 2, cy - bh / 2, bw, bh], dim=-1).cpu().numpy()
        scores_np = scores.cpu().numpy()
        return [
            (boxes[i][scores_np[i] >= self.min_score], scores_np[i][scores_np[i] >= self.min_score]) for i in range(b)
        ]
