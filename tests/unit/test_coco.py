"""pipeline.data.coco: reading, validating and writing COCO keypoint files, on real COCO data and crafted bad files."""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.data.coco import (
    CocoFormatError,
    CocoKeypoints,
    Problem,
    read_coco,
    summarize,
    validate_coco,
    write_coco,
)
from pipeline.data.images import load_image
from pipeline.data.validate import validate_command
from pipeline.keypoints import COCO_KEYPOINT_NAMES

REPO_ROOT = Path(__file__).resolve().parents[2]
K = 3  # keypoints in the crafted files: small, and not 17, so nothing can assume COCO's count


def _mini(split: str, root: Path) -> tuple[Path, Path]:
    return root / "annotations" / f"person_keypoints_{split}2017.json", root / f"{split}2017"


def _errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


# --------------------------------------------------------------------------------------------------------- real data


# Expected counts from coco_mini/SOURCE.md (computed there independently of this code).
@pytest.mark.parametrize(
    ("split", "images", "instances", "with_kps", "crowd", "labeled"),
    [("train", 80, 172, 86, 5, 800), ("val", 79, 118, 68, 1, 652)],
)
def test_coco_mini_reads_and_validates_clean(coco_mini, split, images, instances, with_kps, crowd, labeled):
    ann_path, img_dir = _mini(split, coco_mini)
    assert validate_coco(json.loads(ann_path.read_text()), ann_path, img_dir, check_images=True) == []
    coco = read_coco(ann_path, img_dir, check_images=True)
    s = summarize(coco)
    assert (s["images"], s["instances"], s["instances_with_keypoints"], s["crowd"]) == (
        images,
        instances,
        with_kps,
        crowd,
    )
    assert s["keypoints_by_visibility"][1] + s["keypoints_by_visibility"][2] == labeled
    assert sum(s["keypoints_by_visibility"].values()) == instances * 17
    assert coco.schema.names == COCO_KEYPOINT_NAMES
    assert coco.schema.sigma_source == "coco"
    assert ("left_eye", "right_eye") in [tuple(p) for p in s["flip_pairs"]]
    # Crowd and keypoint-less people are accepted and kept, not dropped.
    assert any(a["iscrowd"] == 1 for a in coco.annotations)
    assert any(a["num_keypoints"] == 0 and a["iscrowd"] == 0 for a in coco.annotations)
    kps = coco.keypoints_array()
    assert kps.shape == (instances, 17, 3) and kps.dtype == np.float64
    np.testing.assert_array_equal(kps[0].ravel(), coco.annotations[0]["keypoints"])


def test_coco_val4_reads_clean_with_source_md_counts(coco_val4):
    coco = read_coco(coco_val4 / "test_coco.json", coco_val4 / "images", check_images=True)
    s = summarize(coco)
    assert (s["images"], s["instances"], s["instances_with_keypoints"]) == (4, 14, 12)
    # SOURCE.md: 164 visible, 17 occluded, 57 unlabeled.
    assert s["keypoints_by_visibility"] == {0: 57, 1: 17, 2: 164}
    img = coco.image_by_id(785)
    assert (img["width"], img["height"]) == (640, 425)
    anns = coco.annotations_of(785)
    assert anns and all(a["image_id"] == 785 for a in anns)
    assert coco.annotations_of(123456789) == []
    path = coco.image_path(785)
    assert path == coco_val4 / "images" / "000000000785.jpg"
    rgb = load_image(path)
    assert rgb is not None and rgb.shape == (425, 640, 3) and rgb.dtype == np.uint8


def test_detection_results_file_is_not_a_coco_file(coco_val4):
    # The detector results next to the ground truth are a bare JSON list: a clear top-level error, not a crash.
    path = coco_val4 / "test_coco_det_AP_H_56.json"
    with pytest.raises(CocoFormatError) as err:
        read_coco(path)
    assert f"{path}: top level: expected a JSON object" in str(err.value)


# --------------------------------------------------------------------------------------------------------- write


