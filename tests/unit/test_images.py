"""Image files: one orientation for every reader, and files that validate refuses are refused by prepare too."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pipeline.codec import HeatmapCodec
from pipeline.config import params_from_dict
from pipeline.data.coco import validate_coco
from pipeline.data.dataset import InstanceRecord, TopDownDataset
from pipeline.data.images import ImageError, load_image, probe_image
from pipeline.data.prepare import PrepareError, prepare
from pipeline.keypoints import KeypointSchema
from pipeline.pseudolabel import crop_batch

COCO17 = KeypointSchema.coco17()
W, H = 96, 64  # the stored pixel grid: landscape; EXIF orientation 6 shows it as 64 x 96 portrait


def _coco(file_names: list[str], width: int = W, height: int = H) -> dict:
    """One person per image, every keypoint at (70, 20) of the stored grid: where the bright square is."""
    kps = [v for _ in range(17) for v in (70.0, 20.0, 2)]
    return {
        "images": [{"id": i + 1, "file_name": n, "width": width, "height": height} for i, n in enumerate(file_names)],
        "annotations": [
            {
                "id": i + 1,
                "image_id": i + 1,
                "category_id": 1,
                "bbox": [50.0, 5.0, 40.0, 40.0],
                "area": 1600.0,
                "iscrowd": 0,
                "keypoints": kps,
                "num_keypoints": 17,
            }
            for i in range(len(file_names))
        ],
        "categories": [COCO17.to_coco_category()],
    }


def _rotated_jpeg(path: Path, orientation: int = 6) -> np.ndarray:
    """A JPEG as a phone writes it: landscape stored pixels with an EXIF orientation tag. Returns the stored RGB."""
    pixels = np.full((H, W, 3), 40, np.uint8)
    pixels[12:28, 62:78] = 250  # a bright square around (70, 20), where the labels are
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95, exif=exif)
    return np.asarray(Image.open(path).convert("RGB"))


def test_every_reader_sees_the_stored_pixels_of_a_rotated_phone_jpeg(tmp_path):
    source = tmp_path / "source"
    stored = _rotated_jpeg(source / "images" / "phone.jpg")
    assert cv2.imread(str(source / "images" / "phone.jpg")).shape == (W, H, 3)  # OpenCV turns it: the defect
    (source / "people.json").write_text(json.dumps(_coco(["phone.jpg"])))
    problems = validate_coco(_coco(["phone.jpg"]), "people.json", source / "images", check_images=True)
    assert [p.severity for p in problems] == ["warning"] and "EXIF orientation 6" in problems[0].message

    raw = {
        "data": {
            "source": "coco",
            "coco": {"annotations": str(source / "people.json"), "images": str(source / "images")},
        }
    }
    out = tmp_path / "prepared"
    with pytest.raises(PrepareError):  # one person cannot be split; the image is still written first
        prepare(params_from_dict(raw).data, out)
    prepared = out / "images" / "train" / "phone.jpg"
    # The copy's tag says 1 (browsers, so Label Studio, and OpenCV show the stored grid) and its pixels are the
    # source's, byte for byte apart from the tag.
    with Image.open(prepared) as im:
        assert im.getexif().get(0x0112) == 1 and im.size == (W, H)
    assert cv2.imread(str(prepared)).shape == (H, W, 3)
    assert np.array_equal(load_image(prepared), stored)
    original, copy = (source / "images" / "phone.jpg").read_bytes(), prepared.read_bytes()
    assert len(original) == len(copy) and sum(a != b for a, b in zip(original, copy, strict=True)) == 1

    # Training and pool inference crop the same pixels: the label's bright square is under the keypoint.
    codec = HeatmapCodec((64, 64), (16, 16), sigma=2.0)

    record = InstanceRecord(1, prepared, (50.0, 5.0, 40.0, 40.0), np.tile([70.0, 20.0, 2.0], (17, 1)))
    dataset = TopDownDataset([record], COCO17, codec)
    assert np.array_equal(dataset._load_rgb(prepared), stored)
    batch = {
        "instance_id": np.array([1]),
        "image_path": np.array([str(prepared)]),
        "bbox": [np.array([50.0, 5.0, 40.0, 40.0])],
    }
    crops = crop_batch(batch, (64, 64), padding=1.25)
    matrix = crops["matrix"][0]
    x, y = matrix @ np.array([70.0, 20.0, 1.0])
    assert crops["image_readable"][0] and crops["crop"][0][round(y), round(x)].min() > 200


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header says width x height and whose pixel data is a stub: the size check must come first."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")
    )


def test_prepare_refuses_what_validate_refuses_naming_the_file(tmp_path, coco_mini):
    images = tmp_path / "images"
    images.mkdir()
    real = next((coco_mini / "val2017").glob("*.jpg"))
    with Image.open(real) as im:
        size = im.size
    (images / "truncated.jpg").write_bytes(real.read_bytes()[: real.stat().st_size // 2])
    (images / "empty.jpg").write_bytes(b"")
    _png_header_only(images / "huge.png", 20000, 20000)
    for name in ("truncated.jpg", "empty.jpg", "huge.png"):
        data = _coco([name], *size)
        assert validate_coco(data, "x.json", images, check_images=True)[0].severity == "error"
        (tmp_path / "people.json").write_text(json.dumps(data))
        raw = {
            "data": {"source": "coco", "coco": {"annotations": str(tmp_path / "people.json"), "images": str(images)}}
        }
        with pytest.raises(PrepareError, match=rf"cannot be used: .*{name}"):
            prepare(params_from_dict(raw).data, tmp_path / f"out-{name}")
        assert not list((tmp_path / f"out-{name}").rglob(name))  # nothing linked
    _png_header_only(images / "large.png", 12000, 10000)  # under PIL's own guard, over ours
    with pytest.raises(
        ImageError, match=r"large.png: 12000 x 10000 = 120 megapixels, over the limit of 100 megapixels"
    ):
        probe_image(images / "large.png")
    with pytest.raises(ImageError, match=r"huge.png: over the limit of 100 megapixels"):
        probe_image(images / "huge.png")
    assert load_image(images / "large.png") is None  # refused from the header, never decoded


def test_one_file_under_two_image_ids_is_linked_once(tmp_path):
    """validate warns about it and keeps both records; prepare used to crash on the second link (SameFileError)."""
    from pipeline.data.prepare import link_images

    Image.new("RGB", (8, 6)).save(tmp_path / "a.png")
    link_images(["a.png", "a.png"], tmp_path, tmp_path / "out")
    assert (tmp_path / "out" / "a.png").read_bytes() == (tmp_path / "a.png").read_bytes()


def test_malformed_exif_is_refused_by_name_not_a_traceback(tmp_path):
    """An IFD0 entry count running past the EXIF segment (a crafted or damaged file): a clean ImageError."""
    from pipeline.data.images import copy_image

    path = tmp_path / "odd.jpg"
    _rotated_jpeg(path)
    data = bytearray(path.read_bytes())
    tiff = data.index(b"Exif\x00\x00") + 6
    order = "<" if data[tiff : tiff + 2] == b"II" else ">"
    ifd = tiff + struct.unpack(order + "I", data[tiff + 4 : tiff + 8])[0]
    data[ifd : ifd + 2] = struct.pack(order + "H", 0xFFFF)
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError, match=r"odd\.jpg: EXIF orientation 6 in a file that is not a baseline JPEG"):
        copy_image(path, tmp_path / "copy.jpg", 6)
    assert not (tmp_path / "copy.jpg").exists()
