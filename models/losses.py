"""Heatmap losses: SAHR target, WAHR weight, scale regulariser, and helpers to read SAHR scales (docs/DESIGN.md §5).

Pure functions on tensors. Shapes: B samples, K keypoints, heatmaps ``h x w``. ``G`` is the fixed-sigma, unit-peak
Gaussian target of ``pipeline.codec.HeatmapCodec.encode``: truncated to a ±3σ square window, so ``G > 0`` is exactly
that window (the "support"), and all-zero for keypoints with target weight 0.

SAHR (scale-adaptive heatmap regression, Luo et al., CVPR 2021). With the scale map ``s`` of the head, the target is
the fixed-sigma Gaussian raised to a learned power::

    T = G^(e^s) = exp(e^s · ln G)   where G > 0,    T = 0 elsewhere

``T`` is NOT detached: the heatmap loss is what trains the scale head. ``T`` is a Gaussian of sigma ``σ0·e^(-s/2)``:
``s > 0`` sharpens it, ``s < 0`` widens it, ``s = 0`` is the fixed-sigma baseline, for every real ``s``.

Decision (differs from the paper and the official code, which use ``G^(1+s)`` through its second-order expansion
``G·(1 + s·ln G + ½(s·ln G)²)``): that polynomial turns round at ``s = 1/|ln G|`` (0.22 at the support's 3σ edge),
so past it a LARGER s makes the tails WIDER while the readout ``σ0/√(1+s)`` says sharper. Measured on the
constructed set of tests/test_sahr_learns.py: jittered keypoints learned s ≈ +1.5 (tails widened through the
expansion) and read as sigma 1.26 against 2.05 for clear ones, the opposite of the truth. The exact power with the
exponent ``e^s`` agrees with ``1 + s`` to first order at ``s = 0`` (same start, same gradient there), is monotone in
``s`` everywhere, and needs no clamp (``e^s > 0``).

WAHR (weight-adaptive heatmap regression)::

    W = G^γ · |1 − P| + (1 − G^γ) · |P|,   γ = 0.01,  G the fixed-sigma target (not T)

``G^γ`` is ~1 over the whole support (0.01-th power) and 0 outside it, so foreground cells are weighted by how far
``P`` is below 1 and background cells by how far ``P`` is above 0: a focal-style reweighting for regression.

Decision: ``P`` is NOT detached inside ``W``. This follows the official SWAHR code (``weight`` is computed from the
prediction with gradient) and the focal loss, whose modulating factor is not detached either. Then
``W(P)·(P − T)²`` is the objective actually differentiated, its gradient is exact (testable against the hand formula
``W'(P)·(P − T)² + 2·W·(P − T)``), and it is still zero with zero gradient at ``P = T``, so the minimiser is
unchanged; the extra term is second order in the residual.

Normalisation of the heatmap loss::

    heatmap = mean over (B, K, h, w) of  W · (w_k·P − w_k·T)²   =  mean of W · w_k² · (P − T)²

with ``w_k`` the per-keypoint target weight. With WAHR off (``W ≡ 1``) this is exactly MMPose 0.x
``JointsMSELoss/KeypointMSELoss(use_target_weight=True)`` = ``F.mse_loss(P·w, T·w)`` (no ½ factor: SimpleBaseline's
``0.5 ·`` is dropped). The codec's weights are in {0, 1}, where ``w² = w`` and this is "times the visibility weight"
of docs/DESIGN.md §5; for fractional weights the squared (MMPose 0.x / SimpleBaseline) convention applies. The mean runs
over all cells, including those of weight-0 keypoints, so the loss scale does not depend on how many keypoints are
labeled in the batch (as in MMPose).

Scale regulariser: ``s²`` on the support, averaged over every cell (the heatmap term's normalisation, as in the
official SWAHR code), weighted by ``model.scale_reg_weight``. Its weight decides the balance: too light and the
network sharpens every target until it can predict almost nothing (s → +∞ lowers the heatmap loss: measured at
weight 0.001, every sigma fell to 0.2-0.8 px); the official weight 1 leaves s pinned at its zero init on these
schedules (sigma 2.00 ± 0.004 after 250 steps of the constructed set, 2.0003 ± 0.0006 after 2,000 real CPU steps).
0.03, the default, separates ambiguous from clear keypoints on the constructed set (2.6 vs 2.05 px) without the
collapse. docs/DESIGN.md §5's "weight 1" held only for the official normalisation and schedule.
"""

from __future__ import annotations

import numpy as np
import torch

WAHR_GAMMA = 0.01


def _check_same_shape(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"shape mismatch: {shapes}")