def _with_extras(coco: CocoKeypoints) -> CocoKeypoints:
    """Pipeline-style extra fields and a visibility-1 keypoint, which must all survive a write."""
    ann = coco.annotations[0]
    ann["source"] = "human"
    ann["correction_id"] = "20250101T000000-ab12cd"
    ann["model_version"] = "poseloop/3"
    ann["synthetic_tags"] = ["occluded", {"scale": 0.5}]
    ann["keypoints"][2] = 1  # visible -> occluded (x, y unchanged)
    ann["num_keypoints"] = sum(1 for v in ann["keypoints"][2::3] if v > 0)
    ann["bbox"] = [ann["bbox"][0] + 0.1234567891234, *ann["bbox"][1:]]  # a float with many digits
    coco.images[0]["source"] = "pool"
    coco.extra["poseloop"] = {"round": 2}
    return coco


def test_round_trip_keeps_everything(coco_val4, tmp_path):
    original = _with_extras(read_coco(coco_val4 / "test_coco.json"))
    out = write_coco(tmp_path / "out.json", original)
    again = read_coco(out)
    assert again == original
    assert again.to_dict() == original.to_dict()
    assert json.loads(out.read_text()) == original.to_dict()
    original_keys = list(json.loads((coco_val4 / "test_coco.json").read_text()))
    assert list(json.loads(out.read_text())) == [*original_keys, "poseloop"]  # top-level order kept
    ann = again.annotations[0]
    assert ann["keypoints"][2] == 1
    assert (ann["source"], ann["correction_id"], ann["model_version"]) == (
        "human",
        "20250101T000000-ab12cd",
        "poseloop/3",
    )
    assert ann["synthetic_tags"] == ["occluded", {"scale": 0.5}]
    assert again.images[0]["source"] == "pool"
    assert again.extra["info"] == original.extra["info"] and again.extra["poseloop"] == {"round": 2}
    # Deterministic: writing the same data again gives the same bytes.
    write_coco(tmp_path / "again.json", again)
    assert (tmp_path / "again.json").read_bytes() == out.read_bytes()
    write_coco(tmp_path / "indented.json", again, indent=1)
    assert json.loads((tmp_path / "indented.json").read_text()) == original.to_dict()


_coord = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False) | st.integers(-10_000, 10_000)
_json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False)
)
_extra = st.dictionaries(
    st.text(min_size=1, max_size=8).filter(lambda k: k not in _base()["annotations"][0]),
    st.recursive(
        _json_leaf,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
        max_leaves=6,
    ),
    max_size=3,
)


@settings(max_examples=40, deadline=None)
@given(points=st.lists(st.tuples(_coord, _coord, st.sampled_from([0, 1, 2])), min_size=K, max_size=K), extra=_extra)
def test_round_trip_property(tmp_path_factory, points, extra):
    data = _base()
    ann = data["annotations"][0]
    ann["keypoints"] = [v for p in points for v in p]
    ann["num_keypoints"] = sum(1 for p in points if p[2] > 0)
    ann.update(extra)
    path = tmp_path_factory.mktemp("rt") / "labels.json"
    write_coco(path, data)
    coco = read_coco(path)
    assert coco.to_dict() == data
    assert coco.keypoints_array()[0].tolist() == [[float(v) for v in p] for p in points]
    first = path.read_bytes()
    write_coco(path, coco)
    assert path.read_bytes() == first


