"""The instance finder: trained on the project's own labels, it puts a box and a ``detection_score`` on every person
it finds in the pool images that came without boxes (``data.pool``, pipeline/data/unlabeled.py). No downloaded
weights: the network is one of the project's backbones with ``models.heads.InstanceFinderHead`` (CenterNet-style
centre heatmap + box size), trained from scratch.

What it learns from. A finder learns "background" from every pixel that is not a person's centre, so it may only see
images whose every person is boxed: the images of the seed labels that hold no pool person (``finder_images``), and
the pool images annotators completed (``completed_finder_images``: an answered "nobody found" task, where the finder
missed whoever is there).
With ``data.split: person`` (people drawn one by one) few seed images qualify; ``data.split: image`` makes every
seed image one (README, "Your own unlabeled images and videos"). A seed image with a person the split left out (no
keypoint, or a crowd region: COCO has both) is not used either.

Input. A whole image, letterboxed into ``find.input_size`` (aspect kept, centred, zero padding); training adds a
random zoom (0.6-1.8), shift, mirror, contrast and brightness, makes half its samples a mosaic of four images and
paints random opaque rectangles on half. Besides the boxes it learns the labeled people's visible keypoints as maps
(``find.keypoint_weight``, an auxiliary task: ``InstanceFinderHead``); measured in docs/BENCHMARKS.md, "Instance
finder".

Output. ``find_pool``: the prepared pool with one instance per found person on each image without annotations:
``bbox`` (image px), ``detection_score``, ``source: "found"``, no keypoints; ids from image file and box
(``corrections.found_instance_id``). An image on which it finds nobody gets the whole image as one instance with
``detection_score`` 0 (``pool_predictions.NOBODY_FOUND_SCORE``): a stand-in, so the people the finder missed on it
can still reach an annotator (select's queue "nobody_found"), who draws them or says there is nobody. A correction
of a found person whose box a retrained finder no longer gives is not lost: merge treats it as a person the
annotator added (pipeline/merge.py).
A project with one animal per frame (``find.one_per_frame``) gets the whole frame as the box, with no finder.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import time
from collections.abc import Callable
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
from pipeline.data.pool_predictions import NOBODY_FOUND_SCORE
from pipeline.data.transforms import apply_affine, warp_crop
from pipeline.keypoints import KeypointSchema

log = logging.getLogger(__name__)

FOUND = "found"  # the ``source`` of a found instance
MOSAIC = 0.5  # the share of training samples made of four images
ERASE = 0.5  # the share of training samples with random opaque rectangles painted on
MIN_KEPT_SHARE = 0.3  # a box cut by the input's border stays a target while this share of it is inside
MIN_FOUND_SCORE = 1e-4  # a found person's lowest detection_score: 0 is the stand-in of an image with nobody found


@dataclass(frozen=True)
class FinderImage:
    """One image for the finder: its file, its people's boxes (N, 4) image px (x, y, width, height) and, for the
    auxiliary keypoint maps, their keypoints (N, K, 3) image px with visibility (None: boxes only)."""

    path: Path
    boxes: np.ndarray
    width: int
    height: int
    keypoints: np.ndarray | None = None


def letterbox(width: int, height: int, input_size: tuple[int, int]) -> np.ndarray:
    """(2, 3) matrix image px -> input px: the whole image scaled to fit, centred."""
    scale = min(input_size[0] / width, input_size[1] / height)
    tx, ty = (input_size[0] - scale * width) / 2, (input_size[1] - scale * height) / 2
    return np.array([[scale, 0.0, tx], [0.0, scale, ty]])


def transform_boxes(
    boxes: np.ndarray, matrix: np.ndarray, input_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (N, 4) image px through an axis-aligned ``matrix`` (scale, shift, mirror) and clipped to the input;
    a box with less than ``MIN_KEPT_SHARE`` of it inside is dropped. Returns (boxes (M, 4) input px, which of the N
    were kept (N,) bool)."""
    if len(boxes) == 0:
        return np.zeros((0, 4)), np.zeros(0, bool)
    corners = np.stack([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)  # (N, 2, 2)
    mapped = apply_affine(corners, matrix)
    lo, hi = mapped.min(axis=1), mapped.max(axis=1)
    area = np.prod(hi - lo, axis=1)
    lo_c = np.clip(lo, 0, input_size)
    hi_c = np.clip(hi, 0, input_size)
    kept_area = np.prod(np.clip(hi_c - lo_c, 0, None), axis=1)
    keep = (area > 0) & (kept_area >= MIN_KEPT_SHARE * area) & ((hi_c - lo_c) >= 2).all(axis=1)
    return np.concatenate([lo_c, hi_c - lo_c], axis=1)[keep], keep


def transform_keypoints(
    keypoints: np.ndarray, matrix: np.ndarray, input_size: tuple[int, int], flip_index: np.ndarray
) -> np.ndarray:
    """Keypoints (N, K, 3) image px + visibility through ``matrix`` -> (N, K, 3) input px; a mirroring matrix swaps
    left and right (``flip_index``); a keypoint outside the input gets visibility 0."""
    out = keypoints.astype(np.float64).copy()
    out[..., :2] = apply_affine(out[..., :2].reshape(-1, 2), matrix).reshape((*out.shape[:-1], 2))
    if matrix[0, 0] < 0:
        out = out[:, flip_index]
    outside = (out[..., :2] < 0).any(-1) | (out[..., 0] > input_size[0] - 1) | (out[..., 1] > input_size[1] - 1)
    out[..., 2] = np.where(outside, 0, out[..., 2])
    return out


class FinderDataset(Dataset):
    """Whole images for the finder. ``__getitem__`` -> ``image`` (3, H, W) normalised and the codec's targets
    (``centre`` (1, h, w), ``size`` / ``offset`` (2, h, w), ``centre_mask`` (h, w); with ``flip_index`` and keypoints
    on every image also ``keypoint_heat`` (K, h, w)). With ``augment``: zoom, shift, mirror, contrast and brightness,
    half the samples a mosaic of four images, half with random opaque rectangles."""

    def __init__(
        self,
        images: list[FinderImage],
        codec: CentreCodec,
        augment: bool,
        seed: int = 0,
        flip_index: np.ndarray | None = None,
    ) -> None:
        self.images, self.codec, self.augment, self.seed = images, codec, augment, seed
        self.epoch = 0
        # keypoint maps (the auxiliary task) only when every image brings keypoints and their mirror permutation
        self.flip_index = flip_index if all(i.keypoints is not None for i in images) else None

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
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(pixels (h, w, 3) uint8 of ``size``, boxes (N, 4) and keypoints (N, K, 3) or None in them) of one image."""
        item = self.images[index]
        rgb = load_image(item.path)
        if rgb is None:
            raise FileNotFoundError(f"{item.path}: cannot read the image")
        matrix = self.matrix(index, size, rng)
        boxes, kept = transform_boxes(item.boxes, matrix, size)
        keypoints = None
        if self.flip_index is not None:
            keypoints = transform_keypoints(item.keypoints[kept], matrix, size, self.flip_index)
        return warp_crop(rgb, matrix, size), boxes, keypoints

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        size = self.codec.input_size
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.augment else None
        if rng is not None and len(self.images) > 1 and rng.random() < MOSAIC:
            pixels, boxes, keypoints = self._mosaic(index, rng)
        else:
            pixels, boxes, keypoints = self._view(index, size, rng)
        if rng is not None:
            pixels = _erase(pixels, rng)
            # contrast and brightness: the finder must see faint people too
            mean = pixels.mean()
            pixels = np.clip((pixels - mean) * rng.uniform(0.35, 1.3) + mean + rng.uniform(-40, 40), 0, 255)
        targets = self.codec.encode(boxes, keypoints)
        return {
            "image": normalize_image(pixels.astype(np.uint8)),
            **{k: torch.from_numpy(v) for k, v in targets.items()},
        }

    def _mosaic(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Four images in the four quadrants, each at half size (YOLOv4's mosaic): four times the people per
        sample, and smaller ones, from the few images a project has labeled whole."""
        w, h = self.codec.input_size
        half = (w // 2, h // 2)
        canvas = np.zeros((h, w, 3), np.uint8)
        boxes, keypoints = [], []
        others = rng.choice(len(self.images), size=3)
        for (qx, qy), i in zip([(0, 0), (1, 0), (0, 1), (1, 1)], [index, *others], strict=True):
            pixels, quadrant_boxes, quadrant_keypoints = self._view(int(i), half, rng)
            canvas[qy * half[1] : (qy + 1) * half[1], qx * half[0] : (qx + 1) * half[0]] = pixels
            boxes.append(quadrant_boxes + np.array([qx * half[0], qy * half[1], 0, 0]))
            if quadrant_keypoints is not None:
                keypoints.append(quadrant_keypoints + np.array([qx * half[0], qy * half[1], 0]))
        return canvas, np.concatenate(boxes), np.concatenate(keypoints) if keypoints else None


def _erase(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Half the samples get one to three opaque rectangles of a random colour (random erasing, Zhong et al. 2020):
    people behind an object are still people, and their targets stay."""
    if rng.random() >= ERASE:
        return pixels
    h, w = pixels.shape[:2]
    pixels = pixels.copy()
    for _ in range(int(rng.integers(1, 4))):
        ew, eh = (rng.uniform(0.05, 0.3, 2) * [w, h]).astype(int) + 1
        x, y = int(rng.integers(0, w - ew + 1)), int(rng.integers(0, h - eh + 1))
        pixels[y : y + eh, x : x + ew] = rng.integers(0, 256, 3)
    return pixels


def finder_images(labels: dict, pool: dict, images_root: Path) -> list[FinderImage]:
    """The images of ``labels`` (COCO) whose every person is boxed: no instance of ``pool`` on them and no person the
    split left out (``unlabeled_people``: keypoint-less people and crowd regions, written by prepare). Each with the
    boxes of its people."""
    pooled = {a["image_id"] for a in pool["annotations"]}
    people: dict[int, list] = {}
    for a in labels["annotations"]:
        if not a.get("iscrowd"):
            people.setdefault(a["image_id"], []).append(a)
    return [
        FinderImage(
            images_root / im["file_name"],
            np.asarray([a["bbox"] for a in people[im["id"]]], np.float64),
            im["width"],
            im["height"],
            np.asarray([a["keypoints"] for a in people[im["id"]]], np.float64).reshape(len(people[im["id"]]), -1, 3),
        )
        for im in labels["images"]
        if im["id"] in people and im["id"] not in pooled and not im.get("unlabeled_people")
    ]


def completed_finder_images(completed: dict, images_root: Path, num_keypoints: int) -> list[FinderImage]:
    """The pool images annotators completed (``corrections.completed_images``, COCO) as finder images: every person
    on them boxed, none at all on an image of background only."""
    people: dict[int, list[dict]] = {}
    for a in completed["annotations"]:
        people.setdefault(a["image_id"], []).append(a)
    out = []
    for im in completed["images"]:
        on = people.get(im["id"], [])
        out.append(
            FinderImage(
                images_root / im["file_name"],
                np.asarray([a["bbox"] for a in on], np.float64).reshape(-1, 4),
                im["width"],
                im["height"],
                np.asarray([a["keypoints"] for a in on], np.float64).reshape(len(on), num_keypoints, 3),
            )
        )
    return out


def build_codec(params: FindParams) -> CentreCodec:
    if any(side % 32 for side in params.input_size):
        raise ValueError(
            f"params.yaml: find.input_size = {params.input_size}: each side must be a multiple of 32 (the backbone "
            "halves it five times)"
        )
    return CentreCodec(tuple(params.input_size), min_score=params.min_score, max_instances=params.max_instances)


def train_finder(
    params: FindParams, images: list[FinderImage], flip_index: np.ndarray | None = None, progress: bool = True
) -> FinderModel:
    """``params.steps`` AdamW steps (cosine, 5% warmup) on ``images`` in this process; returns the model (eval).
    ``flip_index``: the schema's mirror permutation (K,); with it and ``params.keypoint_weight`` > 0 the finder also
    learns the images' keypoints (the auxiliary task of ``InstanceFinderHead``)."""
    if not images:
        raise ValueError(
            "the instance finder has no image to learn from: it needs seed-label images whose every person is labeled "
            "(set data.split: image, or find.one_per_frame: true for one animal per frame)"
        )
    torch.manual_seed(params.seed)
    torch.set_num_threads(params.threads)
    codec = build_codec(params)
    if params.keypoint_weight == 0:
        flip_index = None
    dataset = FinderDataset(images, codec, augment=True, seed=params.seed, flip_index=flip_index)
    num_keypoints = len(dataset.flip_index) if dataset.flip_index is not None else 0
    model = build_finder(
        backbone=params.backbone,
        variant=params.variant,
        codec=codec,
        num_keypoints=num_keypoints,
        keypoint_weight=params.keypoint_weight,
        flip_test=params.flip_test,
    ).train()
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
    device = next(model.parameters()).device
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
            chunk, matrices, model.head.decode(model.predict(torch.stack(tensors).to(device))), strict=True
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
    """COCO annotations of the found people: box, ``detection_score`` (at least ``MIN_FOUND_SCORE``), no keypoints,
    ``source: "found"``; ids ``corrections.found_instance_id`` of image file and box, so a person keeps its id when
    the pool grows. An image with nobody found gets its whole image, ``detection_score`` ``NOBODY_FOUND_SCORE``."""
    out = []
    for im, (boxes, scores) in zip(images, found, strict=True):
        if len(boxes) == 0:
            boxes = np.array([[0.0, 0.0, im["width"], im["height"]]])
            scores = np.array([NOBODY_FOUND_SCORE])
        else:
            scores = np.maximum(np.round(scores, 4), MIN_FOUND_SCORE)  # above the stand-in's, even at min_score 0
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
                    "detection_score": float(score),
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


FINDER_WEIGHTS, FINDER_DESCRIPTION = "finder.pt", "finder.json"


def save_finder(model: FinderModel, params: FindParams, out_dir: Path, metrics: dict) -> None:
    """``finder.pt`` (state dict) and ``finder.json`` (the ``find`` settings it was built with, its keypoint maps'
    channel count, its val metrics): what ``load_finder`` rebuilds it from."""
    from pipeline.config import to_dict
    from pipeline.files import write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out_dir / FINDER_WEIGHTS)
    keypoints = model.head.keypoints
    # the model's own flip_test: what it does is what load_finder must rebuild, whatever params say
    find = {**to_dict(params), "flip_test": model.flip_test}
    description = {"find": find, "num_keypoints": keypoints[-1].out_channels if keypoints else 0}
    write_json(out_dir / FINDER_DESCRIPTION, {**description, "metrics": metrics})


def load_finder(finder_dir: Path, device: str | torch.device = "cpu") -> FinderModel:
    """The finder ``save_finder`` wrote to ``finder_dir`` (eval mode)."""
    import json

    description = json.loads((Path(finder_dir) / FINDER_DESCRIPTION).read_text())
    find = description["find"]
    codec = CentreCodec(tuple(find["input_size"]), min_score=find["min_score"], max_instances=find["max_instances"])
    model = build_finder(
        backbone=find["backbone"],
        variant=find["variant"],
        codec=codec,
        num_keypoints=description.get("num_keypoints", 0),
        flip_test=find.get("flip_test", False),  # a finder saved before the setting: without
    )
    model.load_state_dict(torch.load(Path(finder_dir) / FINDER_WEIGHTS, map_location="cpu", weights_only=True))
    return model.to(device).eval()


def find_saved(finder_dir: Path, images: list[dict], images_root: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """``find_instances`` with the finder saved in ``finder_dir``, in this process (the find stage's pool pass
    without Ray)."""
    return find_instances(load_finder(finder_dir), images, images_root)


class FinderPredictor:
    """Ray Data callable class: loads the finder once per actor, then finds the people on batches of image rows
    (``file_name``, ``width``, ``height``). Adds ``boxes`` (B, max_instances, 4) image px and ``scores``
    (B, max_instances), NaN after each image's last person."""

    def __init__(self, finder_dir: str, images_root: str, threads: int, use_gpu: bool) -> None:
        torch.set_num_threads(threads)
        device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        self.model, self.images_root = load_finder(Path(finder_dir), device), Path(images_root)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        count, most = len(batch["file_name"]), self.model.codec.max_instances
        rows = [
            {
                "file_name": str(batch["file_name"][i]),
                "width": int(batch["width"][i]),
                "height": int(batch["height"][i]),
            }
            for i in range(count)
        ]
        boxes, scores = np.full((count, most, 4), np.nan), np.full((count, most), np.nan)
        for i, (found_boxes, found_scores) in enumerate(find_instances(self.model, rows, self.images_root, count)):
            boxes[i, : len(found_boxes)], scores[i, : len(found_scores)] = found_boxes, found_scores
        return {**batch, "boxes": boxes, "scores": scores}


PoolPass = Callable[[Path, list[dict], Path], list[tuple[np.ndarray, np.ndarray]]]


def find_pool(
    params: Params,
    prepared: Path,
    out: Path,
    finder_dir: Path,
    progress: bool = True,
    pool_pass: PoolPass = find_saved,
    completed: dict | None = None,
) -> dict:
    """The find stage: ``prepared``'s pool.json with the people found on its unboxed images -> ``out``; the finder
    (when one was trained) -> ``finder_dir``. ``pool_pass(finder_dir, images, images_root)`` runs the saved finder
    over the unboxed images: in this process by default, on Ray Data from the stage
    (``pipeline.ray_find.find_on_ray``). ``completed``: the pool images annotators completed
    (``corrections.completed_images``), which the finder learns from besides the seed images. Returns the stage's
    metrics."""
    from pipeline.data.coco import load_json, write_coco
    from pipeline.files import write_json

    pool = load_json(prepared / "pool.json")
    unboxed = unboxed_images(pool)
    category = pool["categories"][0]
    num_keypoints = len(category["keypoints"])
    finder_dir.mkdir(parents=True, exist_ok=True)
    for stale in (FINDER_WEIGHTS, FINDER_DESCRIPTION):
        (finder_dir / stale).unlink(missing_ok=True)
    metrics: dict = {"unboxed_images": len(unboxed), "finder": "none", "found": 0}
    found: list[tuple[np.ndarray, np.ndarray]] = []
    if unboxed and params.find.one_per_frame:
        metrics["finder"] = "whole frame"
        found = [(np.array([[0.0, 0.0, im["width"], im["height"]]]), np.ones(1)) for im in unboxed]
    elif unboxed:
        labeled, val = load_json(prepared / "labeled.json"), load_json(prepared / "val.json")
        images = finder_images(labeled, pool, prepared)
        done = completed_finder_images(completed or {"images": [], "annotations": []}, prepared, num_keypoints)
        images += done
        metrics["completed_images"] = len(done)
        flip_index = KeypointSchema.from_coco_category(labeled["categories"][0]).flip_index
        started = time.perf_counter()
        model = train_finder(params.find, images, flip_index, progress=progress)
        metrics.update(
            finder="trained", train_images=len(images), train_seconds=round(time.perf_counter() - started, 1)
        )
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its table
            metrics["val"] = box_recall_and_ap(val, val["images"], find_instances(model, val["images"], prepared))
        save_finder(model, params.find, finder_dir, metrics)
        started = time.perf_counter()
        found = pool_pass(finder_dir, unboxed, prepared)
        metrics["images_per_s"] = round(len(unboxed) / max(time.perf_counter() - started, 1e-9), 1)
    annotations = found_annotations(unboxed, found, num_keypoints, category["id"])
    metrics["images_without_people"] = sum(len(boxes) == 0 for boxes, _ in found)
    metrics["found"] = len(annotations) - metrics["images_without_people"]
    out.parent.mkdir(parents=True, exist_ok=True)
    write_coco(out, {**pool, "annotations": pool["annotations"] + annotations})
    write_json(finder_dir / "summary.json", metrics)
    return metrics