def _safe_log(gaussian: torch.Tensor) -> torch.Tensor:
    """ln G where G > 0, 0 elsewhere; the log's input is 1 off the support so no inf/NaN reaches the gradient."""
    support = gaussian > 0
    return torch.where(support, torch.log(torch.where(support, gaussian, torch.ones_like(gaussian))), 0.0)


def sahr_target(gaussian: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """SAHR target ``T = G^(e^s)`` on the support of G, 0 elsewhere.

    Args:
        gaussian: G (B, K, h, w), fixed-sigma unit-peak targets (no gradient needed).
        scale: s (B, K, h, w), raw scale map of the head (gradient flows through T into it).
    Returns:
        T (B, K, h, w); ``T == G`` exactly at ``s = 0``; a Gaussian of sigma ``σ0 · e^(-s/2)`` for any real s.
    """
    _check_same_shape(gaussian=gaussian, scale=scale)
    support = gaussian > 0
    # the base is 1 off the support, so pow's gradient there (ln 1 = 0) is 0 and no NaN appears; pow(G, 1) == G
    base = torch.where(support, gaussian, torch.ones_like(gaussian))
    return torch.where(support, base.pow(torch.exp(scale)), 0.0)


def wahr_weight(gaussian: torch.Tensor, pred: torch.Tensor, gamma: float = WAHR_GAMMA) -> torch.Tensor:
    """WAHR per-pixel weight ``W = G^γ·|1 − P| + (1 − G^γ)·|P|``.

    Args:
        gaussian: G (B, K, h, w), the FIXED-sigma target (not the SAHR target T).
        pred: P (B, K, h, w), predicted heatmaps. Not detached (see the module docstring).
        gamma: γ, 0.01 in the paper.
    Returns:
        W (B, K, h, w), >= 0.
    """
    _check_same_shape(gaussian=gaussian, pred=pred)
    support = gaussian > 0
    # pow(0, γ) has an infinite derivative; keep 0 out of it in case G ever carries a gradient.
    g_gamma = torch.where(support, torch.where(support, gaussian, torch.ones_like(gaussian)).pow(gamma), 0.0)
    return g_gamma * (1.0 - pred).abs() + (1.0 - g_gamma) * pred.abs()


def scale_regularizer(
    gaussian: torch.Tensor, scale: torch.Tensor, target_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """``s²`` on the support of G (cells with G > 0) of keypoints with target weight > 0, averaged over EVERY cell.

    The normalisation is the heatmap loss's (a mean over all of B x K x h x w), as in the official SWAHR code
    (greatlog/SWAHR-HumanPose lib/core/loss.py: ``ScaleLoss`` is ``(s · [G > 0])²`` reduced by a mean over K, H, W,
    then the batch, added with weight 1). An earlier version divided by the support count instead; that made the
    regulariser (h·w)/support times stronger than the heatmap loss's pull on s (≈ 4.5x at 24x32 heatmaps, ≈ 18x at
    48x64) and pinned s at its zero init (sigma 2.0003 ± 0.0006 after 2,000 CPU steps).

    Args:
        gaussian: G (B, K, h, w).
        scale: s (B, K, h, w).
        target_weight: optional (B, K); keypoints with weight <= 0 are left out (their G is all-zero anyway when it
            comes from the codec).
    Returns:
        scalar tensor; exactly 0 (still connected to ``scale``'s graph) when the support is empty.
    """
    _check_same_shape(gaussian=gaussian, scale=scale)
    support = gaussian > 0
    if target_weight is not None:
        support = support & (target_weight > 0)[..., None, None]
    return torch.where(support, scale * scale, 0.0).mean()


def heatmap_loss(
    pred: torch.Tensor,
    gaussian: torch.Tensor,
    target_weight: torch.Tensor,
    scale: torch.Tensor | None = None,
    *,
    sahr: bool = True,
    wahr: bool = True,
    gamma: float = WAHR_GAMMA,
    scale_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Heatmap regression loss with optional SAHR target and WAHR weight.

    ``heatmap = mean over (B, K, h, w) of W · (w_k·P − w_k·T)²`` with ``T = sahr_target(G, s)`` when ``sahr`` and a
    scale map is given (else ``T = G``) and ``W = wahr_weight(G, P, γ)`` when ``wahr`` (else 1). With both off this is
    exactly ``F.mse_loss(P·w, G·w)`` (MMPose 0.x ``KeypointMSELoss(use_target_weight=True)``, no ½ factor).
    ``total = heatmap + scale_weight · scale_reg``, ``scale_reg = scale_regularizer(G, s, w)`` (0 without SAHR).

    Args:
        pred: P (B, K, h, w).
        gaussian: G (B, K, h, w), fixed-sigma targets.
        target_weight: w (B, K), per-keypoint weights (codec: 0, ``train.occluded_weight`` for an occluded keypoint, or
            1); inside the square, so a weight of 0.5 weighs the error 0.25, as MMPose's loss does.
        scale: s (B, K, h, w) from the SAHR head, or None.
        sahr: use the SAHR target and regulariser (needs ``scale``; ignored when it is None).
        wahr: multiply the squared error by the WAHR weight.
        gamma: WAHR γ.
        scale_weight: weight of the scale regulariser (1, as in the official SWAHR code: against the normalisation
            of ``scale_regularizer``, a mean over every cell like the heatmap term).
    Returns:
        {"loss": total, "heatmap": heatmap term, "scale_reg": regulariser} (scalar tensors).
    """
    _check_same_shape(pred=pred, gaussian=gaussian)
    if target_weight.shape != pred.shape[:2]:
        raise ValueError(f"target_weight must be (B, K) = {tuple(pred.shape[:2])}, got {tuple(target_weight.shape)}")
    use_sahr = sahr and scale is not None
    target = sahr_target(gaussian, scale) if use_sahr else gaussian
    w = target_weight[..., None, None].to(pred.dtype)
    err = (pred * w - target * w) ** 2
    if wahr:
        err = err * wahr_weight(gaussian, pred, gamma)
    heatmap = err.mean()
    scale_reg = scale_regularizer(gaussian, scale, target_weight) if use_sahr else heatmap.new_zeros(())
    return {"loss": heatmap + scale_weight * scale_reg, "heatmap": heatmap, "scale_reg": scale_reg}


def effective_sigma(sigma0: float, scale_at_peak: torch.Tensor) -> torch.Tensor:
    """Effective Gaussian sigma ``σ0 · e^(-s/2)`` of the SAHR target ``G^(e^s)``.

    Args:
        sigma0: base sigma in heatmap pixels (the codec's sigma).
        scale_at_peak: s (B, K) (any shape), e.g. from ``scale_at``.
    Returns:
        sigma, same shape, in heatmap pixels: σ0 at s = 0, larger for s < 0, smaller for s > 0. NaN stays NaN.
    """
    s = torch.as_tensor(scale_at_peak)
    if not s.is_floating_point():
        s = s.to(torch.float32)
    return sigma0 * torch.exp(-0.5 * s)


def scale_at(scale: torch.Tensor, points_hm: torch.Tensor | np.ndarray, mode: str = "nearest") -> torch.Tensor:
    """The scale map read at one point per keypoint (the decoded peak): the keypoint's SAHR scale.

    Args:
        scale: s (B, K, h, w).
        points_hm: (B, K, 2) (x, y) in heatmap pixels (integer = cell centre; ``HeatmapCodec.to_heatmap`` of the
            decoded crop-pixel keypoints).
        mode: "nearest" (the nearest cell, clamped to the map) or "bilinear" (between the four nearest cell centres,
            the point clamped to the map first).
    Returns:
        (B, K), ``scale``'s dtype and device; NaN where the point is not finite.
    """
    if scale.ndim != 4:
        raise ValueError(f"scale must be (B, K, h, w), got {tuple(scale.shape)}")
    b, k, h, w = scale.shape
    pts = torch.as_tensor(points_hm, device=scale.device).to(torch.float64)
    if pts.shape != (b, k, 2):
        raise ValueError(f"points_hm must be ({b}, {k}, 2), got {tuple(pts.shape)}")
    finite = torch.isfinite(pts).all(dim=-1)
    x = torch.where(finite, pts[..., 0], 0.0).clamp(0, w - 1)
    y = torch.where(finite, pts[..., 1], 0.0).clamp(0, h - 1)
    flat = scale.reshape(b, k, h * w)

    def read(ix: torch.Tensor, iy: torch.Tensor) -> torch.Tensor:
        return flat.gather(2, (iy * w + ix).long()[..., None])[..., 0]

    if mode == "nearest":
        # floor(x + 0.5): ties go up, deterministically (torch.round would round half to even).
        out = read(torch.floor(x + 0.5), torch.floor(y + 0.5))
    elif mode == "bilinear":
        x0, y0 = x.floor().clamp(max=w - 2 if w > 1 else 0), y.floor().clamp(max=h - 2 if h > 1 else 0)
        x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
        fx, fy = (x - x0).to(scale.dtype), (y - y0).to(scale.dtype)
        top = read(x0, y0) * (1 - fx) + read(x1, y0) * fx
        bottom = read(x0, y1) * (1 - fx) + read(x1, y1) * fx
        out = top * (1 - fy) + bottom * fy
    else:
        raise ValueError(f"mode must be 'nearest' or 'bilinear', got {mode!r}")
    return torch.where(finite, out, torch.full_like(out, float("nan")))