class _DiesMidWrite:
    """A file object that gets half of what is written to disk, then the process "dies" (KeyboardInterrupt)."""

    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def write(self, text):
        self.f.write(text[: len(text) // 2])
        self.f.flush()
        raise KeyboardInterrupt

    def __getattr__(self, name):
        return getattr(self.f, name)


def test_interrupted_write_keeps_the_old_file(coco_val4, tmp_path, monkeypatch):
    target = tmp_path / "labels.json"
    shutil.copy(coco_val4 / "test_coco.json", target)
    before = target.read_bytes()
    coco = _with_extras(read_coco(target))
    real_fdopen = os.fdopen
    partial: list[Path] = []

    def fdopen(fd, *args, **kwargs):
        partial.extend(tmp_path.glob(".labels.json.*.tmp"))
        return _DiesMidWrite(real_fdopen(fd, *args, **kwargs))

    with monkeypatch.context() as m:
        m.setattr(os, "fdopen", fdopen)
        with pytest.raises(KeyboardInterrupt):
            write_coco(target, coco)
    assert partial, "the write should have gone to a temp file next to the target"
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.json"]  # the half-written temp file is gone

    # Crash after the data is written but before the rename (fsync fails: disk full, I/O error).
    def no_space(fd):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", no_space)
        with pytest.raises(OSError, match="No space left"):
            write_coco(target, coco)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.json"]

    # Data json cannot encode (a set) fails before any file is touched, even with validation off.
    bad = copy.deepcopy(coco.to_dict())  # to_dict shares the record dicts
    bad["annotations"][0]["synthetic_tags"] = {"occluded"}
    with pytest.raises(TypeError, match="Object of type set is not JSON serializable"):
        write_coco(target, bad, validate=False)
    assert target.read_bytes() == before

    write_coco(target, coco)  # and a normal write does replace it
    assert read_coco(target) == coco


def test_numpy_values_are_accepted_and_written_as_plain_json(tmp_path):
    data = _base()
    ann = data["annotations"][0]
    ann["id"], ann["image_id"] = np.int64(10), np.int32(1)
    ann["bbox"] = [np.float64(5), np.float32(5.5), 20, np.int64(20)]
    ann["keypoints"] = [np.float64(v) for v in ann["keypoints"]]
    ann["synthetic_tags"] = np.array([1, 2])
    path = write_coco(tmp_path / "np.json", data)
    again = json.loads(path.read_text())["annotations"][0]
    assert again["id"] == 10 and type(again["id"]) is int
    assert again["bbox"] == [5.0, 5.5, 20, 20] and again["synthetic_tags"] == [1, 2]
    assert again["keypoints"] == [10.0, 11.0, 2.0, 12.5, 13.0, 1.0, 0.0, 0.0, 0.0]
    assert read_coco(path).annotations[0]["id"] == 10
    bad = _base()
    bad["annotations"][0]["bbox"][2] = np.bool_(True)
    assert "bbox" in str(validate_coco(bad, "x")[0])


def test_write_refuses_invalid_data_and_leaves_the_file(tmp_path):
    target = tmp_path / "labels.json"
    data = _base()
    write_coco(target, data)
    before = target.read_bytes()
    bad = copy.deepcopy(data)
    bad["annotations"][0]["keypoints"][0] = float("nan")
    with pytest.raises(CocoFormatError, match=r"refusing to write .*labels\.json: 1 error\(s\)") as err:
        write_coco(target, bad)
    assert "annotation 10: field 'keypoints': 1 NaN/inf value(s)" in str(err.value)
    with pytest.raises(ValueError, match="Out of range float"):  # validation off: json itself still refuses NaN
        write_coco(target, bad, validate=False)
    assert target.read_bytes() == before


# --------------------------------------------------------------------------------------------------------- bad input


def _base() -> dict:
    """A small valid file: 2 images, a person with keypoints (one occluded), a keypoint-less person, a crowd."""
    return {
        "info": {"description": "crafted"},
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
            {"id": 2, "file_name": "b.jpg", "width": 32, "height": 32},
        ],
        "annotations": [
            {
                "id": 10,
                "image_id": 1,
                "category_id": 1,
                "keypoints": [10, 11, 2, 12.5, 13, 1, 0, 0, 0],
                "num_keypoints": 2,
                "bbox": [5, 5, 20, 20],
                "area": 400.0,
                "iscrowd": 0,
            },
            {
                "id": 11,
                "image_id": 1,
                "category_id": 1,
                "keypoints": [0] * 3 * K,
                "num_keypoints": 0,
                "bbox": [30, 5, 10, 30],
                "area": 300,
                "iscrowd": 0,
            },
            {
                "id": 12,
                "image_id": 2,
                "category_id": 1,
                "keypoints": [0] * 3 * K,
                "num_keypoints": 0,
                "bbox": [0, 0, 32, 32],
                "area": 900,
                "iscrowd": 1,
                "segmentation": {"counts": [0, 1024], "size": [32, 32]},
            },
        ],
        "categories": [
            {"id": 1, "name": "person", "keypoints": ["head", "left_hand", "right_hand"], "skeleton": [[1, 2], [1, 3]]}
        ],
    }


def _set(section: str, index: int, key: str, value) -> Callable[[dict], None]:
    def mutate(d: dict) -> None:
        d[section][index][key] = value

    return mutate


def _delete(section: str, index: int, key: str) -> Callable[[dict], None]:
    def mutate(d: dict) -> None:
        del d[section][index][key]

    return mutate


def _kp(index: int, value) -> Callable[[dict], None]:
    def mutate(d: dict) -> None:
        d["annotations"][0]["keypoints"][index] = value

    return mutate


# (case id, mutation, record, field, a fragment of the message)
BAD_CASES = [
    (
        "kps_too_short",
        _set("annotations", 0, "keypoints", [1, 2, 2] * 2 + [1, 2]),
        "annotation 10",
        "keypoints",
        "length 8, expected 3*3=9",
    ),
    ("kps_not_list", _set("annotations", 0, "keypoints", "1,2,2"), "annotation 10", "keypoints", "expected a list"),
    ("kps_missing", _delete("annotations", 0, "keypoints"), "annotation 10", "keypoints", "expected a list"),
    ("kps_string_value", _kp(4, "13"), "annotation 10", "keypoints", "non-numeric value(s), first at index 4"),
    (
        "kps_nested",
        _set("annotations", 0, "keypoints", [[1]] * 9),
        "annotation 10",
        "keypoints",
        "9 non-numeric value(s), first at index 0: [1]",
    ),
    ("kps_ragged", _kp(3, [1, 2]), "annotation 10", "keypoints", "1 non-numeric value(s), first at index 3: [1, 2]"),
    ("kps_null", _kp(3, None), "annotation 10", "keypoints", "first at index 3: None"),
    ("visibility_3", _kp(5, 3), "annotation 10", "keypoints", "visibility must be 0, 1 or 2"),
    ("visibility_negative", _kp(8, -1), "annotation 10", "keypoints", "first keypoint 2"),
    ("visibility_fraction", _kp(2, 0.5), "annotation 10", "keypoints", "visibility must be 0, 1 or 2"),
    ("kps_nan", _kp(0, float("nan")), "annotation 10", "keypoints", "NaN/inf value(s), first at keypoint 0 (x)"),
    ("kps_inf", _kp(4, float("inf")), "annotation 10", "keypoints", "first at keypoint 1 (y)"),
    ("bbox_nan", _set("annotations", 1, "bbox", [1, 2, float("nan"), 3]), "annotation 11", "bbox", "not finite"),
    ("bbox_zero_width", _set("annotations", 1, "bbox", [1, 2, 0, 3]), "annotation 11", "bbox", "width 0"),
    ("bbox_negative_height", _set("annotations", 1, "bbox", [1, 2, 3, -4]), "annotation 11", "bbox", "height -4"),
    ("bbox_three_numbers", _set("annotations", 1, "bbox", [1, 2, 3]), "annotation 11", "bbox", "4 numbers"),
    ("bbox_not_list", _set("annotations", 1, "bbox", {"x": 1}), "annotation 11", "bbox", "4 numbers"),
    ("bbox_missing", _delete("annotations", 1, "bbox"), "annotation 11", "bbox", "missing"),
    ("area_inf", _set("annotations", 1, "area", float("inf")), "annotation 11", "area", "finite number"),
    ("area_nan", _set("annotations", 1, "area", float("nan")), "annotation 11", "area", "finite number"),
    ("iscrowd_2", _set("annotations", 2, "iscrowd", 2), "annotation 12", "iscrowd", "expected 0 or 1"),
    ("dup_annotation_id", _set("annotations", 1, "id", 10), "annotation 10", "id", "duplicate annotation id"),
    ("dup_image_id", _set("images", 1, "id", 1), "image 1", "id", "duplicate image id"),
    ("annotation_id_missing", _delete("annotations", 2, "id"), "annotations[2]", "id", "expected an integer id"),
    ("image_id_missing", _delete("images", 1, "id"), "images[1]", "id", "expected an integer id"),
    ("unknown_image", _set("annotations", 1, "image_id", 99), "annotation 11", "image_id", "no image with id 99"),
    ("image_id_list", _set("annotations", 1, "image_id", [1]), "annotation 11", "image_id", "no image with id [1]"),
    (
        "unknown_category",
        _set("annotations", 1, "category_id", 7),
        "annotation 11",
        "category_id",
        "no category with id 7",
    ),
    ("image_width_zero", _set("images", 0, "width", 0), "image 1", "width", "positive integer"),
    ("image_no_file_name", _delete("images", 0, "file_name"), "image 1", "file_name", "non-empty string"),
    (
        "category_no_keypoints",
        _delete("categories", 0, "keypoints"),
        "categories",
        "keypoints",
        "no category defines 'keypoints'",
    ),
    (
        "category_empty_keypoints",
        _set("categories", 0, "keypoints", []),
        "category 1",
        "keypoints",
        "non-empty list of keypoint names",
    ),
    (
        "category_duplicate_names",
        _set("categories", 0, "keypoints", ["a", "b", "a"]),
        "category 1",
        "keypoints",
        "duplicate keypoint names ['a']",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "record", "fld", "fragment"), [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES]
)
def test_bad_input_is_named(tmp_path, mutate, record, fld, fragment):
    data = _base()
    mutate(data)
    path = tmp_path / "person_keypoints.json"
    # Python's json writes NaN / Infinity literals, as a careless exporter would; the reader must catch them.
    path.write_text(json.dumps(data))
    with pytest.raises(CocoFormatError) as err:
        read_coco(path)
    message = str(err.value)
    assert f"{path}: {record}: field '{fld}': " in message
    assert fragment in message
    assert isinstance(err.value, ValueError)
    assert any(p.record == record and p.field == fld and p.severity == "error" for p in err.value.problems)


def test_base_file_is_valid_and_every_problem_is_listed(tmp_path):
    path = tmp_path / "person_keypoints.json"
    write_coco(path, _base())
    coco = read_coco(path)
    assert validate_coco(_base(), path) == []
    assert coco.keypoints_array().shape == (3, K, 3)
    assert coco.boxes_array().shape == (3, 4)
    assert coco.schema.flip_pairs == ((1, 2),) and coco.schema.sigma_source == "default"

    data = _base()
    data["annotations"][0]["keypoints"] = data["annotations"][0]["keypoints"][:-1]
    data["annotations"][1]["bbox"] = [0, 0, -1, 1]
    data["images"][1]["id"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(CocoFormatError) as err:
        read_coco(path)
    lines = str(err.value).splitlines()
    assert lines[0] == f"4 error(s) in {path}:"
    assert lines[1:] == [
        f"  {path}: image 1: field 'id': duplicate image id",
        f"  {path}: annotation 10: field 'keypoints': length 8, expected 3*3=9",
        f"  {path}: annotation 11: field 'bbox': width and height must be > 0, got width -1, height 1",
        f"  {path}: annotation 12: field 'image_id': no image with id 2",  # image 2 became a second image 1
    ]


def test_lookups_follow_changes(tmp_path):
    path = tmp_path / "labels.json"
    write_coco(path, _base())
    _write_images(tmp_path, _base())
    coco = read_coco(path, images_dir=tmp_path)  # images_dir given: every file must exist
    assert [a["id"] for a in coco.annotations_of(1)] == [10, 11]
    assert coco.image_path(2) == tmp_path / "b.jpg"
    assert coco.image_path(coco.images[0], "/elsewhere") == Path("/elsewhere/a.jpg")
    coco.annotations = coco.annotations[:1]  # a new list
    assert [a["id"] for a in coco.annotations_of(1)] == [10]
    coco.images.append({"id": 3, "file_name": "c.jpg", "width": 8, "height": 8})  # same list, longer
    assert coco.image_by_id(3)["file_name"] == "c.jpg"
    coco.annotations[0]["image_id"] = 3  # in place: needs reindex()
    coco.reindex()
    assert coco.annotations_of(1) == [] and [a["id"] for a in coco.annotations_of(3)] == [10]
    with pytest.raises(KeyError):
        coco.image_by_id(99)


def test_invalid_json_and_missing_top_level_keys(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [], "annotations": [\n  {"id": 1,}\n]}')
    with pytest.raises(CocoFormatError, match=rf"{path}: file: invalid JSON at line 2 column"):
        read_coco(path)
    path.write_text(json.dumps({"images": [], "annotations": {}}))
    with pytest.raises(CocoFormatError) as err:
        read_coco(path)
    assert f"{path}: top level: field 'annotations': expected a list, got dict" in str(err.value)
    assert f"{path}: top level: field 'categories': missing" in str(err.value)
    with pytest.raises(FileNotFoundError):
        read_coco(tmp_path / "absent.json")


def test_num_keypoints_mismatch_is_a_warning(tmp_path, caplog):
    data = _base()
    data["annotations"][0]["num_keypoints"] = 3  # flags say 2
    del data["annotations"][1]["area"]
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(data))
    problems = validate_coco(data, path)
    assert [str(p) for p in problems] == [
        f"{path}: annotation 10: field 'num_keypoints': warning: 3 but 2 keypoint(s) have visibility > 0: recounted",
        f"{path}: annotation 11: field 'area': warning: missing: computed from the box (width x height)",
    ]
    assert all(p.severity == "warning" for p in problems)
    with caplog.at_level(logging.WARNING, logger="pipeline.data.coco"):
        coco = read_coco(path)  # warnings do not stop a run, they are logged
    assert len(coco.annotations) == 3
    assert "annotation 10: field 'num_keypoints'" in caplog.text
    by_id = {a["id"]: a for a in coco.annotations}  # made consistent for evaluation; the input dict is not changed
    assert by_id[10]["num_keypoints"] == 2 and by_id[11]["area"] == by_id[11]["bbox"][2] * by_id[11]["bbox"][3]


def test_cosmetic_fields_are_warnings_and_fixed(tmp_path):
    """What only draws or describes (skeleton, a box or point past the border) warns; the labels stay as they are."""
    data = _base()
    data["categories"][0]["skeleton"] = [[1, 2], [1, 4], [17, 15], [2, 3]]  # COCO's indices on a 3-keypoint schema
    data["annotations"][0]["keypoints"] = [10, 11, 2, 70.5, 13, 1, 0, 0, 0]  # image 1 is 64 wide
    data["annotations"][1]["bbox"] = [30, 5, 40, 30]  # to x = 70 of 64
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(data))
    problems = validate_coco(data, path)
    assert [str(p) for p in problems] == [
        f"{path}: category 1: field 'skeleton': warning: 2 of 4 edge(s) are not pairs of 1-based keypoint indices in "
        "1..3, first [1, 4]: dropped",
        f"{path}: annotation 10: field 'keypoints': warning: 1 labeled keypoint(s) outside the 64x48 image, first "
        "keypoint 1 at (70.5, 13): kept",
        f"{path}: annotation 11: field 'bbox': warning: [30, 5, 40, 30] reaches outside the 64x48 image: kept",
    ]
    coco = read_coco(path)
    assert coco.schema.skeleton == ((0, 1), (1, 2))
    assert coco.keypoints_array()[0, 1, 0] == 70.5 and coco.annotations[1]["bbox"] == [30, 5, 40, 30]
    data["categories"][0]["skeleton"] = "a-b"
    assert validate_coco(data, path)[0].message == "expected a list of pairs, got 'a-b': ignored"
    assert CocoKeypoints.from_dict(data).schema.skeleton == ()


