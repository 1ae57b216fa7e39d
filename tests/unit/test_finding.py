"""The instance finder's geometry: boxes -> centre targets -> boxes, the letterbox and its augmentation, found
boxes mapped back to the image, found instances as pool annotations, and the find stage's pass-through."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.pose_model import build_finder
from pipeline.codec import CentreCodec
from pipeline.config import load_params, with_overrides
from pipeline.data.prepare import prepare
from pipeline.finding import (
    FinderDataset,
    FinderImage,
    box_recall_and_ap,
    find_pool,
    found_annotations,
    letterbox,
    transform_boxes,
    transform_keypoints,
    unboxed_images,
)

REPO = Path(__file__).resolve().parents[2]
BOXES = np.array([[10.0, 20.0, 50.0, 100.0], [100.0, 100.0, 30.5, 60.25], [200.0, 5.0, 40.0, 40.0]])


def _logits(targets: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """A perfect finder's outputs: the targets themselves (the centre map as logits)."""
    centre = torch.from_numpy(targets["centre"][None]).clamp(1e-4, 1 - 1e-4)
    return {
        "centre": torch.logit(centre),
        "size": torch.from_numpy(targets["size"][None]),
        "offset": torch.from_numpy(targets["offset"][None]),
    }


def test_centre_codec_decodes_what_it_encodes():
    codec = CentreCodec((256, 256), stride=4, min_score=0.5)
    targets = codec.encode(BOXES)
    assert targets["centre"].shape == (1, 64, 64) and targets["size"].shape == (2, 64, 64)
    assert targets["centre_mask"].sum() == 3 and targets["centre"].max() == 1.0
    boxes, scores = codec.decode(_logits(targets))[0]
    order = np.argsort(boxes[:, 0])
    np.testing.assert_allclose(boxes[order], BOXES, atol=1e-3)
    assert (scores > 0.99).all()
    assert len(codec.decode(_logits(codec.encode(np.zeros((0, 4)))))[0][0]) == 0  # an empty image finds nobody


def test_letterbox_keeps_the_aspect_and_augmented_boxes_follow_the_pixels(tmp_path):
    matrix = letterbox(400, 200, (128, 128))  # scale 0.32, 32 px bands above and below
    np.testing.assert_allclose(matrix, [[0.32, 0, 0], [0, 0.32, 32]])
    np.testing.assert_allclose(transform_boxes(np.array([[0, 0, 400, 200]]), matrix, (128, 128))[0], [[0, 32, 128, 64]])
    # 56% inside the input: clipped; 28% inside: dropped
    shifted = np.array([[1.0, 0, 100], [0, 1.0, 0]])
    kept, which = transform_boxes(np.array([[0, 0, 50, 50], [0, 10, 100, 20]]), shifted, (128, 128))
    np.testing.assert_allclose(kept, [[100, 0, 28, 50]])
    assert which.tolist() == [True, False]  # which people's keypoints go with the kept boxes

    # an augmented sample: the centre of each target box lies on the bright square drawn at the box
    import cv2

    image = np.zeros((200, 400, 3), np.uint8)
    box = [250.0, 60.0, 60.0, 80.0]
    image[60:140, 250:310] = 255
    cv2.imwrite(str(tmp_path / "one.png"), image)
    dataset = FinderDataset(
        [FinderImage(tmp_path / "one.png", np.array([box]), 400, 200)], CentreCodec((128, 128)), True
    )
    for epoch in range(6):  # flips and zooms among them
        dataset.epoch = epoch
        sample = dataset[0]
        cell = np.argwhere(sample["centre_mask"].numpy() == 1)
        if len(cell) == 0:
            continue  # shifted out of view
        y, x = (cell[0] + 0.5) * 4
        # the square, brighter than the background whatever the contrast and brightness jitter did
        assert sample["image"][:, int(y), int(x)].mean() > sample["image"].mean(0).median() + 0.3


