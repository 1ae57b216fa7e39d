"""The instance finder: trained on the project's own labels, it puts a box and a ``detection_score`` on every person
it finds in the pool images that came without boxes (``data.pool``, pipeline/data/unlabeled.py). No downloaded
weights: the network is one of the project's backbones with ``models.heads.InstanceFinderHead`` (CenterNet-style
centre heatmap + box size), trained from scratch.

What it learns from. A finder learns "background" from every pixel that is not a person's centre, so it may only see
images whose every person is boxed: the images of the seed labels that hold no pool person (``finder_images``).
With ``data.split: person`` (people drawn one by one) few seed images qualify; ``data.split: image`` makes every
seed image one (README, "Your own unlabeled images and videos"). A seed image with a person the split left out (no
keypoint, or a crowd region: COCO has both) is not used either.

Input. A whole image, letterboxed into ``find.input_size`` (aspect kept, centred, zero padding); training adds a
random zoom (0.6-1.8), shift, mirror, contrast and brightness, and makes half its samples a mosaic of four images
(measured in docs/BENCHMARKS.md, "Instance finder").

Output. ``find_pool``: the prepared pool with one instance per found person on each image without annotations:
``bbox`` (image px), ``detection_score``, ``source: "found"``, no keypoints; ids from image file and box
(``corrections.found_instance_id``). A correction of a found person whose box a retrained finder no longer gives
is not lost: merge treats it as a person the annotator added (pipeline/merge.py).
A project with one animal per frame (``find.one_per_frame``) gets the whole frame as the box, with no finder.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from models.pose_model import FinderModel, build_finder
from pipeline.codec import CentreCodec
from pipeline.config import FindParams, Params
from pipeline.corrections import found_instance_id
from pipeline.data.dataset import normalize_image
from pipeline.data.images import load_image
from pipeline.data.transforms import apply_affine, warp_crop

log = logging.getLogger(__name__)

FOUND = "found"  # the ``source`` of a found instance
MOSAIC = 0.5  # the share of training samples made of four images
MIN_KEPT_SHARE = 0.3  # a box cut by the input's border stays a target while this share of it is inside


@dataclass(frozen=True)
class FinderImage:
    """One image for the finder: its file and its people's boxes (N, 4) image px (x, y, width, height)."""

    path: Path
    boxes: np.ndarray
    width: int
    height: int


def letterbox(width: int, height: int, input_size: tuple[int, int]) -> np.ndarray:
    """(2, 3) matrix image px -> input px: the whole image scaled to fit, centred."""
    scale = min(input_size[0] / width, input_size[1] / height)
    tx, ty = (input_size[0] - scale * width) / 2, (input_size[1] - scale * height) / 2
    return np.array([[scale, 0.0, tx], [0.0, scale, ty]])


