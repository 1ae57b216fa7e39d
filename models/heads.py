"""Pose heads as objects: each head owns what its outputs mean.

A head is the head's layers (``forward``: stride-4 features -> outputs) plus everything the rest of the project must
know about those outputs, so that nothing outside this module asks which head it has:

=================== ============================================================================================
``loss``            training loss of a collated TopDownDataset batch; ``"loss"`` is the total to backpropagate
``decode``          outputs -> ``Prediction`` (keypoints (B, K, 2) crop px, scores (B, K), head-specific extras)
``merge_flip``      the prediction of a crop and of its mirror image -> one (flip test)
``confidence_maps`` (B, K, h, w) in [0, 1]: where and how sure the head is (adaptive keypoint masking's input)
``ssl_targets``     a teacher's outputs -> what the student is trained to match on the strong view
``ssl_loss``        the student's outputs against those targets (L_u); ``ssl_mixup_loss`` for a mixed batch
=================== ============================================================================================

The instance finder (``InstanceFinderHead``: box centres and sizes on whole images, CenterNet-style) is a head of
its own kind: it finds the people the pose heads then read, and owns its loss and decoding the same way.

Heads: ``HeatmapPoseHead`` (Gaussian heatmaps, SAHR scale, WAHR loss; decoded by the ``HeatmapCodec``) and
``AslaPoseHead`` (keypoints as objects: per-cell logits and offsets). Each subclasses the layers' module, so a
checkpoint's parameter names (``head.heatmap_final.weight``, ``head.cls_branch...``) are those of the layers.
Each head also has ``target_codec``: what the dataset asks for a crop's training targets. ``head_class`` is the one
place that maps ``model.head`` to a class; ``build_head`` and ``target_codec`` go through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from models.asla import AslaHead, asla_decode, asla_loss, keypoint_scale
from models.heatmap_head import HeatmapHead
from models.losses import effective_sigma, heatmap_loss, scale_at
from pipeline.codec import CentreCodec, HeatmapCodec, KeypointCodec
from pipeline.keypoints import KeypointSchema

HeadType = Literal["heatmap", "asla"]


@dataclass
class Prediction:
    """Decoded outputs of one batch (numpy).

    keypoints (B, K, 2) crop pixels; scores (B, K) in [0, 1]; for the heatmap head also ``response`` (B, K), the
    heatmap peak, and (with SAHR) ``sahr_sigma`` (B, K), the effective sigma sigma0 · exp(-s / 2) at the peak in
    heatmap pixels (pipeline/selection.py says which way it goes with the error). ASLA leaves both None.
    """

    keypoints: np.ndarray
    scores: np.ndarray
    response: np.ndarray | None = None
    sahr_sigma: np.ndarray | None = None


@dataclass(frozen=True)
class FlipPair:
    """A batch of crops and their mirror images, as flip test hands them to ``merge_flip``: the head outputs of both,
    their own decodings, the flipped crop's keypoints mapped back into the plain crop (B, K, 2) crop px, and the
    schema's ``flip_index`` (K,)."""

    outputs: dict[str, Tensor]
    flipped_outputs: dict[str, Tensor]
    prediction: Prediction
    flipped: Prediction
    flipped_keypoints: np.ndarray
    flip_index: np.ndarray