# --------------------------------------------------------------------------------------------------------- categories


def test_other_categories_are_kept_apart(tmp_path):
    data = _base()
    data["categories"].append({"id": 3, "name": "car", "supercategory": "vehicle"})
    data["annotations"].insert(1, {"id": 20, "image_id": 2, "category_id": 3, "bbox": [1, 1, 5, 5], "area": 25})
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(data))
    coco = read_coco(path)
    assert [a["id"] for a in coco.annotations] == [10, 11, 12]
    assert [a["id"] for a in coco.other_annotations] == [20]
    assert coco.keypoints_array().shape == (3, K, 3)
    assert coco.annotations_of(2) == [data["annotations"][3]]  # the car is not one of image 2's instances
    assert summarize(coco)["other_category_instances"] == 1
    write_coco(tmp_path / "out.json", coco)
    assert read_coco(tmp_path / "out.json") == coco


def test_several_keypoint_categories_need_a_choice(tmp_path):
    data = _base()
    data["categories"].append({"id": 5, "name": "dog", "keypoints": ["nose", "tail"]})
    data["annotations"].append(
        {
            "id": 30,
            "image_id": 2,
            "category_id": 5,
            "keypoints": [1, 2, 2, 3, 4, 2],
            "num_keypoints": 2,
            "bbox": [0, 0, 8, 8],
            "area": 64,
            "iscrowd": 0,
        }
    )
    path = tmp_path / "two.json"
    path.write_text(json.dumps(data))
    with pytest.raises(CocoFormatError, match=r"several categories define keypoints: 1 'person' .* 5 'dog'"):
        read_coco(path)
    dog = read_coco(path, category="dog")
    assert dog.schema.names == ("nose", "tail") and dog.keypoints_array().shape == (1, 2, 3)
    assert len(read_coco(path, category=1).annotations) == 3
    with pytest.raises(CocoFormatError, match="no keypoint category 'cat'"):
        read_coco(path, category="cat")
    # Each annotation is checked against its own category's K.
    data["annotations"][-1]["keypoints"] = [1, 2, 2] * 3
    assert [str(p) for p in validate_coco(data, "two.json")] == [
        "two.json: annotation 30: field 'keypoints': length 9, expected 3*2=6"
    ]


