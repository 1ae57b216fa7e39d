"""Top-down inference of a PoseModel over person instances: crops in, keypoints in image pixels out.

``predict`` is the one path from a model to image-pixel keypoints; validation during training, the evaluate stage
and the Ray Data predictor all call it (or ``predict_batch`` for one collated batch).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from models.heads import FlipPair
from models.pose_model import PoseModel
from pipeline.data.coco import CocoKeypoints, coco_results
from pipeline.data.dataset import IMAGENET_MEAN, IMAGENET_STD, InstanceRecord, TopDownDataset, instances_from_coco
from pipeline.data.transforms import crop_to_image
from pipeline.evaluation import oks
from pipeline.semi_supervised import adaptive_mask_difficulty

log = logging.getLogger(__name__)


@dataclass
class InstancePredictions:
    """Per-instance predictions (numpy); N instances, K keypoints.

    keypoints (N, K, 2) image px; scores (N, K); response (N, K) heatmap peaks and sahr_sigma (N, K) effective
    SAHR sigma in heatmap px (None for heads without them); flip_disagreement (N,) mean distance between the plain
    and the flipped prediction in units of the crop's box size (None without flip test); instance_id (N,);
    embedding (N, C) the backbone's pooled features of the plain view (``PoseModel.forward_with_embedding``).
    """

    instance_id: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray
    response: np.ndarray | None = None
    sahr_sigma: np.ndarray | None = None
    flip_disagreement: np.ndarray | None = None
    embedding: np.ndarray | None = None


def _unflip_keypoints(keypoints_crop: np.ndarray, width: int, flip_index: np.ndarray) -> np.ndarray:
    """Keypoints (B, K, 2) decoded on a mirrored crop -> the same crop's frame and keypoint order."""
    out = keypoints_crop[:, flip_index].copy()
    out[..., 0] = width - 1 - out[..., 0]
    return out


@torch.no_grad()
def predict_batch(model: PoseModel, batch: dict[str, torch.Tensor], *, flip_test: bool = False) -> dict:
    """One collated batch of TopDownDataset samples -> dict of numpy arrays (see InstancePredictions)."""
    device = next(model.parameters()).device
    images = batch["image"].to(device, non_blocking=True)
    outputs, embedding = model.forward_with_embedding(images)
    pred = model.decode(outputs)
    keypoints, scores = pred.keypoints, pred.scores
    response, sahr_sigma, disagreement = pred.response, pred.sahr_sigma, None
    if flip_test:
        flip_index = model.schema.flip_index
        width = images.shape[3]
        flipped_outputs = model(torch.flip(images, dims=[3]))
        flipped = model.decode(flipped_outputs)
        flipped_kp = _unflip_keypoints(flipped.keypoints, width, flip_index)
        box_crop = _box_size_in_crop(batch)
        disagreement = np.linalg.norm(keypoints - flipped_kp, axis=-1).mean(axis=1) / box_crop
        pair = FlipPair(outputs, flipped_outputs, pred, flipped, flipped_kp, flip_index)
        keypoints, scores, merged_response = model.head.merge_flip(pair)
        response = merged_response if merged_response is not None else response
    matrix = batch["matrix"].numpy()
    flipped_crop = batch["flipped"].numpy()
    image_kp = crop_to_image(keypoints.astype(np.float64), matrix, flipped_crop, model.schema.flip_index)
    return {
        "instance_id": batch["instance_id"].numpy(),
        "keypoints": image_kp,
        "scores": scores,
        "response": response,
        "sahr_sigma": sahr_sigma,
        "flip_disagreement": disagreement,
        "embedding": embedding.float().cpu().numpy(),
    }


def _box_size_in_crop(batch: dict[str, torch.Tensor]) -> np.ndarray:
    """(B,) longer side of each instance's box in crop pixels."""
    zoom = torch.sqrt(torch.abs(torch.linalg.det(batch["matrix"][:, :, :2]))).numpy()
    return np.maximum(batch["bbox"][:, 2:].max(dim=1).values.numpy() * zoom, 1e-6)


def predict(
    model: PoseModel,
    dataset: TopDownDataset,
    *,
    batch_size: int = 64,
    flip_test: bool = False,
    num_workers: int = 0,
    progress: bool = False,
) -> InstancePredictions:
    """Predict every instance of an (unaugmented) dataset, in dataset order."""
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    parts: list[dict] = []
    for batch in tqdm(loader, desc="predict", unit="batch", disable=not progress):
        parts.append(predict_batch(model, batch, flip_test=flip_test))
    model.train(was_training)

    def cat(key: str) -> np.ndarray | None:
        if not parts or parts[0][key] is None:
            return None
        return np.concatenate([p[key] for p in parts])

    k = model.schema.num_keypoints
    return InstancePredictions(
        instance_id=cat("instance_id") if parts else np.zeros(0, np.int64),
        keypoints=cat("keypoints") if parts else np.zeros((0, k, 2)),
        scores=cat("scores") if parts else np.zeros((0, k)),
        response=cat("response"),
        sahr_sigma=cat("sahr_sigma"),
        flip_disagreement=cat("flip_disagreement"),
        embedding=cat("embedding"),
    )


def to_coco_results(
    predictions: InstancePredictions, records: Sequence[InstanceRecord], category_id: int
) -> list[dict]:
    """``coco_results`` of ``predict``'s output; image ids from the records the predictions were made on."""
    image_of = {r.instance_id: r.image_id for r in records}
    image_ids = np.array([image_of[int(i)] for i in predictions.instance_id], np.int64)
    return coco_results(predictions.instance_id, image_ids, predictions.keypoints, predictions.scores, category_id)


