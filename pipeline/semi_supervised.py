"""Semi-supervised pieces (docs/DESIGN.md §5): adaptive keypoint masking, fixed-count joint cutout, dual-branch Mixup.

All functions work on a batch of unlabeled crops and the teacher's heatmaps on their weak view:

- ``responses``: (B, K) max of each teacher heatmap (its response).
- Adaptive keypoint masking: keypoint j of image i is *easy* when its response, min-max normalised over the image's
  keypoints, is >= tau. The image gets round(M * easy_i / K) masks (at most one when even its best response is below
  ``floor``: an extremely hard sample keeps its information), each a zeroed box centred on an easy keypoint's
  predicted position plus jitter. Easy samples get more occlusion, hard ones less.
- Adaptive-mask difficulty = 1 - easy_i / K, also the difficulty score used for selection.
- Dual-branch Mixup: alpha ~ Beta(0.2, 0.2) mapped to [0.75, 1); images (and, in the second branch, the backbone's
  stem features) are mixed as alpha * x_i + (1 - alpha) * x_j and the student is asked for
  alpha * ||f(x_m) - H_i||^2 + (1 - alpha) * ||f(x_m) - H_j||^2.
"""

from __future__ import annotations

import numpy as np
import torch

# Mask half-sizes of 10-19 px are the paper's at a 256x192 input; they scale with the input height.
REFERENCE_INPUT_HEIGHT = 256
HALF_SIZE_RANGE = (10, 19)


def keypoint_responses(heatmaps: torch.Tensor) -> torch.Tensor:
    """(B, K, h, w) heatmaps -> (B, K) peak values."""
    return heatmaps.flatten(2).amax(dim=2)


def easy_keypoints(responses: torch.Tensor, tau: float = 0.5, eps: float = 1e-6) -> torch.Tensor:
    """(B, K) responses -> (B, K) bool: r_ij = (h_ij - h_min) / (h_max - h_min + eps) >= tau."""
    low = responses.amin(dim=1, keepdim=True)
    high = responses.amax(dim=1, keepdim=True)
    return (responses - low) / (high - low + eps) >= tau


def adaptive_mask_counts(
    responses: torch.Tensor, max_masks: int = 5, tau: float = 0.5, floor: float = 0.1
) -> torch.Tensor:
    """(B, K) responses -> (B,) int64 number of masks: round(M * easy / K), at most 1 when max response < floor.

    Rounds half up, in integer arithmetic (torch.round rounds half to even, which made the steps uneven: with K = 10,
    one easy keypoint got 0 masks while three, four and five easy keypoints all got 2).
    """
    easy = easy_keypoints(responses, tau).sum(dim=1)
    k = responses.shape[1]
    counts = torch.div(2 * max_masks * easy + k, 2 * k, rounding_mode="floor")
    extremely_hard = responses.amax(dim=1) < floor
    return torch.where(extremely_hard, counts.clamp(max=1), counts)


def adaptive_mask_difficulty(responses: torch.Tensor, tau: float = 0.5) -> torch.Tensor:
    """(B, K) responses -> (B,) difficulty in [0, 1]: 1 - easy_i / K.

    For tau > 0 the least responsive keypoint is never easy (r = 0), so difficulty >= 1 / K; it is 1 when all
    responses are equal (K = 1 included): nothing stands out, and eps keeps it finite.
    """
    return 1.0 - easy_keypoints(responses, tau).float().mean(dim=1)


def mask_half_sizes(input_height: int) -> tuple[int, int]:
    """The paper's 10-19 px half-sizes scaled to this input height (at least 1 px)."""
    scale = input_height / REFERENCE_INPUT_HEIGHT
    return max(1, round(HALF_SIZE_RANGE[0] * scale)), max(1, round(HALF_SIZE_RANGE[1] * scale))


