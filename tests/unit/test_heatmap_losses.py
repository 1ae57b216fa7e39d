"""HeatmapHead (SAHR scale branch) and the heatmap losses: SAHR target, WAHR weight, regulariser, scale read-out."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional

from models.heatmap_head import HeatmapHead
from models.losses import (
    effective_sigma,
    heatmap_loss,
    sahr_target,
    scale_at,
    scale_regularizer,
    wahr_weight,
)
from pipeline.codec import HeatmapCodec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GAMMA = 0.01


# A (1, 2, 3, 3) case: keypoint 0 with a partial support (zeros around), keypoint 1 fully supported.
G_NP = np.array(
    [
        [[[0.0, 0.2, 0.0], [0.5, 1.0, 0.3], [0.0, 0.1, 0.05]]],
        [[[0.4, 0.6, 0.4], [0.6, 1.0, 0.6], [0.4, 0.6, 0.4]]],
    ],
    dtype=np.float64,
).reshape(1, 2, 3, 3)
P_NP = np.array(
    [
        [[0.1, 0.3, -0.2], [0.4, 0.8, 0.35], [0.05, 0.0, 1.2]],
        [[0.5, 0.5, 0.2], [0.7, 1.1, 0.6], [0.3, 0.4, 0.45]],
    ],
    dtype=np.float64,
).reshape(1, 2, 3, 3)
S_NP = np.array(
    [
        [[0.3, -0.2, 0.5], [0.1, 0.4, -0.3], [0.2, 0.25, -0.1]],
        [[-0.15, 0.05, 0.2], [0.3, -0.4, 0.1], [0.0, 0.35, -0.25]],
    ],
    dtype=np.float64,
).reshape(1, 2, 3, 3)
W_NP = np.array([[1.0, 0.5]])  # a fractional weight pins down the (w·P − w·T)² convention


def _hand(sahr: bool, wahr: bool) -> tuple[float, float, np.ndarray]:
    """Loss, regulariser and dLoss/dP by plain loops over the cells (float64)."""
    b, k, h, w = G_NP.shape
    n = b * k * h * w
    loss, grad = 0.0, np.zeros_like(P_NP)
    reg_sum = 0.0
    for bi in range(b):
        for ki in range(k):
            wk = W_NP[bi, ki]
            for y in range(h):
                for x in range(w):
                    g, p, s = G_NP[bi, ki, y, x], P_NP[bi, ki, y, x], S_NP[bi, ki, y, x]
                    t = g
                    if sahr and g > 0:
                        t = g ** math.exp(s)
                        reg_sum += s * s
                    wt, dwt = 1.0, 0.0
                    if wahr:
                        gg = g**GAMMA if g > 0 else 0.0
                        wt = gg * abs(1 - p) + (1 - gg) * abs(p)
                        dwt = -gg * np.sign(1 - p) + (1 - gg) * np.sign(p)
                    e = (wk * p - wk * t) ** 2
                    loss += wt * e / n
                    grad[bi, ki, y, x] = (dwt * e + wt * 2 * wk * wk * (p - t)) / n
    reg = reg_sum / n  # the official SWAHR normalisation: a mean over every cell, like the heatmap term
    return loss, reg, grad


def _t(a: np.ndarray, grad: bool = False) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


@pytest.mark.parametrize(("sahr", "wahr"), [(True, True), (False, True), (True, False), (False, False)])
def test_loss_matches_hand_computation(sahr: bool, wahr: bool):
    pred = _t(P_NP, grad=True)
    out = heatmap_loss(pred, _t(G_NP), _t(W_NP), _t(S_NP), sahr=sahr, wahr=wahr, gamma=GAMMA)
    loss, reg, grad = _hand(sahr, wahr)
    assert out["heatmap"].item() == pytest.approx(loss, rel=1e-12)
    assert out["scale_reg"].item() == pytest.approx(reg, rel=1e-12, abs=0)
    assert out["loss"].item() == pytest.approx(loss + reg, rel=1e-12)
    out["heatmap"].backward()
    # The gradient includes W's own dependence on P (W is not detached): W'(P)·e + 2·W·w²·(P − T).
    np.testing.assert_allclose(pred.grad.numpy(), grad, rtol=1e-10, atol=1e-15)


def test_wahr_weight_matches_hand_computation():
    got = wahr_weight(_t(G_NP), _t(P_NP), GAMMA).numpy()
    want = np.zeros_like(G_NP)
    for idx in np.ndindex(G_NP.shape):
        g, p = G_NP[idx], P_NP[idx]
        gg = g**GAMMA if g > 0 else 0.0
        want[idx] = gg * abs(1 - p) + (1 - gg) * abs(p)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # Off the support W = |P|; at the peak (G = 1) W = |1 − P|.
    assert got[0, 0, 0, 0] == pytest.approx(0.1)
    assert got[0, 0, 1, 1] == pytest.approx(0.2)


def test_wahr_off_is_target_weighted_mse():
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(3, 4, 8, 6, generator=gen)
    gauss = torch.rand(3, 4, 8, 6, generator=gen)
    weight = torch.tensor([[1.0, 0.0, 1.0, 0.3], [0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    scale = torch.randn(3, 4, 8, 6, generator=gen)
    w = weight[..., None, None]
    want = functional.mse_loss(pred * w, gauss * w)  # MMPose 0.x KeypointMSELoss(use_target_weight=True), no 0.5 factor
    for out in (
        heatmap_loss(pred, gauss, weight, None, wahr=False),
        heatmap_loss(pred, gauss, weight, scale, sahr=False, wahr=False),
    ):
        torch.testing.assert_close(out["heatmap"], want, rtol=0, atol=0)
        assert out["scale_reg"].item() == 0.0
        assert out["loss"].item() == out["heatmap"].item()
    # With WAHR on, the weight changes the value.
    assert heatmap_loss(pred, gauss, weight, None)["heatmap"].item() != pytest.approx(want.item(), rel=1e-3)


def _codec_targets(sigma: float = 2.0) -> torch.Tensor:
    codec = HeatmapCodec((192, 256), (48, 64), sigma=sigma)
    pts = codec.to_crop(np.array([[10.3, 20.7], [24.0, 31.0], [40.5, 5.2], [0.4, 62.9]]))
    return torch.from_numpy(codec.encode(pts, np.full(4, 2))[0]).to(torch.float64)[None]


def test_sahr_target_is_g_at_zero_scale():
    g = _codec_targets()
    assert torch.equal(sahr_target(g, torch.zeros_like(g)), g)
    # Off the support T is 0 whatever s is.
    t = sahr_target(g, torch.full_like(g, 3.0))
    assert torch.equal(t[g == 0], torch.zeros_like(t[g == 0]))
    assert (t[g > 0] > 0).all()


def test_sahr_target_is_the_gaussian_of_the_effective_sigma():
    # G^(e^s) of a sigma-2 Gaussian is the Gaussian of sigma 2·e^(-s/2) on the same window, for any s
    support = _codec_targets() > 0
    for s in (-2.0, -0.5, 0.3, 1.5):
        t = sahr_target(_codec_targets(2.0), torch.full_like(support, s, dtype=torch.float64))
        other = _codec_targets(2.0 * math.exp(-s / 2))
        both = support & (other > 0)  # each is truncated to its own ±3σ window
        assert both.sum() > 100
        np.testing.assert_allclose(t[both].numpy(), other[both].numpy(), rtol=1e-6)  # the codec is float32


def test_sahr_target_is_monotone_in_scale():
    # the second-order expansion of G^(1+s) turns round at s = 1/|ln G|: past it a larger s WIDENED the tails
    g = _codec_targets()
    off_peak = (g > 0) & (g < 0.999)
    previous = None
    for s in np.linspace(-3.0, 3.0, 25):
        t = sahr_target(g, torch.full_like(g, float(s)))[off_peak]
        if previous is not None:
            assert (t < previous).all()  # s > 0 sharpens (lower off-peak values), s < 0 widens
        previous = t


def test_sahr_target_gradient_is_finite_and_analytic():
    g = _t(G_NP, grad=True)  # also checks no NaN from ln/pow at G = 0 when G itself carries a gradient
    s = _t(S_NP, grad=True)
    t = sahr_target(g, s)
    (t.sum() + wahr_weight(g, _t(P_NP)).sum()).backward()
    assert torch.isfinite(g.grad).all() and torch.isfinite(s.grad).all()
    log_g = np.log(np.where(G_NP > 0, G_NP, 1.0))
    t_np = np.where(G_NP > 0, np.exp(np.exp(S_NP) * log_g), 0.0)
    np.testing.assert_allclose(s.grad.numpy(), t_np * log_g * np.exp(S_NP), rtol=1e-12)  # dT/ds = T · ln G · e^s
    assert (s.grad.numpy()[G_NP == 0] == 0).all()


def test_scale_regularizer():
    g = _codec_targets()
    assert scale_regularizer(g, torch.zeros_like(g)).item() == 0.0
    share = (g > 0).double().mean().item()  # the support's share of all cells
    assert 0 < share < 1
    for c in (-0.5, 0.1, 0.3):
        # a mean over every cell (the heatmap term's normalisation), of s² on the support
        assert scale_regularizer(g, torch.full_like(g, c)).item() == pytest.approx(c * c * share)
    # Only the support counts: huge s off the support does not change it.
    s = torch.where(g > 0, 0.2, 100.0)
    assert scale_regularizer(g, s).item() == pytest.approx(0.04 * share)
    # Minimal at 0: zero gradient there, pushes towards 0 elsewhere.
    s0 = torch.zeros_like(g, requires_grad=True)
    scale_regularizer(g, s0).backward()
    assert (s0.grad == 0).all()
    # Keypoints with weight 0 are left out.
    s = torch.zeros_like(g)
    s[0, 1] = 5.0
    weight = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    assert scale_regularizer(g, s, weight).item() == 0.0
    assert scale_regularizer(g, s).item() > 0.0
    # Empty support: 0, with a finite gradient.
    s = torch.ones_like(g, requires_grad=True)
    reg = scale_regularizer(torch.zeros_like(g), s)
    reg.backward()
    assert reg.item() == 0.0 and torch.isfinite(s.grad).all()


def test_effective_sigma():
    s = torch.tensor([[0.0, -0.5, 0.5, 2 * math.log(2), -7.0, float("nan")]])
    sig = effective_sigma(2.0, s)
    assert sig.shape == s.shape
    assert sig[0, 0].item() == 2.0
    assert sig[0, 1].item() > 2.0 and sig[0, 2].item() < 2.0
    assert sig[0, 3].item() == pytest.approx(1.0)  # 2 · e^(-ln 2)
    assert sig[0, 1].item() == pytest.approx(2.0 * math.exp(0.25))
    assert sig[0, 4].item() == pytest.approx(2.0 * math.exp(3.5))  # finite for any s, no clamp needed
    assert math.isnan(sig[0, 5].item())


def test_scale_at_reads_the_right_cell():
    b, k, h, w = 2, 3, 5, 4
    scale = torch.arange(b * k * h * w, dtype=torch.float32).reshape(b, k, h, w)
    pts = torch.tensor(
        [
            [[2.4, 1.6], [0.0, 0.0], [3.0, 4.0]],
            [[-3.0, 2.2], [9.0, 99.0], [float("nan"), 1.0]],
        ]
    )
    got = scale_at(scale, pts)
    want = torch.tensor(
        [
            [scale[0, 0, 2, 2], scale[0, 1, 0, 0], scale[0, 2, 4, 3]],
            [scale[1, 0, 2, 0], scale[1, 1, 4, 3], float("nan")],  # clamped to the map; NaN point -> NaN
        ]
    )
    torch.testing.assert_close(got, want, equal_nan=True)
    assert scale_at(scale, pts.numpy()).shape == (b, k)
    # Bilinear: equals nearest on cell centres and interpolates between them.
    centres = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]]] * 2)
    torch.testing.assert_close(scale_at(scale, centres, mode="bilinear"), scale_at(scale, centres))
    mid = torch.tensor([[[1.5, 2.5], [0.25, 0.0], [3.0, 3.5]]] * 2)
    lin = scale_at(scale, mid, mode="bilinear")
    assert lin[0, 0].item() == pytest.approx(scale[0, 0, 2:4, 1:3].mean().item())
    assert lin[0, 1].item() == pytest.approx(0.75 * scale[0, 1, 0, 0].item() + 0.25 * scale[0, 1, 0, 1].item())
    assert lin[0, 2].item() == pytest.approx(scale[0, 2, 3:5, 3].mean().item())


def test_head_shapes_and_zero_initial_scale():
    head = HeatmapHead(16, 5, sahr=True)
    out = head(torch.randn(2, 16, 12, 9))
    assert out["heatmaps"].shape == out["scale"].shape == (2, 5, 12, 9)
    assert torch.equal(out["scale"], torch.zeros_like(out["scale"]))
    assert out["heatmaps"].abs().max().item() < 0.05  # std-0.001 init: starts near 0
    plain = HeatmapHead(16, 5, sahr=False, extra_conv=True)
    assert set(plain(torch.randn(2, 16, 12, 9))) == {"heatmaps"}
    assert plain.scale_branch is None


def test_heatmap_loss_trains_the_zero_initialised_scale_head():
    torch.manual_seed(0)
    codec = HeatmapCodec((64, 48), (16, 12), sigma=1.5)
    pts = np.array([[[10.0, 14.0], [40.0, 30.0], [30.0, 8.0]], [[50.0, 40.0], [20.0, 20.0], [5.0, 5.0]]])
    g = torch.from_numpy(np.stack([codec.encode(p, np.full(3, 2))[0] for p in pts]))
    head = HeatmapHead(8, 3, sahr=True)
    out = head(torch.randn(2, 8, 12, 16))
    loss = heatmap_loss(out["heatmaps"], g, torch.ones(2, 3), out["scale"])
    assert loss["scale_reg"].item() == 0.0
    loss["loss"].backward()
    dw = head.scale_depthwise.weight.grad
    assert dw is not None and dw.abs().max().item() > 0
    assert head.scale_depthwise.bias.grad.abs().max().item() > 0
    # Without SAHR in the loss the scale head gets nothing.
    head.zero_grad()
    out = head(torch.randn(2, 8, 12, 16))
    heatmap_loss(out["heatmaps"], g, torch.ones(2, 3), out["scale"], sahr=False)["loss"].backward()
    assert head.scale_depthwise.weight.grad is None or head.scale_depthwise.weight.grad.abs().max().item() == 0


def test_head_learns_a_gaussian_target_with_sahr_and_wahr():
    torch.manual_seed(0)
    codec = HeatmapCodec((32, 32), (8, 8), sigma=1.0)
    pts = np.array([[[10.0, 14.0], [22.0, 6.0]], [[18.0, 25.0], [5.0, 20.0]]])
    g = torch.from_numpy(np.stack([codec.encode(p, np.full(2, 2))[0] for p in pts]))
    weight = torch.ones(2, 2)
    # More channels (256) than cells (2 x 8 x 8): a 1x1 conv on random features can represent any target.
    features = torch.randn(2, 256, 8, 8)
    head = HeatmapHead(256, 2, sahr=True)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    losses = []
    for _ in range(300):
        out = head(features)
        loss = heatmap_loss(out["heatmaps"], g, weight, out["scale"])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10
    head.eval()
    with torch.no_grad():
        hm = head(features)["heatmaps"]
    # The learned maps decode like the targets themselves (one heatmap cell = 4 crop px).
    np.testing.assert_allclose(codec.decode(hm)[0], codec.decode(g)[0], atol=4.0)