class HeatmapPoseHead(HeatmapHead):
    """Gaussian heatmaps (+ the SAHR scale map), trained with WAHR-weighted (or plain) MSE against the SAHR target
    (models/losses.py) and decoded by the codec (argmax, optionally DARK)."""

    kind: HeadType = "heatmap"

    def __init__(
        self,
        in_channels: int,
        codec: HeatmapCodec,
        schema: KeypointSchema,
        *,
        sahr: bool = True,
        wahr: bool = True,
        wahr_gamma: float = 0.01,
        scale_reg_weight: float = 0.03,
    ) -> None:
        super().__init__(in_channels, schema.num_keypoints, sahr=sahr)
        self.codec = self.target_codec = codec
        self.wahr, self.wahr_gamma, self.scale_reg_weight = wahr, wahr_gamma, scale_reg_weight

    def loss(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Uses batch["heatmaps"] (B, K, h, w) and batch["target_weight"] (B, K)."""
        return heatmap_loss(
            outputs["heatmaps"],
            batch["heatmaps"],
            batch["target_weight"],
            outputs.get("scale"),
            sahr=self.sahr,
            wahr=self.wahr,
            gamma=self.wahr_gamma,
            scale_weight=self.scale_reg_weight,
        )

    @torch.no_grad()
    def decode(self, outputs: dict[str, Tensor]) -> Prediction:
        keypoints, scores = self.codec.decode(outputs["heatmaps"])
        sahr_sigma = None
        if self.sahr:
            peaks_hm = torch.from_numpy(self.codec.to_heatmap(keypoints)).to(outputs["scale"])
            s = scale_at(outputs["scale"], peaks_hm)
            sahr_sigma = effective_sigma(self.codec.sigma, s).float().cpu().numpy()
        return Prediction(keypoints, scores, response=scores.copy(), sahr_sigma=sahr_sigma)

    @torch.no_grad()
    def merge_flip(self, pair: FlipPair) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(keypoints (B, K, 2) crop px, scores (B, K), response (B, K)) of the mean of the heatmaps and the
        mirrored heatmaps of the flipped crop (the codec's flip merge), decoded again."""
        merged = self.codec.flip_merge(pair.outputs["heatmaps"], pair.flipped_outputs["heatmaps"], pair.flip_index)
        keypoints, scores = self.codec.decode(merged)
        return keypoints, scores, scores.copy()

    def confidence_maps(self, outputs: dict[str, Tensor]) -> Tensor:
        return outputs["heatmaps"]

    def ssl_targets(self, teacher_outputs: dict[str, Tensor], batch: dict[str, Tensor], min_score: float) -> Tensor:
        """The teacher's heatmaps (B, K, h, w): the student regresses to them (``min_score`` is ASLA's)."""
        return teacher_outputs["heatmaps"].float()

    def ssl_loss(self, outputs: dict[str, Tensor], targets: Tensor) -> Tensor:
        return ((outputs["heatmaps"].float() - targets) ** 2).mean()

    def ssl_mixup_loss(self, outputs: dict[str, Tensor], targets: Tensor, permutation: Tensor, alpha: float) -> Tensor:
        """alpha * L(f(x_m), H_i) + (1 - alpha) * L(f(x_m), H_j): the Mixup branch against both teachers' maps."""
        return alpha * self.ssl_loss(outputs, targets) + (1.0 - alpha) * self.ssl_loss(outputs, targets[permutation])


class AslaPoseHead(AslaHead):
    """Keypoints as objects (per-cell logits and offsets, models/asla.py): its loss assigns positives per keypoint
    by a scale from the person's box; decoding takes the top cell(s)."""

    kind: HeadType = "asla"

    def __init__(
        self,
        in_channels: int,
        codec: HeatmapCodec,
        schema: KeypointSchema,
        *,
        k: int = 9,
        dynamic_k: bool = False,
        reg: Literal["l1", "oks"] = "l1",
        top_n: int = 1,
    ) -> None:
        super().__init__(in_channels, schema.num_keypoints)
        self.codec = codec
        self.target_codec = KeypointCodec(codec)
        self.k, self.dynamic_k, self.reg, self.top_n = k, dynamic_k, reg, top_n
        self.register_buffer("sigmas", torch.tensor(schema.sigmas, dtype=torch.float32), persistent=False)

    def loss(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Uses batch["keypoints"] (B, K, 2) crop px, batch["target_weight"] (B, K), and batch["bbox"] (B, 4) with
        batch["matrix"] (B, 2, 3) for the per-keypoint scale."""
        weight = batch["target_weight"]
        stride = torch.as_tensor(self.codec.stride, dtype=torch.float32, device=weight.device)
        keypoints_hm = (batch["keypoints"] + 0.5) / stride - 0.5
        return asla_loss(
            outputs,
            keypoints_hm,
            weight,
            self.keypoint_scale(batch["bbox"], batch["matrix"]),
            k=self.k,
            dynamic_k=self.dynamic_k,
            reg_type=self.reg,
        )

    def keypoint_scale(self, bbox: Tensor, matrix: Tensor) -> Tensor:
        """ASLA's per-keypoint scale S (B, K) in heatmap cells, from the box (B, 4) image px and the crop matrix."""
        matrix = matrix.to(bbox.dtype)
        zoom = torch.sqrt(torch.abs(torch.linalg.det(matrix[:, :, :2])))  # crop px per image px (B,)
        stride = torch.as_tensor(self.codec.stride, dtype=bbox.dtype, device=bbox.device)
        box_wh_hm = bbox[:, 2:4] * zoom[:, None] / stride
        return keypoint_scale(box_wh_hm, self.sigmas.to(bbox.device))

    @torch.no_grad()
    def decode(self, outputs: dict[str, Tensor]) -> Prediction:
        keypoints_hm, scores = asla_decode(outputs, top_n=self.top_n)
        keypoints = self.codec.to_crop(keypoints_hm.float().cpu().numpy())
        return Prediction(keypoints.astype(np.float32), scores.float().cpu().numpy())

    def merge_flip(self, pair: FlipPair) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The mean of the plain keypoints and the flipped crop's mapped back, and of their scores: ASLA has no map
        to merge."""
        keypoints = 0.5 * (pair.prediction.keypoints + pair.flipped_keypoints)
        scores = 0.5 * (pair.prediction.scores + pair.flipped.scores[:, pair.flip_index])
        return keypoints, scores, None

    def confidence_maps(self, outputs: dict[str, Tensor]) -> Tensor:
        return torch.sigmoid(outputs["logits"])

    def ssl_targets(self, teacher_outputs: dict[str, Tensor], batch: dict[str, Tensor], min_score: float) -> dict:
        """A pseudo batch: the teacher's decoded keypoints (crop px), weight 1 where it scores >= ``min_score``
        (ASLA has no heatmap to regress to), the box and crop matrix of ``batch`` for the scale."""
        keypoints_hm, scores = asla_decode(teacher_outputs, top_n=self.top_n)
        stride = torch.as_tensor(self.codec.stride, dtype=keypoints_hm.dtype, device=keypoints_hm.device)
        return {
            "keypoints": (keypoints_hm + 0.5) * stride - 0.5,
            "target_weight": (scores >= min_score).float(),
            "bbox": batch["bbox"],
            "matrix": batch["matrix"],
        }

    def ssl_loss(self, outputs: dict[str, Tensor], targets: dict) -> Tensor:
        return self.loss(outputs, targets)["loss"]

    def ssl_mixup_loss(self, outputs: dict[str, Tensor], targets: dict, permutation: Tensor, alpha: float) -> Tensor:
        permuted = {k: v[permutation] for k, v in targets.items()}
        return alpha * self.ssl_loss(outputs, targets) + (1.0 - alpha) * self.ssl_loss(outputs, permuted)


PoseHead = HeatmapPoseHead | AslaPoseHead

FOCAL_ALPHA, FOCAL_BETA = 2.0, 4.0  # CenterNet's penalty-reduced focal loss
CENTRE_PRIOR = 0.01  # the centre branch starts at this probability everywhere (RetinaNet's prior init)


def _focal(logits: Tensor, target: Tensor) -> Tensor:
    """CenterNet's penalty-reduced focal loss, summed: positives where ``target`` is 1, negatives weighted down
    near them by (1 - target)^beta. ``logits`` and ``target``: the same shape."""
    target = target.float()
    prob = torch.sigmoid(logits.float()).clamp(1e-4, 1 - 1e-4)
    positive = target.eq(1).float()
    return -(
        positive * (1 - prob) ** FOCAL_ALPHA * torch.log(prob)
        + (1 - positive) * (1 - target) ** FOCAL_BETA * prob**FOCAL_ALPHA * torch.log(1 - prob)
    ).sum()


class InstanceFinderHead(nn.Module):
    """The instance finder (CenterNet-style) on a whole image's stride-4 features: a centre heatmap, the box size
    and the centre's sub-cell offset, decoded to boxes by its codec (``pipeline.codec.CentreCodec``).

    ``forward(features (B, C, h, w))`` -> ``{"centre": (B, 1, h, w) logits, "size": (B, 2, h, w) log cells,
    "offset": (B, 2, h, w)}``, and with ``num_keypoints`` K > 0 ``"keypoints": (B, K, h, w)`` logits: every
    person's keypoints as heatmaps, an auxiliary task (CenterNet's multi-person pose maps) that gives the features
    seventeen targets per person instead of one; ``keypoint_weight`` is its share of the loss. Decoding ignores it.
    """

    def __init__(self, in_channels: int, codec: CentreCodec, num_keypoints: int = 0, keypoint_weight: float = 1.0):
        super().__init__()
        self.codec = codec
        self.keypoint_weight = keypoint_weight

        def branch(out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(in_channels, in_channels, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(in_channels, out, 1)
            )

        self.centre, self.size, self.offset = branch(1), branch(2), branch(2)
        nn.init.constant_(self.centre[-1].bias, float(np.log(CENTRE_PRIOR / (1 - CENTRE_PRIOR))))
        self.keypoints = branch(num_keypoints) if num_keypoints else None
        if self.keypoints is not None:
            nn.init.constant_(self.keypoints[-1].bias, float(np.log(CENTRE_PRIOR / (1 - CENTRE_PRIOR))))

    def forward(self, features: Tensor) -> dict[str, Tensor]:
        out = {"centre": self.centre(features), "size": self.size(features), "offset": self.offset(features)}
        if self.keypoints is not None:
            out["keypoints"] = self.keypoints(features)
        return out

    def loss(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Focal loss on the centre map against ``batch["centre"]`` (B, 1, h, w), normalised by the number of
        people, plus L1 on log size and offset at the centre cells (``batch["centre_mask"]`` (B, h, w)); with the
        keypoint branch, ``keypoint_weight`` x the focal loss of ``batch["keypoint_heat"]`` (B, K, h, w) per visible
        keypoint."""
        mask = batch["centre_mask"].float()[:, None]
        people = mask.sum().clamp(min=1.0)
        size = (torch.abs(outputs["size"].float() - batch["size"]) * mask).sum() / people
        offset = (torch.abs(outputs["offset"].float() - batch["offset"]) * mask).sum() / people
        centre = _focal(outputs["centre"], batch["centre"]) / people
        losses = {"loss": centre + size + offset, "centre": centre, "size": size, "offset": offset}
        if "keypoints" in outputs:
            target = batch["keypoint_heat"]
            keypoint = _focal(outputs["keypoints"], target) / target.eq(1).sum().clamp(min=1.0)
            losses["loss"] = losses["loss"] + self.keypoint_weight * keypoint
            losses["keypoint"] = keypoint
        return losses

    @torch.no_grad()
    def decode(self, outputs: dict[str, Tensor]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per image (boxes (n, 4) input px, scores (n,)): the codec's decoding."""
        return self.codec.decode(outputs)


def build_head(
    head: str, in_channels: int, codec: HeatmapCodec, schema: KeypointSchema, settings: dict | None = None
) -> PoseHead:
    """``model.head`` -> its head object; ``settings``: that head's own section of params.yaml (``model.heatmap`` or
    ``model.asla``, the constructor's keyword arguments); None: the defaults."""
    return head_class(head)(in_channels, codec, schema, **(settings or {}))


def head_class(head: str) -> type[HeatmapPoseHead] | type[AslaPoseHead]:
    if head == "heatmap":
        return HeatmapPoseHead
    if head == "asla":
        return AslaPoseHead
    raise ValueError(f"model.head = {head!r}: allowed values are 'heatmap', 'asla'")


def target_codec(head: str, codec: HeatmapCodec) -> HeatmapCodec | KeypointCodec:
    """The codec that turns a crop's keypoints into the training targets ``head`` reads (the dataset calls its
    ``encode_targets``): Gaussian heatmaps for the heatmap head, only the weights for ASLA, whose positive cells are
    assigned inside its loss (dynamic k depends on the predictions). Built without the network, so a data loader can
    be set up before the model."""
    return codec if head_class(head) is HeatmapPoseHead else KeypointCodec(codec)
