"""Turn a data source into the prepared split of docs/DESIGN.md §3.

``data/prepared/`` holds ``labeled.json`` (seed labels, ``source: "seed"``), ``pool.json`` (unlabeled instances:
image + person box, keypoints zeroed), ``val.json`` and ``test.json`` (whole images, fixed by the seed across rounds),
``oracle.json`` (the pool's hidden truth, read only by the simulated annotator and benchmarks) and ``images/``.

Splits are made on whole images for val/test (so crowd regions and unannotated people are evaluated the way
pycocotools expects) and on instances for the seed/pool split (the seed budget is a count of people, and later rounds
label instances one at a time).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np

from pipeline.config import DataParams

log = logging.getLogger(__name__)

SPLIT_FILES = ("labeled", "pool", "val", "test", "oracle")
POOL_FIELDS = ("id", "image_id", "category_id", "bbox", "area", "iscrowd")


class PrepareError(ValueError):
    """The source cannot be split as params.data asks."""


def _eligible(annotation: dict) -> bool:
    """A person a model can learn from and an annotator can label: not a crowd region, some keypoint labeled."""
    return not annotation.get("iscrowd") and annotation.get("num_keypoints", 0) > 0


def _subset(coco: dict, annotations: list[dict]) -> dict:
    """A COCO dict with only ``annotations`` and the images they are on (sorted by id, for byte-stable output)."""
    image_ids = {a["image_id"] for a in annotations}
    out = {k: v for k, v in coco.items() if k not in ("images", "annotations")}
    out["images"] = sorted((im for im in coco["images"] if im["id"] in image_ids), key=lambda im: im["id"])
    out["annotations"] = sorted(annotations, key=lambda a: a["id"])
    return out


def _without_keypoints(annotation: dict, num_keypoints: int) -> dict:
    """A pool instance: the box stays, the truth goes (to oracle.json)."""
    out = {k: annotation[k] for k in POOL_FIELDS if k in annotation}
    out["keypoints"] = [0.0] * (3 * num_keypoints)
    out["num_keypoints"] = 0
    return out


def num_seed_labels(labeled: float, eligible: int) -> int:
    """``data.labeled`` as a count: a fraction when < 1, else a count; at least 1, and leaves a pool."""
    n = round(labeled * eligible) if labeled < 1 else int(labeled)
    n = max(n, 1)
    if n >= eligible:
        raise PrepareError(
            f"params.yaml: data.labeled = {labeled} asks for {n} seed labels but only {eligible} instances remain "
            "after val/test: nothing would be left in the pool"
        )
    return n


def split_dataset(
    coco: dict,
    *,
    seed: int,
    labeled: float,
    val_images: int,
    test_images: int,
    num_keypoints: int,
    val_coco: dict | None = None,
) -> dict[str, dict]:
    """Split one COCO dict into the five prepared files (see module docstring). Deterministic in ``seed``.

    When ``val_coco`` is given, val and test images come from it and all of ``coco`` feeds the seed/pool split.
    """
    rng = np.random.default_rng(seed)
    held_source = val_coco if val_coco is not None else coco
    with_people = sorted({a["image_id"] for a in held_source["annotations"] if _eligible(a)})
    if len(with_people) < val_images + test_images:
        raise PrepareError(
            f"val_images + test_images = {val_images + test_images} but the source has only {len(with_people)} "
            "images with labeled people; lower data.val_images / data.test_images"
        )
    order = rng.permutation(len(with_people))
    val_ids = {with_people[i] for i in order[:val_images]}
    test_ids = {with_people[i] for i in order[val_images : val_images + test_images]}
    held_out = set() if val_coco is not None else val_ids | test_ids

    splits = {
        "val": _subset(held_source, [a for a in held_source["annotations"] if a["image_id"] in val_ids]),
        "test": _subset(held_source, [a for a in held_source["annotations"] if a["image_id"] in test_ids]),
    }
    for name in ("val", "test"):  # keep images without annotations out, but keep every annotation of the images kept
        ids = val_ids if name == "val" else test_ids
        splits[name]["images"] = sorted((im for im in held_source["images"] if im["id"] in ids), key=lambda i: i["id"])

    candidates = sorted(
        (a for a in coco["annotations"] if _eligible(a) and a["image_id"] not in held_out), key=lambda a: a["id"]
    )
    if len(candidates) < 2:
        raise PrepareError(f"only {len(candidates)} labeled people outside val/test: need at least 2 to split")
    n_seed = num_seed_labels(labeled, len(candidates))
    chosen = rng.permutation(len(candidates))
    seed_anns = [dict(candidates[i], source="seed") for i in chosen[:n_seed]]
    pool_truth = [candidates[i] for i in chosen[n_seed:]]
    splits["labeled"] = _subset(coco, seed_anns)
    splits["oracle"] = _subset(coco, pool_truth)
    splits["pool"] = _subset(coco, [_without_keypoints(a, num_keypoints) for a in pool_truth])
    return splits


def link_images(file_names: list[str], src_root: Path, dst_root: Path) -> None:
    """Hard-link (copy across file systems) each image into ``dst_root``, keeping relative paths.

    Why not symlinks: DVC caches outputs, and a link outside the project would make a round depend on a path
    that only exists on one machine.
    """
    from pipeline.data.coco import path_escape

    dst_base = dst_root.resolve()
    for name in file_names:
        escape = path_escape(name)
        src, dst = src_root / name, dst_root / name
        # The text check, then where the link would go. Symlinks inside the source folder are the owner's choice
        # (a DVC symlink cache, folders linked to shared storage) and are followed; ".." and absolute names are not.
        if escape is None and not dst.resolve().is_relative_to(dst_base):
            escape = f"{name!r:.80} would be written outside {dst_base}"
        if escape:
            raise PrepareError(f"image file_name {escape}: refused (every image must lie inside its image folder)")
        if dst.exists():
            continue
        if not src.is_file():
            raise PrepareError(f"image file missing: {src}")
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)


def load_source(params: DataParams, out_dir: Path, project_root: Path) -> tuple[dict, dict | None]:
    """Read (or generate) the source data into ``out_dir/images``; returns (coco, val_coco or None).

    Every ``file_name`` in the returned dicts is relative to ``out_dir``.
    """
    if params.source == "synthetic":
        from pipeline.data.synthetic import SyntheticConfig, generate_dataset

        cfg = SyntheticConfig(seed=params.seed, **vars(params.synthetic))
        return generate_dataset(out_dir, cfg, image_subdir="images"), None

    from pipeline.data.coco import read_coco

    def resolve(path: str | None, key: str) -> Path:
        if not path:
            raise PrepareError(f"params.yaml: data.{key} must be set when data.source is {params.source!r}")
        p = Path(path)
        return p if p.is_absolute() else project_root / p

    def import_coco(ann_key: str, img_key: str, prefix: str) -> dict:
        ann_path = resolve(getattr(params.coco, ann_key), f"coco.{ann_key}")
        img_root = resolve(getattr(params.coco, img_key), f"coco.{img_key}")
        data = read_coco(ann_path, sigmas=params.sigmas, flip_pairs=params.flip_pairs).to_dict()
        link_images([im["file_name"] for im in data["images"]], img_root, out_dir / "images" / prefix)
        for im in data["images"]:
            im["file_name"] = f"images/{prefix}/{im['file_name']}"
        return data

    if params.source == "coco":
        coco = import_coco("annotations", "images", "train")
        val = import_coco("val_annotations", "val_images", "val") if params.coco.val_annotations else None
        return coco, val

    from pipeline.data.deeplabcut import read_deeplabcut_project

    coco, root = read_deeplabcut_project(resolve(params.deeplabcut.project, "deeplabcut.project"))
    link_images([im["file_name"] for im in coco["images"]], root, out_dir / "images")
    for im in coco["images"]:
        im["file_name"] = f"images/{im['file_name']}"
    return coco, None


def prepare(params: DataParams, out_dir: Path, project_root: Path = Path()) -> dict[str, int]:
    """Write the prepared split to ``out_dir``; returns instance counts per file."""
    from pipeline.data.coco import write_coco
    from pipeline.keypoints import KeypointSchema

    out_dir.mkdir(parents=True, exist_ok=True)
    coco, val_coco = load_source(params, out_dir, project_root)
    keypoint_categories = [c for c in coco["categories"] if c.get("keypoints")]
    schema = KeypointSchema.from_coco_category(keypoint_categories[0], params.sigmas, params.flip_pairs)
    splits = split_dataset(
        coco,
        seed=params.seed,
        labeled=params.labeled,
        val_images=params.val_images,
        test_images=params.test_images,
        num_keypoints=schema.num_keypoints,
        val_coco=val_coco,
    )
    for name in SPLIT_FILES:
        write_coco(out_dir / f"{name}.json", splits[name])
    counts = {name: len(splits[name]["annotations"]) for name in SPLIT_FILES}
    log.info("prepared %s in %s (keypoints: %s; sigmas: %s)", counts, out_dir, schema.names, schema.sigma_source)
    return counts
