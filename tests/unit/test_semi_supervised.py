"""Semi-supervised pieces (docs/DESIGN.md §5): adaptive mask counts, easy keypoints, difficulty, where the masks land,
fixed-count joint cutout, the Mixup alpha distribution, mix and the heatmap head's Mixup loss, determinism."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from scipy import stats

from pipeline.codec import HeatmapCodec
from pipeline.semi_supervised import (
    adaptive_keypoint_masking,
    adaptive_mask_counts,
    adaptive_mask_difficulty,
    apply_box_masks,
    easy_keypoints,
    joint_cutout,
    keypoint_responses,
    mask_half_sizes,
    mix,
    sample_mixup_alpha,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

M = 5
TAU = 0.5
FLOOR = 0.1
H, W = 256, 192
CODEC = HeatmapCodec((W, H), (48, 64))
LOW, HIGH = 10, 19  # the paper's half-sizes at 256x192
JITTER = 0.5  # apply_box_masks' default: the centre moves by up to JITTER x half-size per axis
# Chebyshev distance from its keypoint that a box can reach: half-size + rounded jitter.
REACH = HIGH + math.floor(JITTER * HIGH + 0.5)
# 12 keypoints 66 px apart: the (2 * REACH + 1)-px windows around them are disjoint.
GRID = [(x, y) for y in (30, 96, 162, 228) for x in (30, 96, 162)]


def _round_half_up(m: int, easy: int, k: int) -> int:
    return math.floor(Fraction(m * easy, k) + Fraction(1, 2))


def _responses(k: int, n_easy: int, scale: float = 1.0) -> torch.Tensor:
    """(1, K) responses whose first n_easy keypoints are easy (r >= 0.9) and the rest hard (r <= 0.3)."""
    easy = np.linspace(1.0, 0.9, n_easy)
    hard = np.linspace(0.3, 0.0, k - n_easy)
    return torch.tensor(np.concatenate([easy, hard])[None] * scale, dtype=torch.float64)


def _batch(heights: np.ndarray, points: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images of ones, teacher heatmaps with Gaussian peaks of the given heights (B, K), keypoints (B, K, 2)."""
    b, k = heights.shape
    kps = np.asarray(points, dtype=np.float64)
    unit = CODEC.encode(kps, np.full(k, 2))[0]  # (K, 64, 48), unit peaks
    heatmaps = torch.from_numpy(unit[None] * heights[:, :, None, None].astype(np.float32))
    keypoints = torch.from_numpy(np.broadcast_to(kps, (b, k, 2)).copy()).float()
    return torch.ones((b, 3, H, W)), heatmaps, keypoints


