"""TopDownDataset: targets and pixels agree after augmentation and flip; batching; bad images; COCO records."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pipeline.codec import HeatmapCodec
from pipeline.data.dataset import IMAGENET_MEAN, IMAGENET_STD, InstanceRecord, TopDownDataset, instances_from_coco
from pipeline.data.transforms import Augment, crop_to_image
from pipeline.keypoints import KeypointSchema

SCHEMA = KeypointSchema.coco17()
K = SCHEMA.num_keypoints
INPUT, HEATMAP = (96, 128), (24, 32)
DOT_RADIUS = 4


def _colour(j: int) -> np.ndarray:
    """A distinct RGB colour per keypoint, so the pixels tell which keypoint a dot is."""
    return np.array([40 + 12 * j, 250 - 12 * j, 60 + 90 * (j % 3)], dtype=np.uint8)


@pytest.fixture
def synthetic(tmp_path: Path) -> tuple[Path, np.ndarray, tuple[float, float, float, float]]:
    """A 320x240 image with one coloured dot per keypoint at known sub-pixel positions; returns path, (K, 3), box."""
    rng = np.random.default_rng(0)
    cells = rng.choice(5 * 6, size=K, replace=False)  # a grid with 14 px spacing keeps the dots apart
    keypoints = np.column_stack([120 + 14.0 * (cells % 5), 60 + 14.0 * (cells // 5)]) + rng.uniform(-2, 2, (K, 2))
    image = np.zeros((240, 320, 3), np.uint8)
    yy, xx = np.mgrid[:240, :320]
    for j, (x, y) in enumerate(keypoints):
        image[(xx - x) ** 2 + (yy - y) ** 2 <= DOT_RADIUS**2] = _colour(j)
    path = tmp_path / "person.png"  # lossless, so colours survive
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    lo, hi = keypoints.min(0) - 6, keypoints.max(0) + 6
    box = (float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1]))
    return path, np.column_stack([keypoints, np.full(K, 2.0)]), box


def _records(path: Path, keypoints: np.ndarray | None, box, n: int = 1) -> list[InstanceRecord]:
    return [InstanceRecord(instance_id=100 + i, image_path=path, bbox=box, keypoints=keypoints) for i in range(n)]


def _rgb(image: torch.Tensor) -> np.ndarray:
    """Undo the normalisation: (3, H, W) -> (H, W, 3) float in 0..255."""
    return (image.numpy().transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN) * 255.0


def test_targets_and_pixels_agree_under_augmentation_and_flip(synthetic):
    path, keypoints, box = synthetic
    codec = HeatmapCodec(INPUT, HEATMAP, dark=True)  # DARK: decoding error well below a pixel
    aug = Augment(scale_range=(0.8, 1.2), rotation_deg=40.0, rotation_prob=1.0, flip_prob=0.5)
    ds = TopDownDataset(_records(path, keypoints, box, n=8), SCHEMA, codec, INPUT, aug, seed=3)
    flip_index = SCHEMA.flip_index
    seen_flip = set()
    counts: list[int] = []
    pixels_checked = 0
    for epoch in range(2):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            s = ds[i]
            flipped = bool(s["flipped"])
            seen_flip.add(flipped)
            weight = s["target_weight"].numpy()
            # 1) Heatmaps -> decode -> image pixels: the original keypoints.
            pred, _ = codec.decode(s["heatmaps"][None])
            back = crop_to_image(pred[0], s["matrix"].numpy(), flipped, flip_index)
            # Keypoints near or past the crop border (rotation pushes some out) have clipped Gaussians that no
            # decoder can place exactly; compare those 2 sigma inside the heatmap.
            mu = codec.to_heatmap(s["keypoints"].numpy())
            margin = 2 * codec.sigma
            on_map = (weight > 0) & (mu >= margin).all(-1) & (mu <= np.array(HEATMAP) - 1 - margin).all(-1)
            counts.append(int(on_map.sum()))
            image_on_map = on_map[flip_index] if flipped else on_map  # crop order -> image order
            err = np.linalg.norm(back - keypoints[:, :2], axis=-1)[image_on_map]
            assert err.max() < 0.1, err  # contract: 1 px; measured max 0.005 px with DARK
            # The crop keypoints map back exactly.
            exact = crop_to_image(s["keypoints"].numpy(), s["matrix"].numpy(), flipped, flip_index)
            np.testing.assert_allclose(exact, keypoints[:, :2], atol=1e-3)
            # 2) The pixels agree with the targets: crop keypoint j sits on the dot of image keypoint
            #    flip_index[j] (flipped) or j, so image and labels were warped and swapped together.
            rgb = _rgb(s["image"])
            for j in np.nonzero(weight)[0]:
                u, v = np.round(s["keypoints"][j].numpy()).astype(int)
                if 0 <= u < INPUT[0] and 0 <= v < INPUT[1]:
                    source = flip_index[j] if flipped else j
                    np.testing.assert_allclose(rgb[v, u], _colour(source), atol=12)
                    pixels_checked += 1
    assert seen_flip == {False, True}
    assert min(counts) >= K // 2 and sum(counts) >= 0.8 * K * len(counts)  # the comparison covers most keypoints
    assert pixels_checked >= 0.8 * K * len(counts)


def test_eval_mode_is_deterministic_and_unflipped(synthetic):
    path, keypoints, box = synthetic
    ds = TopDownDataset(_records(path, keypoints, box), SCHEMA, HeatmapCodec(INPUT, HEATMAP), augment=None)
    a, b = ds[0], ds[0]
    assert not bool(a["flipped"])
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_augmentation_is_seeded_per_epoch_and_index(synthetic):
    path, keypoints, box = synthetic
    codec = HeatmapCodec(INPUT, HEATMAP)
    records = _records(path, keypoints, box, n=3)
    ds = TopDownDataset(records, SCHEMA, codec, augment=Augment(), seed=11)
    other = TopDownDataset(records, SCHEMA, codec, augment=Augment(), seed=11)
    assert torch.equal(ds[1]["matrix"], other[1]["matrix"])  # same (seed, epoch, index): same sample
    assert torch.equal(ds[1]["image"], other[1]["image"])
    assert not torch.equal(ds[1]["matrix"], ds[2]["matrix"])
    first = ds[1]["matrix"]
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["matrix"], first)
    ds.set_epoch(0)
    assert torch.equal(ds[1]["matrix"], first)
    assert not torch.equal(TopDownDataset(records, SCHEMA, codec, augment=Augment(), seed=12)[1]["matrix"], first)


def test_dataloader_collates_a_batch(synthetic):
    path, keypoints, box = synthetic
    records = [*_records(path, keypoints, box, n=3), InstanceRecord(7, path, box, None)]  # + one unlabeled
    ds = TopDownDataset(records, SCHEMA, HeatmapCodec(INPUT, HEATMAP), augment=Augment(), seed=0, cache_size=2)
    batch = next(iter(DataLoader(ds, batch_size=4, num_workers=0)))
    w, h = INPUT
    assert batch["image"].shape == (4, 3, h, w) and batch["image"].dtype == torch.float32
    assert batch["heatmaps"].shape == (4, K, HEATMAP[1], HEATMAP[0])
    assert batch["target_weight"].shape == (4, K) and batch["keypoints"].shape == (4, K, 2)
    assert batch["visibility"].shape == (4, K) and batch["matrix"].shape == (4, 2, 3)
    assert batch["flipped"].dtype == torch.bool and batch["instance_id"].tolist() == [100, 101, 102, 7]
    assert batch["bbox"].shape == (4, 4)
    # Unlabeled pool instance: a real image, no target.
    assert batch["target_weight"][3].sum() == 0 and batch["image"][3].abs().sum() > 0
    assert len(ds._cache) == 1  # one image file, decoded once


def test_unreadable_image_gives_zero_weight_not_an_exception(synthetic, tmp_path, caplog):
    path, keypoints, box = synthetic
    missing = tmp_path / "nope.jpg"
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"definitely not a jpeg")
    records = [
        InstanceRecord(1, missing, box, keypoints),
        InstanceRecord(2, corrupt, box, keypoints),
        InstanceRecord(3, path, box, keypoints),
    ]
    ds = TopDownDataset(records, SCHEMA, HeatmapCodec(INPUT, HEATMAP), augment=Augment(), seed=0)
    with caplog.at_level(logging.WARNING):
        batch = next(iter(DataLoader(ds, batch_size=3)))
    assert str(missing) in caplog.text and str(corrupt) in caplog.text
    for i in (0, 1):
        assert batch["target_weight"][i].sum() == 0 and batch["heatmaps"][i].abs().sum() == 0
        assert batch["image"][i].abs().sum() == 0
    assert batch["target_weight"][2].sum() > 0


def test_constructor_checks():
    codec = HeatmapCodec(INPUT, HEATMAP)
    with pytest.raises(ValueError, match="input_size"):
        TopDownDataset([], SCHEMA, codec, input_size=(192, 256))
    with pytest.raises(ValueError, match="keypoints"):
        TopDownDataset([InstanceRecord(1, Path("x.jpg"), (0, 0, 10, 10), np.zeros((4, 3)))], SCHEMA, codec)


def test_instances_from_coco_filters():
    images = [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100}]
    kps = [10, 10, 2] + [0, 0, 0] * (K - 1)
    anns = [
        {"id": 1, "image_id": 1, "bbox": [0, 0, 50, 50], "keypoints": kps, "iscrowd": 0},
        {"id": 2, "image_id": 1, "bbox": [0, 0, 50, 50], "keypoints": kps, "iscrowd": 1},  # crowd
        {"id": 3, "image_id": 1, "bbox": [0, 0, 1, 50], "keypoints": kps},  # too thin
        {"id": 4, "image_id": 1, "bbox": [0, 0, 50, 50], "keypoints": [0] * (3 * K)},  # no labeled keypoint
        {"id": 5, "image_id": 1, "bbox": [0, 0, 50, 50]},  # pool instance: no keypoints at all
        {"id": 6, "image_id": 9, "bbox": [0, 0, 50, 50], "keypoints": kps},  # unknown image
    ]
    train = instances_from_coco(images, anns, Path("/root"), K)
    assert [r.instance_id for r in train] == [1]
    assert train[0].image_path == Path("/root/a.jpg") and train[0].keypoints.shape == (K, 3)
    pool = instances_from_coco(images, anns, Path("/root"), K, require_keypoints=False)
    assert [r.instance_id for r in pool] == [1, 4, 5]
    assert pool[2].keypoints is None
    with pytest.raises(ValueError, match="keypoint values"):
        instances_from_coco(images, [{"id": 1, "image_id": 1, "bbox": [0, 0, 5, 5], "keypoints": [1, 2, 2]}], Path(), K)


def test_coco_val4_records_load(coco_val4):
    gt = json.loads((coco_val4 / "test_coco.json").read_text())
    records = instances_from_coco(gt["images"], gt["annotations"], coco_val4 / "images", K)
    assert len(records) == 12  # 14 people, 2 without keypoints
    codec = HeatmapCodec((192, 256), (48, 64))
    ds = TopDownDataset(records, SCHEMA, codec, augment=None)
    for i in range(len(ds)):
        s = ds[i]
        assert s["image"].abs().sum() > 0
        labeled = records[i].keypoints[:, 2] > 0
        np.testing.assert_array_equal(s["target_weight"].numpy() > 0, labeled)  # eval crops keep every keypoint


def test_the_head_s_target_codec_decides_what_a_sample_carries(synthetic):
    """The dataset asks the head's codec for targets: Gaussian maps for the heatmap head; ASLA (keypoints as objects)
    gets only the weights, and they are the heatmap codec's weights, keypoint by keypoint."""
    from models.heads import target_codec

    path, keypoints, box = synthetic
    keypoints = keypoints.copy()
    keypoints[3, 2] = 0  # unlabeled
    keypoints[5, :2] = (5000.0, 5000.0)  # far outside the crop
    codec = HeatmapCodec(INPUT, HEATMAP, sigma=2.0)
    records = _records(path, keypoints, box)
    heatmap_sample = TopDownDataset(records, SCHEMA, target_codec("heatmap", codec))[0]
    asla_sample = TopDownDataset(records, SCHEMA, target_codec("asla", codec))[0]
    assert heatmap_sample["heatmaps"].shape == (K, HEATMAP[1], HEATMAP[0])
    assert "heatmaps" not in asla_sample
    assert torch.equal(asla_sample["target_weight"], heatmap_sample["target_weight"])
    assert asla_sample["target_weight"][3] == 0 and asla_sample["target_weight"][5] == 0
    assert asla_sample["target_weight"].sum() == K - 2
    for name in ("image", "keypoints", "matrix", "bbox"):
        assert torch.equal(asla_sample[name], heatmap_sample[name])