def test_sigmas_and_flip_pairs_override(tmp_path):
    path = tmp_path / "labels.json"
    write_coco(path, _base())
    coco = read_coco(path, sigmas=[0.05, 0.06, 0.07], flip_pairs=[])
    assert coco.schema.sigmas == (0.05, 0.06, 0.07) and coco.schema.sigma_source == "params"
    assert coco.schema.flip_pairs == ()
    with pytest.raises(CocoFormatError, match="category 1: field 'keypoints': bad keypoint schema"):
        read_coco(path, sigmas=[0.1])


# --------------------------------------------------------------------------------------------------------- images


def _write_images(folder: Path, data: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for img in data["images"]:
        Image.new("RGB", (img["width"], img["height"]), (200, 100, 50)).save(folder / img["file_name"], quality=90)


def test_missing_corrupt_and_mis_sized_images_are_reported(coco_mini, tmp_path, caplog):
    data = _base()
    images = tmp_path / "images"
    _write_images(images, data)
    path = tmp_path / "labels.json"
    assert validate_coco(data, path, images, check_images=True) == []

    # A real COCO jpg cut in half (header intact, so a header-only check would pass it) and a size mismatch.
    real = next((coco_mini / "val2017").glob("*.jpg")).read_bytes()
    (images / "a.jpg").write_bytes(real[: len(real) // 2])
    data["images"].append({"id": 3, "file_name": "c.jpg", "width": 10, "height": 20})
    Image.new("RGB", (10, 21)).save(images / "c.jpg")
    data["images"].append({"id": 4, "file_name": "sub/missing.jpg", "width": 10, "height": 10})
    data["images"].append({"id": 5, "file_name": "junk.jpg", "width": 10, "height": 10})
    (images / "junk.jpg").write_bytes(b"not an image at all")

    problems = [str(p) for p in validate_coco(data, path, images, check_images=True)]
    assert problems[0].startswith(f"{path}: image 1: field 'file_name': cannot decode {images / 'a.jpg'}: OSError")
    assert "truncated" in problems[0]
    assert problems[1] == f"{path}: image 3: field 'height': 20 in the JSON but 21 in {images / 'c.jpg'}"
    assert problems[2] == f"{path}: image 4: field 'file_name': image file missing: {images / 'sub/missing.jpg'}"
    assert problems[3].startswith(f"{path}: image 5: field 'file_name': cannot decode {images / 'junk.jpg'}")
    assert len(problems) == 4
    # Without check_images only existence is checked (cheap).
    assert [str(p) for p in validate_coco(data, path, images)] == [problems[2]]
    with pytest.raises(ValueError, match="check_images=True needs images_dir"):
        validate_coco(data, path, check_images=True)

    with caplog.at_level(logging.WARNING, logger="pipeline.data.images"):
        assert load_image(images / "a.jpg") is None
        assert load_image(images / "junk.jpg") is None
        assert load_image(images / "sub/missing.jpg") is None
    assert str(images / "a.jpg") in caplog.text and str(images / "junk.jpg") in caplog.text
    ok = load_image(images / "b.jpg")
    assert ok is not None and ok.shape == (32, 32, 3) and ok.dtype == np.uint8


def test_load_image_converts_grey_and_rgba_to_rgb(tmp_path):
    Image.new("L", (5, 4), 7).save(tmp_path / "grey.png")
    Image.new("RGBA", (5, 4), (1, 2, 3, 4)).save(tmp_path / "rgba.png")
    grey, rgba = load_image(tmp_path / "grey.png"), load_image(tmp_path / "rgba.png")
    assert grey is not None and grey.shape == (4, 5, 3) and (grey == 7).all()
    assert rgba is not None and rgba.shape == (4, 5, 3) and rgba[0, 0].tolist() == [1, 2, 3]


# --------------------------------------------------------------------------------------------------------- CLI


def test_validate_command_clean(coco_val4, capsys):
    assert validate_command(coco_val4 / "test_coco.json", coco_val4 / "images") == 0
    out = capsys.readouterr().out
    assert "OK" in out
    assert "images:     4" in out
    assert "14 of category 1 'person': 12 with keypoints, 0 crowd" in out
    assert "0 (unlabeled) 57, 1 (occluded) 17, 2 (visible) 164" in out
    assert "left_ear<->right_ear" in out
    assert "OKS sigmas: coco: nose=0.026" in out


def test_validate_command_reports_every_problem(tmp_path, capsys):
    data = _base()
    data["annotations"][0]["keypoints"][5] = 7
    data["annotations"][2]["image_id"] = 42
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    assert validate_command(path, None) == 2
    out = capsys.readouterr().out
    assert "INVALID, 2 error(s)" in out
    assert f"{path}: annotation 10: field 'keypoints': visibility must be 0, 1 or 2" in out
    assert f"{path}: annotation 12: field 'image_id': no image with id 42" in out
    assert validate_command(tmp_path / "absent.json", None) == 2
    assert "cannot read" in capsys.readouterr().out
    path.write_text("[1, 2")
    assert validate_command(path, None) == 2
    assert "invalid JSON" in capsys.readouterr().out


@pytest.mark.skipif(not (REPO_ROOT / "pipeline" / "__main__.py").exists(), reason="pipeline/__main__.py not wired yet")
def test_validate_cli_subprocess(coco_val4, tmp_path):
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "validate",
            str(coco_val4 / "test_coco.json"),
            "--images",
            str(coco_val4 / "images"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "2 (visible) 164" in ok.stdout
    bad = tmp_path / "bad.json"
    data = _base()
    data["annotations"][0]["keypoints"].pop()
    bad.write_text(json.dumps(data))
    res = subprocess.run(
        [sys.executable, "-m", "pipeline", "validate", str(bad)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert f"{bad}: annotation 10: field 'keypoints': length 8" in res.stdout


_any_json = st.recursive(
    _json_leaf | st.just(float("nan")),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(
    section=st.sampled_from(["images", "annotations", "categories"]),
    index=st.integers(0, 2),
    key=st.sampled_from(
        [
            "id",
            "image_id",
            "category_id",
            "keypoints",
            "bbox",
            "area",
            "iscrowd",
            "num_keypoints",
            "file_name",
            "width",
            "height",
            "skeleton",
            "name",
        ]
    ),
    value=_any_json,
)
def test_validation_never_crashes_on_garbage(section, index, key, value):
    data = _base()
    records = data[section]
    records[index % len(records)][key] = value
    problems = validate_coco(data, "fuzz.json")  # must report, never raise
    assert all(isinstance(p, Problem) and str(p).startswith("fuzz.json: ") for p in problems)
    if not any(p.severity == "error" for p in problems):
        coco = CocoKeypoints.from_dict(data, "fuzz.json")  # what validation passes, the container must accept
        assert coco.keypoints_array().shape == (len(coco.annotations), K, 3)