def choose_mask_centres(
    keypoints: torch.Tensor, candidates: torch.Tensor, counts: torch.Tensor, generator: torch.Generator | None = None
) -> list[torch.Tensor]:
    """Pick ``counts[i]`` distinct candidate keypoints of each image at random.

    keypoints (B, K, 2) crop px (the teacher's predictions); candidates (B, K) bool; counts (B,).
    Returns one (n_i, 2) tensor of centres per image (n_i = min(counts[i], candidates in image i)).
    """
    centres = []
    for i in range(keypoints.shape[0]):
        pool = torch.nonzero(candidates[i], as_tuple=False).flatten()
        n = int(min(int(counts[i]), pool.numel()))
        order = torch.randperm(pool.numel(), generator=generator)[:n]
        centres.append(keypoints[i, pool[order]])
    return centres


def apply_box_masks(
    images: torch.Tensor,
    centres: list[torch.Tensor],
    half_sizes: tuple[int, int],
    jitter: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Zero a box around each centre (plus jitter of up to ``jitter`` x half-size); returns a masked copy.

    images (B, C, H, W) normalised crops (zero = the mean colour after normalisation, as cutout does);
    centres: per image an (n, 2) tensor in crop px.
    """
    out = images.clone()
    _, _, height, width = images.shape
    low, high = half_sizes
    for i, points in enumerate(centres):
        for x, y in points.tolist():
            half = int(torch.randint(low, high + 1, (1,), generator=generator))
            dx, dy = ((torch.rand(2, generator=generator) * 2 - 1) * jitter * half).tolist()
            cx, cy = round(x + dx), round(y + dy)
            x0, x1 = max(0, cx - half), min(width, cx + half + 1)
            y0, y1 = max(0, cy - half), min(height, cy + half + 1)
            if x0 < x1 and y0 < y1:
                out[i, :, y0:y1, x0:x1] = 0.0
    return out


def adaptive_keypoint_masking(
    images: torch.Tensor,
    teacher_heatmaps: torch.Tensor,
    teacher_keypoints: torch.Tensor,
    *,
    max_masks: int = 5,
    tau: float = 0.5,
    floor: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The strong view of adaptive keypoint masking; returns (masked images (B, C, H, W), mask counts (B,)).

    teacher_heatmaps (B, K, h, w) on the weak view; teacher_keypoints (B, K, 2) their decoded peaks in crop px.
    The returned counts are the boxes actually placed: ``adaptive_mask_counts`` capped at the number of easy
    keypoints, since each box sits on a distinct easy keypoint (the cap only bites when K < M, e.g. K = 4, M = 5).
    """
    responses = keypoint_responses(teacher_heatmaps)
    easy = easy_keypoints(responses, tau)
    counts = torch.minimum(adaptive_mask_counts(responses, max_masks, tau, floor), easy.sum(dim=1))
    centres = choose_mask_centres(teacher_keypoints, easy, counts, generator)
    return apply_box_masks(images, centres, mask_half_sizes(images.shape[2]), generator=generator), counts


def joint_cutout(
    images: torch.Tensor,
    teacher_keypoints: torch.Tensor,
    *,
    num_masks: int = 5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The fixed-count baseline (PoseDual-style joint cutout): ``num_masks`` boxes on random predicted keypoints."""
    b, k, _ = teacher_keypoints.shape
    everyone = torch.ones((b, k), dtype=torch.bool)
    counts = torch.full((b,), num_masks, dtype=torch.long)
    centres = choose_mask_centres(teacher_keypoints, everyone, counts, generator)
    return apply_box_masks(images, centres, mask_half_sizes(images.shape[2]), generator=generator)


def sample_mixup_alpha(rng: np.random.Generator, concentration: float = 0.2) -> float:
    """alpha ~ Beta(0.2, 0.2) mapped to [0.75, 1): the first image always dominates the mix."""
    return 0.75 + 0.25 * min(float(rng.beta(concentration, concentration)), 1.0 - 1e-6)


def mix(x: torch.Tensor, permutation: torch.Tensor, alpha: float) -> torch.Tensor:
    """alpha * x + (1 - alpha) * x[permutation]; x (B, ...), permutation (B,)."""
    return alpha * x + (1.0 - alpha) * x[permutation]
