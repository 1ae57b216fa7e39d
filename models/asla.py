"""ASLA: keypoints as objects — a per-cell classification + offset head, dynamic soft-label assignment, decoding.

**Provenance.** Only the paper's abstract is public; its body (architecture, assignment details, hyper-parameters)
is not. Everything below is *our reading of that abstract* (docs/DESIGN.md §5, "ASLA"), not a reproduction of the paper,
and every concrete choice listed under "Our choices" is ours.

**Idea.** Every feature cell ``c`` of the stride-4 grid (the grid of a 48x64 heatmap for a 192x256 crop) predicts,
for every keypoint ``j``, a classification logit and a 2-D offset. The cell's location ``p_c = (x index, y index)``
is in heatmap pixels (integer = cell centre, as in ``pipeline.codec``: ``crop = (hm + 0.5) * stride - 0.5``) and its
predicted keypoint is ``p̂_c = p_c + offset_c``. For each labeled ground-truth keypoint ``g`` the cells are ranked by
the summed cost ``a_c = |p_c - g| / S + |p̂_c - g| / S``; the ``k`` cheapest become positives with a soft label
``y_c = exp(-|p̂_c - g|² / (2 S²))``. The position term keeps positives near ``g``; the prediction term lets cells
that *predict* ``g`` well (e.g. body regions next to an occluded keypoint) keep their positives — the point of the
summed cost.

**Our choices** (not from the paper):

* Scale ``S`` (per instance and keypoint, heatmap cells): ``keypoint_scale`` = ``sqrt(box_w · box_h) · 2κ_j`` with
  ``κ_j`` the OKS sigma, floored at 1 cell. With this ``S`` the soft label is the keypoint's OKS term
  ``exp(-d² / (2 s² (2κ)²))`` except that ``s²`` is the *box* area (COCO uses the segment area, about half of it, so
  our ``S`` is ~1.4x COCO's). The floor: below one cell the grid's own quantisation dominates, and a tiny ``S``
  makes every soft label 0 and the cost explode.
* Cost: exactly the summed distance above, both terms divided by ``S``; computed on *detached* offsets (the
  assignment is a target, not a path for gradients).
* Neighbourhood: only cells with ``|p_c - g| <= r`` are candidates, ``r = max(2, S)`` cells by default (a float
  fixes it). Why: early in training the offsets are noise, and a far cell whose random offset happens to land on
  ``g`` must not become a positive; ``S`` is the keypoint's own tolerance (a cell at distance ``S`` with zero
  offset still has soft label 0.61), so the neighbourhood grows with the keypoint like the cost does. The floor 2
  guarantees at least 10 candidate cells for any sub-cell position of ``g`` away from the border (measured), so
  ``k = 9`` is always filled there. Near or beyond the border fewer cells may qualify: then all candidates are
  positives (possibly none for a keypoint far outside the map; it then only contributes negatives).
* ``k = 9`` (a 3x3 block's worth). Dynamic k (option): ``k_i = clamp(floor(sum of the k largest candidate soft
  labels), 1, k)`` — the SimOTA rule with ``q = k``, so ``k`` is also the maximum.
* Soft label: as above, detached, 0 on negatives; it is the varifocal target ``q`` of a positive.
* Classification: varifocal loss over all cells of labeled keypoints: positives ``q · BCE(p, q)``, negatives
  ``alpha · p^gamma · BCE(p, 0)`` with ``alpha = 0.75, gamma = 2`` (VarifocalNet's values; the focal weight is
  not detached, as in VarifocalNet/mmdet).
* Keypoint weight: ``weight (B, K)`` multiplies both losses of that keypoint; ``weight <= 0`` (unlabeled) means
  no positives *and* no negatives — an unlabeled keypoint may be anywhere, so "not here" would be a false label.
* Normalisation: both losses are divided by the (weighted) number of positives, clamped at >= 1 — the VarifocalNet
  convention; unlike the sum of soft labels it does not depend on the current predictions, so the loss scale does
  not drift while the offsets improve.
* Regression on positives: ``"l1"`` = ``|dx| + |dy|`` between ``p̂_c`` and ``g`` in heatmap cells, *not*
  normalised by ``S`` (every keypoint gets the same pixel-space pull, as heatmap losses give; the S-normalised
  alternative is ``"oks"``); ``"oks"`` = ``1 - exp(-|p̂_c - g|² / (2 S²))``. Positives are weighted equally (not by
  their soft label: a badly-predicting positive needs the regression gradient most). ``reg_weight = 1`` for both:
  L1 in cells is O(1) near the start and the varifocal term is O(1) too.
* Decoding: ``top_n = 1`` — the best cell's ``p̂`` and its sigmoid score (no post-processing). ``top_n > 1`` —
  vector-level post-processing: the sigmoid-score-weighted mean of ``p̂`` over the ``top_n`` best cells (no
  spatial restriction); the score reported is the *maximum* of those scores, i.e. the same score as ``top_n = 1``,
  so switching the decoder never changes confidence thresholds.
* Head: per branch a 3x3 conv + BN + ReLU, then a 1x1 conv; classification bias at ``-log((1 - π) / π)`` with
  ``π = 0.01`` (initial score 0.01, as focal-loss heads do); the offset layer is initialised near 0 so every cell
  starts by predicting its own centre.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional

MIN_RADIUS = 2.0  # cells; >= 10 candidate cells for any sub-cell position of g (so k = 9 is filled)
MIN_SCALE = 1.0  # cells; floor of the per-keypoint scale S


class AslaHead(nn.Module):
    """Per-keypoint classification logits and 2-D offsets on the stride-4 feature grid.

    Args:
        in_channels: channels ``C`` of the backbone features.
        num_keypoints: ``K``.
        offset_scale: the offset branch's raw output is multiplied by this to give offsets in heatmap cells.
            1.0: the conv predicts cells directly (fine for offsets of a few cells). Larger values let the last layer
            keep O(1) outputs when targets lie many cells away (e.g. positives far from an occluded keypoint).
        prior_prob: initial sigmoid score of every cell (the classification bias is ``-log((1 - π) / π)``).
    """

    def __init__(
        self, in_channels: int, num_keypoints: int, offset_scale: float = 1.0, prior_prob: float = 0.01
    ) -> None:
        super().__init__()
        if in_channels <= 0 or num_keypoints <= 0:
            raise ValueError(f"in_channels and num_keypoints must be positive, got {in_channels}, {num_keypoints}")
        if not 0.0 < prior_prob < 1.0:
            raise ValueError(f"prior_prob must be in (0, 1), got {prior_prob}")
        self.num_keypoints = int(num_keypoints)
        self.offset_scale = float(offset_scale)
        self.cls_branch = self._branch(in_channels, self.num_keypoints)
        self.reg_branch = self._branch(in_channels, 2 * self.num_keypoints)
        cls_out, reg_out = self.cls_branch[-1], self.reg_branch[-1]
        nn.init.normal_(cls_out.weight, std=0.01)
        nn.init.constant_(cls_out.bias, -math.log((1.0 - prior_prob) / prior_prob))
        nn.init.normal_(reg_out.weight, std=0.001)
        nn.init.zeros_(reg_out.bias)

    @staticmethod
    def _branch(channels: int, out_channels: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, out_channels, 1),
        )

    def forward(self, features: Tensor) -> dict[str, Tensor]:
        """features (B, C, h, w) -> ``{"logits": (B, K, h, w), "offsets": (B, K, 2, h, w)}``.

        Offsets are in heatmap cells, (x, y) order: cell ``(x, y)`` predicts ``(x, y) + offsets[..., :, y, x]``.
        """
        b, _, h, w = features.shape
        logits = self.cls_branch(features)
        offsets = self.reg_branch(features).view(b, self.num_keypoints, 2, h, w) * self.offset_scale
        return {"logits": logits, "offsets": offsets}


def keypoint_scale(box_wh_hm: Tensor, sigmas: Tensor, min_scale: float = MIN_SCALE) -> Tensor:
    """Per-keypoint scale ``S = max(sqrt(box_w · box_h) · 2κ_j, min_scale)`` in heatmap cells.

    Args:
        box_wh_hm: (B, 2) instance box (width, height) in heatmap cells — the person box itself, not the 1.25x
            enlarged crop (for a top-down crop: box size in crop pixels divided by the stride).
        sigmas: (K,) OKS sigmas ``κ_j`` (COCO values, or the schema's).
        min_scale: floor in cells (see the module docstring).
    Returns:
        (B, K) float tensor on ``box_wh_hm``'s device.
    """
    box = box_wh_hm.float().clamp(min=0.0)
    kappa = torch.as_tensor(sigmas, dtype=box.dtype, device=box.device).reshape(1, -1)
    root_area = (box[:, 0] * box[:, 1]).sqrt().unsqueeze(1)
    return (root_area * 2.0 * kappa).clamp(min=min_scale)


def _grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(h * w, 2) cell centres (x, y) in heatmap pixels, row-major (index = y * w + x)."""
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=dtype), torch.arange(w, device=device, dtype=dtype), indexing="ij"
    )
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)


