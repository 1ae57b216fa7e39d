"""Turn a data source into the prepared split of docs/DESIGN.md §3.

``data/prepared/`` holds ``labeled.json`` (seed labels, ``source: "seed"``), ``pool.json`` (unlabeled instances:
image + person box, keypoints zeroed), ``val.json`` and ``test.json`` (whole images, fixed by the seed across rounds),
``oracle.json`` (the pool's hidden truth, read only by the simulated annotator and benchmarks) and ``images/``.
Images of ``data.pool`` (a team's own unlabeled images and video frames, pipeline/data/unlabeled.py) are in
``pool.json`` as images without annotations: the ``find`` stage adds the people it finds on them.

Splits are made on whole images for val/test (so crowd regions and unannotated people are evaluated the way
pycocotools expects) and on instances for the seed/pool split (the seed budget is a count of people, and later rounds
label instances one at a time). A source with unlabeled instances of its own (SLEAP predictions, Label Studio tasks
nobody labeled) keeps them as the pool and has no oracle; sizes left at their defaults shrink to fit a small source
(``split_dataset``). Every source is read into a COCO dict by its reader in ``pipeline/data`` and validated by
``load_source`` the same way.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path

import numpy as np

from pipeline.config import DataParams
from pipeline.data.coco import UNLABELED

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


# A source smaller than the defaults ask for: what a default shrinks to. Val and test get this share of the images
# with labeled people each, so 60% stay for training (a 55-frame DeepLabCut project: 11 / 11 / 33).
SMALL_HELD_OUT_SHARE = 0.2


def num_seed_labels(labeled: float, eligible: int, fit: bool = False) -> int:
    """``data.labeled`` as a count: a fraction when < 1, else a count; at least 1, and leaves a pool.

    ``fit`` (the value is params.yaml's default): a count that leaves no pool becomes half the instances, with a
    warning saying so, instead of an error.
    """
    n = round(labeled * eligible) if labeled < 1 else int(labeled)
    n = max(n, 1)
    if n >= eligible and fit and eligible >= 2:
        chosen = eligible // 2
        log.warning(
            "data.labeled = %g (the default) asks for more than the %d labeled instances outside val / test: "
            "using %d (half) as seed labels and the other %d as the pool; set data.labeled to choose",
            labeled,
            eligible,
            chosen,
            eligible - chosen,
        )
        return chosen
    if n >= eligible:
        raise PrepareError(
            f"params.yaml: data.labeled = {labeled} asks for {n} seed labels but only {eligible} instances remain "
            "after val/test: nothing would be left in the pool"
        )
    return n


def held_out_sizes(images_with_people: int, val_images: int, test_images: int, fit: bool = False) -> tuple[int, int]:
    """(val, test) image counts. ``fit`` (the values are params.yaml's defaults): when they would take more than
    40% of the images with labeled people, each becomes ``SMALL_HELD_OUT_SHARE`` of them (val at least 1), with a
    warning saying what was chosen; otherwise the values are used as given (too many is an error later)."""
    n = images_with_people
    if not fit or val_images + test_images <= 2 * SMALL_HELD_OUT_SHARE * n:
        return val_images, test_images
    share = math.floor(SMALL_HELD_OUT_SHARE * n)
    val, test = max(1, min(val_images, share)), min(test_images, share)
    log.warning(
        "the source has %d images with labeled people: data.val_images / test_images = %d / %d (the defaults) would "
        "leave too few to train on; using %d / %d (%d%% each); set them in params.yaml to choose",
        n,
        val_images,
        test_images,
        val,
        test,
        round(100 * SMALL_HELD_OUT_SHARE),
    )
    return val, test


def _whole_images_first(candidates: list[dict], order: np.ndarray, n_seed: int) -> tuple[np.ndarray, int]:
    """``data.split: image``: whole images, in the seeded ``order`` of their people, until they hold ``n_seed``
    people; returns (the order with those images' people first, how many they are): every seed image fully labeled."""
    people_on = Counter(a["image_id"] for a in candidates)
    seed_images: set[int] = set()
    people = 0
    for i in order:
        if people >= n_seed:
            break
        if candidates[i]["image_id"] not in seed_images:
            seed_images.add(candidates[i]["image_id"])
            people += people_on[candidates[i]["image_id"]]
    first = [i for i in order if candidates[i]["image_id"] in seed_images]
    return np.array(first + [i for i in order if candidates[i]["image_id"] not in seed_images]), len(first)


def split_dataset(
    coco: dict,
    *,
    seed: int,
    labeled: float,
    val_images: int,
    test_images: int,
    num_keypoints: int,
    val_coco: dict | None = None,
    fit_defaults: frozenset[str] = frozenset(),
    by_image: bool = False,
) -> dict[str, dict]:
    """Split one COCO dict into the five prepared files (see module docstring). Deterministic in ``seed``.

    ``val_coco``: val and test images come from it and all of ``coco`` feeds the seed/pool split. ``by_image``: seed
    labels are whole images (``_whole_images_first``). ``fit_defaults`` names the sizes (``labeled``, ``val_images``,
    ``test_images``) that are params.yaml's defaults and may shrink to fit a small source (``held_out_sizes``, ...).
    A source that brings its own pool (annotations with ``source: "unlabeled"``: SLEAP predictions, Label Studio
    tasks nobody labeled) keeps it: every labeled instance outside val / test is a seed label, oracle.json is empty.
    """
    rng = np.random.default_rng(seed)
    held_source = val_coco if val_coco is not None else coco
    with_people = sorted({a["image_id"] for a in held_source["annotations"] if _eligible(a)})
    val_images, test_images = held_out_sizes(
        len(with_people), val_images, test_images, fit="val_images" in fit_defaults and "test_images" in fit_defaults
    )
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
    unlabeled = [a for a in coco["annotations"] if a.get("source") == UNLABELED]
    own_pool = sorted((a for a in unlabeled if a["image_id"] not in held_out), key=lambda a: a["id"])
    if unlabeled and len(own_pool) < len(unlabeled):
        log.warning(
            "%d unlabeled instance(s) are on val / test images: they stay there (evaluation ignores them), not in "
            "the pool",
            len(unlabeled) - len(own_pool),
        )
    if own_pool:
        if not candidates:
            raise PrepareError("no labeled people outside val/test: the seed set would be empty")
        log.warning(
            "the source brings its own pool (%d unlabeled instances): all %d labeled instances outside val / test "
            "are seed labels (data.labeled is not used), oracle.json is empty",
            len(own_pool),
            len(candidates),
        )
        splits["labeled"] = _subset(coco, [dict(a, source="seed") for a in candidates])
        splits["oracle"] = _subset(coco, [])
        splits["pool"] = _subset(coco, [_without_keypoints(a, num_keypoints) for a in own_pool])
        return splits
    if len(candidates) < 2:
        raise PrepareError(f"only {len(candidates)} labeled people outside val/test: need at least 2 to split")
    n_seed = num_seed_labels(labeled, len(candidates), fit="labeled" in fit_defaults)
    chosen = rng.permutation(len(candidates))
    if by_image:  # the instance finder learns from images whose every person is labeled
        chosen, n_seed = _whole_images_first(candidates, chosen, n_seed)
    seed_anns = [dict(candidates[i], source="seed") for i in chosen[:n_seed]]
    pool_truth = [candidates[i] for i in chosen[n_seed:]]
    splits["labeled"] = _subset(coco, seed_anns)
    splits["oracle"] = _subset(coco, pool_truth)
    splits["pool"] = _subset(coco, [_without_keypoints(a, num_keypoints) for a in pool_truth])
    return splits


def link_images(file_names: list[str], src_root: Path, dst_root: Path) -> None:
    """Put each image into ``dst_root``, keeping relative paths: a hard link (a copy across file systems) of the file
    its path resolves to, or an orientation-free copy (``images.copy_image``). Every image is decoded first, as
    ``validate`` does: a missing, truncated, empty or oversized file is refused by name before anything is written.

    Why not symlinks: DVC caches outputs, and a link outside the project would make a round depend on a path
    that only exists on one machine. A source file that is a symlink resolving outside ``src_root`` is refused:
    Label Studio serves the prepared folder, so a link to a private file would publish it.
    """
    from pipeline.data.coco import path_escape
    from pipeline.data.images import ImageError, copy_image, probe_images

    dst_base, src_base = dst_root.resolve(), src_root.resolve()
    todo: list[tuple[Path, Path]] = []
    queued: set[Path] = set()
    for name in file_names:
        escape = path_escape(name)
        src, dst = src_root / name, dst_root / name
        # The text check, then where the link would go, then where the source really is. Symlinks that stay inside
        # the source folder are the owner's choice (a folder of links into one image store) and are followed.
        if escape is None and not dst.resolve().is_relative_to(dst_base):
            escape = f"{name!r:.80} would be written outside {dst_base}"
        if escape is None and src.exists() and not src.resolve().is_relative_to(src_base):
            escape = (
                f"{name!r:.80} resolves to {src.resolve()}, outside the image folder {src_base} (a symlink); copy "
                "the file into the folder or point params.yaml at the folder it lies in (a DVC cache of type "
                "symlink: `dvc config cache.type reflink,hardlink,copy` and `dvc checkout --relink`)"
            )
        if escape:
            raise PrepareError(f"image file_name {escape}: refused (every image must lie inside its image folder)")
        if dst.exists() or dst in queued:  # one file under two image ids (validate warns): linked once
            continue
        if not src.is_file():
            raise PrepareError(f"image file missing: {src}")
        todo.append((src, dst))
        queued.add(dst)

    probed = probe_images([src for src, _ in todo])
    broken = [result for result in probed if isinstance(result, str)]
    if broken:
        more = f" (and {len(broken) - 5} more)" if len(broken) > 5 else ""
        raise PrepareError(f"{len(broken)} image file(s) cannot be used: " + "; ".join(broken[:5]) + more)
    turned = 0
    for (src, dst), (_, _, orientation) in zip(todo, probed, strict=True):  # type: ignore[misc]  # no str left
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            copy_image(src, dst, orientation)
        except ImageError as exc:
            raise PrepareError(str(exc)) from None
        turned += orientation != 1
    if turned:
        log.warning(
            "%d image(s) carry an EXIF orientation: written as copies whose tag is 1, so Label Studio, OpenCV and "
            "training all show the stored pixels the labels refer to",
            turned,
        )


def load_source(params: DataParams, out_dir: Path, project_root: Path) -> tuple[dict, dict | None]:
    """Read (or generate) the source data into ``out_dir/images``; returns (coco, val_coco or None), each with the
    one keypoint category the loop trains on (``data.coco.category`` picks it when a file defines several).

    Every ``file_name`` in the returned dicts is relative to ``out_dir``.
    """
    if params.source == "synthetic":
        from pipeline.data.synthetic import SyntheticConfig, generate_dataset

        cfg = SyntheticConfig(seed=params.seed, **vars(params.synthetic))
        return generate_dataset(out_dir, cfg, image_subdir="images"), None

    from pipeline.data.coco import CocoKeypoints
    from pipeline.data.formats import read_format

    def resolve(path: str | None, key: str) -> Path:
        if not path:
            raise PrepareError(f"params.yaml: data.{key} must be set when data.source is {params.source!r}")
        p = Path(path)
        return p if p.is_absolute() else project_root / p

    def checked(data: dict, file: Path | str, category: str | None = None) -> dict:
        """Validated, warnings fixed, one category (its skeleton cleaned): what every source turns into."""
        coco = CocoKeypoints.from_dict(
            data, file, category=category, sigmas=params.sigmas, flip_pairs=params.flip_pairs
        )
        category_record = next(c for c in coco.categories if c["id"] == coco.schema.category_id)
        skeleton = [[a + 1, b + 1] for a, b in coco.schema.skeleton]
        return {
            **coco.extra,
            "images": coco.images,
            "annotations": coco.annotations,
            "categories": [{**category_record, "skeleton": skeleton}],
        }

    def linked(data: dict, img_root: Path, prefix: str) -> dict:
        link_images([im["file_name"] for im in data["images"]], img_root, out_dir / prefix)
        for im in data["images"]:
            im["file_name"] = f"{prefix}/{im['file_name']}"
        return data

    if params.source == "coco":
        c = params.coco

        def import_coco(ann: str | None, ann_key: str, images: str | None, img_key: str, prefix: str) -> dict:
            ann_path = resolve(ann, f"coco.{ann_key}")
            data = checked(read_format("coco", ann_path)[0], ann_path, c.category)
            return linked(data, resolve(images, f"coco.{img_key}"), prefix)

        coco = import_coco(c.annotations, "annotations", c.images, "images", "images/train")
        val = None
        if c.val_annotations:
            val = import_coco(c.val_annotations, "val_annotations", c.val_images, "val_images", "images/val")
        return coco, val

    source = getattr(params, params.source)
    if params.source == "sleap":
        # The frames are decoded from the file's embedded images or its video into the prepared folder itself.
        labels = resolve(source.labels, "sleap.labels")
        return checked(read_format("sleap", labels, frames_dir=out_dir / "images")[0], labels), None
    if params.source in ("deeplabcut", "lightning_pose"):
        coco, root = read_format(params.source, resolve(source.project, f"{params.source}.project"))
        label_file = "config.yaml" if params.source == "deeplabcut" else "CollectedData.csv"
        return linked(checked(coco, root / label_file), root, "images"), None
    # mpii, labelstudio: a JSON file and its image folder
    path_key = "annotations" if params.source == "mpii" else "export"
    path = resolve(getattr(source, path_key), f"{params.source}.{path_key}")
    img_root = resolve(source.images, f"{params.source}.images")
    keypoints = source.keypoints if params.source == "labelstudio" else None
    data, _ = read_format(params.source, path, img_root, labelstudio_keypoints=keypoints)
    return linked(checked(data, path), img_root, "images"), None


def _mark_unlabeled_people(labeled: dict, coco: dict) -> None:
    """Give each seed image that holds a person left out of the split (no keypoint, or a crowd region) the count as
    ``unlabeled_people``: the instance finder must not learn such an image's pixels as background
    (``finding.finder_images``). Images without such people are written as before."""
    left_out: dict[int, int] = {}
    for a in coco["annotations"]:
        if not _eligible(a):
            left_out[a["image_id"]] = left_out.get(a["image_id"], 0) + 1
    labeled["images"] = [  # copies: the image records are shared with the other splits
        dict(im, unlabeled_people=left_out[im["id"]]) if im["id"] in left_out else im for im in labeled["images"]
    ]


def _without_labeled_pictures(unboxed: list[dict], splits: dict[str, dict], out_dir: Path) -> list[dict]:
    """``unboxed`` (data.pool's images) without those that are a picture of the labeled, val or test images
    (``unlabeled.same_pictures``): a val or test picture in the pool would be labeled and trained on (the held-out
    AP would no longer be held out), a seed picture's people are labeled already. Each left out is logged, its
    prepared file removed."""
    from pipeline.data.unlabeled import same_pictures

    others = {name: splits[name]["images"] for name in ("labeled", "val", "test")}
    same = same_pictures(unboxed, others, out_dir)
    if not same:
        return unboxed
    for name, (other, split) in sorted(same.items()):
        log.warning("data.pool: %s is the same picture as %s (%s): left out of the pool", name, other, split)
        (out_dir / name).unlink(missing_ok=True)
    return [im for im in unboxed if im["file_name"] not in same]


def _defaults_in_use(params: DataParams) -> frozenset[str]:
    """The split sizes that are params.yaml's defaults: those may shrink to fit a small source (split_dataset)."""
    default = DataParams()
    return frozenset(k for k in ("labeled", "val_images", "test_images") if getattr(params, k) == getattr(default, k))


def prepare(params: DataParams, out_dir: Path, project_root: Path = Path()) -> dict[str, int]:
    """Write the prepared split to ``out_dir``; returns instance counts per file."""
    from pipeline.data.coco import write_coco
    from pipeline.keypoints import KeypointSchema

    out_dir.mkdir(parents=True, exist_ok=True)
    coco, val_coco = load_source(params, out_dir, project_root)
    if params.source != "synthetic" and not any(_eligible(a) for a in coco["annotations"]):
        source = getattr(params, params.source)
        where = next(str(v) for v in vars(source).values() if isinstance(v, str) and v)
        raise PrepareError(
            f"{where} (data.source {params.source}): no instance has a labeled keypoint: nothing to train on "
            f"({len(coco['annotations'])} instance(s) read; `python -m pipeline validate` says the same)"
        )
    schema = KeypointSchema.from_coco_category(coco["categories"][0], params.sigmas, params.flip_pairs)
    splits = split_dataset(
        coco,
        seed=params.seed,
        labeled=params.labeled,
        val_images=params.val_images,
        test_images=params.test_images,
        num_keypoints=schema.num_keypoints,
        val_coco=val_coco,
        fit_defaults=_defaults_in_use(params),
        by_image=params.split == "image",
    )
    if params.pool.images or params.pool.videos:
        from pipeline.data.unlabeled import pool_images

        first_id = 1 + max(im["id"] for data in (coco, val_coco or {"images": []}) for im in data["images"])
        unboxed = pool_images(params.pool, out_dir, project_root, first_id, params.seed, link_images)
        unboxed = _without_labeled_pictures(unboxed, splits, out_dir)
        splits["pool"]["images"] = sorted(splits["pool"]["images"] + unboxed, key=lambda im: im["id"])
        log.info("data.pool: %d image(s) without boxes; the find stage puts the people it finds on them", len(unboxed))
    _mark_unlabeled_people(splits["labeled"], coco)
    for name in SPLIT_FILES:
        write_coco(out_dir / f"{name}.json", splits[name])
    counts = {name: len(splits[name]["annotations"]) for name in SPLIT_FILES}
    # one readable line; `python -m pipeline validate` prints the whole schema, metrics/eval.json carries the sigmas
    log.info(
        "schema: %d keypoints (%s ... %s), %d left/right pairs, OKS sigmas from %s",
        schema.num_keypoints,
        schema.names[0],
        schema.names[-1],
        len(schema.flip_pairs),
        schema.sigma_source,
    )
    return counts
