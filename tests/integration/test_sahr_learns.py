"""The SAHR scale head learns: keypoints whose labels are ambiguous get a wider effective sigma than clear ones.

Constructed set: each 64x64 image holds K = 4 coloured squares at random places; keypoint k is the centre of square
k. Keypoints 0 and 1 are labeled exactly; keypoints 2 and 3 are labeled with Gaussian jitter (sd 1.5 heatmap
cells, fresh every step), so no network can put their peak anywhere sharper than the jitter: the heatmap loss can
only be lowered by widening their SAHR target (s < 0, sigma = sigma0 · exp(-s / 2) > sigma0). A short training
(plain torch, the project's PoseModel, loss and decoding) must separate the two groups.
"""

from __future__ import annotations

import numpy as np
import torch

from models.pose_model import build_model
from pipeline.codec import HeatmapCodec
from pipeline.keypoints import KeypointSchema

INPUT = 64
K = 4
CLEAR, AMBIGUOUS = [0, 1], [2, 3]
JITTER_CELLS = 1.5
COLOURS = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0], [1.0, 1.0, -1.0]])
# Margin the test holds the head to: ambiguous sigma at least this much larger than clear sigma (measured after
# 250 steps: clear ~2.05, ambiguous ~2.6 heatmap px; at the zero init both are exactly 2.0).
MARGIN = 0.2


def _batch(rng: np.random.Generator, codec: HeatmapCodec, n: int) -> dict[str, torch.Tensor]:
    images = torch.full((n, 3, INPUT, INPUT), -0.5)
    heatmaps, weights, centres = [], [], np.zeros((n, K, 2))
    for i in range(n):
        for k in range(K):
            x, y = rng.integers(6, INPUT - 6, size=2)
            images[i, :, y - 3 : y + 4, x - 3 : x + 4] = COLOURS[k][:, None, None]
            centres[i, k] = (x, y)
        labels = centres[i].copy()
        labels[AMBIGUOUS] += rng.normal(0.0, JITTER_CELLS * codec.stride[0], size=(len(AMBIGUOUS), 2))
        hm, w = codec.encode(labels, np.full(K, 2))
        heatmaps.append(hm)
        weights.append(w)
    return {
        "image": images,
        "heatmaps": torch.from_numpy(np.stack(heatmaps)),
        "target_weight": torch.from_numpy(np.stack(weights)),
        "centres": torch.from_numpy(centres),
    }


def test_sahr_sigma_is_larger_for_ambiguous_keypoints():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    schema = KeypointSchema.from_coco_category(
        {"id": 1, "name": "dots", "keypoints": [f"k{i}" for i in range(K)], "skeleton": []}
    )
    codec = HeatmapCodec((INPUT, INPUT), (INPUT // 4, INPUT // 4), sigma=2.0)
    model = build_model(
        backbone="tiny", variant=16, head="heatmap", codec=codec, schema=schema
    )  # SAHR and WAHR are the defaults
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.set_num_threads(2)
    model.train()
    for _ in range(250):
        batch = _batch(rng, codec, 16)
        loss = model.loss(model(batch["image"]), batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    model.eval()
    test = _batch(np.random.default_rng(1), codec, 64)
    with torch.no_grad():
        pred = model.decode(model(test["image"]))
    # the network found the squares (else sigma would say nothing): clear keypoints within 2 px
    error = np.linalg.norm(pred.keypoints - test["centres"].numpy(), axis=-1)
    assert np.median(error[:, CLEAR]) < 2.0, error[:, CLEAR].mean(0)
    sigma = pred.sahr_sigma
    clear, ambiguous = float(sigma[:, CLEAR].mean()), float(sigma[:, AMBIGUOUS].mean())
    assert ambiguous > clear + MARGIN, (clear, ambiguous)
    # per image, not only on average: the ambiguous pair is wider in most of the 64 test images
    assert (sigma[:, AMBIGUOUS].mean(1) > sigma[:, CLEAR].mean(1)).mean() >= 0.9
