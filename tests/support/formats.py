"""Files in other tools' formats, made from the real COCO and DeepLabCut data in ../shared/data, for the format tests:
each is laid out as that tool or repository publishes it (MPII's list, CrowdPose's and AIC's COCO variants, a Label
Studio JSON export, a SLEAP .slp written by sleap-io)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from pipeline.keypoints import (
    AIC_KEYPOINT_NAMES,
    COCO_KEYPOINT_NAMES,
    COCO_SKELETON_1BASED,
    CROWDPOSE_KEYPOINT_NAMES,
    MPII_KEYPOINT_NAMES,
)


def coco_people(coco_mini: Path) -> tuple[dict, list[dict]]:
    """coco_mini's train file and its labeled, non-crowd people."""
    data = json.loads((coco_mini / "annotations/person_keypoints_train2017.json").read_text())
    people = [a for a in data["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"]]
    return data, people


def _coco_points(ann: dict) -> dict[str, tuple[float, float] | None]:
    kps = np.asarray(ann["keypoints"], dtype=float).reshape(-1, 3)
    return {n: (float(x), float(y)) if v > 0 else None for n, (x, y, v) in zip(COCO_KEYPOINT_NAMES, kps, strict=True)}


def _mid(a: tuple[float, float] | None, b: tuple[float, float] | None) -> tuple[float, float] | None:
    return None if a is None or b is None else ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)


def _derived(points: dict[str, tuple[float, float] | None], names: tuple[str, ...]) -> list:
    """The keypoints of another schema from COCO's: limb joints by name, the head / neck ones approximated."""
    neck = _mid(points["left_shoulder"], points["right_shoulder"])
    extra = {
        "head": points["nose"],
        "head_top": points["nose"],
        "neck": neck,
        "thorax": neck,
        "upper_neck": _mid(neck, points["nose"]),
        "pelvis": _mid(points["left_hip"], points["right_hip"]),
    }
    return [points.get(n) if n in points else extra[n] for n in names]


def _as_coco_keypoints(points: list) -> list[float]:
    out: list[float] = []
    for p in points:
        out += [p[0], p[1], 2] if p is not None else [0, 0, 0]
    return out


def crowdpose_like(coco_mini: Path, out: Path, schema: str = "crowdpose") -> Path:
    """A CrowdPose (or AIC) file as published: 14 keypoints, no ``area``; CrowdPose's carries COCO's 17-keypoint
    skeleton (indices up to 17) on its 14 keypoints, AIC's no skeleton."""
    data, people = coco_people(coco_mini)
    names = CROWDPOSE_KEYPOINT_NAMES if schema == "crowdpose" else AIC_KEYPOINT_NAMES
    annotations = []
    for ann in people:
        kps = _as_coco_keypoints(_derived(_coco_points(ann), names))
        n = sum(1 for v in kps[2::3] if v)
        if n:
            annotations.append(
                {
                    "id": ann["id"],
                    "image_id": ann["image_id"],
                    "category_id": 1,
                    "keypoints": kps,
                    "num_keypoints": n,
                    "bbox": ann["bbox"],
                    "iscrowd": 0,
                }
            )
    category = {"id": 1, "name": "person", "supercategory": "person", "keypoints": list(names)}
    if schema == "crowdpose":
        category["skeleton"] = [list(e) for e in COCO_SKELETON_1BASED]
    out.write_text(json.dumps({"images": data["images"], "annotations": annotations, "categories": [category]}))
    return out


def two_categories(coco_mini: Path, out: Path) -> Path:
    """coco_mini's people plus a second keypoint category, ``face`` (5 keypoints), on the same people."""
    data, people = coco_people(coco_mini)
    face = ("nose", "left_eye", "right_eye", "left_ear", "right_ear")
    data["categories"].append({"id": 2, "name": "face", "supercategory": "person", "keypoints": list(face)})
    for ann in people:
        kps = ann["keypoints"][: 3 * len(face)]
        n = sum(1 for v in kps[2::3] if v)
        if n:
            data["annotations"].append(
                {**ann, "id": ann["id"] + 10**9, "category_id": 2, "keypoints": kps, "num_keypoints": n}
            )
    out.write_text(json.dumps(data))
    return out


def mpii_list(coco_mini: Path, out: Path) -> Path:
    """MPII's JSON layout (MMPose's mpii_train.json): 1-based joints, joints_vis, center, scale = height / 200."""
    _, people = coco_people(coco_mini)
    data = json.loads((coco_mini / "annotations/person_keypoints_train2017.json").read_text())
    files = {im["id"]: im["file_name"] for im in data["images"]}
    records = []
    for ann in people:
        joints = _derived(_coco_points(ann), MPII_KEYPOINT_NAMES)
        if sum(p is not None for p in joints) < 2:
            continue
        x, y, w, h = ann["bbox"]
        records.append(
            {
                "image": files[ann["image_id"]],
                "joints": [[p[0] + 1, p[1] + 1] if p is not None else [-1.0, -1.0] for p in joints],
                "joints_vis": [int(p is not None) for p in joints],
                "center": [x + w / 2 + 1, y + h / 2 + 1 - 15 * h / 200],
                "scale": h / 200,
            }
        )
    out.write_text(json.dumps(records))
    return out