def test_keypoint_maps_peak_at_visible_keypoints_and_a_mirror_swaps_left_and_right():
    """The finder's auxiliary task: each visible (v = 2) keypoint is a peak of its own channel at its cell; an
    occluded (v = 1) or missing one gives no peak; a mirrored view swaps left and right channels; the head's loss
    includes the maps' term only when it has the branch."""
    from models.pose_model import build_finder

    codec = CentreCodec((64, 64), stride=4)
    box = np.array([[8.0, 8.0, 40.0, 48.0]])
    keypoints = np.array([[[20.0, 12.0, 2], [30.0, 40.0, 1], [0.0, 0.0, 0]]])  # (N=1, K=3, 3)
    heat = codec.encode(box, keypoints)["keypoint_heat"]
    assert heat.shape == (3, 16, 16)
    assert np.argwhere(heat[0] == 1).tolist() == [[2, 4]]  # row 12 / 4 - 0.5, column 20 / 4 - 0.5, rounded
    assert heat[1].max() == 0 and heat[2].max() == 0
    assert "keypoint_heat" not in codec.encode(box)

    mirror = np.array([[-1.0, 0.0, 63.0], [0.0, 1.0, 0.0]])
    flipped = transform_keypoints(keypoints, mirror, (64, 64), flip_index=np.array([1, 0, 2]))
    np.testing.assert_allclose(flipped[0, 1], [43.0, 12.0, 2])  # the first keypoint, now in the second channel
    np.testing.assert_allclose(flipped[0, 0], [33.0, 40.0, 1])
    shifted = transform_keypoints(keypoints, np.array([[1.0, 0, 40.0], [0, 1.0, 0]]), (64, 64), np.arange(3))
    assert shifted[0, 0, 2] == 2 and shifted[0, 1, 2] == 0  # x 60 is inside a 64 px input, 70 is not

    targets = {k: torch.from_numpy(v)[None] for k, v in codec.encode(box, keypoints).items()}
    images = torch.zeros(1, 3, 64, 64)
    with_maps = build_finder(backbone="tiny", variant=None, codec=codec, num_keypoints=3, keypoint_weight=2.0)
    losses = with_maps.head.loss(with_maps(images), targets)
    parts = {k: float(v.detach()) for k, v in losses.items()}
    assert parts["keypoint"] > 0
    assert parts["loss"] == pytest.approx(
        parts["centre"] + parts["size"] + parts["offset"] + 2.0 * parts["keypoint"], rel=1e-5
    )
    boxes_only = build_finder(backbone="tiny", variant=None, codec=codec)
    assert "keypoint" not in boxes_only.head.loss(boxes_only(images), targets)


def test_found_people_become_pool_annotations_whose_ids_are_their_identity():
    """A found person's id is a function of image file and box: the same person keeps it when the pool grows (other
    images renumbered), and it lies in its own range, apart from every source's ids and from added people's."""
    from pipeline.corrections import ADDED_ID_BASE, FOUND_ID_BASE, found_instance_id, is_found_id

    images = [
        {"id": 7, "file_name": "images/pool/a.jpg", "width": 100, "height": 80},
        {"id": 9, "file_name": "b.jpg", "width": 40, "height": 30},
    ]
    found = [
        (np.array([[1.0, 2.0, 30.0, 40.0], [50, 10, 20, 20]]), np.array([0.9, 0.4])),
        (np.zeros((0, 4)), np.zeros(0)),
    ]
    annotations = found_annotations(images, found, 17, 1)
    assert [a["id"] for a in annotations] == [
        found_instance_id("images/pool/a.jpg", (1.0, 2.0, 30.0, 40.0)),
        found_instance_id("images/pool/a.jpg", (50.0, 10.0, 20.0, 20.0)),
        found_instance_id("b.jpg", (0.0, 0.0, 40.0, 30.0)),  # nobody found: the whole image stands in
    ]
    assert all(FOUND_ID_BASE <= a["id"] < ADDED_ID_BASE and is_found_id(a["id"]) for a in annotations)
    renumbered = found_annotations([{**images[0], "id": 70}, images[1]], found, 17, 1)
    assert [a["id"] for a in renumbered] == [a["id"] for a in annotations]
    first = annotations[0]
    assert first["bbox"] == [1.0, 2.0, 30.0, 40.0] and first["detection_score"] == 0.9 and first["source"] == "found"
    assert first["num_keypoints"] == 0 and len(first["keypoints"]) == 51
    pool = {"images": images, "annotations": annotations[:2]}
    assert [im["id"] for im in unboxed_images(pool)] == [9]


def test_recall_and_box_ap_of_a_perfect_and_of_a_blind_finder():
    gt = {
        "images": [{"id": 1, "width": 300, "height": 300, "file_name": "a.jpg"}],
        "annotations": [
            {"id": i + 1, "image_id": 1, "category_id": 1, "bbox": list(b), "area": float(b[2] * b[3]), "iscrowd": 0}
            for i, b in enumerate(BOXES)
        ],
        "categories": [{"id": 1, "name": "person"}],
    }
    perfect = box_recall_and_ap(gt, gt["images"], [(BOXES, np.array([0.9, 0.8, 0.7]))])
    assert perfect["recall_iou50"] == perfect["recall_iou75"] == 1.0 and perfect["box_ap"] > 0.99
    half = BOXES[:1] + np.array([5.0, 5.0, 0.0, 0.0])  # one person found, shifted: IoU 0.75 (just below)
    partial = box_recall_and_ap(gt, gt["images"], [(half, np.array([0.9]))])
    assert partial["recall_iou50"] == pytest.approx(1 / 3) and partial["recall_iou75"] == 0.0
    blind = box_recall_and_ap(gt, gt["images"], [(np.zeros((0, 4)), np.zeros(0))])
    assert blind["recall_iou50"] == 0.0 and blind["box_ap"] == 0.0