def transform_boxes(boxes: np.ndarray, matrix: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """Boxes (N, 4) image px through an axis-aligned ``matrix`` (scale, shift, mirror) and clipped to the input;
    a box with less than ``MIN_KEPT_SHARE`` of it inside is dropped. Returns (M, 4) input px."""
    if len(boxes) == 0:
        return np.zeros((0, 4))
    corners = np.stack([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)  # (N, 2, 2)
    mapped = apply_affine(corners, matrix)
    lo, hi = mapped.min(axis=1), mapped.max(axis=1)
    area = np.prod(hi - lo, axis=1)
    lo_c = np.clip(lo, 0, input_size)
    hi_c = np.clip(hi, 0, input_size)
    kept_area = np.prod(np.clip(hi_c - lo_c, 0, None), axis=1)
    keep = (area > 0) & (kept_area >= MIN_KEPT_SHARE * area) & ((hi_c - lo_c) >= 2).all(axis=1)
    return np.concatenate([lo_c, hi_c - lo_c], axis=1)[keep]


class FinderDataset(Dataset):
    """Whole images for the finder. ``__getitem__`` -> ``image`` (3, H, W) normalised and the codec's targets
    (``centre`` (1, h, w), ``size`` / ``offset`` (2, h, w), ``centre_mask`` (h, w)). With ``augment``: zoom, shift,
    mirror, contrast and brightness, and half the samples a mosaic of four images."""

    def __init__(self, images: list[FinderImage], codec: CentreCodec, augment: bool, seed: int = 0) -> None:
        self.images, self.codec, self.augment, self.seed = images, codec, augment, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images)

    def matrix(self, index: int, size: tuple[int, int], rng: np.random.Generator | None) -> np.ndarray:
        """(2, 3) image -> ``size`` px: the letterbox, and with ``rng`` a log-uniform zoom (0.6-1.8), a shift and a
        mirror at random."""
        item = self.images[index]
        matrix = letterbox(item.width, item.height, size)
        if rng is not None:
            zoom = float(np.exp(rng.uniform(np.log(0.6), np.log(1.8))))  # log-uniform: as often in as out
            cx, cy = size[0] / 2, size[1] / 2
            shift = rng.uniform(-0.3, 0.3, 2) * np.asarray(size) * zoom
            around = np.array([[zoom, 0.0, cx - zoom * cx + shift[0]], [0.0, zoom, cy - zoom * cy + shift[1]]])
            matrix = around @ np.vstack([matrix, [0, 0, 1]])
            if rng.random() < 0.5:
                matrix = np.array([[-1.0, 0.0, size[0]], [0.0, 1.0, 0.0]]) @ np.vstack([matrix, [0, 0, 1]])
        return matrix

    def _view(
        self, index: int, size: tuple[int, int], rng: np.random.Generator | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(pixels (h, w, 3) uint8 of ``size``, boxes (N, 4) in them) of one image."""
        item = self.images[index]
        rgb = load_image(item.path)
        if rgb is None:
            raise FileNotFoundError(f"{item.path}: cannot read the image")
        matrix = self.matrix(index, size, rng)
        return warp_crop(rgb, matrix, size), transform_boxes(item.boxes, matrix, size)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        size = self.codec.input_size
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.augment else None
        if rng is not None and len(self.images) > 1 and rng.random() < MOSAIC:
            pixels, boxes = self._mosaic(index, rng)
        else:
            pixels, boxes = self._view(index, size, rng)
        if rng is not None:  # contrast and brightness: the finder must see faint people too
            mean = pixels.mean()
            pixels = np.clip((pixels - mean) * rng.uniform(0.35, 1.3) + mean + rng.uniform(-40, 40), 0, 255)
        targets = self.codec.encode(boxes)
        return {
            "image": normalize_image(pixels.astype(np.uint8)),
            **{k: torch.from_numpy(v) for k, v in targets.items()},
        }

    def _mosaic(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Four images in the four quadrants, each at half size (YOLOv4's mosaic): four times the people per
        sample, and smaller ones, from the few images a project has labeled whole."""
        w, h = self.codec.input_size
        half = (w // 2, h // 2)
        canvas = np.zeros((h, w, 3), np.uint8)
        boxes = []
        others = rng.choice(len(self.images), size=3)
        for (qx, qy), i in zip([(0, 0), (1, 0), (0, 1), (1, 1)], [index, *others], strict=True):
            pixels, quadrant_boxes = self._view(int(i), half, rng)
            canvas[qy * half[1] : (qy + 1) * half[1], qx * half[0] : (qx + 1) * half[0]] = pixels
            boxes.append(quadrant_boxes + np.array([qx * half[0], qy * half[1], 0, 0]))
        return canvas, np.concatenate(boxes)


def finder_images(labels: dict, pool: dict, images_root: Path) -> list[FinderImage]:
    """The images of ``labels`` (COCO) whose every person is boxed: no instance of ``pool`` on them and no person the
    split left out (``unlabeled_people``: keypoint-less people and crowd regions, written by prepare). Each with the
    boxes of its people."""
    pooled = {a["image_id"] for a in pool["annotations"]}
    boxes: dict[int, list] = {}
    for a in labels["annotations"]:
        if not a.get("iscrowd"):
            boxes.setdefault(a["image_id"], []).append(a["bbox"])
    return [
        FinderImage(images_root / im["file_name"], np.asarray(boxes[im["id"]], np.float64), im["width"], im["height"])
        for im in labels["images"]
        if im["id"] in boxes and im["id"] not in pooled and not im.get("unlabeled_people")
    ]


def build_codec(params: FindParams) -> CentreCodec:
    if any(side % 32 for side in params.input_size):
        raise ValueError(
            f"params.yaml: find.input_size = {params.input_size}: each side must be a multiple of 32 (the backbone "
            "halves it five times)"
        )
    return CentreCodec(tuple(params.input_size), min_score=params.min_score, max_instances=params.max_instances)


def train_finder(params: FindParams, images: list[FinderImage], progress: bool = True) -> FinderModel:
    """``params.steps`` AdamW steps (cosine, 5% warmup) on ``images`` in this process; returns the model (eval)."""
    if not images:
        raise ValueError(
            "the instance finder has no image to learn from: it needs seed-label images whose every person is labeled "
            "(set data.split: image, or find.one_per_frame: true for one animal per frame)"
        )
    torch.manual_seed(params.seed)
    torch.set_num_threads(params.threads)
    codec = build_codec(params)
    model = build_finder(backbone=params.backbone, variant=params.variant, codec=codec).train()
    dataset = FinderDataset(images, codec, augment=True, seed=params.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=1e-4)
    warmup = max(1, params.steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, params.steps - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    batch_size = min(params.batch_size, len(images))
    bar = tqdm(total=params.steps, desc="finder", unit="step", disable=not progress, dynamic_ncols=True)
    step, started = 0, time.perf_counter()
    while step < params.steps:
        generator = torch.Generator().manual_seed(params.seed + dataset.epoch)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, generator=generator)
        for batch in loader:
            losses = model.head.loss(model(batch["image"]), batch)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            schedule.step()
            step += 1
            bar.update(1)
            if step % 50 == 0:  # a readable line, not a new number every step
                bar.set_postfix(loss=f"{losses['loss'].item():.3f}")
            if step >= params.steps:
                break
        dataset.epoch += 1
    bar.close()
    log.info("finder: %d steps on %d images in %.0f s", step, len(images), time.perf_counter() - started)
    return model.eval()


@torch.no_grad()
def find_instances(
    model: FinderModel, images: list[dict], images_root: Path, batch_size: int = 16
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per COCO image record, (boxes (n, 4) image px clipped to the image, scores (n,)), best first."""
    codec = model.codec
    found: list[tuple[np.ndarray, np.ndarray]] = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        matrices = [letterbox(im["width"], im["height"], codec.input_size) for im in chunk]
        tensors = []
        for im, matrix in zip(chunk, matrices, strict=True):
            rgb = load_image(images_root / im["file_name"])
            if rgb is None:
                raise FileNotFoundError(f"{images_root / im['file_name']}: cannot read the image")
            tensors.append(normalize_image(warp_crop(rgb, matrix, codec.input_size)))
        for im, matrix, (boxes, scores) in zip(
            chunk, matrices, model.head.decode(model(torch.stack(tensors))), strict=True
        ):
            scale, tx, ty = matrix[0, 0], matrix[0, 2], matrix[1, 2]
            xy = (boxes[:, :2] - [tx, ty]) / scale
            far = xy + boxes[:, 2:] / scale
            xy = np.clip(xy, 0, [im["width"], im["height"]])
            far = np.clip(far, 0, [im["width"], im["height"]])
            keep = ((far - xy) >= 1).all(axis=1)
            found.append((np.concatenate([xy, far - xy], axis=1)[keep], scores[keep]))
    return found


def found_annotations(
    images: list[dict], found: list[tuple[np.ndarray, np.ndarray]], num_keypoints: int, category_id: int
) -> list[dict]:
    """COCO annotations of the found people: box, ``detection_score``, no keypoints, ``source: "found"``; ids
    ``corrections.found_instance_id`` of image file and box, so a person keeps its id when the pool grows."""
    out = []
    for im, (boxes, scores) in zip(images, found, strict=True):
        for box, score in zip(boxes, scores, strict=True):
            x, y, w, h = (round(float(v), 2) for v in box)
            out.append(
                {
                    "id": found_instance_id(im["file_name"], (x, y, w, h)),
                    "image_id": im["id"],
                    "category_id": category_id,
                    "bbox": [x, y, w, h],
                    "area": round(w * h, 2),
                    "iscrowd": 0,
                    "keypoints": [0.0] * (3 * num_keypoints),
                    "num_keypoints": 0,
                    "detection_score": round(float(score), 4),
                    "source": FOUND,
                }
            )
    return out


def unboxed_images(pool: dict) -> list[dict]:
    """The pool's images with no instance on them: the ones the finder looks at."""
    boxed = {a["image_id"] for a in pool["annotations"]}
    return [im for im in pool["images"] if im["id"] not in boxed]


def box_recall_and_ap(gt: dict, images: list[dict], found: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """The finder against ``gt`` (COCO, non-crowd people) on ``images``: recall at IoU 0.5 and 0.75 (each person
    matched to one box, best score first) and COCO box AP (pycocotools, IoU .50:.95), AP at IoU 0.5."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from pipeline.corrections import box_iou

    people: dict[int, list] = {}
    for a in gt["annotations"]:
        if not a.get("iscrowd"):
            people.setdefault(a["image_id"], []).append(a["bbox"])
    total = sum(len(people.get(im["id"], [])) for im in images)
    recalled = {0.5: 0, 0.75: 0}
    results = []
    for im, (boxes, scores) in zip(images, found, strict=True):
        truth = people.get(im["id"], [])
        for threshold in recalled:
            free = set(range(len(truth)))
            for box in boxes:
                best = max(free, key=lambda j: box_iou(box, truth[j]), default=None)
                if best is not None and box_iou(box, truth[best]) >= threshold:
                    free.discard(best)
            recalled[threshold] += len(truth) - len(free)
        results += [
            {
                "image_id": im["id"],
                "category_id": gt["categories"][0]["id"],
                "bbox": [float(v) for v in b],
                "score": float(s),
            }
            for b, s in zip(boxes, scores, strict=True)
        ]
    ids = {im["id"] for im in images}
    subset = {
        "images": [im for im in gt["images"] if im["id"] in ids],
        "annotations": [
            dict(a, area=a.get("area", a["bbox"][2] * a["bbox"][3])) for a in gt["annotations"] if a["image_id"] in ids
        ],
        "categories": gt["categories"],
    }
    box_ap = box_ap50 = 0.0
    if results and subset["annotations"]:
        coco_gt = COCO()
        coco_gt.dataset = subset
        coco_gt.createIndex()
        evaluation = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
        box_ap, box_ap50 = float(evaluation.stats[0]), float(evaluation.stats[1])
    return {
        "people": total,
        "recall_iou50": recalled[0.5] / max(1, total),
        "recall_iou75": recalled[0.75] / max(1, total),
        "box_ap": box_ap,
        "box_ap50": box_ap50,
    }


def save_finder(model: FinderModel, params: FindParams, out_dir: Path, metrics: dict) -> None:
    """``finder.pt`` (state dict) and ``finder.json`` (the ``find`` settings it was built with, its val metrics)."""
    from pipeline.config import to_dict
    from pipeline.files import write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out_dir / "finder.pt")
    write_json(out_dir / "finder.json", {"find": to_dict(params), "metrics": metrics})


def find_pool(params: Params, prepared: Path, out: Path, finder_dir: Path, progress: bool = True) -> dict:
    """The find stage: ``prepared``'s pool.json with the people found on its unboxed images -> ``out``; the finder
    (when one was trained) -> ``finder_dir``. Returns the stage's metrics."""
    from pipeline.data.coco import load_json, write_coco
    from pipeline.files import write_json

    pool = load_json(prepared / "pool.json")
    unboxed = unboxed_images(pool)
    category = pool["categories"][0]
    num_keypoints = len(category["keypoints"])
    finder_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("finder.pt", "finder.json"):
        (finder_dir / stale).unlink(missing_ok=True)
    metrics: dict = {"unboxed_images": len(unboxed), "finder": "none", "found": 0}
    found: list[tuple[np.ndarray, np.ndarray]] = []
    if unboxed and params.find.one_per_frame:
        metrics["finder"] = "whole frame"
        found = [(np.array([[0.0, 0.0, im["width"], im["height"]]]), np.ones(1)) for im in unboxed]
    elif unboxed:
        labeled, val = load_json(prepared / "labeled.json"), load_json(prepared / "val.json")
        images = finder_images(labeled, pool, prepared)
        started = time.perf_counter()
        model = train_finder(params.find, images, progress=progress)
        metrics.update(
            finder="trained", train_images=len(images), train_seconds=round(time.perf_counter() - started, 1)
        )
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its table
            metrics["val"] = box_recall_and_ap(val, val["images"], find_instances(model, val["images"], prepared))
        started = time.perf_counter()
        found = find_instances(model, unboxed, prepared)
        metrics["images_per_s"] = round(len(unboxed) / max(time.perf_counter() - started, 1e-9), 1)
        save_finder(model, params.find, finder_dir, metrics)
    annotations = found_annotations(unboxed, found, num_keypoints, category["id"])
    metrics["found"] = len(annotations)
    metrics["images_without_people"] = sum(len(boxes) == 0 for boxes, _ in found)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_coco(out, {**pool, "annotations": pool["annotations"] + annotations})
    write_json(finder_dir / "summary.json", metrics)
    return metrics
