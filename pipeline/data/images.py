"""Image files: the one way the project checks, decodes and copies them.

One orientation. Labels refer to the *stored* pixel grid, the grid COCO's ``width`` / ``height`` describe and PIL
decodes. A photo from a phone usually stores its pixels sideways and carries an EXIF ``Orientation`` tag (6: turn 90
degrees clockwise to view); OpenCV's ``imread`` and every browser (so Label Studio) apply the tag, PIL does not. So:

* every reader of an image in the project decodes with ``load_image`` (PIL, tag ignored): validation, training,
  pool inference, pictures;
* ``prepare`` writes an image whose tag is not 1 as a copy with the tag set to 1 (``copy_image``: a two-byte
  change of the EXIF block, the compressed pixels untouched), so a browser, OpenCV and PIL all show the stored grid
  the labels refer to.

Limits. An image larger than ``MAX_IMAGE_PIXELS`` is refused from its header, before any decoding (a 20000 x 20000
PNG is 1.2 GB of RGB). A file that does not decode to the end (truncated, empty, not an image) is refused by name:
OpenCV would return a grey-padded image for a truncated JPEG.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.files import atomic_path, atomic_write

log = logging.getLogger(__name__)

# 100 megapixels: above every phone and DSLR frame in common use (~50 MP), 300 MB as RGB uint8.
MAX_IMAGE_PIXELS = 100_000_000
ORIENTATION_TAG = 0x0112


class ImageError(ValueError):
    """An image file that cannot be used; the message names the file."""


def _open_checked(path: Path) -> Image.Image:
    """PIL's lazy open (header only) with the size limit checked; the caller closes it."""
    limit = f"over the limit of {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels (pipeline.data.images.MAX_IMAGE_PIXELS)"
    try:
        with warnings.catch_warnings():  # PIL warns above 89 MP; the limit here is ours, checked below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as exc:  # PIL's own guard, at twice its default limit
        raise ImageError(f"{path}: {limit}: {exc}") from None
    width, height = im.size
    if width * height > MAX_IMAGE_PIXELS:
        im.close()
        raise ImageError(f"{path}: {width} x {height} = {width * height / 1e6:.0f} megapixels, {limit}; scale it down")
    return im


def probe_image(path: Path) -> tuple[int, int, int]:
    """(width, height, EXIF orientation: 1 when absent) of the stored pixels, after a full decode; raises
    ``ImageError`` naming the file when it is missing, over the size limit, truncated or not an image.

    A header read alone misses truncated files, so the image is decoded; for JPEG at 1/8 scale (``draft``), which
    still reads the whole entropy-coded stream and so still catches truncation.
    """
    try:
        with _open_checked(path) as im:
            size = im.size
            orientation = int(im.getexif().get(ORIENTATION_TAG, 1) or 1)
            im.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
            im.load()
        return size[0], size[1], orientation
    except ImageError:
        raise
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, DecompressionBombError, ...)
        raise ImageError(f"cannot decode {path}: {type(exc).__name__}: {exc}") from exc


def probe_images(paths: list[Path]) -> list[tuple[int, int, int] | str]:
    """``probe_image`` of each path, in order, on threads (PIL decodes without the GIL, so a few thousand images
    check in parallel): the (width, height, orientation), or the ``ImageError`` message naming the file."""

    def probe(path: Path) -> tuple[int, int, int] | str:
        try:
            return probe_image(path)
        except ImageError as exc:
            return str(exc)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(probe, paths))


def load_image(path: str | os.PathLike[str]) -> np.ndarray | None:
    """Decode an image as RGB uint8, shape (H, W, 3), in the stored pixel grid (module doc: EXIF orientation is not
    applied); on a missing, oversized, truncated or corrupt file log a warning naming the file and return None, so a
    run reports and skips the image instead of crashing."""
    try:
        with _open_checked(Path(path)) as im:
            im.load()
            rgb = im.convert("RGB")
        return np.asarray(rgb, dtype=np.uint8)
    except Exception as exc:
        log.warning("skipping unreadable image %s: %s: %s", path, type(exc).__name__, exc)
        return None


def _jpeg_orientation_offset(data: bytes) -> tuple[int, str] | None:
    """(byte offset of the Orientation value, TIFF byte order '<' or '>') in a JPEG's EXIF block, or None when it
    is not a SHORT in IFD0 of the first APP1 segment (malformed or unusual files: the caller refuses those)."""
    try:
        return _find_orientation(data)
    except (struct.error, IndexError):
        return None


def _find_orientation(data: bytes) -> tuple[int, str] | None:
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if marker == 0xDA:  # start of scan: no metadata after it
            return None
        body = pos + 4
        if marker == 0xE1 and data[body : body + 6] == b"Exif\x00\x00":
            tiff = body + 6
            order = {b"II": "<", b"MM": ">"}.get(data[tiff : tiff + 2])
            if order is None:
                return None
            ifd = tiff + struct.unpack(order + "I", data[tiff + 4 : tiff + 8])[0]
            count = struct.unpack(order + "H", data[ifd : ifd + 2])[0]
            if ifd + 2 + 12 * count > pos + 2 + length:  # IFD0 must lie inside this segment
                return None
            for i in range(count):
                entry = ifd + 2 + 12 * i
                tag, kind = struct.unpack(order + "HH", data[entry : entry + 4])
                if tag == ORIENTATION_TAG and kind == 3:  # SHORT, the value in the entry's first two bytes
                    return entry + 8, order
            return None
        pos = body + length - 2
    return None


def copy_image(src: Path, dst: Path, orientation: int) -> None:
    """Put ``src`` at ``dst`` for the prepared folder: a hard link (a copy across file systems) of the file the path
    resolves to, never a symlink; with an EXIF ``orientation`` other than 1, a copy whose tag says 1 (module doc).
    A non-JPEG file with such a tag is refused: it cannot be fixed without re-encoding its pixels."""
    src = src.resolve()
    if orientation == 1:
        try:
            os.link(src, dst)
        except OSError:
            with atomic_path(dst) as tmp:
                shutil.copy2(src, tmp)
        return
    data = bytearray(src.read_bytes())
    found = _jpeg_orientation_offset(bytes(data))
    if found is None:
        raise ImageError(
            f"{src}: EXIF orientation {orientation} in a file that is not a baseline JPEG with the tag in IFD0: "
            "the labels refer to the stored pixels, which browsers would show rotated; remove the tag (e.g. "
            "`exiftool -Orientation=1 -n FILE`) and prepare again"
        )
    offset, order = found
    data[offset : offset + 2] = struct.pack(order + "H", 1)
    atomic_write(dst, bytes(data))
