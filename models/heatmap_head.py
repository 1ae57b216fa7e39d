"""Top-down heatmap head with an optional SAHR scale branch (docs/DESIGN.md §5).

The head takes backbone features that are already at heatmap resolution (stride 4, e.g. 48x64 for a 192x256 crop)
and returns per-keypoint heatmaps and, with SAHR, a per-keypoint per-pixel scale map ``s``.

Heatmap branch (SimpleBaseline's final layer): an optional 3x3 conv + BN + ReLU (``extra_conv=True``, off by default:
deconvolution backbones already end in conv + BN + ReLU; it helps when the features come straight from a backbone
stage), then a 1x1 conv ``C -> K`` initialised N(0, 0.001²) with zero bias, so the initial heatmaps are ~0.

SAHR scale branch (Luo et al., CVPR 2021; exactly docs/DESIGN.md §5): 1x1 conv ``C -> K``, BN, ReLU, 9x9 depthwise conv
``K -> K`` (groups = K, padding 4). The depthwise conv's weight *and* bias are zero-initialised, so ``s ≡ 0`` at the
start and training begins at the fixed-sigma baseline (``sahr_target(G, 0) == G``). The weights in front of it get no
gradient until the depthwise conv moves away from zero; the depthwise conv itself does get one, because its gradient
is the (non-zero) ReLU output correlated with dL/ds.

``s`` is returned raw, with no activation: the SAHR target ``G^(e^s)`` (models/losses.py, which says why the
exponent is ``e^s`` rather than the paper's ``1 + s``) is defined for every real ``s``, and its effective sigma is
``σ0 · e^(-s/2)``.
"""

from __future__ import annotations

import torch
from torch import nn

SAHR_KERNEL = 9  # the 9x9 depthwise conv of the SAHR scale branch


class HeatmapHead(nn.Module):
    """Heatmaps (and optionally SAHR scale maps) from stride-4 features.

    Args:
        in_channels: C, channels of the input features.
        num_keypoints: K, one heatmap (and one scale map) per keypoint.
        sahr: add the SAHR scale branch and return ``"scale"``.
        extra_conv: put a 3x3 conv (C -> C) + BN + ReLU before the final 1x1 heatmap conv.

    ``forward(features (B, C, h, w))`` returns ``{"heatmaps": (B, K, h, w)}`` plus ``"scale": (B, K, h, w)`` (raw s,
    exactly 0 at initialisation) when ``sahr``.
    """

    def __init__(self, in_channels: int, num_keypoints: int, sahr: bool = True, *, extra_conv: bool = False) -> None:
        super().__init__()
        if in_channels <= 0 or num_keypoints <= 0:
            raise ValueError(f"in_channels and num_keypoints must be positive, got {in_channels}, {num_keypoints}")
        self.in_channels = int(in_channels)
        self.num_keypoints = int(num_keypoints)
        self.sahr = bool(sahr)

        layers: list[nn.Module] = []
        if extra_conv:
            layers += [
                nn.Conv2d(in_channels, in_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(in_channels),
                nn.ReLU(inplace=True),
            ]
        self.heatmap_final = nn.Conv2d(in_channels, num_keypoints, 1)
        layers.append(self.heatmap_final)
        self.heatmap_branch = nn.Sequential(*layers)

        self.scale_branch: nn.Sequential | None = None
        if self.sahr:
            self.scale_depthwise = nn.Conv2d(
                num_keypoints, num_keypoints, SAHR_KERNEL, padding=SAHR_KERNEL // 2, groups=num_keypoints
            )
            self.scale_branch = nn.Sequential(
                # The 1x1 conv is followed by BN, so its bias would be cancelled anyway.
                nn.Conv2d(in_channels, num_keypoints, 1, bias=False),
                nn.BatchNorm2d(num_keypoints),
                nn.ReLU(inplace=True),
                self.scale_depthwise,
            )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """SimpleBaseline init for the heatmap branch; zero last layer for the scale branch."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.sahr:
            # Zero weight and bias: s ≡ 0 at the start, i.e. the fixed-sigma baseline.
            nn.init.zeros_(self.scale_depthwise.weight)
            nn.init.zeros_(self.scale_depthwise.bias)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """features (B, C, h, w) -> {"heatmaps": (B, K, h, w)[, "scale": (B, K, h, w)]}."""
        if features.ndim != 4 or features.shape[1] != self.in_channels:
            raise ValueError(f"expected features (B, {self.in_channels}, h, w), got {tuple(features.shape)}")
        out = {"heatmaps": self.heatmap_branch(features)}
        if self.scale_branch is not None:
            out["scale"] = self.scale_branch(features)
        return out
