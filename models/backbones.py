"""Backbones for top-down heatmap models: image crop -> stride-4 feature map.

Every backbone is a :class:`Backbone`: ``x (B, 3, H, W) -> (B, out_channels, H/4, W/4)``, computed as
``body(stem(x))``; H and W must be multiples of 32 for ``resnet`` and ``hrnet``, of 4 for ``tiny``. The
semi-supervised trainer mixes the ``stem`` features of two images (dual-branch feature Mixup, docs/DESIGN.md §5), so
``stem`` always ends at one intermediate tensor, at stride 4 for all three:

=========  ======================================================  =================================================
backbone   stem -> (B, C, H/4, W/4)                                body
=========  ======================================================  =================================================
tiny       conv s2, conv s2, one residual block (C = width)        residual stages to stride 32, upsampling decoder
                                                                   with skips back to stride 4 (C = width)
resnet     conv1, bn1, relu, maxpool, layer1 (C = 64 or 256)       layer2-4 (stride 32), 3 deconvolutions (C = 256)
hrnet      conv1, bn1, conv2, bn2, relu, layer1 (C = 256)          transition1, stage2, ..., stage4; the stride-4
                                                                   branch of the last module (C = width)
=========  ======================================================  =================================================

Parameter names of ``resnet`` and ``hrnet`` are those of the reference implementations (torchvision ResNet /
Xiao et al.'s ``pose_resnet.py``, Sun et al.'s ``pose_hrnet.py``; MMPose uses the same inside ``backbone.``), only
placed under ``stem.`` or ``body.``. ``Backbone.reference_prefixes`` maps the reference prefixes to ours, for
``models.weights.load_state_dict_file(..., rename=backbone.reference_prefixes)``.

Initialisation follows each reference: torchvision's for the ResNet trunk (Kaiming normal, fan_out), normal(0.001) for
SimpleBaseline's deconvolutions and everything in HRNet; BatchNorm weight 1, bias 0.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

from torch import Tensor, nn

BackboneName = Literal["tiny", "resnet", "hrnet"]
BACKBONES: tuple[str, ...] = ("tiny", "resnet", "hrnet")
RESNET_DEPTHS: tuple[int, ...] = (18, 34, 50, 101)
HRNET_WIDTHS: tuple[int, ...] = (32, 48)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut; ``stride`` on the first conv."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, "ResNet v1.5" as torchvision), 1x1 expand by 4."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


Block = type[BasicBlock] | type[Bottleneck]


def make_layer(block: Block, inplanes: int, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
    """``blocks`` residual blocks; the first changes resolution/width (with a 1x1 conv + BN shortcut when needed)."""
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            conv1x1(inplanes, planes * block.expansion, stride), nn.BatchNorm2d(planes * block.expansion)
        )
    layers = [block(inplanes, planes, stride, downsample)]
    layers += [block(planes * block.expansion, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [conv3x3(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Backbone(nn.Module):
    """``x (B, 3, H, W) -> body(stem(x)) (B, out_channels, H/stride, W/stride)``, ``stride`` = 4.

    Subclasses set ``stem`` (ending at one intermediate feature map, the Mixup point), ``body`` and ``out_channels``.
    ``name``/``variant`` are what ``build_backbone`` was called with; ``reference_prefixes`` maps parameter-name
    prefixes of the reference implementation to this module's (empty when there is no reference).
    """

    stride: int = 4

    def __init__(self, name: str, variant: int, out_channels: int, stem: nn.Module, body: nn.Module) -> None:
        super().__init__()
        self.name = name
        self.variant = variant
        self.out_channels = out_channels
        self.stem = stem
        self.body = body
        self.reference_prefixes: dict[str, str] = {}

    def forward(self, x: Tensor) -> Tensor:
        return self.body(self.stem(x))

    def extra_repr(self) -> str:
        return f"name={self.name!r}, variant={self.variant}, out_channels={self.out_channels}, stride={self.stride}"


# ---------------------------------------------------------------------------------------------------------- tiny


class _TinyBody(nn.Module):
    """Stride-4 features -> residual stages at strides 8, 16, 32 -> top-down decoder back to stride 4.

    The decoder is FPN-like: upsample (nearest) the coarser map, add the 1x1-projected skip of the same stride, then one
    3x3 conv-BN-ReLU. Adding instead of concatenating keeps the decoder convs narrow, which is where a stride-4 network
    spends its time on a CPU.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        w = width
        self.layer2 = make_layer(BasicBlock, w, 2 * w, 1, stride=2)  # stride 8
        self.layer3 = make_layer(BasicBlock, 2 * w, 4 * w, 2, stride=2)  # stride 16
        self.layer4 = make_layer(BasicBlock, 4 * w, 8 * w, 1, stride=2)  # stride 32
        # Lateral 1x1 projections to the decoder width of each stride; the stride-4 skip already has width w.
        self.lateral16 = conv1x1(8 * w, 4 * w)
        self.lateral8 = conv1x1(2 * w, 2 * w)
        self.smooth16 = conv_bn_relu(4 * w, 2 * w)
        self.smooth8 = conv_bn_relu(2 * w, w)
        self.smooth4 = conv_bn_relu(w, w)

    def forward(self, x4: Tensor) -> Tensor:
        x8 = self.layer2(x4)
        x16 = self.layer3(x8)
        x32 = self.layer4(x16)
        y = self.smooth16(_upsample_to(self.lateral16(x32), x16) + x16)
        y = self.smooth8(_upsample_to(y, x8) + self.lateral8(x8))
        return self.smooth4(_upsample_to(y, x4) + x4)


