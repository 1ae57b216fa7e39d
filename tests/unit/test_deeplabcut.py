"""pipeline.data.deeplabcut: the DLC open-field demo converts to valid COCO; crafted projects cover the formats and
the errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.data.coco import CocoKeypoints, read_coco, summarize, validate_coco, write_coco
from pipeline.data.deeplabcut import DeepLabCutFormatError, read_deeplabcut_project


def _csv_values(csv_path: Path) -> dict[str, list[float]]:
    """Image path -> [x, y, ...] per CSV column, read independently of the module under test."""
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    return {r[0]: [float(v) if v else math.nan for v in r[1:]] for r in rows[3:]}


def test_openfield_project_converts_to_valid_coco(dlc_openfield, tmp_path):
    data, root = read_deeplabcut_project(dlc_openfield)
    assert root == dlc_openfield
    assert validate_coco(data, "openfield", images_dir=root, check_images=True) == []
    assert len(data["images"]) == 116 and len(data["annotations"]) == 116

    coco = CocoKeypoints.from_dict(data, "openfield", images_dir=root)
    schema = coco.schema
    assert schema.names == ("snout", "leftear", "rightear", "tailbase")
    assert schema.flip_pairs == ((1, 2),)
    assert schema.sigma_source == "default" and schema.sigmas == (0.1,) * 4
    assert schema.skeleton == ()  # config.yaml has skeleton: []

    # Keypoints equal the CSV values, in config bodypart order; all labeled (visibility 2).
    truth = _csv_values(dlc_openfield / "labeled-data/m4s1/CollectedData_Pranav.csv")
    assert sorted(truth) == [im["file_name"] for im in data["images"]]  # ids follow the sorted paths
    kps = coco.keypoints_array()
    assert kps.shape == (116, 4, 3)
    for ann, k in zip(coco.annotations, kps, strict=True):
        name = coco.image_by_id(ann["image_id"])["file_name"]
        np.testing.assert_array_equal(k[:, :2].ravel(), truth[name])
    assert (kps[:, :, 2] == 2).all()
    assert summarize(coco)["keypoints_by_visibility"] == {0: 0, 1: 0, 2: 464}

    # Boxes contain every keypoint with some margin and stay inside the 640x480 frames.
    boxes = coco.boxes_array()
    x, y = kps[:, :, 0], kps[:, :, 1]
    assert (boxes[:, 0] <= x.min(1)).all() and (boxes[:, 1] <= y.min(1)).all()
    assert (boxes[:, 0] + boxes[:, 2] >= x.max(1)).all() and (boxes[:, 1] + boxes[:, 3] >= y.max(1)).all()
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= 640).all()
    assert (boxes[:, 1] + boxes[:, 3] <= 480).all()
    assert all(im["width"] == 640 and im["height"] == 480 for im in data["images"])
    assert coco.image_path(1) == dlc_openfield / "labeled-data/m4s1/img0000.png"

    # Deterministic, and it survives a COCO write / read with its images.
    assert read_deeplabcut_project(dlc_openfield)[0] == data
    write_coco(tmp_path / "openfield.json", data)
    assert read_coco(tmp_path / "openfield.json", images_dir=root) == coco


# --------------------------------------------------------------------------------------------------------- crafted


BODYPARTS = ["snout", "leftear", "rightear", "tailbase"]


def _project(
    tmp_path: Path,
    rows: dict[str, list[str]],
    *,
    split_index: bool = False,
    config: dict | None = None,
    size: tuple[int, int] = (100, 80),
    header_parts: list[str] | None = None,
) -> Path:
    """A DLC project with one labeled-data folder; rows: image file name -> [x, y] cells per bodypart."""
    project = tmp_path / "proj"
    folder = project / "labeled-data" / "vid1"
    folder.mkdir(parents=True)
    cfg = {"Task": "t", "scorer": "me", "multianimalproject": False, "bodyparts": BODYPARTS, "skeleton": []}
    cfg.update(config or {})
    (project / "config.yaml").write_text(yaml.safe_dump(cfg))
    parts = header_parts or BODYPARTS
    lead = ["", ""] if split_index else []
    header = [
        ["scorer", *lead, *["me"] * 2 * len(parts)],
        ["bodyparts", *lead, *[p for p in parts for _ in "xy"]],
        ["coords", *lead, *["x", "y"] * len(parts)],
    ]
    with open(folder / "CollectedData_me.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerows(header)
        for name, cells in rows.items():
            index = ["labeled-data", "vid1", name] if split_index else [f"labeled-data/vid1/{name}"]
            writer.writerow([*index, *cells])
            Image.new("RGB", size).save(folder / name)
    return project


ROWS = {
    "img2.png": ["50", "40", "55.5", "35", "", "", "90", "70"],  # rightear unlabeled
    "img1.png": ["10", "10", "12", "8", "8", "8", "30", "20"],
    "img3.png": ["", "", "NaN", "NaN", "", "", "", ""],  # nothing labeled in this frame
}


@pytest.mark.parametrize("split_index", [False, True], ids=["one_index_column", "three_index_columns"])
def test_crafted_project(tmp_path, split_index):
    project = _project(tmp_path, ROWS, split_index=split_index)
    data, root = read_deeplabcut_project(project, margin=0.1, min_pad=2)
    assert validate_coco(data, "proj", images_dir=root, check_images=True) == []
    assert [(im["id"], im["file_name"]) for im in data["images"]] == [
        (1, "labeled-data/vid1/img1.png"),
        (2, "labeled-data/vid1/img2.png"),
        (3, "labeled-data/vid1/img3.png"),
    ]
    assert [a["image_id"] for a in data["annotations"]] == [1, 2]  # img3 has nothing labeled: image, no instance
    first, second = data["annotations"]
    assert first["keypoints"] == [10, 10, 2, 12, 8, 2, 8, 8, 2, 30, 20, 2]
    assert second["keypoints"] == [50, 40, 2, 55.5, 35, 2, 0, 0, 0, 90, 70, 2]
    assert second["num_keypoints"] == 3
    # Extent 22x12 -> pad max(2, 0.1*22)=2.2 on every side; extent 40x35 -> pad 4, clipped at the 100x80 border.
    assert first["bbox"] == pytest.approx([5.8, 5.8, 26.4, 16.4])
    assert second["bbox"] == pytest.approx([46, 31, 48, 43])
    assert first["area"] == pytest.approx(26.4 * 16.4)
    assert data["images"][0]["width"] == 100 and data["images"][0]["height"] == 80


def test_min_pad_gives_a_single_point_a_box(tmp_path):
    project = _project(tmp_path, {"a.png": ["0", "0", "", "", "", "", "", ""]})
    data, _ = read_deeplabcut_project(project)  # margin 0.1 of a zero extent: min_pad (8 px) applies
    assert data["annotations"][0]["bbox"] == [0.0, 0.0, 8.0, 8.0]


def test_skeleton_names_become_one_based_indices(tmp_path):
    config = {"skeleton": [["snout", "leftear"], ["snout", "rightear"], ["snout", "tailbase"]]}
    project = _project(tmp_path, {"a.png": ["1"] * 8}, config=config)
    data, _ = read_deeplabcut_project(project)
    assert data["categories"][0]["skeleton"] == [[1, 2], [1, 3], [1, 4]]
    assert CocoKeypoints.from_dict(data).schema.skeleton == ((0, 1), (0, 2), (0, 3))


def test_csv_column_order_may_differ_from_config(tmp_path):
    parts = ["tailbase", "snout", "leftear", "rightear"]
    project = _project(tmp_path, {"a.png": ["4", "4", "1", "1", "2", "2", "3", "3"]}, header_parts=parts)
    data, _ = read_deeplabcut_project(project)
    assert data["annotations"][0]["keypoints"] == [1, 1, 2, 2, 2, 2, 3, 3, 2, 4, 4, 2]  # config order


def test_multi_animal_is_not_implemented(tmp_path):
    project = _project(tmp_path, {"a.png": ["1"] * 8}, config={"multianimalproject": True})
    with pytest.raises(NotImplementedError, match="multi-animal"):
        read_deeplabcut_project(project)


@pytest.mark.parametrize(
    ("rows", "kwargs", "fragment"),
    [
        ({"a.png": ["1", "2"] * 3 + ["x", "4"]}, {}, "line 4: tailbase x: not a number: 'x'"),
        ({"a.png": ["1"] * 8, "b.png": ["1", "", *["1"] * 6]}, {}, "line 5 (labeled-data/vid1/b.png): snout has only"),
        (
            {"a.png": ["1"] * 8},
            {"header_parts": ["snout", "leftear", "rightear", "tail"]},
            "bodyparts ['tail'] are not",
        ),
        ({"a.png": ["500", "500"] * 4}, {}, "line 4 (labeled-data/vid1/a.png): labeled keypoints lie outside"),
    ],
    ids=["not_a_number", "half_labeled", "unknown_bodypart", "outside_image"],
)
def test_errors_name_the_csv_and_line(tmp_path, rows, kwargs, fragment):
    project = _project(tmp_path, rows, **kwargs)
    with pytest.raises(DeepLabCutFormatError) as err:
        read_deeplabcut_project(project)
    assert str(project / "labeled-data/vid1/CollectedData_me.csv") in str(err.value)
    assert fragment in str(err.value)


def test_missing_image_names_the_csv_and_line(tmp_path):
    project = _project(tmp_path, {"a.png": ["1"] * 8, "b.png": ["2"] * 8})
    (project / "labeled-data/vid1/b.png").unlink()
    with pytest.raises(DeepLabCutFormatError, match=r"CollectedData_me\.csv: line 5: image labeled-data/vid1/b\.png"):
        read_deeplabcut_project(project)


def test_not_a_project(tmp_path):
    with pytest.raises(DeepLabCutFormatError, match=r"config\.yaml: missing"):
        read_deeplabcut_project(tmp_path)
    project = _project(tmp_path, {"a.png": ["1"] * 8})
    (project / "labeled-data/vid1/CollectedData_me.csv").unlink()
    with pytest.raises(DeepLabCutFormatError, match="no labeled-data/"):
        read_deeplabcut_project(project)
    # The result is plain JSON: nothing numpy or Path-typed sneaks in.
    assert json.loads(json.dumps(read_deeplabcut_project(_project(tmp_path / "x", {"a.png": ["1"] * 8}))[0]))
