"""The embedded synthetic data set: determinism, valid and truthful COCO annotations, hard-case mix, speed, and
left/right decidability from the picture."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.data.synthetic import (
    ANNOTATION_ID_STRIDE,
    OCCLUDER_VALUE,
    PART_BITS,
    TAGS,
    SyntheticConfig,
    generate_dataset,
    render_image,
    render_scene,
)
from pipeline.keypoints import COCO_KEYPOINT_NAMES, KeypointSchema

K = len(COCO_KEYPOINT_NAMES)
EASY = {"rare_pose": 0.0, "occluded": 0.0, "small": 0.0, "low_contrast": 0.0, "crowded": 0.0, "truncated": 0.0}
L_EAR, R_EAR, L_SHO, R_SHO, L_HIP, R_HIP = 3, 4, 5, 6, 11, 12


def _kps(ann: dict) -> np.ndarray:
    return np.asarray(ann["keypoints"], dtype=np.float64).reshape(K, 3)


def _pixel(xy: np.ndarray) -> tuple[int, int]:
    """(row, col) of the pixel whose centre is nearest: integer coordinates are pixel centres."""
    return int(np.floor(xy[1] + 0.5)), int(np.floor(xy[0] + 0.5))


def _chirality(kp: np.ndarray) -> float:
    """Sine of the angle from the body's up axis to the right->left shoulder vector (image y down).

    > 0: the person's left shoulder is on the image's right of an upright body (seen from the front), < 0 from the
    back. Uses only the up axis and the shoulder labels, so it is what a left/right labeling decides.
    """
    up = (kp[L_SHO, :2] + kp[R_SHO, :2]) / 2 - (kp[L_HIP, :2] + kp[R_HIP, :2]) / 2
    d = kp[L_SHO, :2] - kp[R_SHO, :2]
    return float((up[0] * d[1] - up[1] * d[0]) / (np.linalg.norm(up) * np.linalg.norm(d) + 1e-9))


def test_same_config_gives_identical_bytes(tmp_path: Path) -> None:
    cfg = SyntheticConfig(num_images=6, seed=11)
    a = generate_dataset(tmp_path / "a", cfg, progress=False)
    b = generate_dataset(tmp_path / "b", cfg, progress=False)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    for image in a["images"]:
        assert (tmp_path / "a" / image["file_name"]).read_bytes() == (tmp_path / "b" / image["file_name"]).read_bytes()
    assert [im["file_name"] for im in a["images"]] == [f"images/{i:06d}.jpg" for i in range(1, 7)]

    # Each image depends on (seed, image_id) only: rendering out of order gives the same picture.
    image, anns = render_image(cfg, 4)
    decoded = cv2.cvtColor(cv2.imread(str(tmp_path / "a" / "images" / "000004.jpg")), cv2.COLOR_BGR2RGB)
    assert decoded.shape == image.shape
    assert np.abs(decoded.astype(int) - image.astype(int)).mean() < 4  # JPEG q=92
    assert anns == [ann for ann in a["annotations"] if ann["image_id"] == 4]

    other, _ = render_image(SyntheticConfig(num_images=6, seed=12), 4)
    assert not np.array_equal(other, image)


def test_annotations_are_valid_coco() -> None:
    cfg = SyntheticConfig(seed=3)
    H, W = cfg.image_height, cfg.image_width
    ids = []
    for image_id in range(1, 61):
        image, anns = render_image(cfg, image_id)
        assert image.shape == (H, W, 3) and image.dtype == np.uint8
        for ann in anns:
            ids.append(ann["id"])
            assert ann["image_id"] == image_id and ann["category_id"] == 1 and ann["iscrowd"] == 0
            assert ann["id"] // ANNOTATION_ID_STRIDE == image_id
            assert len(ann["keypoints"]) == 3 * K
            kp = _kps(ann)
            v = kp[:, 2]
            assert set(v.tolist()) <= {0, 1, 2}
            assert all(isinstance(x, int) for x in ann["keypoints"][2::3])
            assert np.all(kp[v == 0, :2] == 0)
            lab = kp[v > 0]
            assert np.all((lab[:, 0] >= 0) & (lab[:, 0] <= W - 1) & (lab[:, 1] >= 0) & (lab[:, 1] <= H - 1))
            assert ann["num_keypoints"] == int((v > 0).sum()) >= 3
            x, y, w, h = ann["bbox"]
            assert w >= 8 and h >= 8 and x >= 0 and y >= 0 and x + w <= W - 1 + 1e-6 and y + h <= H - 1 + 1e-6
            # The box is amodal: every labeled keypoint lies in it.
            assert np.all((lab[:, 0] >= x - 1e-6) & (lab[:, 0] <= x + w + 1e-6))
            assert np.all((lab[:, 1] >= y - 1e-6) & (lab[:, 1] <= y + h + 1e-6))
            assert 20 <= ann["area"] <= w * h + 2 * (w + h) + 4
            assert set(ann["synthetic_tags"]) <= set(TAGS)
            assert ("truncated" in ann["synthetic_tags"]) == bool((v == 0).any())
    assert len(ids) == len(set(ids)) > 60


def test_coco_layer_accepts_the_dataset(tmp_path: Path) -> None:
    coco = pytest.importorskip("pipeline.data.coco")
    data = generate_dataset(tmp_path, SyntheticConfig(num_images=8, seed=2), progress=False)
    assert data["categories"] == [KeypointSchema.coco17().to_coco_category()]
    problems = coco.validate_coco(data, images_dir=tmp_path, check_images=True)
    assert problems == [], [str(p) for p in problems]


def _tag_stats(cfg: SyntheticConfig, n_images: int) -> tuple[Counter, int, int]:
    tags: Counter = Counter()
    n_anns = crowded_images = 0
    for image_id in range(1, n_images + 1):
        _, anns = render_image(cfg, image_id)
        n_anns += len(anns)
        crowded_images += any("crowded" in a["synthetic_tags"] for a in anns)
        for a in anns:
            tags.update(a["synthetic_tags"])
    return tags, n_anns, crowded_images


def test_hard_cases_follow_the_configured_proportions() -> None:
    n_images = 300
    cfg = SyntheticConfig(seed=1)
    tags, n, crowded_images = _tag_stats(cfg, n_images)
    frac = {t: tags[t] / n for t in TAGS}
    print(f"{n} people in {n_images} images, tag fractions {frac}, crowded images {crowded_images / n_images:.3f}")
    assert 1.5 * n_images <= n <= 2.6 * n_images  # 1..3 people per image, a few dropped, a few crowds
    for tag, p in (("rare_pose", cfg.rare_pose), ("low_contrast", cfg.low_contrast), ("small", cfg.small)):
        assert 0.5 * p <= frac[tag] <= 1.7 * p, (tag, frac[tag])
    assert 0.5 * cfg.truncated <= frac["truncated"] <= 2.0 * cfg.truncated
    assert 0.5 * cfg.occluded <= frac["occluded"] <= 2.2 * cfg.occluded  # occluders plus natural overlaps
    assert 0.3 * cfg.crowded <= crowded_images / n_images <= 2.5 * cfg.crowded

    easy_tags, easy_n, _ = _tag_stats(SyntheticConfig(seed=1, **EASY), 150)
    assert not {"rare_pose", "low_contrast", "crowded"} & set(easy_tags)
    assert easy_tags["occluded"] / easy_n < frac["occluded"]  # only people overlapping by chance remain
    hard_tags, hard_n, _ = _tag_stats(SyntheticConfig(seed=1, occluded=1.0, max_people=1), 60)
    assert hard_tags["occluded"] / hard_n > 0.5


def test_visibility_is_what_was_drawn() -> None:
    cfg = SyntheticConfig(seed=4, occluded=1.0, blur=0.0, noise=0.0)
    H, W = cfg.image_height, cfg.image_width
    counts: Counter = Counter()
    for image_id in range(1, 41):
        scene = render_scene(cfg, image_id)
        for ann in scene.annotations:
            owner = ann["id"] % ANNOTATION_ID_STRIDE + 1
            for x, y, v in _kps(ann):
                if v == 0:
                    continue
                r, c = _pixel(np.array([x, y]))
                value = int(scene.part_map[r, c])
                if v == 2:
                    # Drawn by this very person: the pixel, or (1-2 px limbs) its 3x3 neighbourhood.
                    window = scene.part_map[max(0, r - 1) : r + 2, max(0, c - 1) : c + 2]
                    assert value >> PART_BITS == owner or (value == 0 and (window >> PART_BITS == owner).any())
                    counts["visible"] += 1
                else:
                    counts["occluded"] += 1
                    counts["under_occluder"] += value == OCCLUDER_VALUE
                    counts["under_other_person"] += value != OCCLUDER_VALUE and value >> PART_BITS not in (0, owner)
                    counts["self_occluded"] += value >> PART_BITS == owner
                # Nothing is ever labeled visible under an occluder.
                assert not (v == 2 and value == OCCLUDER_VALUE)
        assert scene.part_map.shape == (H, W)
    print(dict(counts))
    assert counts["occluded"] >= 0.2 * (counts["occluded"] + counts["visible"])
    assert counts["under_occluder"] >= 0.3 * counts["occluded"]
    assert counts["under_other_person"] > 0 and counts["self_occluded"] > 0


def test_people_with_almost_nothing_visible_are_dropped() -> None:
    # A crowd of small people behind occluders: many are hidden, none may be emitted with nonsense.
    cfg = SyntheticConfig(seed=9, crowded=1.0, small=0.7, occluded=0.8)
    for image_id in range(1, 31):
        scene = render_scene(cfg, image_id)
        for ann in scene.annotations:
            v = _kps(ann)[:, 2]
            assert (v > 0).sum() >= 3 and (v == 2).sum() >= 2 and ann["area"] >= 20
            assert min(ann["bbox"][2:]) >= 8


def test_throughput_single_process(tmp_path: Path) -> None:
    cfg = SyntheticConfig(num_images=150, seed=5)
    render_image(cfg, 1)  # warm caches (grids, LUTs)
    start = time.perf_counter()
    generate_dataset(tmp_path, cfg, progress=False)
    rate = cfg.num_images / (time.perf_counter() - start)
    print(f"synthetic: {rate:.0f} images/s at {cfg.image_width}x{cfg.image_height} including JPEG encode and write")
    assert rate >= 60  # the target is 100 on one core; 60 leaves room for noisy CI machines


def _head_patch(image: np.ndarray, kp: np.ndarray, size: int = 12) -> np.ndarray | None:
    """An upright (size, size, 3) patch of the head, standardised. Centre and scale come from the ears, orientation
    from the body's up axis only, so nothing in it depends on which side is labeled left."""
    centre = (kp[L_EAR, :2] + kp[R_EAR, :2]) / 2
    radius = float(np.linalg.norm(kp[L_EAR, :2] - kp[R_EAR, :2])) / 2
    up = (kp[L_SHO, :2] + kp[R_SHO, :2]) / 2 - (kp[L_HIP, :2] + kp[R_HIP, :2]) / 2
    if radius < 4 or np.linalg.norm(up) < 1:
        return None
    u = up / np.linalg.norm(up)
    across = np.array([-u[1], u[0]])
    step = 1.8 * radius / size
    m = np.column_stack([across * step, -u * step, np.zeros(2)])
    m[:, 2] = centre - m[:, :2] @ np.full(2, (size - 1) / 2)
    patch = cv2.warpAffine(image.astype(np.float32), m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    return (patch - patch.mean(axis=(0, 1))) / (patch.std() + 1e-3)


def test_left_and_right_are_decidable_from_the_picture() -> None:
    """Which side is labeled left must follow from the image, as in photos: a visible face means the person's left
    is on the image's right; the back of the head means the reverse. (No left/right colour code: the data stay
    mirror symmetric, so flip augmentation and flip test remain valid.)"""
    cfg = SyntheticConfig(seed=5, **EASY)
    chirality, face_visible, patches = [], [], []
    for image_id in range(1, 301):
        image, anns = render_image(cfg, image_id)
        for ann in anns:
            kp = _kps(ann)
            if (kp[[L_EAR, R_EAR, L_SHO, R_SHO, L_HIP, R_HIP], 2] == 0).any():
                continue
            c = _chirality(kp)
            if abs(c) < 0.5:  # a profile: the shoulders overlap, nothing to decide from them
                continue
            chirality.append(c)
            face_visible.append(bool((kp[:3, 2] == 2).all()))
            patches.append(_head_patch(image, kp))
    chirality, face_visible = np.array(chirality), np.array(face_visible)

    # The labels: people showing their face have their left on the image's right.
    assert face_visible.sum() > 100
    assert (chirality[face_visible] > 0).mean() > 0.95

    # The picture: a linear classifier on the head patch alone predicts the labels' handedness on held-out people.
    keep = np.array([p is not None for p in patches])
    x = np.stack([p.ravel() for p in patches if p is not None])
    y = np.where(chirality[keep] > 0, 1.0, -1.0)
    n = len(x) // 2
    a = np.c_[x[:n], np.ones(n)]
    w = np.linalg.solve(a.T @ a + 10.0 * np.eye(a.shape[1]), a.T @ y[:n])
    accuracy = float((np.sign(np.c_[x[n:], np.ones(len(x) - n)] @ w) == y[n:]).mean())
    majority = max((y[n:] > 0).mean(), (y[n:] < 0).mean())
    print(f"head-patch handedness accuracy {accuracy:.3f} (majority class {majority:.3f}, {len(x) - n} test heads)")
    assert accuracy >= 0.8 and accuracy >= majority + 0.1


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="occluded"):
        SyntheticConfig(occluded=1.5)
    with pytest.raises(ValueError, match="max_people"):
        SyntheticConfig(max_people=0)
