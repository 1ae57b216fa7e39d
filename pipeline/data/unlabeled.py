"""A team's own unlabeled images and videos as the pool (params.yaml ``data.pool``): no boxes, no annotation file.

``prepare`` lists what ``data.pool`` names, decodes the chosen frames of each video once, and adds every image to
``pool.json`` as an image *without* annotations: the ``find`` stage (pipeline/finding.py) puts the people the
instance finder sees on them.

Identity. A pool image is ``pool/<path relative to data.pool.root>``; a video frame is
``pool/<video path relative to the root>/frame_<index, 6 digits>.jpg``. Image ids are numbered after the labeled
source's, so they move when the pool grows; the file name does not, and corrections are matched by file name and box
(pipeline/corrections.py), so a correction keeps its person when the pool grows or is drawn again.

Frames (``data.pool.frames``): ``uniform`` spreads them evenly and nested (a larger count keeps the frames of a
smaller one); ``kmeans`` clusters small grayscale frames (32 x 32, as DeepLabCut's ``extract_frames``) and takes the
frame nearest each cluster's centre, so a video that shows the same scene for minutes gives one frame of it, not
twenty; a new k-means draw (another count) may drop frames, and corrections on a dropped frame wait in the store
(merge reports them) until it is drawn again. Each video gets at most ``per_video`` frames and an equal share of
``total``.
"""

from __future__ import annotations

import glob
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.config import PoolParams
from pipeline.data.images import load_image, probe_image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".m4v"})
POOL_PREFIX = "pool"
KMEANS_SIDE = 32  # frames are compared as 32 x 32 grayscale thumbnails
KMEANS_CANDIDATES = 1000  # at most this many frames of a video are read to cluster (an even stride over it)
KMEANS_ITERATIONS = 30


class PoolInputError(ValueError):
    """A ``data.pool`` entry that names nothing usable."""


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe_video`` reads from a video's header (and, when the header has no count, from decoding it)."""

    frames: int
    fps: float
    width: int
    height: int


def list_inputs(entries: list[str], suffixes: frozenset[str], project_root: Path, key: str) -> list[Path]:
    """The files ``entries`` name (folders recursively, globs, files) with one of ``suffixes``; sorted, each once.
    An entry that names nothing raises ``PoolInputError`` naming it and the params key."""
    found: set[Path] = set()
    for entry in entries:
        path = Path(entry) if Path(entry).is_absolute() else project_root / entry
        if any(c in entry for c in "*?["):
            matches = [Path(m) for m in glob.glob(str(path), recursive=True)]
        elif path.is_dir():
            matches = [p for p in path.rglob("*")]
        elif path.is_file():
            matches = [path]
        else:
            raise PoolInputError(f"params.yaml: data.pool.{key}: {entry!r} does not exist ({path})")
        kept = [m for m in matches if m.is_file() and m.suffix.lower() in suffixes]
        if not kept:
            raise PoolInputError(
                f"params.yaml: data.pool.{key}: {entry!r} holds no file ending in {', '.join(sorted(suffixes))}"
            )
        found.update(kept)
    return sorted(found)


def probe_video(path: Path) -> VideoInfo:
    """Frame count, fps and size of a video; ``PoolInputError`` naming the file when OpenCV cannot decode it."""
    capture = cv2.VideoCapture(str(path))
    try:
        ok, frame = capture.read()
        if not capture.isOpened() or not ok:
            raise PoolInputError(f"{path}: not a video OpenCV can decode (no first frame)")
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        if count <= 0:  # some containers have no count in the header: decode to the end
            count = 1
            while capture.grab():
                count += 1
        return VideoInfo(count, fps, frame.shape[1], frame.shape[0])
    finally:
        capture.release()


def _read_frames(path: Path, indices: list[int]) -> dict[int, np.ndarray]:
    """The BGR frames at ``indices`` (sorted), decoded in one pass (seeking is not frame-exact in every codec)."""
    wanted, frames = set(indices), {}
    capture = cv2.VideoCapture(str(path))
    try:
        index, last = 0, max(indices)
        while index <= last and capture.grab():
            if index in wanted:
                ok, frame = capture.retrieve()
                if ok:
                    frames[index] = frame
            index += 1
    finally:
        capture.release()
    return frames