# --------------------------------------------------------------------------------------------------- a labeled split


def predict_split(
    model: PoseModel, gt: CocoKeypoints, images_root: Path, padding: float, flip_test: bool
) -> tuple[list[InstanceRecord], InstancePredictions | None]:
    """The split's labeled instances (as training validates them) and the model's predictions, in record order;
    ``padding``: params.codec.box_padding. Raises ValueError when the file's schema is not the model's."""
    if gt.schema.num_keypoints != model.schema.num_keypoints:
        raise ValueError(
            f"{gt.path}: {gt.schema.num_keypoints} keypoints, the model predicts {model.schema.num_keypoints}"
        )
    records = instances_from_coco(gt.images, gt.annotations, images_root, gt.schema.num_keypoints)
    if not records:
        return [], None
    dataset = TopDownDataset(records, model.schema, model.head.target_codec, padding=padding)
    return records, predict(model, dataset, flip_test=flip_test)


def person_oks(gt: CocoKeypoints, records: list[InstanceRecord], pred: InstancePredictions) -> np.ndarray:
    """(N,) the OKS of each record's prediction against its own ground truth (0 for a person without a labeled
    keypoint), with the schema's sigmas and the annotation's area as pycocotools uses them."""
    area = {int(a["id"]): float(a.get("area") or a["bbox"][2] * a["bbox"][3]) for a in gt.annotations}
    sigmas = gt.schema.sigma_array
    return np.array(
        [oks(pred.keypoints[i], r.keypoints, area[r.instance_id], sigmas) for i, r in enumerate(records)], np.float64
    )


def worst_instances(
    gt: CocoKeypoints, records: list[InstanceRecord], pred: InstancePredictions, count: int
) -> list[dict]:
    """The ``count`` instances with the lowest OKS (ties: lower instance id first), worst first."""
    scores = person_oks(gt, records, pred)
    rows = []
    for i, (record, score) in enumerate(zip(records, scores, strict=True)):
        rows.append(
            {
                "index": i,
                "instance_id": record.instance_id,
                "image_id": record.image_id,
                "oks": score,
                "image": str(record.image_path),
            }
        )
    rows.sort(key=lambda r: (r["oks"], r["instance_id"]))
    return rows[:count]


# --------------------------------------------------------------------------------------------------- batch -> columns


def normalize_crops(crops: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 RGB -> (B, 3, H, W) float32 normalised as in training (``normalize_image``)."""
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.from_numpy(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.from_numpy(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def instance_scores(pred: dict, tau: float) -> dict[str, np.ndarray]:
    """Per-instance selection signals from ``predict_batch`` output (B instances, K keypoints), each (B,).

    ``response`` mean and ``min_response`` min of the per-keypoint peaks (the ASLA head's keypoint scores stand in
    for peaks); ``sahr_sigma`` mean effective SAHR sigma (NaN without a scale head); ``difficulty`` the
    adaptive-mask difficulty 1 - easy / K (docs/DESIGN.md §5, the same function SSL uses); ``flip_disagreement`` (NaN
    without flip test).
    """
    response = pred["response"] if pred["response"] is not None else pred["scores"]
    count = response.shape[0]
    nan = np.full(count, np.nan)
    difficulty = adaptive_mask_difficulty(torch.from_numpy(np.ascontiguousarray(response)), tau).numpy()
    return {
        "response": response.mean(axis=1).astype(np.float64),
        "min_response": response.min(axis=1).astype(np.float64),
        "sahr_sigma": nan if pred["sahr_sigma"] is None else pred["sahr_sigma"].mean(axis=1).astype(np.float64),
        "difficulty": difficulty.astype(np.float64),
        "flip_disagreement": nan if pred["flip_disagreement"] is None else pred["flip_disagreement"].astype(np.float64),
    }


def prediction_columns(batch: dict[str, np.ndarray], pred: dict, tau: float) -> dict[str, np.ndarray]:
    """The pool_predictions.parquet columns of one batch (see ``TeacherPredictor``)."""
    count = len(batch["instance_id"])
    readable = np.asarray(batch.get("image_readable", np.ones(count, bool)), bool)
    scores = pred["scores"].astype(np.float32)
    signals = instance_scores(pred, tau)
    scores[~readable] = np.nan
    for values in signals.values():
        values[~readable] = np.nan
    return {
        "instance_id": np.asarray(batch["instance_id"], np.int64),
        "image_id": np.asarray(batch["image_id"], np.int64),
        "bbox": np.stack(batch["bbox"]).astype(np.float64),
        "keypoints": pred["keypoints"].reshape(count, -1).astype(np.float64),
        "scores": scores,
        **signals,
        # the instance finder's score, carried from the pool (NaN: a person whose box was given)
        "detection_score": np.asarray(batch.get("detection_score", np.full(count, np.nan)), np.float64),
        # null here: it needs the neighbouring frames' rows, so predict_pool fills it in when the pool has videos
        "keypoint_jump": np.full(count, np.nan),
        "image_readable": readable,
        # the teacher's pooled features: what select.embedding "features" clusters in (NaN where unreadable)
        "embedding": np.where(readable[:, None], pred["embedding"], np.nan).astype(np.float32),
    }
