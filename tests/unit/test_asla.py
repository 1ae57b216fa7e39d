"""ASLA head: summed-cost assignment (vs brute force), soft labels, decoding, loss safety, a small learning check."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.asla import AslaHead, asla_decode, asla_loss, assign_positives, keypoint_scale
from pipeline.codec import HeatmapCodec

STRIDE = 4


def _cell_centres(h: int, w: int) -> torch.Tensor:
    """(h, w, 2) cell centres (x, y) in heatmap pixels."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.stack([xs, ys], dim=-1)


def _offsets_to(points: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, K, 2) targets -> (B, K, 2, h, w) offsets with which every cell predicts its keypoint exactly."""
    grid = _cell_centres(h, w).permute(2, 0, 1)  # (2, h, w)
    return points[..., None, None] - grid


def _brute_force_positives(
    offsets: np.ndarray, g: np.ndarray, s: float, k: int, radius: float
) -> tuple[set[tuple[int, int]], dict[tuple[int, int], float]]:
    """Per-cell loop: the k candidate cells with the smallest (|p - g| + |p̂ - g|) / S, and all soft labels."""
    _, h, w = offsets.shape
    costs, soft = [], {}
    for y in range(h):
        for x in range(w):
            p = np.array([x, y], dtype=np.float64)
            p_hat = p + offsets[:, y, x]
            d_cell, d_pred = np.linalg.norm(p - g), np.linalg.norm(p_hat - g)
            soft[(y, x)] = math.exp(-(d_pred**2) / (2 * s**2))
            if d_cell <= radius:
                costs.append(((d_cell + d_pred) / s, (y, x)))
    costs.sort()
    return {cell for _, cell in costs[:k]}, soft


def _as_set(mask: torch.Tensor) -> set[tuple[int, int]]:
    return {(int(y), int(x)) for y, x in mask.nonzero().tolist()}


def test_positives_match_brute_force_summed_cost():
    h, w, k, s = 7, 8, 5, 1.5
    rng = np.random.default_rng(3)
    offsets = torch.tensor(rng.uniform(-1.5, 1.5, (1, 2, 2, h, w)), dtype=torch.float32)
    keypoints = torch.tensor([[[3.3, 2.6], [float("nan"), float("nan")]]])  # second keypoint unlabeled (NaN)
    weight = torch.tensor([[1.0, 0.0]])
    scale = torch.tensor([[s, s]])
    for radius in (2.0, 3.0, None):
        pos, soft = assign_positives(offsets, keypoints, weight, scale, k=k, radius=radius)
        r = max(2.0, s) if radius is None else radius
        expected, expected_soft = _brute_force_positives(offsets[0, 0].double().numpy(), np.array([3.3, 2.6]), s, k, r)
        assert pos.shape == soft.shape == (1, 2, h, w)
        assert pos.dtype == torch.bool and not soft.requires_grad
        assert _as_set(pos[0, 0]) == expected
        assert int(pos[0, 0].sum()) == k
        for (y, x), value in expected_soft.items():
            assert float(soft[0, 0, y, x]) == pytest.approx(value if (y, x) in expected else 0.0, abs=1e-6)
        # Unlabeled keypoint: no positives, no soft labels, no NaN from its NaN coordinates.
        assert not pos[0, 1].any()
        assert torch.equal(soft[0, 1], torch.zeros(h, w))


def test_neighbourhood_excludes_far_cells_that_predict_well():
    h, w, s = 9, 9, 1.0
    g = torch.tensor([[[4.0, 4.0]]])
    # Every cell predicts 3 cells to the right of g ...
    offsets = _offsets_to(g + torch.tensor([3.0, 0.0]), h, w)
    # ... except the cell (x=4, y=1), 3 cells above g, which predicts g exactly: cost 3 / S.
    offsets[0, 0, :, 1, 4] = torch.tensor([0.0, 3.0])
    args = (offsets, g, torch.ones(1, 1), torch.full((1, 1), s))
    wide, _ = assign_positives(*args, k=3, radius=4.0)
    narrow, _ = assign_positives(*args, k=3, radius=2.0)
    assert wide[0, 0, 1, 4]  # the summed cost prefers the good predictor ...
    assert not narrow[0, 0, 1, 4]  # ... but only inside the neighbourhood
    assert int(narrow.sum()) == int(wide.sum()) == 3
    default, _ = assign_positives(*args, k=3)  # radius max(2, S) = 2
    assert torch.equal(default, narrow)


def test_k_respected_and_dynamic_k():
    h, w = 12, 10
    g = torch.tensor([[[4.2, 5.7], [6.0, 3.0]]])
    offsets = _offsets_to(g, h, w)
    offsets[0, 1] += 2.5  # keypoint 1: every cell predicts 2.5 * sqrt(2) cells away -> small soft labels
    scale = torch.tensor([[2.0, 2.0]])
    weight = torch.ones(1, 2)
    for k in (1, 4, 9):
        pos, _ = assign_positives(offsets, g, weight, scale, k=k)
        assert pos.sum((2, 3)).tolist() == [[k, k]]
    pos, soft = assign_positives(offsets, g, weight, scale, k=9, dynamic_k=True)
    # Keypoint 0 predicts perfectly: 9 soft labels of 1 -> k = 9. Keypoint 1: floor(9 * exp(-12.5 / 8)) = 1.
    assert pos.sum((2, 3)).tolist() == [[9, 1]]
    assert float(soft[0, 1].max()) == pytest.approx(math.exp(-12.5 / 8.0), rel=1e-5)


def test_soft_labels_fall_with_prediction_error():
    h, w, s = 9, 9, 2.0
    g = torch.tensor([[[4.0, 4.0]]])
    errors = torch.linspace(0.0, 6.0, h * w).view(h, w)
    direction = torch.tensor([0.6, -0.8])  # unit vector
    offsets = _offsets_to(g, h, w) + (errors[None] * direction[:, None, None])[None, None]
    offsets.requires_grad_(True)
    pos, soft = assign_positives(offsets, g, torch.ones(1, 1), torch.full((1, 1), s), k=h * w, radius=100.0)
    assert pos.all() and not soft.requires_grad
    order = errors.flatten().argsort()
    labels = soft.flatten()[order]
    assert labels[0] == pytest.approx(1.0)
    assert bool((labels[1:] < labels[:-1]).all())  # strictly decreasing with the error
    torch.testing.assert_close(soft[0, 0], torch.exp(-(errors**2) / (2 * s**2)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("top_n", [1, 5])
def test_decode_perfect_outputs_is_exact(top_n):
    h, w = 64, 48
    rng = np.random.default_rng(0)
    g = torch.tensor(rng.uniform([2, 2], [w - 3, h - 3], (2, 3, 2)), dtype=torch.float32)
    grid = _cell_centres(h, w)
    logits = -((grid[None, None] - g[:, :, None, None]) ** 2).sum(-1)  # peaked around g
    outputs = {"logits": logits, "offsets": _offsets_to(g, h, w)}
    keypoints, scores = asla_decode(outputs, top_n=top_n)
    assert keypoints.shape == (2, 3, 2) and scores.shape == (2, 3)
    # What is tested: exact (1e-4) in heatmap px, hence within 1e-4 * stride in crop px via the codec's mapping
    # (far inside the 0.5 px the spec asks for).
    torch.testing.assert_close(keypoints, g, atol=1e-4, rtol=0)
    codec = HeatmapCodec((w * STRIDE, h * STRIDE), (w, h))
    np.testing.assert_allclose(codec.to_crop(keypoints.numpy()), codec.to_crop(g.numpy()), atol=1e-4 * STRIDE)
    torch.testing.assert_close(scores, torch.sigmoid(logits.flatten(2).max(-1).values))


def test_decode_rules_on_a_hand_made_case():
    h, w = 4, 5
    logits = torch.full((1, 1, h, w), -10.0)
    offsets = torch.zeros(1, 1, 2, h, w)
    logits[0, 0, 1, 2], offsets[0, 0, :, 1, 2] = 2.0, torch.tensor([0.5, 0.0])  # best: predicts (2.5, 1)
    logits[0, 0, 2, 3], offsets[0, 0, :, 2, 3] = 0.0, torch.tensor([-1.0, -1.0])  # second: predicts (2, 1)
    logits[0, 0, 3, 0] = -1.0  # third: predicts its own centre (0, 3)
    outputs = {"logits": logits, "offsets": offsets}
    p1, s1 = asla_decode(outputs, top_n=1)
    torch.testing.assert_close(p1[0, 0], torch.tensor([2.5, 1.0]))
    p2, s2 = asla_decode(outputs, top_n=2)
    a, b = torch.sigmoid(torch.tensor(2.0)), torch.sigmoid(torch.tensor(0.0))
    torch.testing.assert_close(p2[0, 0], (a * torch.tensor([2.5, 1.0]) + b * torch.tensor([2.0, 1.0])) / (a + b))
    p3, s3 = asla_decode(outputs, top_n=3)
    c = torch.sigmoid(torch.tensor(-1.0))
    expected = (a * torch.tensor([2.5, 1.0]) + b * torch.tensor([2.0, 1.0]) + c * torch.tensor([0.0, 3.0])) / (
        a + b + c
    )
    torch.testing.assert_close(p3[0, 0], expected)
    for s in (s1, s2, s3):  # the score is the best cell's, whatever top_n
        torch.testing.assert_close(s[0, 0], a)


def test_keypoint_scale():
    box = torch.tensor([[16.0, 36.0], [1.0, 1.0]])  # sqrt(area) = 24 and 1 cell
    sigmas = torch.tensor([0.025, 0.107])
    scale = keypoint_scale(box, sigmas)
    torch.testing.assert_close(scale, torch.tensor([[1.2, 24 * 0.214], [1.0, 1.0]]))  # floor of 1 cell
    assert keypoint_scale(box, sigmas, min_scale=0.01)[1, 0] == pytest.approx(0.05)


@pytest.mark.parametrize("reg_type", ["l1", "oks"])
def test_loss_values_on_a_hand_made_case(reg_type):
    h, w, s = 3, 3, 1.5
    g = torch.tensor([[[1.0, 1.0]]])
    shift = torch.tensor([0.3, -0.4])  # every cell's prediction is off by 0.5 cells
    offsets = _offsets_to(g, h, w) + shift[None, None, :, None, None]
    logits = torch.tensor(np.random.default_rng(5).normal(-2.0, 1.5, (1, 1, h, w)), dtype=torch.float32)
    out = {"logits": logits, "offsets": offsets}
    losses = asla_loss(out, g, torch.ones(1, 1), torch.full((1, 1), s), k=5, reg_type=reg_type)
    # All cells predict with error 0.5, so the cost ranks by |p_c - g|: k = 5 -> the centre and its 4 neighbours
    # (the corners are sqrt(2) away). Soft label q = exp(-0.25 / (2 S^2)) on each; normalised by 5 positives.
    q = math.exp(-0.25 / (2 * s**2))
    positives = {(1, 1), (0, 1), (2, 1), (1, 0), (1, 2)}

    def bce(logit: float, target: float) -> float:
        p = 1.0 / (1.0 + math.exp(-logit))
        return -(target * math.log(p) + (1 - target) * math.log(1 - p))

    expected_cls = 0.0
    for y in range(h):
        for x in range(w):
            logit = float(logits[0, 0, y, x])
            if (x, y) in positives:
                expected_cls += q * bce(logit, q)
            else:
                expected_cls += 0.75 * (1.0 / (1.0 + math.exp(-logit))) ** 2 * bce(logit, 0.0)
    expected_cls /= 5
    expected_reg = 0.7 if reg_type == "l1" else 1.0 - q
    assert losses["num_pos"].item() == 5
    assert losses["cls"].item() == pytest.approx(expected_cls, rel=1e-5)
    assert losses["reg"].item() == pytest.approx(expected_reg, rel=1e-5)
    assert losses["loss"].item() == pytest.approx(expected_cls + expected_reg, rel=1e-5)
    # Perfect offsets: no regression loss.
    perfect = asla_loss({"logits": logits, "offsets": _offsets_to(g, h, w)}, g, torch.ones(1, 1), torch.full((1, 1), s))
    assert perfect["reg"].item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("reg_type", ["l1", "oks"])
def test_loss_zero_safe_and_gradients_reach_both_branches(reg_type):
    torch.manual_seed(0)
    head = AslaHead(8, 3)
    features = torch.randn(2, 8, 16, 12)
    keypoints = torch.tensor(np.random.default_rng(1).uniform(1, 10, (2, 3, 2)), dtype=torch.float32)
    scale = torch.full((2, 3), 2.0)

    out = head(features)
    assert torch.sigmoid(out["logits"]).mean().item() == pytest.approx(0.01, rel=0.05)
    none = asla_loss(out, torch.full_like(keypoints, float("nan")), torch.zeros(2, 3), scale, reg_type=reg_type)
    for key in ("loss", "cls", "reg"):
        assert torch.isfinite(none[key]) and none[key].item() == 0.0
    none["loss"].backward()  # still attached to the graph; gradients finite (zero)
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)
    head.zero_grad()

    out = head(features)
    out["logits"].retain_grad()
    weight = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    losses = asla_loss(out, keypoints, weight, scale, reg_type=reg_type)
    assert losses["cls"].item() > 0 and losses["reg"].item() > 0
    assert losses["num_pos"].item() == 4 * 9
    losses["loss"].backward()
    for branch in (head.cls_branch, head.reg_branch):
        for layer in (branch[0], branch[-1]):
            assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    # Unlabeled keypoints contribute nothing: no gradient on their logits.
    assert out["logits"].grad[0, 2].abs().sum() == 0 and out["logits"].grad[1, 1].abs().sum() == 0
    assert out["logits"].grad[0, 0].abs().sum() > 0


def test_head_learns_to_localise_fixed_features():
    torch.manual_seed(0)
    b, c, h, w, n_kp = 4, 32, 16, 12, 3
    features = torch.randn(b, c, h, w)
    keypoints = torch.tensor(
        np.random.default_rng(0).uniform([1, 1], [w - 2, h - 2], (b, n_kp, 2)), dtype=torch.float32
    )
    weight, scale = torch.ones(b, n_kp), torch.full((b, n_kp), 2.0)
    head = AslaHead(c, n_kp)
    optimiser = torch.optim.Adam(head.parameters(), lr=3e-3)

    def error() -> float:
        head.eval()
        with torch.no_grad():
            points, _ = asla_decode(head(features))
        head.train()
        return float((points - keypoints).norm(dim=-1).mean())

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: thread hand-offs dominate (100x slower on 2 busy cores)
    try:
        before = error()
        for _ in range(300):
            optimiser.zero_grad()
            asla_loss(head(features), keypoints, weight, scale)["loss"].backward()
            optimiser.step()
        after = error()
    finally:
        torch.set_num_threads(threads)
    assert before > 2.0  # an untrained head is nowhere near
    # The spec asks for < 1 cell; it reaches ~0.02, and 0.25 also catches a wrong offset sign (which decodes to
    # 2 p_c - g, still within ~1 cell of g).
    assert after < 0.25, f"mean decode error {after:.2f} cells after training (before: {before:.2f})"