def _upsample_to(x: Tensor, like: Tensor) -> Tensor:
    # Nearest with an explicit size rather than scale_factor=2, so odd feature sizes (input not a multiple of 32)
    # still line up with their skip.
    return nn.functional.interpolate(x, size=like.shape[-2:], mode="nearest")


class TinyNet(Backbone):
    """The CPU default: a small residual encoder-decoder, ``width`` channels at stride 4 (8x width at stride 32).

    Stem (the Mixup point): conv 3x3 s2 (width/2), conv 3x3 s2 (width), one BasicBlock -> ``(B, width, H/4, W/4)``.
    Body: BasicBlock stages of 2w/4w/8w channels at strides 8/16/32 (1/2/1 blocks), then an FPN-like decoder with
    skips from strides 16, 8 and 4 -> ``(B, width, H/4, W/4)``. Receptive field 287 px (the extent of the input
    gradient of one output cell; tested), so a whole 192x256 person crop is in view of every output cell.

    Cost at 192x256: 1.66M parameters, 0.33 GMACs; most of it is the four 3x3 convs at stride 4 and the stride-16
    blocks, which is why the decoder is narrow.
    """

    def __init__(self, width: int = 32) -> None:
        if width < 8 or width % 8:
            raise ValueError(f"tiny width must be a multiple of 8 and >= 8, got {width}")
        stem = nn.Sequential(
            OrderedDict(
                conv1=conv_bn_relu(3, width // 2, stride=2),
                conv2=conv_bn_relu(width // 2, width, stride=2),
                layer1=make_layer(BasicBlock, width, width, 1),
            )
        )
        super().__init__("tiny", width, width, stem, _TinyBody(width))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Zero-init the last BN of each residual branch: every block starts as the identity, which trains from
        # scratch faster and more stably (Goyal et al. 2017); tiny never starts from ImageNet weights.
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)


# -------------------------------------------------------------------------------------------------------- resnet

_RESNET_SPECS: dict[int, tuple[Block, tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


class PoseResNet(Backbone):
    """SimpleBaseline (Xiao et al., ECCV 2018): ResNet-``depth`` + 3 x (ConvTranspose 4x4 s2, BN, ReLU), 256 channels.

    Stem (the Mixup point): conv1, bn1, relu, maxpool, layer1 -> ``(B, 64 or 256, H/4, W/4)`` (BasicBlock or
    Bottleneck). Body: layer2, layer3, layer4 (stride 32), deconv_layers -> ``(B, 256, H/4, W/4)``.
    Names: torchvision's ``conv1.* ... layer4.*`` and the reference's ``deconv_layers.*`` under ``stem.``/``body.``.
    """

    def __init__(self, depth: int = 18) -> None:
        if depth not in _RESNET_SPECS:
            raise ValueError(f"resnet depth must be one of {RESNET_DEPTHS}, got {depth}")
        block, counts = _RESNET_SPECS[depth]
        stem = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False),
                bn1=nn.BatchNorm2d(64),
                relu=nn.ReLU(inplace=True),
                maxpool=nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
                layer1=make_layer(block, 64, 64, counts[0]),
            )
        )
        e = block.expansion
        deconvs: list[nn.Module] = []
        inplanes = 512 * e
        for _ in range(3):
            # kernel 4, padding 1, stride 2: exactly doubles the size; no bias because BN follows (as the reference).
            deconvs += [
                nn.ConvTranspose2d(inplanes, 256, kernel_size=4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(256),
                nn.ReLU(inplace=True),
            ]
            inplanes = 256
        body = nn.Sequential(
            OrderedDict(
                layer2=make_layer(block, 64 * e, 128, counts[1], stride=2),
                layer3=make_layer(block, 128 * e, 256, counts[2], stride=2),
                layer4=make_layer(block, 256 * e, 512, counts[3], stride=2),
                deconv_layers=nn.Sequential(*deconvs),
            )
        )
        super().__init__("resnet", depth, 256, stem, body)
        self.reference_prefixes = {
            **{f"{n}.": f"stem.{n}." for n in ("conv1", "bn1", "layer1")},
            **{f"{n}.": f"body.{n}." for n in ("layer2", "layer3", "layer4", "deconv_layers")},
        }
        for m in self.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, std=0.001)
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------------------------------------- hrnet