def test_without_unboxed_images_the_find_stage_passes_the_pool_through(tmp_path):
    params = with_overrides(
        load_params(REPO / "params.yaml"),
        {"data.synthetic.num_images": 16, "data.val_images": 3, "data.test_images": 1, "data.labeled": 6},
    )
    prepare(params.data, tmp_path / "prepared")
    metrics = find_pool(params, tmp_path / "prepared", tmp_path / "pool.json", tmp_path / "finder", progress=False)
    assert metrics == {"unboxed_images": 0, "finder": "none", "found": 0, "images_without_people": 0}
    assert json.loads((tmp_path / "pool.json").read_text()) == json.loads((tmp_path / "prepared/pool.json").read_text())
    assert not (tmp_path / "finder" / "finder.pt").exists()


def test_one_per_frame_gives_each_unboxed_frame_its_whole_frame(tmp_path):
    import shutil

    params = with_overrides(
        load_params(REPO / "params.yaml"),
        {"data.synthetic.num_images": 16, "data.val_images": 3, "data.test_images": 1, "data.labeled": 6},
    )
    prepare(with_overrides(params, {"data.seed": 99}).data, tmp_path / "other")  # pictures the source never saw
    (tmp_path / "frames").mkdir()
    for image in sorted((tmp_path / "other" / "images").glob("*.jpg"))[:2]:
        shutil.copy(image, tmp_path / "frames" / image.name)
    params = with_overrides(params, {"data.pool.images": ["frames"], "find.one_per_frame": True})
    prepare(params.data, tmp_path / "prepared", project_root=tmp_path)
    metrics = find_pool(params, tmp_path / "prepared", tmp_path / "pool.json", tmp_path / "finder", progress=False)
    assert metrics["finder"] == "whole frame" and metrics["found"] == 2
    pool = json.loads((tmp_path / "pool.json").read_text())
    found = [a for a in pool["annotations"] if a.get("source") == "found"]
    sizes = {im["id"]: [0.0, 0.0, float(im["width"]), float(im["height"])] for im in pool["images"]}
    assert all(a["bbox"] == sizes[a["image_id"]] for a in found)


def test_a_seed_image_with_a_person_left_out_of_the_labels_is_not_a_finder_image(coco_mini, tmp_path):
    """COCO boxes people without keypoints and crowds; prepare leaves them out of the labels, so the finder would
    learn them as background: prepare marks such images and the finder leaves them out."""
    from pipeline.finding import finder_images

    root = coco_mini.resolve()
    params = with_overrides(
        load_params(REPO / "params.yaml"),
        {
            "data.source": "coco",
            "data.coco.annotations": str(root / "annotations/person_keypoints_train2017.json"),
            "data.coco.images": str(root / "train2017"),
            "data.split": "image",
            "data.labeled": 0.8,
            "data.val_images": 4,
            "data.test_images": 2,
        },
    )
    prepare(params.data, tmp_path / "prepared")
    labeled = json.loads((tmp_path / "prepared" / "labeled.json").read_text())
    pool = json.loads((tmp_path / "prepared" / "pool.json").read_text())
    marked = {im["id"] for im in labeled["images"] if im.get("unlabeled_people")}
    source = json.loads((root / "annotations/person_keypoints_train2017.json").read_text())
    left_out = {a["image_id"] for a in source["annotations"] if a.get("iscrowd") or not a.get("num_keypoints")}
    assert marked and marked == left_out & {im["id"] for im in labeled["images"]}
    used = {im.path.name for im in finder_images(labeled, pool, tmp_path / "prepared")}
    assert used and not used & {im["file_name"].rsplit("/", 1)[-1] for im in labeled["images"] if im["id"] in marked}
    assert not any("unlabeled_people" in im for im in pool["images"])