def uniform_frames(count: int, wanted: int) -> list[int]:
    """``wanted`` indices spread evenly over ``count`` frames (all of them when there are fewer), nested: the frames
    of a smaller ``wanted`` are among those of a larger one, so raising ``per_video`` keeps every frame drawn before
    (and the corrections on them). The order is the van der Corput sequence (0, 1/2, 1/4, 3/4, 1/8, ...) of the
    video's length: each new frame falls in the largest gap left."""
    if count <= wanted:
        return list(range(count))
    picked: dict[int, None] = {}
    i = 0
    while len(picked) < wanted:
        fraction, denominator, n = 0.0, 1.0, i
        while n:
            denominator *= 2
            fraction += (n % 2) / denominator
            n //= 2
        picked.setdefault(int(fraction * count), None)
        i += 1
    return sorted(picked)


def kmeans_frames(path: Path, count: int, wanted: int, seed: int) -> list[int]:
    """One frame per k-means cluster of 32 x 32 grayscale thumbnails (the one nearest the cluster's centre), over at
    most ``KMEANS_CANDIDATES`` frames at an even stride."""
    candidates = uniform_frames(count, KMEANS_CANDIDATES)
    if len(candidates) <= wanted:
        return candidates
    frames = _read_frames(path, candidates)
    kept = sorted(frames)
    if len(kept) <= wanted:  # few decoded: all of them (none: nothing to cluster)
        return kept
    thumbs = np.stack(
        [
            cv2.resize(
                cv2.cvtColor(frames[i], cv2.COLOR_BGR2GRAY), (KMEANS_SIDE, KMEANS_SIDE), interpolation=cv2.INTER_AREA
            )
            .reshape(-1)
            .astype(np.float32)
            / 255.0
            for i in kept
        ]
    )
    rng = np.random.default_rng(seed)
    centres = thumbs[[rng.integers(len(thumbs))]]
    while len(centres) < wanted:  # k-means++: a short scene far from the rest gets a centre of its own
        nearest = _distances(thumbs, centres).min(1)
        pick = rng.choice(len(thumbs), p=nearest / nearest.sum()) if nearest.sum() > 0 else rng.integers(len(thumbs))
        centres = np.vstack([centres, thumbs[pick]])
    for _ in range(KMEANS_ITERATIONS):
        distance = _distances(thumbs, centres)
        label = distance.argmin(1)
        moved = np.stack([thumbs[label == c].mean(0) if (label == c).any() else centres[c] for c in range(wanted)])
        if np.allclose(moved, centres):
            break
        centres = moved
    return sorted({kept[int(i)] for i in _distances(thumbs, centres).argmin(0)})


