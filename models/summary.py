"""Model size and cost: parameters and FLOPs, and ``python -m pipeline summary``, a table of every backbone.

Conventions. ``count_flops`` returns GFLOPs = 2 x multiply-accumulates, the convention of
``torch.utils.flop_counter.FlopCounterMode`` that it uses (one multiply + one add per MAC). It counts convolutions,
transposed convolutions (per input pixel: the true MAC count) and matrix products only; BatchNorm, ReLU, additions,
pooling and upsampling are memory-bound and < 1% of the arithmetic here. The pose papers' "GFLOPs" are MACs
(``count_macs`` = ``count_flops / 2``), so the table prints both.

Cross-check at 256x192 (w x h), backbone + 1x1 head for 17 keypoints (MACs):

=====================  ===========  ===========  =========================  ======================
model                  params here  GMACs here   MMPose model zoo (mmcv)    paper (HRNet Table 1)
=====================  ===========  ===========  =========================  ======================
SimpleBaseline R-50    34.00M       5.43         34.0M / 5.46               34.0M / 8.9
HRNet-W32              28.54M       7.65         28.54M / 7.70              28.5M / 7.1
HRNet-W48              63.60M       15.69        63.6M / 15.77              63.6M / 14.6
=====================  ===========  ===========  =========================  ======================

Parameters match the published counts. MMPose's counter (mmcv ``get_model_complexity_info``) also counts BN, ReLU
and upsampling, hence its +0.5-1%. The papers' figures come from another counter and are off both ways (R-50: 8.9,
1.6x the MACs of the same network; W32: 7.1, 7% fewer), which is why later work and MMPose quote 5.46 / 7.7; the
exact parameter counts are the better check that the architectures are the published ones.

FLOPs are counted on the meta device (``torch.func.functional_call`` with meta copies of the parameters): shapes
only, no arithmetic, so even HRNet-W48 is counted in well under a second and nothing large is allocated.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

Size = tuple[int, int]  # (width, height)

# (name, variant) rows of the table, and the published figures at 256x192 with a 17-keypoint head:
# (params M, GMACs MMPose model zoo, GMACs paper).
TABLE_MODELS: tuple[tuple[str, int], ...] = (("tiny", 32), ("resnet", 18), ("resnet", 50), ("hrnet", 32), ("hrnet", 48))
PUBLISHED: dict[tuple[str, int], tuple[float, float, float]] = {
    ("resnet", 50): (34.0, 5.46, 8.9),
    ("hrnet", 32): (28.5, 7.7, 7.1),
    ("hrnet", 48): (63.6, 15.77, 14.6),
}


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters once; buffers such as BN running stats not counted)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def count_flops(module: nn.Module, input_size: Size = (192, 256)) -> float:
    """GFLOPs (2 x multiply-accumulates) of one forward pass on one ``(1, 3, h, w)`` image, ``input_size = (w, h)``.

    Runs on the meta device in eval mode; ``module`` itself (weights, mode, device) is left untouched.
    """
    w, h = input_size
    # a copy: functional_call on the module itself left it broken for a later CPU bf16 autocast forward (conv got
    # bf16 input with fp32 bias: measured with torch 2.13), so the module is never touched at all
    module = copy.deepcopy(module)
    tensors = {k: torch.empty_like(t, device="meta") for k, t in module.named_parameters()}
    tensors |= {k: torch.empty_like(t, device="meta") for k, t in module.named_buffers()}
    module.eval()  # BN in training mode would also work, but eval is what inference costs
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        functional_call(module, tensors, (torch.empty(1, 3, h, w, device="meta"),))
    return counter.get_total_flops() / 1e9


def count_macs(module: nn.Module, input_size: Size = (192, 256)) -> float:
    """GMACs (what pose papers call "GFLOPs") of one forward pass: ``count_flops / 2``."""
    return count_flops(module, input_size) / 2


def with_head(backbone: nn.Module, num_keypoints: int) -> nn.Module:
    """``backbone`` + a 1x1 conv to ``num_keypoints`` heatmaps, the head the published counts include."""
    return nn.Sequential(backbone, nn.Conv2d(backbone.out_channels, num_keypoints, kernel_size=1))


def summary_rows(
    input_size: Size = (192, 256),
    num_keypoints: int = 17,
    models: Sequence[tuple[str, int]] = TABLE_MODELS,
) -> list[dict]:
    """One dict per model: name, variant, params (backbone only and with the head), GMACs and GFLOPs (with head)."""
    from models.backbones import build_backbone  # here, so that importing this module stays cheap

    rows = []
    for name, variant in models:
        backbone = build_backbone(name, variant)  # type: ignore[arg-type]
        model = with_head(backbone, num_keypoints)
        gflops = count_flops(model, input_size)
        rows.append(
            {
                "backbone": name,
                "variant": variant,
                "params_backbone": count_parameters(backbone),
                "params": count_parameters(model),
                "gmacs": gflops / 2,
                "gflops": gflops,
            }
        )
    return rows


def format_table(rows: Sequence[dict], input_size: Size, num_keypoints: int) -> str:
    """Markdown table of ``summary_rows``; published figures are shown only at 192x256 with 17 keypoints."""
    published = tuple(input_size) == (192, 256) and num_keypoints == 17
    w, h = input_size
    header = f"| backbone | params backbone (M) | params +head K={num_keypoints} (M) | GMACs at {w}x{h} |"
    header += f" GFLOPs at {w}x{h} |"
    sep = "|---|---|---|---|---|"
    if published:
        header += " published params (M) / GMACs MMPose / paper |"
        sep += "---|"
    lines = [header, sep]
    for r in rows:
        label = {"tiny": f"tiny (width {r['variant']})", "resnet": f"resnet-{r['variant']} (SimpleBaseline)"}.get(
            r["backbone"], f"hrnet-w{r['variant']}"
        )
        line = f"| {label} | {r['params_backbone'] / 1e6:.2f} | {r['params'] / 1e6:.2f} | {r['gmacs']:.2f} |"
        line += f" {r['gflops']:.2f} |"
        if published:
            ref = PUBLISHED.get((r["backbone"], r["variant"]))
            line += f" {ref[0]} / {ref[1]} / {ref[2]} |" if ref else " - |"
        lines.append(line)
    return "\n".join(lines)


def summary_command(input_size: tuple[int, int], keypoints: int) -> int:
    """``python -m pipeline summary``: parameters and GMACs of every backbone with a ``keypoints``-channel head."""
    w, h = input_size
    if w <= 0 or h <= 0 or w % 32 or h % 32:
        raise ValueError(f"--input-size must be positive multiples of 32 (resnet and hrnet need it), got {w} {h}")
    if keypoints < 1:
        raise ValueError(f"--keypoints must be >= 1, got {keypoints}")
    print(format_table(summary_rows((w, h), keypoints), (w, h), keypoints))
    print("\nGMACs = multiply-accumulates (the papers' 'GFLOPs'); GFLOPs = 2 x GMACs. Convolutions only.")
    return 0
