"""One model interface for both heads: a backbone, a head, its loss and its decoding.

    outputs = model(images)               # images (B, 3, H, W) normalised crops
    losses = model.loss(outputs, batch)   # batch from pipeline.data.dataset.TopDownDataset (collated)
    pred = model.decode(outputs)          # Prediction: keypoints (B, K, 2) crop px, scores (B, K), ...

Heads (models/heads.py, one object each, owning loss, decoding, flip merge and SSL targets):
- ``heatmap``: Gaussian heatmaps, optionally with the SAHR scale map; losses WAHR / plain MSE (models/losses.py).
- ``asla``: keypoints as objects, per-cell logits and offsets (models/asla.py).

For the semi-supervised trainer's feature-level Mixup the forward pass is split at the backbone's ``stem``:
``model.forward_from_stem(model.backbone.stem(images))`` equals ``model(images)``.
"""

from __future__ import annotations

import torch
from torch import nn

from models.backbones import Backbone, build_backbone
from models.heads import HeadType, InstanceFinderHead, PoseHead, Prediction, build_head
from models.weights import load_state_dict_file
from pipeline.codec import CentreCodec, HeatmapCodec
from pipeline.keypoints import KeypointSchema

__all__ = ["FinderModel", "HeadType", "PoseModel", "Prediction", "build_finder", "build_model"]


class PoseModel(nn.Module):
    """Backbone + head; the head (models/heads.py) owns its loss, decoding, flip merge and SSL targets."""

    def __init__(self, backbone: Backbone, head: PoseHead, codec: HeatmapCodec, schema: KeypointSchema) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.codec = codec
        self.schema = schema

    def forward(
        self, images: torch.Tensor, feature_mix: tuple[int, torch.Tensor, float] | None = None
    ) -> dict[str, torch.Tensor]:
        """images (B, 3, H, W) -> head outputs.

        ``feature_mix = (start, permutation, alpha)`` mixes the stem features of the slice
        ``start : start + n`` (n = len(permutation)) as alpha * f + (1 - alpha) * f[permutation] before the rest of
        the backbone: the feature branch of dual-branch Mixup, inside one forward call so DDP sees one pass.
        """
        features = self.backbone.stem(images)
        if feature_mix is not None:
            start, permutation, alpha = feature_mix
            part = features[start : start + len(permutation)]
            mixed = alpha * part + (1.0 - alpha) * part[permutation]
            features = torch.cat([features[:start], mixed, features[start + len(permutation) :]])
        return self.forward_from_stem(features)

    def forward_with_embedding(self, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """images (B, 3, H, W) -> (head outputs, (B, C) the backbone's last features averaged over the map): the
        learned embedding selection clusters the pool in (``select.embedding: features``), at no second pass."""
        features = self.backbone.body(self.backbone.stem(images))
        return self.head(features), features.mean(dim=(2, 3))

    def forward_from_stem(self, stem_features: torch.Tensor) -> dict[str, torch.Tensor]:
        """The rest of the forward pass from ``backbone.stem`` features (mixed ones, for feature Mixup)."""
        return self.head(self.backbone.body(stem_features))

    def loss(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Training loss of the head (``head.loss``); ``"loss"`` is the total to backpropagate."""
        return self.head.loss(outputs, batch)

    def decode(self, outputs: dict[str, torch.Tensor]) -> Prediction:
        return self.head.decode(outputs)


def build_model(
    *,
    backbone: str,
    variant: int | None,
    head: HeadType,
    codec: HeatmapCodec,
    schema: KeypointSchema,
    head_settings: dict | None = None,
    weights: str | None = None,
    weights_prefix: str = "",
) -> PoseModel:
    """A PoseModel from the ``model`` section of params.yaml (same names) plus the codec and schema.

    ``head_settings``: the head's own section (``model.heatmap``: sahr, wahr, wahr_gamma, scale_reg_weight;
    ``model.asla``: k, dynamic_k, reg, top_n); None: the head's defaults.

    ``weights``: a local backbone state dict (ImageNet or an earlier model's ``backbone.`` sub-tree with
    ``weights_prefix``), loaded non-strictly: the head and the deconvolutions may be missing from it, but every
    tensor it has must fit, and at least one must (models/weights.py raises WeightsError otherwise).
    """
    net = build_backbone(backbone, variant)  # type: ignore[arg-type]
    if weights:
        load_state_dict_file(net, weights, prefix=weights_prefix, strict=False, rename=net.reference_prefixes)
    return PoseModel(net, build_head(head, net.out_channels, codec, schema, head_settings), codec, schema)


class FinderModel(nn.Module):
    """Backbone + the instance finder head: whole images (B, 3, H, W) -> centre / size / offset maps at stride 4.
    ``flip_test``: ``predict`` averages the maps of the image and of its mirror (the finder is trained on mirrored
    images too)."""

    def __init__(self, backbone: Backbone, head: InstanceFinderHead, flip_test: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.codec = head.codec
        self.flip_test = flip_test

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(self.backbone.body(self.backbone.stem(images)))

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The maps ``head.decode`` reads (``centre``, ``size``, ``offset``), flip-averaged when ``flip_test``.
        A centre at cell x + offset o of a mirrored map of width w is at cell w - 1 - x with offset -o here, so the
        mirror's x offsets change sign; sizes and centre logits average as they are."""
        out = self(images)
        if not self.flip_test:
            return {key: out[key] for key in ("centre", "size", "offset")}  # the same keys either way
        mirrored = self(images.flip(-1))
        offset = mirrored["offset"].flip(-1)
        offset = torch.cat([-offset[:, :1], offset[:, 1:]], dim=1)
        return {
            "centre": (out["centre"] + mirrored["centre"].flip(-1)) / 2,
            "size": (out["size"] + mirrored["size"].flip(-1)) / 2,
            "offset": (out["offset"] + offset) / 2,
        }


def build_finder(
    *,
    backbone: str,
    variant: int | None,
    codec: CentreCodec,
    num_keypoints: int = 0,
    keypoint_weight: float = 1.0,
    flip_test: bool = False,
) -> FinderModel:
    """A fresh instance finder on one of the project's backbones (nothing pretrained, nothing downloaded);
    ``num_keypoints`` > 0 adds the auxiliary keypoint maps (``InstanceFinderHead``)."""
    net = build_backbone(backbone, variant)  # type: ignore[arg-type]
    head = InstanceFinderHead(net.out_channels, codec, num_keypoints, keypoint_weight)
    return FinderModel(net, head, flip_test=flip_test)
