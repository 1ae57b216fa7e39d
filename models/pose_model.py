"""One model interface for both heads: a backbone, a head, its loss and its decoding.

    outputs = model(images)               # images (B, 3, H, W) normalised crops
    losses = model.loss(outputs, batch)   # batch from pipeline.data.dataset.TopDownDataset (collated)
    pred = model.decode(outputs)          # Prediction: keypoints (B, K, 2) crop px, scores (B, K), ...

Heads:
- ``heatmap``: Gaussian heatmaps, optionally with the SAHR scale map; losses WAHR / plain MSE (models/losses.py).
- ``asla``: keypoints as objects, per-cell logits and offsets (models/asla.py).

For the semi-supervised trainer's feature-level Mixup the forward pass is split at the backbone's ``stem``:
``model.forward_from_stem(model.backbone.stem(images))`` equals ``model(images)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from models.asla import AslaHead, asla_decode, asla_loss, keypoint_scale
from models.backbones import Backbone, build_backbone
from models.heatmap_head import HeatmapHead
from models.losses import effective_sigma, heatmap_loss, scale_at
from models.weights import load_state_dict_file
from pipeline.codec import HeatmapCodec
from pipeline.keypoints import KeypointSchema

HeadType = Literal["heatmap", "asla"]


@dataclass
class Prediction:
    """Decoded outputs of one batch (numpy).

    keypoints (B, K, 2) crop pixels; scores (B, K) in [0, 1]; for the heatmap head also ``response`` (B, K), the
    heatmap peak, and (with SAHR) ``sahr_sigma`` (B, K), the effective sigma sigma0 · exp(-s / 2) at the peak in
    heatmap pixels (pipeline/scoring.py says which way it goes with the error). ASLA leaves both None.
    """

    keypoints: np.ndarray
    scores: np.ndarray
    response: np.ndarray | None = None
    sahr_sigma: np.ndarray | None = None


class PoseModel(nn.Module):
    """Backbone + head with the loss and decoding of that head. See the module docstring."""

    def __init__(
        self,
        backbone: Backbone,
        head: nn.Module,
        head_type: HeadType,
        codec: HeatmapCodec,
        schema: KeypointSchema,
        *,
        sahr: bool = True,
        wahr: bool = True,
        wahr_gamma: float = 0.01,
        scale_reg_weight: float = 0.03,
        asla_k: int = 9,
        asla_dynamic_k: bool = False,
        asla_reg: Literal["l1", "oks"] = "l1",
        asla_top_n: int = 1,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.head_type = head_type
        self.codec = codec
        self.schema = schema
        self.sahr, self.wahr, self.wahr_gamma, self.scale_reg_weight = sahr, wahr, wahr_gamma, scale_reg_weight
        self.asla_k, self.asla_dynamic_k, self.asla_reg, self.asla_top_n = asla_k, asla_dynamic_k, asla_reg, asla_top_n
        self.register_buffer("sigmas", torch.tensor(schema.sigmas, dtype=torch.float32), persistent=False)

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

    def forward_from_stem(self, stem_features: torch.Tensor) -> dict[str, torch.Tensor]:
        """The rest of the forward pass from ``backbone.stem`` features (mixed ones, for feature Mixup)."""
        return self.head(self.backbone.body(stem_features))

    def loss(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Training loss of the head; ``"loss"`` is the total to backpropagate.

        Uses batch["heatmaps"] (B, K, h, w) and batch["target_weight"] (B, K); ASLA also batch["keypoints"]
        (B, K, 2) crop px, batch["bbox"] (B, 4) and batch["matrix"] (B, 2, 3) for the per-keypoint scale.
        """
        weight = batch["target_weight"]
        if self.head_type == "heatmap":
            return heatmap_loss(
                outputs["heatmaps"],
                batch["heatmaps"],
                weight,
                outputs.get("scale"),
                sahr=self.sahr,
                wahr=self.wahr,
                gamma=self.wahr_gamma,
                scale_weight=self.scale_reg_weight,
            )
        stride = torch.as_tensor(self.codec.stride, dtype=torch.float32, device=weight.device)
        keypoints_hm = (batch["keypoints"] + 0.5) / stride - 0.5
        return asla_loss(
            outputs,
            keypoints_hm,
            weight,
            self.keypoint_scale(batch["bbox"], batch["matrix"]),
            k=self.asla_k,
            dynamic_k=self.asla_dynamic_k,
            reg_type=self.asla_reg,
        )

    def keypoint_scale(self, bbox: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        """ASLA's per-keypoint scale S (B, K) in heatmap cells, from the box (B, 4) image px and the crop matrix."""
        matrix = matrix.to(bbox.dtype)
        zoom = torch.sqrt(torch.abs(torch.linalg.det(matrix[:, :, :2])))  # crop px per image px (B,)
        stride = torch.as_tensor(self.codec.stride, dtype=bbox.dtype, device=bbox.device)
        box_wh_hm = bbox[:, 2:4] * zoom[:, None] / stride
        return keypoint_scale(box_wh_hm, self.sigmas.to(bbox.device))

    @torch.no_grad()
    def decode(self, outputs: dict[str, torch.Tensor]) -> Prediction:
        if self.head_type == "asla":
            keypoints_hm, scores = asla_decode(outputs, top_n=self.asla_top_n)
            keypoints = self.codec.to_crop(keypoints_hm.float().cpu().numpy())
            return Prediction(keypoints.astype(np.float32), scores.float().cpu().numpy())
        keypoints, scores = self.codec.decode(outputs["heatmaps"])
        sahr_sigma = None
        if "scale" in outputs:
            peaks_hm = torch.from_numpy(self.codec.to_heatmap(keypoints)).to(outputs["scale"])
            s = scale_at(outputs["scale"], peaks_hm)
            sahr_sigma = effective_sigma(self.codec.sigma, s).float().cpu().numpy()
        return Prediction(keypoints, scores, response=scores.copy(), sahr_sigma=sahr_sigma)


def build_model(
    *,
    backbone: str,
    variant: int | None,
    head: HeadType,
    codec: HeatmapCodec,
    schema: KeypointSchema,
    weights: str | None = None,
    weights_prefix: str = "",
    **objective: object,
) -> PoseModel:
    """A PoseModel from the ``model`` section of params.yaml (same names) plus the codec and schema.

    ``objective``: the keyword settings of ``PoseModel`` (sahr, wahr, wahr_gamma, ..., asla_top_n).

    ``weights``: a local backbone state dict (ImageNet or an earlier model's ``backbone.`` sub-tree with
    ``weights_prefix``), loaded non-strictly: the head and the deconvolutions may be missing from it, but every
    tensor it has must fit, and at least one must (models/weights.py raises WeightsError otherwise).
    """
    net = build_backbone(backbone, variant)  # type: ignore[arg-type]
    if weights:
        load_state_dict_file(net, weights, prefix=weights_prefix, strict=False, rename=net.reference_prefixes)
    k = schema.num_keypoints
    if head == "heatmap":
        head_module: nn.Module = HeatmapHead(net.out_channels, k, sahr=bool(objective.get("sahr", True)))
    elif head == "asla":
        head_module = AslaHead(net.out_channels, k)
    else:
        raise ValueError(f"model.head = {head!r}: allowed values are 'heatmap', 'asla'")
    if head != "heatmap":
        objective["sahr"] = False  # the scale map exists only on the heatmap head
    return PoseModel(net, head_module, head, codec, schema, **objective)  # type: ignore[arg-type]
