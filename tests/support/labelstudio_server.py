"""Test helpers for the Label Studio hand-off: one real server per test session, tiny images, true instances,
a 4-keypoint schema and the keypoint regions of an annotation.

The server's first start runs Label Studio's migrations (~30 s on 2 cores), so the session shares one server
(``tests/conftest.py``: ``labelstudio`` and ``labelstudio_env``); each test uses its own project title.
Layout of the session folder::

    <tmp>/labelstudio/data/            --data-dir (database, server.log, credentials.json)
    <tmp>/labelstudio/docs/            LOCAL_FILES_DOCUMENT_ROOT (the project's data/)
    <tmp>/labelstudio/docs/prepared/   the local-files storage of every project (data/prepared/)

A test that needs images writes them under ``docs/prepared/`` (``write_images``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.keypoints import KeypointSchema

SCHEMA4 = KeypointSchema.from_coco_category(
    {"id": 1, "name": "mouse", "keypoints": ["snout", "left_ear", "right_ear", "tail"], "skeleton": [[1, 2], [1, 3]]}
)


def require_label_studio() -> None:
    """Skip, loudly, when label-studio or its SDK cannot be imported (nothing of the hand-off is tested then)."""
    for module in ("label_studio", "label_studio_sdk"):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            pytest.skip(
                f"!!! {module} cannot be imported ({exc}): the Label Studio tests did NOT run; "
                "install the project with `make setup` !!!"
            )


@dataclass
class SessionServer:
    """The session's server and its folders."""

    server: object  # pipeline.labelstudio.server.LocalLabelStudio (imported lazily: the SDK may be absent)
    root: Path
    document_root: Path
    image_root: Path

    @property
    def url(self) -> str:
        return self.server.url  # type: ignore[attr-defined]

    @property
    def token(self) -> str:
        return self.server.token  # type: ignore[attr-defined]


def start_session_server(root: Path) -> SessionServer:
    """Start one server on a free port with its data in ``root``; raises if it does not come up."""
    require_label_studio()
    from pipeline.labelstudio.server import LocalLabelStudio, free_port

    document_root = root / "docs"
    image_root = document_root / "prepared"
    (image_root / "images").mkdir(parents=True, exist_ok=True)
    server = LocalLabelStudio(data_dir=root / "data", document_root=document_root, port=free_port())
    server.start()
    return SessionServer(server=server, root=root, document_root=document_root, image_root=image_root)


def write_images(image_root: Path, prefix: str, sizes: list[tuple[int, int]], seed: int = 0) -> list[dict]:
    """Write one small image per ``(width, height)`` (PNG and JPEG alternately) under ``image_root/images``.

    Returns COCO ``images`` records (ids 1..n) with ``file_name`` relative to ``image_root`` (the ``prepared``
    folder), as in pool.json: ``images/<prefix>_<i>.png``.
    """
    rng = np.random.default_rng(seed)
    images = []
    for i, (w, h) in enumerate(sizes):
        ext = "png" if i % 2 == 0 else "jpg"
        name = f"images/{prefix}_{i}.{ext}"
        pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        assert cv2.imwrite(str(image_root / name), pixels)
        images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
    return images


def true_instances(
    images: list[dict], schema: KeypointSchema, per_image: int, first_id: int = 100, seed: int = 0
) -> dict:
    """A COCO dict of random people on ``images``: sub-pixel keypoints anywhere in the image (edges included), a
    mix of visibility 2, 1 and 0 (x = y = 0 when 0), boxes around the labeled points. Annotation id = instance id."""
    rng = np.random.default_rng(seed)
    k = schema.num_keypoints
    annotations = []
    next_id = first_id
    for image in images:
        w, h = image["width"], image["height"]
        for _ in range(per_image):
            xy = np.c_[rng.uniform(-0.5, w - 0.5, k), rng.uniform(-0.5, h - 0.5, k)]
            xy[0] = (-0.5, h - 0.5)  # the image's corner: the extreme of the pixel convention
            vis = rng.choice([2, 2, 1, 0], size=k)
            vis[:2] = (2, 1)  # every instance has a visible and an occluded point
            xy[vis == 0] = 0.0
            labeled = xy[vis > 0]
            x0, y0 = labeled.min(axis=0)
            x1, y1 = labeled.max(axis=0)
            kps = np.c_[xy, vis].ravel()
            annotations.append(
                {
                    "id": next_id,
                    "image_id": image["id"],
                    "category_id": schema.category_id,
                    "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                    "area": float((x1 - x0) * (y1 - y0)),
                    "iscrowd": 0,
                    "keypoints": [float(v) if i % 3 != 2 else int(v) for i, v in enumerate(kps)],
                    "num_keypoints": int((vis > 0).sum()),
                }
            )
            next_id += 1
    return {"images": images, "annotations": annotations, "categories": [schema.to_coco_category()]}


def tasks_for(
    coco: dict, schema: KeypointSchema, model_version: str, image_prefix: str = "prepared", seed: int = 0
) -> list[dict]:
    """Tasks for every instance of ``coco`` with a noisy "prediction" of its keypoints (flat 2K + scores)."""
    from pipeline.data.labelstudio.tasks import instance_to_task

    rng = np.random.default_rng(seed)
    images = {im["id"]: im for im in coco["images"]}
    tasks = []
    for rank, ann in enumerate(coco["annotations"]):
        image = images[ann["image_id"]]
        kps = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        predicted = kps[:, :2] + rng.normal(0, 1.0, size=(len(kps), 2))
        tasks.append(
            instance_to_task(
                instance_id=ann["id"],
                image_id=ann["image_id"],
                image_path=f"{image_prefix}/{image['file_name']}",
                image_file=image["file_name"],
                width=image["width"],
                height=image["height"],
                bbox=ann["bbox"],
                keypoints=predicted.ravel(),
                scores=rng.uniform(0.2, 1.0, schema.num_keypoints),
                schema=schema,
                model_version=model_version,
                uncertainty=1.0 - rank / max(1, len(coco["annotations"])),
            )
        )
    return tasks


def keypoint_region(rid: str, label: str, x: float, y: float, size: tuple | None = (100, 50)) -> dict:
    """One keypoint of an annotation's result as Label Studio stores it (``x``, ``y`` in percent of ``size``; without a
    ``size`` the region lacks original_width / original_height, as a malformed one does)."""
    item = {
        "id": rid,
        "from_name": "kp",
        "to_name": "image",
        "type": "keypointlabels",
        "value": {"x": x, "y": y, "width": 1, "keypointlabels": [label]},
    }
    if size is not None:
        item["original_width"], item["original_height"] = size
    return item