def _distances(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(N, k) squared distances of points (N, D) to centres (k, D), as |a|^2 - 2ab + |b|^2: no (N, k, D) array."""
    squared = (points**2).sum(1)[:, None] - 2 * points @ centres.T + (centres**2).sum(1)[None, :]
    return np.maximum(squared, 0.0)


def _identity(path: Path, root: Path, key: str) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise PoolInputError(
            f"params.yaml: data.pool.{key}: {path} is outside data.pool.root ({root}): a pool file's identity is its "
            "path under the root; set data.pool.root to a folder above it"
        ) from None


def pool_images(
    params: PoolParams,
    out_dir: Path,
    project_root: Path,
    first_id: int,
    seed: int,
    link_images: Callable[[list[str], Path, Path], None],
) -> list[dict]:
    """Decode the chosen video frames into ``out_dir/images/pool/`` and put the pool images there with
    ``link_images`` (prepare's: checked and linked as every source's images); returns their COCO image records (ids
    from ``first_id``, sorted by file name), each with ``pool_file`` (its identity under the root) and, for a frame,
    ``video`` and ``frame_index``."""
    root = Path(params.root) if params.root else Path(".")
    root = root if root.is_absolute() else project_root / root
    images = list_inputs(params.images, IMAGE_SUFFIXES, project_root, "images")
    videos = list_inputs(params.videos, VIDEO_SUFFIXES, project_root, "videos")
    records: list[dict] = []
    names = [_identity(p, root, "images") for p in images]
    link_images(names, root, out_dir / "images" / POOL_PREFIX)  # decoded and checked as every source's images
    for name in names:
        records.append({"file_name": f"images/{POOL_PREFIX}/{name}", "pool_file": name})
    share = math.ceil(params.frames.total / len(videos)) if videos else 0
    for video in videos:
        name = _identity(video, root, "videos")
        info = probe_video(video)
        wanted = min(params.frames.per_video, share)
        if params.frames.rule == "kmeans":
            indices = kmeans_frames(video, info.frames, wanted, seed)
        else:
            indices = uniform_frames(info.frames, wanted)
        frames = _read_frames(video, indices)
        missing = sorted(set(indices) - set(frames))
        if missing:
            log.warning("%s: %d frame(s) did not decode (first: %d); left out", video, len(missing), missing[0])
        for index, frame in sorted(frames.items()):
            rel = f"images/{POOL_PREFIX}/{name}/frame_{index:06d}.jpg"
            (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(out_dir / rel), frame, [cv2.IMWRITE_JPEG_QUALITY, 95]):
                raise OSError(f"cannot write {out_dir / rel}")
            records.append(
                {
                    "file_name": rel,
                    "pool_file": f"{name}/frame_{index:06d}.jpg",
                    "width": frame.shape[1],
                    "height": frame.shape[0],
                    "video": name,
                    "frame_index": index,
                }
            )
        log.info("%s: %d of %d frames (%s)", name, len(frames), info.frames, params.frames.rule)
    records.sort(key=lambda r: r["file_name"])
    for i, record in enumerate(records):
        record["id"] = first_id + i
        if "width" not in record:
            record["width"], record["height"], _ = probe_image(out_dir / record["file_name"])
    return records


SAME_SIDE = 64  # pictures are compared as 64 x 64 grayscale thumbnails
SAME_COARSE = 8  # first as 8 x 8 ones: an average never differs more than the pixels it averages, so it only prunes
SAME_MAX_DIFF = 12.0  # gray levels: the largest thumbnail pixel difference of one picture saved twice (JPEG / PNG)


def _thumbnail(path: Path) -> np.ndarray | None:
    """(SAME_SIDE, SAME_SIDE) float32 grayscale, None when the image does not decode."""
    rgb = load_image(path)
    if rgb is None:
        return None
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, (SAME_SIDE, SAME_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)


def same_pictures(pool: list[dict], others: dict[str, list[dict]], images_root: Path) -> dict[str, tuple[str, str]]:
    """The pool images (COCO records, ``file_name`` under ``images_root``) that are the same picture as an image of
    ``others`` ({split name: its image records}): same size, and no pixel of their 64 x 64 grayscale thumbnails more
    than ``SAME_MAX_DIFF`` gray levels apart. Catches a photo copied into both folders and a labeled video frame
    drawn again (saved once as PNG, once as JPEG), and leaves two frames apart in which anything moved. Returns
    {pool file_name: (the other's file_name, its split)}."""
    groups: dict[tuple[int, int], list[tuple[str, str]]] = {}
    for split, images in others.items():
        for im in images:
            groups.setdefault((im["width"], im["height"]), []).append((im["file_name"], split))
    step = SAME_SIDE // SAME_COARSE

    def coarse(thumbs: np.ndarray) -> np.ndarray:  # (N, SIDE, SIDE) -> (N, COARSE * COARSE)
        return thumbs.reshape(len(thumbs), SAME_COARSE, step, SAME_COARSE, step).mean((2, 4)).reshape(len(thumbs), -1)

    decoded: dict[tuple[int, int], tuple[list[tuple[str, str]], np.ndarray, np.ndarray]] = {}
    out: dict[str, tuple[str, str]] = {}
    for im in pool:
        size = (im["width"], im["height"])
        if size not in groups:
            continue
        if size not in decoded:  # the other splits' images of this size, decoded once
            kept = [(entry, t) for entry in groups[size] if (t := _thumbnail(images_root / entry[0])) is not None]
            thumbs = np.stack([t for _, t in kept]) if kept else np.zeros((0, SAME_SIDE, SAME_SIDE), np.float32)
            decoded[size] = ([entry for entry, _ in kept], thumbs, coarse(thumbs))
        entries, thumbs, thumbs_coarse = decoded[size]
        mine = _thumbnail(images_root / im["file_name"])
        if mine is None or not entries:
            continue
        close = np.flatnonzero(np.abs(thumbs_coarse - coarse(mine[None])).max(1) <= SAME_MAX_DIFF)
        same = [j for j in close if np.abs(thumbs[j] - mine).max() <= SAME_MAX_DIFF]
        if same:
            out[im["file_name"]] = entries[same[0]]
    return out