def _predicted_points(offsets: Tensor) -> Tensor:
    """offsets (B, K, 2, h, w) -> p̂ (B, K, h * w, 2) in heatmap pixels."""
    b, k, _, h, w = offsets.shape
    grid = _grid(h, w, offsets.device, offsets.dtype)
    return grid + offsets.reshape(b, k, 2, h * w).transpose(2, 3)


def assign_positives(
    offsets: Tensor,
    keypoints_hm: Tensor,
    weight: Tensor,
    scale: Tensor,
    k: int = 9,
    radius: float | None = None,
    dynamic_k: bool = False,
) -> tuple[Tensor, Tensor]:
    """Summed-cost top-k assignment of positive cells per labeled keypoint (no gradients).

    Args:
        offsets: (B, K, 2, h, w) predicted offsets in heatmap cells (detached here).
        keypoints_hm: (B, K, 2) ground truth (x, y) in heatmap pixels; ignored (may be NaN) where weight <= 0.
        weight: (B, K); > 0 means labeled.
        scale: (B, K) per-keypoint scale ``S`` in heatmap cells (``keypoint_scale``), > 0.
        k: positives per keypoint (the maximum when ``dynamic_k``).
        radius: candidate neighbourhood ``|p_c - g| <= radius`` in cells; None -> ``max(2, S)`` per keypoint.
        dynamic_k: ``k_i = clamp(floor(sum of the k largest candidate soft labels), 1, k)``.
    Returns:
        positives (B, K, h, w) bool; soft labels (B, K, h, w) float, ``exp(-|p̂ - g|² / (2 S²))`` on positives,
        0 elsewhere, detached.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    offsets = offsets.detach()
    b, n_kp, _, h, w = offsets.shape
    n_cells = h * w
    dtype = offsets.dtype
    labeled = weight.detach() > 0  # (B, K)
    g = torch.where(labeled[..., None], keypoints_hm.detach().to(dtype), torch.zeros((), dtype=dtype))
    s = torch.where(labeled, scale.detach().to(dtype), torch.ones((), dtype=dtype)).clamp(min=1e-6)[..., None]

    grid = _grid(h, w, offsets.device, dtype)  # (N, 2)
    pred = _predicted_points(offsets)  # (B, K, N, 2)
    dist_cell = (grid - g[:, :, None, :]).norm(dim=-1)  # (B, K, N)
    dist_pred = (pred - g[:, :, None, :]).norm(dim=-1)  # (B, K, N)
    cost = (dist_cell + dist_pred) / s
    soft = torch.exp(-(dist_pred**2) / (2.0 * s**2))

    r = s.clamp(min=MIN_RADIUS) if radius is None else torch.full_like(s, float(radius))
    candidate = (dist_cell <= r) & labeled[..., None]  # (B, K, N)
    cost = cost.masked_fill(~candidate, math.inf)

    k_max = min(k, n_cells)
    top_cost, top_idx = cost.topk(k_max, dim=-1, largest=False)  # (B, K, k_max), ascending
    if dynamic_k:
        top_soft = soft.masked_fill(~candidate, 0.0).topk(k_max, dim=-1).values
        k_eff = top_soft.sum(-1, keepdim=True).floor().clamp(1, k_max)  # (B, K, 1)
    else:
        k_eff = torch.full((b, n_kp, 1), float(k_max), device=offsets.device)
    rank = torch.arange(k_max, device=offsets.device)
    chosen = (rank < k_eff) & torch.isfinite(top_cost)  # (B, K, k_max)
    positives = torch.zeros(b, n_kp, n_cells, dtype=torch.bool, device=offsets.device)
    positives.scatter_(-1, top_idx, chosen)
    soft = torch.where(positives, soft, torch.zeros((), dtype=dtype))
    return positives.view(b, n_kp, h, w), soft.view(b, n_kp, h, w)


def asla_loss(
    outputs: dict[str, Tensor],
    keypoints_hm: Tensor,
    weight: Tensor,
    scale: Tensor,
    *,
    k: int = 9,
    radius: float | None = None,
    dynamic_k: bool = False,
    cls_weight: float = 1.0,
    reg_weight: float = 1.0,
    reg_type: Literal["l1", "oks"] = "l1",
    alpha: float = 0.75,
    gamma: float = 2.0,
) -> dict[str, Tensor]:
    """Varifocal classification + regression on assigned positives.

    Args:
        outputs: ``AslaHead`` output: ``"logits"`` (B, K, h, w), ``"offsets"`` (B, K, 2, h, w).
        keypoints_hm: (B, K, 2) ground truth in heatmap pixels.
        weight: (B, K) keypoint weights; <= 0 = unlabeled (no contribution at all). Fractional weights scale.
        scale: (B, K) per-keypoint scale ``S`` in heatmap cells.
        k, radius, dynamic_k: see ``assign_positives``.
        cls_weight, reg_weight: loss weights.
        reg_type: ``"l1"`` (``|dx| + |dy|`` in cells) or ``"oks"`` (``1 - exp(-d² / (2 S²))``).
        alpha, gamma: varifocal negative weight ``alpha · p^gamma``.
    Returns:
        ``{"loss", "cls", "reg"}`` scalar tensors (``loss = cls_weight · cls + reg_weight · reg``) and
        ``"num_pos"`` (detached, the weighted positive count before clamping). All 0 (finite, still attached to
        the graph) when no keypoint in the batch is labeled.
    """
    if reg_type not in ("l1", "oks"):
        raise ValueError(f"reg_type must be 'l1' or 'oks', got {reg_type!r}")
    logits, offsets = outputs["logits"], outputs["offsets"]
    b, n_kp, h, w = logits.shape
    positives, soft = assign_positives(offsets, keypoints_hm, weight, scale, k=k, radius=radius, dynamic_k=dynamic_k)
    kp_w = weight.detach().to(logits.dtype).clamp(min=0.0)  # (B, K)

    # Classification: varifocal over every cell of the labeled keypoints.
    bce = functional.binary_cross_entropy_with_logits(logits, soft.to(logits.dtype), reduction="none")
    focal = torch.where(positives, soft.to(logits.dtype), alpha * torch.sigmoid(logits).pow(gamma))
    pos_w = positives.to(logits.dtype) * kp_w[..., None, None]  # (B, K, h, w)
    num_pos = pos_w.sum()
    norm = num_pos.detach().clamp(min=1.0)
    cls = (focal * bce * kp_w[..., None, None]).sum() / norm

    # Regression on positives only (non-positive cells are masked with where, so NaN ground truth cannot leak).
    labeled = weight.detach() > 0
    g = torch.where(labeled[..., None], keypoints_hm.detach().to(offsets.dtype), torch.zeros((), dtype=offsets.dtype))
    diff = _predicted_points(offsets) - g[:, :, None, :]  # (B, K, N, 2)
    if reg_type == "l1":
        per_cell = diff.abs().sum(-1)
    else:
        s = torch.where(labeled, scale.detach().to(offsets.dtype), torch.ones((), dtype=offsets.dtype))
        per_cell = 1.0 - torch.exp(-diff.pow(2).sum(-1) / (2.0 * s.clamp(min=1e-6)[..., None] ** 2))
    pos_flat = pos_w.view(b, n_kp, h * w)
    reg = torch.where(pos_flat > 0, per_cell * pos_flat, torch.zeros((), dtype=per_cell.dtype)).sum() / norm

    loss = cls_weight * cls + reg_weight * reg
    return {"loss": loss, "cls": cls, "reg": reg, "num_pos": num_pos.detach()}


def asla_decode(outputs: dict[str, Tensor], top_n: int = 1) -> tuple[Tensor, Tensor]:
    """Keypoints from ASLA outputs (detached).

    Args:
        outputs: ``"logits"`` (B, K, h, w), ``"offsets"`` (B, K, 2, h, w).
        top_n: 1 -> the best cell's ``p̂`` (no post-processing); > 1 -> the sigmoid-score-weighted mean of ``p̂``
            over the ``top_n`` best cells.
    Returns:
        keypoints (B, K, 2) in heatmap pixels (``crop = (hm + 0.5) * stride - 0.5``), scores (B, K) = the best
        cell's sigmoid score (for any ``top_n``).
    """
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    logits, offsets = outputs["logits"].detach(), outputs["offsets"].detach()
    b, n_kp, h, w = logits.shape
    n = min(top_n, h * w)
    top_logit, top_idx = logits.reshape(b, n_kp, h * w).topk(n, dim=-1)  # (B, K, n), descending
    pred = _predicted_points(offsets)  # (B, K, N, 2)
    top_pred = pred.gather(2, top_idx[..., None].expand(-1, -1, -1, 2))  # (B, K, n, 2)
    top_score = torch.sigmoid(top_logit)
    if n == 1:
        points = top_pred[:, :, 0]
    else:
        wts = torch.softmax(functional.logsigmoid(top_logit), dim=-1)  # = score / sum(scores), without underflow
        points = (wts[..., None] * top_pred).sum(2)
    return points, top_score[..., 0]