class HighResolutionModule(nn.Module):
    """Parallel branches (``num_blocks`` BasicBlocks each) followed by the all-to-all exchange ("fuse") unit.

    ``x``: list of ``len(in_channels)`` maps, branch i at stride ``4 * 2**i``. Fuse output i is
    ``relu(sum_j f_ij(x_j))``: j > i: 1x1 conv + BN + nearest upsampling; j < i: (i - j) stride-2 3x3 convs
    (ReLU between them, not after the last); j == i: identity. With ``multi_scale_output=False`` only output 0 (the
    stride-4 map) is built, as in the last module of the reference pose_hrnet.
    """

    def __init__(self, channels: list[int], num_blocks: int, multi_scale_output: bool = True) -> None:
        super().__init__()
        self.num_branches = len(channels)
        self.branches = nn.ModuleList(make_layer(BasicBlock, c, c, num_blocks) for c in channels)
        self.fuse_layers = self._make_fuse_layers(channels, multi_scale_output) if self.num_branches > 1 else None
        self.relu = nn.ReLU(inplace=True)

    @staticmethod
    def _make_fuse_layers(channels: list[int], multi_scale_output: bool) -> nn.ModuleList:
        n = len(channels)
        fuse_layers = nn.ModuleList()
        for i in range(n if multi_scale_output else 1):
            row = nn.ModuleList()
            for j in range(n):
                if j > i:
                    row.append(
                        nn.Sequential(
                            conv1x1(channels[j], channels[i]),
                            nn.BatchNorm2d(channels[i]),
                            nn.Upsample(scale_factor=2 ** (j - i), mode="nearest"),
                        )
                    )
                elif j == i:
                    row.append(None)  # keeps the reference's indices: fuse_layers.i.j
                else:
                    steps = [conv_bn_relu(channels[j], channels[j], stride=2) for _ in range(i - j - 1)]
                    steps.append(conv_bn_relu(channels[j], channels[i], stride=2, relu=False))
                    row.append(nn.Sequential(*steps))
            fuse_layers.append(row)
        return fuse_layers

    def forward(self, x: list[Tensor]) -> list[Tensor]:
        x = [branch(xi) for branch, xi in zip(self.branches, x, strict=True)]
        if self.fuse_layers is None:
            return x
        out = []
        for i, row in enumerate(self.fuse_layers):
            y = x[i]
            for j, f in enumerate(row):
                if j != i:
                    y = y + f(x[j])
            out.append(self.relu(y))
        return out


def _make_transition(pre: list[int], cur: list[int]) -> nn.ModuleList:
    """Adapt ``pre`` branches to ``cur``: 3x3 conv where the width changes, None where it does not, and a new lowest
    branch made from the previous lowest by stride-2 3x3 convs."""
    layers = nn.ModuleList()
    for i, c in enumerate(cur):
        if i < len(pre):
            layers.append(conv_bn_relu(pre[i], c) if c != pre[i] else None)
        else:
            steps = [conv_bn_relu(pre[-1], pre[-1], stride=2) for _ in range(i - len(pre))]
            steps.append(conv_bn_relu(pre[-1], c, stride=2))
            layers.append(nn.Sequential(*steps))
    return layers