def _zeroed(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) masked image of ones -> (H, W) bool of zeroed pixels; everything else must be untouched."""
    zero = image == 0
    assert torch.equal(zero.all(0), zero.any(0)), "a box must zero every channel"
    assert bool((image[~zero] == 1).all()), "pixels outside boxes must be untouched"
    return zero.all(0).numpy()


def _window(point: tuple[int, int], reach: int) -> tuple[slice, slice]:
    x, y = point
    return slice(max(0, y - reach), y + reach + 1), slice(max(0, x - reach), x + reach + 1)


def _boxes_per_keypoint(zeroed: np.ndarray, points: list[tuple[int, int]]) -> list[int]:
    """Indices of the keypoints (disjoint windows) that have a zeroed box; checks each is one solid box on its point."""
    hit = []
    for j, point in enumerate(points):
        window = zeroed[_window(point, REACH)]
        if not window.any():
            continue
        ys, xs = np.nonzero(window)
        height, width = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        assert window.sum() == height * width, "one solid box per keypoint"
        assert height <= 2 * HIGH + 1 and width <= 2 * HIGH + 1
        assert zeroed[point[1], point[0]], "the box covers the keypoint it is centred on (jitter < half-size)"
        hit.append(j)
    return hit


def test_easy_keypoints_matches_hand_computation():
    rng = np.random.default_rng(0)
    values = rng.uniform(0.0, 1.0, size=(8, 17))
    values[1] = 0.4  # all equal: no NaN, nothing easy
    values[2, :3] = [0.0, 0.5, 1.0]  # r = 0.5 / (1 + eps) < tau
    values[2, 3:] = 0.2
    low, high = values.min(1, keepdims=True), values.max(1, keepdims=True)
    expected = (values - low) / (high - low + 1e-6) >= TAU
    got = easy_keypoints(torch.from_numpy(values), TAU)
    assert got.dtype == torch.bool
    np.testing.assert_array_equal(got.numpy(), expected)
    assert not got[1].any()
    assert not got[2, 1]


@pytest.mark.parametrize("k", [4, 10, 17])
def test_mask_counts_follow_the_formula(k):
    for n_easy in range(1, k):
        responses = _responses(k, n_easy)
        assert easy_keypoints(responses, TAU).sum() == n_easy
        assert adaptive_mask_counts(responses, M, TAU, FLOOR).tolist() == [_round_half_up(M, n_easy, k)]
    # tau = 0: every keypoint is easy -> M masks
    assert adaptive_mask_counts(_responses(k, k - 1), M, 0.0, FLOOR).tolist() == [M]


def test_mask_count_anchors():
    counts = {
        (k, e): int(adaptive_mask_counts(_responses(k, e), M, TAU, FLOOR)) for k, e in [(17, 16), (17, 8), (17, 9)]
    }
    assert counts == {(17, 16): M, (17, 8): 2, (17, 9): 3}  # 4.71 -> 5, 2.35 -> 2, 2.65 -> 3
    # easy = K / 2 -> round(M / 2) = round(2.5), half up
    assert int(adaptive_mask_counts(_responses(4, 2), M, TAU, FLOOR)) == 3
    assert int(adaptive_mask_counts(_responses(4, 3), M, TAU, FLOOR)) == 4  # K < 10: M is out of reach when tau > 0
    assert int(adaptive_mask_counts(_responses(10, 1), M, TAU, FLOOR)) == 1  # 0.5 -> 1 (half to even gave 0)


@pytest.mark.parametrize("k", [4, 17])
def test_least_responsive_keypoint_is_never_easy(k):
    responses = torch.from_numpy(np.random.default_rng(k).uniform(0.5, 1.0, size=(50, k)))
    easy = easy_keypoints(responses, TAU)
    assert not easy[torch.arange(50), responses.argmin(1)].any()
    assert easy[torch.arange(50), responses.argmax(1)].all()


@pytest.mark.parametrize("k", [4, 17])
def test_extremely_hard_sample_gets_at_most_one_mask(k):
    for n_easy in range(1, k):
        hard = _responses(k, n_easy, scale=0.05)  # best response 0.05 < floor; same normalised responses
        assert easy_keypoints(hard, TAU).sum() == n_easy
        assert int(adaptive_mask_counts(hard, M, TAU, FLOOR)) == min(1, _round_half_up(M, n_easy, k))
    # at the floor exactly the sample is not extremely hard
    assert int(adaptive_mask_counts(_responses(k, k - 1, scale=FLOOR), M, TAU, FLOOR)) == _round_half_up(M, k - 1, k)


def test_degenerate_responses_are_finite():
    equal = torch.full((3, 17), 0.7)
    assert adaptive_mask_counts(equal, M, TAU, FLOOR).tolist() == [0, 0, 0]
    assert adaptive_mask_difficulty(equal, TAU).tolist() == [1.0, 1.0, 1.0]
    single = torch.tensor([[0.9], [0.01]])  # K = 1
    assert adaptive_mask_counts(single, M, TAU, FLOOR).tolist() == [0, 0]
    assert adaptive_mask_difficulty(single, TAU).tolist() == [1.0, 1.0]
    zeros = torch.zeros((2, 17))
    assert torch.isfinite(adaptive_mask_difficulty(zeros, TAU)).all()


def test_difficulty_is_one_minus_easy_fraction():
    responses = torch.cat([_responses(17, e) for e in (1, 8, 16)] + [torch.rand(4, 17, dtype=torch.float64)])
    easy = easy_keypoints(responses, TAU).double().sum(1).numpy()
    got = adaptive_mask_difficulty(responses, TAU).numpy()
    np.testing.assert_allclose(got, 1.0 - easy / 17, rtol=0, atol=1e-7)
    np.testing.assert_allclose(got[:3], [16 / 17, 9 / 17, 1 / 17], rtol=0, atol=1e-7)


def test_mask_half_sizes_scale_with_input_height():
    assert mask_half_sizes(256) == (LOW, HIGH)
    assert mask_half_sizes(128) == (5, 10)
    assert mask_half_sizes(512) == (20, 38)
    assert mask_half_sizes(8) == (1, 1)


def test_adaptive_masking_lands_on_easy_keypoints():
    k = len(GRID)
    rng = np.random.default_rng(1)
    easy_sets = [[0, 2, 4, 6, 8, 11], [j for j in range(k) if j != 5], [0, 2, 4, 6, 8, 11], [7]]
    heights = rng.uniform(0.2, 0.3, size=(4, k))
    for i, chosen in enumerate(easy_sets):
        heights[i, chosen] = rng.uniform(0.95, 1.0, size=len(chosen))
    heights[2] *= 0.05  # extremely hard: best response below the floor
    images, heatmaps, keypoints = _batch(heights, GRID)

    responses = keypoint_responses(heatmaps)
    for i, chosen in enumerate(easy_sets):
        assert set(torch.nonzero(easy_keypoints(responses, TAU)[i]).flatten().tolist()) == set(chosen)

    out, counts = adaptive_keypoint_masking(
        images, heatmaps, keypoints, max_masks=M, tau=TAU, floor=FLOOR, generator=torch.Generator().manual_seed(0)
    )
    assert counts.tolist() == [3, 5, 1, 0]  # round(2.5) = 3, round(4.58) = 5, floor rule, round(0.42) = 0
    assert torch.equal(images, torch.ones_like(images)), "the input is not modified in place"
    assert torch.equal(out[3], images[3])

    for i, chosen in enumerate(easy_sets):
        zeroed = _zeroed(out[i])
        allowed = np.zeros_like(zeroed)
        for j in chosen:
            allowed[_window(GRID[j], REACH)] = True
        assert not (zeroed & ~allowed).any(), "every zeroed pixel is near an easy keypoint"
        for j in set(range(k)) - set(chosen):
            assert not zeroed[GRID[j][1], GRID[j][0]], "a hard keypoint far from the easy ones is not masked"
        hit = _boxes_per_keypoint(zeroed, GRID)
        assert set(hit) <= set(chosen)
        assert len(hit) == counts[i]


def test_adaptive_masking_count_is_capped_by_easy_keypoints():
    points = [GRID[0], GRID[2], GRID[7], GRID[9]]  # K = 4 < M
    heights = np.array([[1.0, 0.98, 0.96, 0.2]])  # 3 easy -> round(3.75) = 4 masks, only 3 easy keypoints
    images, heatmaps, keypoints = _batch(heights, points)
    out, counts = adaptive_keypoint_masking(images, heatmaps, keypoints, generator=torch.Generator().manual_seed(0))
    assert int(adaptive_mask_counts(keypoint_responses(heatmaps))) == 4
    assert counts.tolist() == [3]
    assert sorted(_boxes_per_keypoint(_zeroed(out[0]), points)) == [0, 1, 2]


def test_all_zero_teacher_leaves_images_unchanged():
    images = torch.ones((2, 3, H, W))
    keypoints = torch.tensor(GRID, dtype=torch.float32).expand(2, -1, -1)
    out, counts = adaptive_keypoint_masking(images, torch.zeros((2, len(GRID), 64, 48)), keypoints)
    assert counts.tolist() == [0, 0]
    assert torch.equal(out, images)


def test_boxes_are_clipped_at_the_borders():
    images = torch.ones((1, 1, H, W))
    centres = [torch.tensor([[0.0, 0.0], [W - 1.0, H - 1.0], [-100.0, 50.0], [W + 50.0, H + 50.0]])]
    out = apply_box_masks(images, centres, (5, 5), jitter=0.0)
    expected = np.zeros((H, W), dtype=bool)
    expected[:6, :6] = True
    expected[H - 6 :, W - 6 :] = True
    np.testing.assert_array_equal(_zeroed(out[0]), expected)


def test_box_sizes_follow_the_input_height():
    low, high = mask_half_sizes(128)
    images = torch.ones((1, 1, 128, 96))
    centre = [torch.tensor([[48.0, 64.0]])]
    sizes = set()
    generator = torch.Generator().manual_seed(0)
    for _ in range(40):
        zeroed = _zeroed(apply_box_masks(images, centre, (low, high), jitter=0.0, generator=generator)[0])
        ys, xs = np.nonzero(zeroed)
        assert ys.max() - ys.min() == xs.max() - xs.min()  # square, on the centre
        assert (ys.min() + ys.max()) / 2 == 64 and (xs.min() + xs.max()) / 2 == 48
        sizes.add(int(ys.max() - ys.min() + 1))
    assert sizes <= set(range(2 * low + 1, 2 * high + 2, 2))
    assert min(sizes) == 2 * low + 1 and max(sizes) == 2 * high + 1


@pytest.mark.parametrize(("k", "expected"), [(12, 5), (3, 3)])
def test_joint_cutout_places_a_fixed_number_of_boxes(k, expected):
    points = GRID[:k]
    images = torch.ones((4, 3, H, W))
    keypoints = torch.tensor(points, dtype=torch.float32).expand(4, -1, -1)
    out = joint_cutout(images, keypoints, num_masks=M, generator=torch.Generator().manual_seed(0))
    covered = set()
    for i in range(4):
        hit = _boxes_per_keypoint(_zeroed(out[i]), points)
        assert len(hit) == expected
        covered.update(hit)
    assert covered == set(range(k)), "any keypoint can be masked, whatever its difficulty"
    assert torch.equal(joint_cutout(images, keypoints, num_masks=0), images)


def test_mixup_alpha_is_a_mapped_u_shaped_beta():
    rng = np.random.default_rng(0)
    alpha = np.array([sample_mixup_alpha(rng) for _ in range(10_000)])
    assert alpha.min() >= 0.75 and alpha.max() < 1.0
    u = (alpha - 0.75) / 0.25
    counts, _ = np.histogram(u, bins=10, range=(0.0, 1.0))
    assert counts[0] > 3 * counts[4:6].max() and counts[-1] > 3 * counts[4:6].max()
    assert abs(alpha.mean() - 0.875) < 0.005
    # Empirical CDF against Beta(0.2, 0.2) below the clamp at 1 - 1e-6 (which holds the ~3% of mass above it);
    # DKW: P(sup deviation > 0.02) <= 2 exp(-2 n 0.02^2) < 1e-3 for n = 10,000.
    grid = np.linspace(0.001, 0.999, 999)
    ecdf = np.searchsorted(np.sort(u), grid, side="right") / u.size
    assert np.abs(ecdf - stats.beta(0.2, 0.2).cdf(grid)).max() < 0.02


def test_mix_and_mixup_loss_match_their_formulas():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 3, 8, 6)).astype(np.float32)
    perm = np.array([2, 0, 3, 1])
    alpha = 0.8
    got = mix(torch.from_numpy(x), torch.from_numpy(perm), alpha).numpy()
    np.testing.assert_allclose(got, alpha * x + (1 - alpha) * x[perm], rtol=1e-6, atol=1e-6)

    # the heatmap head's Mixup loss: against both teachers' maps, weighted by alpha
    from models.heads import HeatmapPoseHead
    from pipeline.keypoints import KeypointSchema

    f, h_i = rng.normal(size=(2, 4, 17, 8, 6))
    h_j = h_i[perm]
    expected = alpha * np.mean((f - h_i) ** 2) + (1 - alpha) * np.mean((f - h_j) ** 2)
    head = HeatmapPoseHead(8, HeatmapCodec((24, 32), (6, 8)), KeypointSchema.coco17())
    loss = head.ssl_mixup_loss({"heatmaps": torch.from_numpy(f)}, torch.from_numpy(h_i), torch.from_numpy(perm), alpha)
    assert loss.ndim == 0
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_masking_is_deterministic_given_a_generator():
    heights = np.tile(np.linspace(1.0, 0.0, len(GRID)), (3, 1))
    images, heatmaps, keypoints = _batch(heights, GRID)

    def adaptive(seed):
        return adaptive_keypoint_masking(images, heatmaps, keypoints, generator=torch.Generator().manual_seed(seed))[0]

    def cutout(seed):
        return joint_cutout(images, keypoints, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(adaptive(7), adaptive(7))
    assert not torch.equal(adaptive(7), adaptive(8))
    assert torch.equal(cutout(7), cutout(7))
    assert not torch.equal(cutout(7), cutout(8))