def test_flip_test_averages_a_mirror_so_a_mirrored_image_gives_mirrored_boxes():
    """With ``flip_test`` the maps of an image and of its mirror are exact mirrors (x offsets change sign), so the
    boxes found on a mirrored image are the mirrored boxes; without it an untrained finder's are not."""
    torch.manual_seed(0)
    codec = CentreCodec((64, 64), min_score=0.0, max_instances=5)
    model = build_finder(backbone="tiny", variant=None, codec=codec, flip_test=True).eval()
    images = torch.randn(1, 3, 64, 64)

    def boxes(x: torch.Tensor) -> np.ndarray:
        found, _ = model.head.decode(model.predict(x))[0]
        return found[np.lexsort(found.T[::-1])]

    plain, mirrored = boxes(images), boxes(images.flip(-1))
    mirrored[:, 0] = 64 - mirrored[:, 0] - mirrored[:, 2]  # x of the mirrored box, back in the first image
    assert np.allclose(plain[np.lexsort(plain.T[::-1])], mirrored[np.lexsort(mirrored.T[::-1])], atol=1e-4)
    model.flip_test = False
    maps, flipped = model.predict(images), model.predict(images.flip(-1))
    assert not torch.allclose(maps["centre"], flipped["centre"].flip(-1), atol=1e-4)


def test_an_image_with_nobody_found_gets_a_whole_image_stand_in_and_found_people_score_above_it():
    """An image on which the finder finds nobody still reaches an annotator: its whole image is one instance with
    detection_score 0 (the stand-in select sends to its "nobody_found" queue); a found person, even at min_score 0,
    scores above it, so the two never mix."""
    from pipeline.data.pool_predictions import NOBODY_FOUND_SCORE, nobody_found
    from pipeline.finding import MIN_FOUND_SCORE, found_annotations

    images = [
        {"id": 1, "file_name": "images/pool/a.jpg", "width": 64, "height": 48},
        {"id": 2, "file_name": "images/pool/b.jpg", "width": 30, "height": 20},
    ]
    found = [(np.array([[4.0, 5.0, 10.0, 20.0]]), np.array([0.00001])), (np.zeros((0, 4)), np.zeros(0))]
    person, stand_in = found_annotations(images, found, num_keypoints=3, category_id=1)
    assert person["image_id"] == 1 and person["detection_score"] == MIN_FOUND_SCORE
    assert stand_in["image_id"] == 2 and stand_in["bbox"] == [0.0, 0.0, 30.0, 20.0]
    assert stand_in["detection_score"] == NOBODY_FOUND_SCORE and stand_in["num_keypoints"] == 0
    assert nobody_found(np.array([person["detection_score"], stand_in["detection_score"], np.nan])).tolist() == [
        False,
        True,
        False,
    ]


def test_the_finder_also_learns_from_the_pool_images_annotators_completed(tmp_path):
    """Images annotators completed (an answered "nobody found" task) join the seed images the finder trains on,
    people and all, or as background when nobody is there; data/completed.json is a valid COCO file even when empty."""
    import shutil

    from pipeline.data.coco import write_coco

    params = with_overrides(
        load_params(REPO / "params.yaml"),
        {"data.synthetic.num_images": 16, "data.val_images": 3, "data.test_images": 1, "data.labeled": 6},
    )
    prepare(with_overrides(params, {"data.seed": 99}).data, tmp_path / "other")  # pictures the source never saw
    (tmp_path / "mine").mkdir()
    for image in sorted((tmp_path / "other" / "images").glob("*.jpg"))[:2]:
        shutil.copy(image, tmp_path / "mine" / image.name)
    params = with_overrides(
        params,
        {
            "data.split": "image",
            "data.pool.images": ["mine"],
            "find.steps": 2,
            "find.batch_size": 2,
            "find.input_size": [64, 64],
        },
    )
    prepare(params.data, tmp_path / "prepared", project_root=tmp_path)
    pool = json.loads((tmp_path / "prepared" / "pool.json").read_text())
    unboxed = unboxed_images(pool)
    k = len(pool["categories"][0]["keypoints"])
    person = {"id": 1, "image_id": unboxed[0]["id"], "category_id": pool["categories"][0]["id"], "iscrowd": 0}
    person |= {"bbox": [10.0, 10.0, 40.0, 90.0], "area": 3600.0, "keypoints": [20.0, 20.0, 2] * k, "num_keypoints": k}
    completed = {"images": unboxed[:2], "annotations": [person], "categories": pool["categories"]}
    write_coco(tmp_path / "completed.json", completed)
    write_coco(tmp_path / "none.json", {"images": [], "annotations": [], "categories": pool["categories"]})

    plain = find_pool(params, tmp_path / "prepared", tmp_path / "a.json", tmp_path / "fa", progress=False)
    more = find_pool(
        params, tmp_path / "prepared", tmp_path / "b.json", tmp_path / "fb", progress=False, completed=completed
    )
    assert plain["completed_images"] == 0 and more["completed_images"] == 2
    assert more["train_images"] == plain["train_images"] + 2
