"""Top-down inference of a PoseModel over person instances: crops in, keypoints in image pixels out.

``predict`` is the one path from a model to image-pixel keypoints; validation during training, the evaluate stage
and the Ray Data predictor all call it (or ``predict_batch`` for one collated batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from models.pose_model import PoseModel
from pipeline.data.dataset import InstanceRecord, TopDownDataset
from pipeline.data.transforms import crop_to_image


@dataclass
class InstancePredictions:
    """Per-instance predictions (numpy); N instances, K keypoints.

    keypoints (N, K, 2) image px; scores (N, K); response (N, K) heatmap peaks and sahr_sigma (N, K) effective
    SAHR sigma in heatmap px (None for heads without them); flip_disagreement (N,) mean distance between the plain
    and the flipped prediction in units of the crop's box size (None without flip test); instance_id (N,).
    """

    instance_id: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray
    response: np.ndarray | None = None
    sahr_sigma: np.ndarray | None = None
    flip_disagreement: np.ndarray | None = None


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
    outputs = model(images)
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
        if model.head_type == "heatmap":
            merged = model.codec.flip_merge(outputs["heatmaps"], flipped_outputs["heatmaps"], flip_index)
            keypoints, scores = model.codec.decode(merged)
            response = scores.copy()
        else:
            keypoints = 0.5 * (keypoints + flipped_kp)
            scores = 0.5 * (scores + flipped.scores[:, flip_index])
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
    )


def to_coco_results(
    predictions: InstancePredictions, records: Sequence[InstanceRecord], category_id: int
) -> list[dict]:
    """COCO keypoint results, one per instance, with ``instance_id`` kept for paired distance metrics.

    The instance score is the mean keypoint score (what pycocotools ranks detections by).
    """
    image_of = {r.instance_id: r.image_id for r in records}
    results = []
    for iid, kp, sc in zip(predictions.instance_id, predictions.keypoints, predictions.scores, strict=True):
        flat = np.concatenate([kp, sc[:, None]], axis=1).ravel()
        results.append(
            {
                "image_id": int(image_of[int(iid)]),
                "category_id": category_id,
                "keypoints": [round(float(v), 3) for v in flat],
                "score": float(sc.mean()),
                "instance_id": int(iid),
            }
        )
    return results