def labelstudio_export(coco_mini: Path, out: Path, unlabeled: int = 3) -> Path:
    """A Label Studio JSON export of a keypoint project made in Label Studio's UI (its own control names): per
    image a rectangle per person with the person's keypoints as children (``parentID``), percent coordinates; the
    first image as an upload (``/data/upload/1/<8 hex>-name``), the last ``unlabeled`` tasks without annotation."""
    data, people = coco_people(coco_mini)
    by_image: dict[int, list[dict]] = {}
    for ann in people:
        by_image.setdefault(ann["image_id"], []).append(ann)
    tasks = []
    images = [im for im in data["images"] if im["id"] in by_image]
    for n, im in enumerate(images):
        w, h = im["width"], im["height"]
        url = f"/data/local-files/?d=train2017/{im['file_name']}"
        if n == 0:
            url = f"/data/upload/1/0a1b2c3d-{im['file_name']}"
        result = []
        for p, ann in enumerate(by_image[im["id"]]):
            size = {"original_width": w, "original_height": h, "image_rotation": 0, "to_name": "img"}
            bx, by, bw, bh = ann["bbox"]
            result.append(
                {
                    "id": f"p{p}",
                    "type": "rectanglelabels",
                    "from_name": "box",
                    **size,
                    "value": {
                        "x": (bx + 0.5) * 100 / w,
                        "y": (by + 0.5) * 100 / h,
                        "width": bw * 100 / w,
                        "height": bh * 100 / h,
                        "rotation": 0,
                        "rectanglelabels": ["person"],
                    },
                }
            )
            flags = ann["keypoints"][2::3]
            for (name, point), flag in zip(_coco_points(ann).items(), flags, strict=True):
                if point is None:
                    continue
                rid = f"p{p}-{name}"
                value = {
                    "x": (point[0] + 0.5) * 100 / w,
                    "y": (point[1] + 0.5) * 100 / h,
                    "width": 0.5,
                    "keypointlabels": [name],
                }
                result.append(
                    {
                        "id": rid,
                        "type": "keypointlabels",
                        "from_name": "kp",
                        "parentID": f"p{p}",
                        "value": value,
                        **size,
                    }
                )
                if flag == 1:  # hidden: Label Studio's per-region choice, as poseloop's labeling config has it
                    result.append(
                        {
                            "id": rid,
                            "type": "choices",
                            "from_name": "occluded",
                            "to_name": "img",
                            "value": {"choices": ["occluded"]},
                        }
                    )
        annotations = (
            [] if n >= len(images) - unlabeled else [{"id": 100 + n, "result": result, "was_cancelled": False}]
        )
        tasks.append({"id": n + 1, "data": {"image": url}, "annotations": annotations, "predictions": []})
    uploads = out.parent / "labelstudio_media"
    (uploads / "train2017").mkdir(parents=True, exist_ok=True)
    for n, im in enumerate(images):
        name = f"0a1b2c3d-{im['file_name']}" if n == 0 else f"train2017/{im['file_name']}"
        shutil.copy(coco_mini / "train2017" / im["file_name"], uploads / name)
    out.write_text(json.dumps(tasks))
    return out


def sleap_file(dlc_openfield: Path, out: Path, embed: bool, users: int = 30, predicted: int = 10) -> Path:
    """A .slp written with sleap-io from the DeepLabCut frames: ``users`` frames with user instances (the human
    labels), the next ``predicted`` with predicted instances only (labels + 3 px noise, as a model would give)."""
    import sleap_io as sio

    from pipeline.data.deeplabcut import read_deeplabcut_project

    coco, root = read_deeplabcut_project(dlc_openfield)
    names = coco["categories"][0]["keypoints"]
    skeleton = sio.Skeleton(names, edges=[(names[0], names[1]), (names[0], names[2])], name="mouse")
    frames = coco["images"][: users + predicted]
    video = sio.Video.from_filename([str(root / im["file_name"]) for im in frames])
    rng = np.random.default_rng(0)
    labeled = []
    for i, (im, ann) in enumerate(zip(frames, coco["annotations"], strict=False)):
        xy = np.asarray(ann["keypoints"], dtype=float).reshape(-1, 3)[:, :2]
        if i < users:
            inst = sio.Instance.from_numpy(xy, skeleton=skeleton)
        else:
            noisy = xy + rng.normal(0, 3, xy.shape)
            inst = sio.PredictedInstance.from_numpy(noisy, skeleton=skeleton, point_scores=np.full(len(names), 0.7))
        labeled.append(sio.LabeledFrame(video=video, frame_idx=i, instances=[inst]))
        assert im["id"] == ann["image_id"]
    sio.save_slp(
        sio.Labels(labeled_frames=labeled, videos=[video], skeletons=[skeleton]),
        str(out),
        embed="all" if embed else False,
        verbose=False,
    )
    return out


def small_dlc_project(dlc_openfield: Path, out: Path, frames: int = 55) -> Path:
    """A DeepLabCut project of ``frames`` labeled frames: the open-field project's first ones, its config.yaml,
    the label file written by poseloop's DeepLabCut writer."""
    from pipeline.data.deeplabcut import read_deeplabcut_project, write_deeplabcut_labels

    coco, root = read_deeplabcut_project(dlc_openfield)
    images = coco["images"][:frames]
    for im in images:
        dest = out / im["file_name"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / im["file_name"], dest)
    shutil.copy(root / "config.yaml", out / "config.yaml")
    kept = {im["id"] for im in images}
    write_deeplabcut_labels(
        out, {**coco, "images": images, "annotations": [a for a in coco["annotations"] if a["image_id"] in kept]}
    )
    return out
