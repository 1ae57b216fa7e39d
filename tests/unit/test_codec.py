"""HeatmapCodec: sub-pixel encode/decode round trips (standard and DARK), weights, per-keypoint sigma, flip test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.codec import HeatmapCodec, default_sigma
from pipeline.keypoints import KeypointSchema

SCHEMA = KeypointSchema.coco17()
K = SCHEMA.num_keypoints
INPUT, HEATMAP = (192, 256), (48, 64)


def _encode_batch(codec: HeatmapCodec, mu_heatmap: np.ndarray) -> np.ndarray:
    """(B, K, 2) heatmap-pixel locations -> (B, K, H, W) targets."""
    crop = codec.to_crop(mu_heatmap)
    return np.stack([codec.encode(kps, np.full(len(kps), 2))[0] for kps in crop])


def _random_points(n: int, margin: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w, h = HEATMAP
    return rng.uniform([margin, margin], [w - 1 - margin, h - 1 - margin], size=(n, K, 2))


def test_default_sigma_scales_with_resolution():
    assert default_sigma((48, 64)) == pytest.approx(2.0)
    assert default_sigma((72, 96)) == pytest.approx(3.0)
    assert HeatmapCodec(INPUT, HEATMAP).sigma == pytest.approx(2.0)


def test_crop_heatmap_mapping_is_exact_inverse():
    codec = HeatmapCodec(INPUT, HEATMAP)
    pts = np.random.default_rng(0).uniform(-10, 260, (100, 2))
    np.testing.assert_allclose(codec.to_crop(codec.to_heatmap(pts)), pts, atol=1e-12)
    # Extents match: the crop's [-0.5, W - 0.5] is the heatmap's [-0.5, w - 0.5].
    np.testing.assert_allclose(codec.to_heatmap(np.array([[-0.5, -0.5], [191.5, 255.5]])), [[-0.5, -0.5], [47.5, 63.5]])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_standard_decode_is_within_a_quarter_pixel(seed):
    codec = HeatmapCodec(INPUT, HEATMAP, sigma=2.0)
    mu = _random_points(300, margin=1.0, seed=seed)  # argmax away from the border, where the shift is defined
    keypoints, scores = codec.decode(_encode_batch(codec, mu))
    err = np.abs(codec.to_heatmap(keypoints) - mu)
    assert keypoints.shape == (300, K, 2) and scores.shape == (300, K)
    assert err.max() < 0.3  # per axis; the quarter shift's worst case is 0.25
    assert np.linalg.norm(err, axis=-1).mean() < 0.25
    assert scores.min() > 0.88  # sampled peak of a unit Gaussian within half a cell: exp(-0.25/4) ~ 0.94 at worst


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dark_decode_is_much_more_accurate(seed):
    dark = HeatmapCodec(INPUT, HEATMAP, sigma=2.0, dark=True)
    plain = HeatmapCodec(INPUT, HEATMAP, sigma=2.0)
    mu = _random_points(300, margin=2 * dark.sigma, seed=seed)  # blur footprint inside the map
    heatmaps = _encode_batch(dark, mu)
    err_dark = np.linalg.norm(dark.to_heatmap(dark.decode(heatmaps)[0]) - mu, axis=-1)
    err_plain = np.linalg.norm(plain.to_heatmap(plain.decode(heatmaps)[0]) - mu, axis=-1)
    assert err_dark.max() < 0.05
    assert err_dark.mean() < err_plain.mean() / 20


def test_dark_near_the_border_is_no_worse_than_standard():
    dark = HeatmapCodec(INPUT, HEATMAP, sigma=2.0, dark=True)
    plain = HeatmapCodec(INPUT, HEATMAP, sigma=2.0)
    mu = _random_points(300, margin=0.0, seed=3)
    near = (np.minimum(mu, np.array(HEATMAP) - 1 - mu).min(-1)) < 4
    heatmaps = _encode_batch(dark, mu)
    err_dark = np.linalg.norm(dark.to_heatmap(dark.decode(heatmaps)[0]) - mu, axis=-1)[near]
    err_plain = np.linalg.norm(plain.to_heatmap(plain.decode(heatmaps)[0]) - mu, axis=-1)[near]
    assert near.sum() > 100
    assert err_dark.max() <= err_plain.max() + 1e-6
    assert err_dark.mean() < err_plain.mean()


def test_decode_other_resolution_and_single_instance():
    codec = HeatmapCodec((288, 384), (72, 96), dark=True)  # sigma 3 by default
    mu = np.random.default_rng(5).uniform(8, 60, (K, 2))
    heatmaps, _ = codec.encode(codec.to_crop(mu), np.ones(K))
    keypoints, scores = codec.decode(heatmaps)  # (K, H, W) -> (K, 2)
    assert keypoints.shape == (K, 2) and scores.shape == (K,)
    assert np.abs(codec.to_heatmap(keypoints) - mu).max() < 0.05
    with pytest.raises(ValueError):
        codec.decode(np.zeros((1, K, 64, 48)))


def test_encode_weights_and_empty_maps():
    codec = HeatmapCodec(INPUT, HEATMAP)
    kps = np.tile([[96.0, 128.0]], (K, 1))
    vis = np.full(K, 2)
    vis[0] = 0  # unlabeled
    vis[1] = 1  # occluded but labeled: still a target
    kps[2] = [-40.0, 100.0]  # 10 heatmap cells left of the map: beyond 3 sigma
    kps[3] = [-10.0, 100.0]  # 2.4 cells left: its tail is still on the map
    kps[4] = [np.nan, np.nan]
    heatmaps, weight = codec.encode(kps, vis)
    assert heatmaps.shape == (K, 64, 48) and heatmaps.dtype == np.float32 and weight.dtype == np.float32
    assert weight[0] == 0 and not heatmaps[0].any()
    d2 = ((codec.to_heatmap(kps[1]) - np.round(codec.to_heatmap(kps[1]))) ** 2).sum()  # (23.625, 31.625): 2 x 0.375^2
    assert weight[1] == 1 and heatmaps[1].max() == pytest.approx(np.exp(-d2 / 8), rel=1e-6)
    assert weight[2] == 0 and not heatmaps[2].any()
    assert weight[3] == 1 and 0 < heatmaps[3].max() < 0.9
    assert weight[4] == 0 and np.isfinite(heatmaps).all()
    # Truncated at +-3 sigma around the sub-pixel centre.
    mu = codec.to_heatmap(kps[5])
    ys, xs = np.nonzero(heatmaps[5])
    assert np.abs(xs - mu[0]).max() <= 6 and np.abs(ys - mu[1]).max() <= 6


def test_occluded_weight_scales_only_the_occluded_keypoints_training_weight():
    """train.occluded_weight: an occluded keypoint (v = 1) trains with that weight, a visible one with 1, an
    unlabeled or off-map one with 0; the target map itself is the same, and the ASLA codec follows the same rule."""
    from models.heads import target_codec

    kps = np.tile([[96.0, 128.0]], (4, 1))
    kps[3] = [-40.0, 100.0]  # off the map
    vis = np.array([2, 1, 0, 1])
    default = HeatmapCodec(INPUT, HEATMAP)
    halved = HeatmapCodec(INPUT, HEATMAP, occluded_weight=0.25)
    np.testing.assert_array_equal(default.encode_targets(kps, vis)["target_weight"], [1, 1, 0, 0])
    targets = halved.encode_targets(kps, vis)
    np.testing.assert_array_equal(targets["target_weight"], [1, 0.25, 0, 0])
    np.testing.assert_array_equal(targets["heatmaps"], default.encode_targets(kps, vis)["heatmaps"])
    np.testing.assert_array_equal(
        target_codec("asla", halved).encode_targets(kps, vis)["target_weight"], [1, 0.25, 0, 0]
    )


def test_gaussian_is_centred_at_the_subpixel_location():
    codec = HeatmapCodec(INPUT, HEATMAP)
    mu = np.array([20.3, 30.7])
    heatmaps, _ = codec.encode(codec.to_crop(mu)[None], np.ones(1))
    ys, xs = np.mgrid[:64, :48]
    m = heatmaps[0]
    centroid = np.array([(m * xs).sum(), (m * ys).sum()]) / m.sum()
    np.testing.assert_allclose(centroid, mu, atol=0.02)  # rounding the centre would be off by 0.3


def test_per_keypoint_sigma_sets_the_spread():
    codec = HeatmapCodec(INPUT, HEATMAP)
    sigmas = np.array([1.0, 2.0, 3.0, 4.0])
    kps = np.tile(codec.to_crop(np.array([23.5, 31.5])), (4, 1))
    heatmaps, weight = codec.encode(kps, np.full(4, 2), sigmas=sigmas)
    assert (weight == 1).all()
    xs = np.arange(48) - 23.5
    for hm, sigma in zip(heatmaps, sigmas, strict=True):
        m = hm.sum(axis=0)  # marginal along x
        second_moment = (m * xs**2).sum() / m.sum()
        # A Gaussian truncated at 3 sigma has variance 0.973 sigma^2.
        assert second_moment == pytest.approx(0.973 * sigma**2, rel=0.03)
    scalar, _ = codec.encode(kps, np.full(4, 2), sigmas=3.0)
    np.testing.assert_array_equal(scalar[0], heatmaps[2])


def test_flip_merge_of_a_true_mirror_returns_the_original():
    codec = HeatmapCodec(INPUT, HEATMAP)
    rng = np.random.default_rng(0)
    kps = rng.uniform([5, 5], [186, 250], (K, 2))
    vis = np.full(K, 2)
    heatmaps, _ = codec.encode(kps, vis)
    # The flipped crop: x -> W - 1 - x, and keypoint j of it is keypoint flip_index[j] of the original.
    mirrored = kps[SCHEMA.flip_index] * [-1, 1] + [INPUT[0] - 1, 0]
    heatmaps_flipped, _ = codec.encode(mirrored, vis)
    merged = codec.flip_merge(heatmaps[None], heatmaps_flipped[None], SCHEMA.flip_index)
    np.testing.assert_allclose(merged[0], heatmaps, atol=1e-6)
    # Torch gives the same.
    merged_t = codec.flip_merge(
        torch.from_numpy(heatmaps[None]), torch.from_numpy(heatmaps_flipped[None].copy()), SCHEMA.flip_index
    )
    np.testing.assert_allclose(merged_t.numpy(), merged, atol=1e-7)
    # A one-cell shift (the legacy convention's correction) would break it: the test can fail.
    shifted = np.roll(codec.flip_back(heatmaps_flipped[None], SCHEMA.flip_index), 1, axis=-1)
    assert np.abs(shifted[0] - heatmaps).max() > 0.1


@pytest.mark.parametrize("dark", [False, True])
def test_torch_and_numpy_decode_the_same(dark):
    codec = HeatmapCodec(INPUT, HEATMAP, dark=dark)
    heatmaps = _encode_batch(codec, _random_points(8, margin=0.0, seed=4))
    heatmaps += np.random.default_rng(0).normal(0, 0.01, heatmaps.shape).astype(np.float32)  # noisy, like a model
    kn, sn = codec.decode(heatmaps)
    kt, st = codec.decode(torch.from_numpy(heatmaps).requires_grad_(True))
    np.testing.assert_array_equal(kn, kt)
    np.testing.assert_array_equal(sn, st)


def test_decode_degenerate_maps_is_finite():
    codec = HeatmapCodec(INPUT, HEATMAP, dark=True)
    heatmaps = np.zeros((2, K, 64, 48), np.float32)
    heatmaps[1, :, 0, 0] = 1.0  # single hot corner cell
    keypoints, scores = codec.decode(heatmaps)
    assert np.isfinite(keypoints).all() and np.isfinite(scores).all()
    assert (scores[0] == 0).all() and (scores[1] == 1).all()


def test_dark_is_robust_to_noise():
    """The blur is what makes DARK usable on model outputs: with pixel noise it still beats the quarter shift."""
    dark = HeatmapCodec(INPUT, HEATMAP, dark=True)
    plain = HeatmapCodec(INPUT, HEATMAP)
    mu = _random_points(200, margin=4.0, seed=6)
    heatmaps = _encode_batch(dark, mu)
    heatmaps += np.random.default_rng(1).normal(0, 0.05, heatmaps.shape).astype(np.float32)
    err_dark = np.linalg.norm(dark.to_heatmap(dark.decode(heatmaps)[0]) - mu, axis=-1)
    err_plain = np.linalg.norm(plain.to_heatmap(plain.decode(heatmaps)[0]) - mu, axis=-1)
    assert err_dark.mean() < err_plain.mean() / 3  # measured 0.05 vs 0.32