class _HRNetBody(nn.Module):
    """Stride-4 stem features (256 ch) -> stages 2-4 -> the stride-4 branch ``(B, width, H/4, W/4)``."""

    # (modules, branches) of stages 2, 3, 4 in the standard config; 4 BasicBlocks per branch everywhere.
    STAGES = ((1, 2), (4, 3), (3, 4))

    def __init__(self, width: int) -> None:
        super().__init__()
        pre = [256]
        for s, (num_modules, num_branches) in enumerate(self.STAGES, start=2):
            channels = [width * 2**b for b in range(num_branches)]
            self.add_module(f"transition{s - 1}", _make_transition(pre, channels))
            last = s == 4
            modules = [
                HighResolutionModule(channels, 4, multi_scale_output=not (last and m == num_modules - 1))
                for m in range(num_modules)
            ]
            self.add_module(f"stage{s}", nn.Sequential(*modules))
            pre = channels

    def forward(self, x: Tensor) -> Tensor:
        y = [x]
        for s in (2, 3, 4):
            transition: nn.ModuleList = getattr(self, f"transition{s - 1}")
            # A new branch comes from the previous lowest-resolution map (reference: y_list[-1]).
            y = [y[i] if t is None else t(y[min(i, len(y) - 1)]) for i, t in enumerate(transition)]
            for module in getattr(self, f"stage{s}"):
                y = module(y)
        return y[0]


class PoseHRNet(Backbone):
    """HRNet-W``width`` (Sun et al., CVPR 2019), the reference pose_hrnet without its final 1x1 layer.

    Stem (the Mixup point): conv1 3x3 s2 (64), bn1, conv2 3x3 s2 (64), bn2, relu, layer1 (4 Bottlenecks)
    -> ``(B, 256, H/4, W/4)``. Body: transition1, stage2 (1 module, 2 branches), transition2, stage3 (4 modules,
    3 branches), transition3, stage4 (3 modules, 4 branches; the last one outputs only the stride-4 branch)
    -> ``(B, width, H/4, W/4)``. Branch widths ``width * (1, 2, 4, 8)``. H and W must be multiples of 32 (the
    exchange units upsample by exact factors).
    """

    def __init__(self, width: int = 32) -> None:
        if width not in HRNET_WIDTHS:
            raise ValueError(f"hrnet width must be one of {HRNET_WIDTHS}, got {width}")
        stem = nn.Sequential(
            OrderedDict(
                conv1=conv3x3(3, 64, stride=2),
                bn1=nn.BatchNorm2d(64),
                # the reference applies one ReLU module after bn1 and after bn2; two instances give the same graph
                relu1=nn.ReLU(inplace=True),
                conv2=conv3x3(64, 64, stride=2),
                bn2=nn.BatchNorm2d(64),
                relu=nn.ReLU(inplace=True),
                layer1=make_layer(Bottleneck, 64, 64, 4),
            )
        )
        super().__init__("hrnet", width, width, stem, _HRNetBody(width))
        self.reference_prefixes = {
            **{f"{n}.": f"stem.{n}." for n in ("conv1", "bn1", "conv2", "bn2", "layer1")},
            **{f"{n}.": f"body.{n}." for n in ("transition1", "transition2", "transition3")},
            **{f"{n}.": f"body.{n}." for n in ("stage2", "stage3", "stage4")},
        }
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.normal_(m.weight, std=0.001)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


# ------------------------------------------------------------------------------------------------------- factory

_DEFAULT_VARIANT = {"tiny": 32, "resnet": 18, "hrnet": 32}


def build_backbone(name: BackboneName, variant: int | None = None) -> Backbone:
    """A freshly initialised backbone.

    Args:
        name: ``"tiny"`` | ``"resnet"`` | ``"hrnet"``.
        variant: tiny: width (default 32, a multiple of 8); resnet: depth 18/34/50/101 (default 18);
            hrnet: width 32/48 (default 32).

    Raises:
        ValueError: unknown name or variant, naming the allowed values.
    """
    if name not in _DEFAULT_VARIANT:
        raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    v = _DEFAULT_VARIANT[name] if variant is None else variant
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{name} variant must be an integer, got {variant!r}")
    if name == "tiny":
        return TinyNet(v)
    if name == "resnet":
        return PoseResNet(v)
    return PoseHRNet(v)


__all__ = [
    "BACKBONES",
    "HRNET_WIDTHS",
    "RESNET_DEPTHS",
    "Backbone",
    "BackboneName",
    "BasicBlock",
    "Bottleneck",
    "HighResolutionModule",
    "PoseHRNet",
    "PoseResNet",
    "TinyNet",
    "build_backbone",
]
