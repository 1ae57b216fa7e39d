"""data.pool: a team's own unlabeled images and videos enter prepare's pool as images without boxes, each with an
identity (its path under data.pool.root, a frame's video and index) that does not move when the pool grows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.config import load_params, with_overrides
from pipeline.data.prepare import prepare
from pipeline.data.unlabeled import (
    IMAGE_SUFFIXES,
    PoolInputError,
    kmeans_frames,
    list_inputs,
    probe_video,
    uniform_frames,
)

REPO = Path(__file__).resolve().parents[2]


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    """An mp4 (OpenCV's mp4v) of BGR ``frames``."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def _scene(value: int, i: int) -> np.ndarray:
    frame = np.full((64, 80, 3), value, np.uint8)
    cv2.putText(frame, str(i % 3), (5, 40), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (128, 128, 128))  # a little motion
    return frame


def test_inputs_are_listed_from_folders_globs_and_files_and_a_wrong_entry_is_named(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for name in ("a/1.jpg", "a/deep/2.PNG", "a/notes.txt", "b.jpeg"):
        (tmp_path / name).write_bytes(b"x")
    found = list_inputs(["a", "*.jpeg", "a/1.jpg"], IMAGE_SUFFIXES, tmp_path, "images")
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a/1.jpg", "a/deep/2.PNG", "b.jpeg"]
    with pytest.raises(PoolInputError, match=r"data\.pool\.images: 'missing' does not exist"):
        list_inputs(["missing"], IMAGE_SUFFIXES, tmp_path, "images")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PoolInputError, match=r"data\.pool\.images: 'empty' holds no file ending in"):
        list_inputs(["empty"], IMAGE_SUFFIXES, tmp_path, "images")


def test_a_video_is_probed_and_a_broken_one_is_named(tmp_path):
    video = write_video(tmp_path / "clip.mp4", [_scene(40 * (i // 10), i) for i in range(30)], fps=12.0)
    info = probe_video(video)
    assert (info.frames, info.width, info.height) == (30, 80, 64) and info.fps == pytest.approx(12.0)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    with pytest.raises(PoolInputError, match=r"broken\.mp4: not a video OpenCV can decode"):
        probe_video(broken)


def test_uniform_takes_an_even_stride_and_kmeans_one_frame_per_scene(tmp_path):
    assert uniform_frames(100, 5) == [0, 12, 25, 50, 75]  # 0, 1/2, 1/4, 3/4, 1/8 of the video
    assert uniform_frames(3, 5) == [0, 1, 2]
    for count in (7, 100, 1001):  # nested: raising per_video keeps every frame drawn before
        for wanted in range(1, 12):
            assert set(uniform_frames(count, wanted)) <= set(uniform_frames(count, wanted + 1))
    # a long static stretch and two short scenes: k-means takes a frame of each, an even stride misses one
    scenes = (
        [_scene(20, i) for i in range(50)] + [_scene(130, i) for i in range(5)] + [_scene(240, i) for i in range(5)]
    )
    video = write_video(tmp_path / "scenes.mp4", scenes)
    picked = kmeans_frames(video, 60, 3, seed=0)
    assert len(picked) == 3 and sorted(i // 50 + (i >= 55) for i in picked) == [0, 1, 2], picked
    assert len({i // 50 + (i >= 55) for i in uniform_frames(60, 3)}) < 3  # an even spread misses a short scene


def _small_source(root: Path):
    params = with_overrides(
        load_params(REPO / "params.yaml"),
        {"data.synthetic.num_images": 24, "data.val_images": 4, "data.test_images": 2, "data.labeled": 10},
    )
    prepare(params.data, root / "source")  # its images stand in for a team's photos and video
    return params, sorted((root / "source" / "images").glob("*.jpg"))


def _other_pictures(root: Path, params) -> list[Path]:
    """24 synthetic images the source never saw (another seed): a team's own photos and video frames."""
    others = with_overrides(params, {"data.seed": 99})
    prepare(others.data, root / "other")
    return sorted((root / "other" / "images").glob("*.jpg"))


def test_prepare_adds_pool_images_and_frames_without_boxes_whose_names_survive_a_growing_pool(tmp_path):
    params, _ = _small_source(tmp_path)
    images = _other_pictures(tmp_path, params)
    mine = tmp_path / "mine"
    (mine / "photos").mkdir(parents=True)
    for image in images[:3]:
        shutil.copy(image, mine / "photos" / image.name)
    write_video(mine / "day1.mp4", [cv2.imread(str(p)) for p in images[3:15]])
    pool = {"data.pool.images": ["mine/photos"], "data.pool.videos": ["mine/day1.mp4"], "data.pool.root": "mine"}
    pool |= {"data.pool.frames.per_video": 4}
    prepare(with_overrides(params, pool).data, tmp_path / "prepared", project_root=tmp_path)

    prepared = json.loads((tmp_path / "prepared" / "pool.json").read_text())
    boxed = {a["image_id"] for a in prepared["annotations"]}
    unboxed = [im for im in prepared["images"] if im["id"] not in boxed]
    names = sorted(im["file_name"] for im in unboxed)
    assert names == sorted(
        [f"images/pool/photos/{p.name}" for p in images[:3]]
        + [f"images/pool/day1.mp4/frame_{i:06d}.jpg" for i in (0, 3, 6, 9)]
    )
    frame = next(im for im in unboxed if im.get("video"))
    assert frame["video"] == "day1.mp4" and frame["pool_file"].startswith("day1.mp4/frame_")
    source_ids = [im["id"] for im in json.loads((tmp_path / "source" / "labeled.json").read_text())["images"]]
    assert min(im["id"] for im in unboxed) > max(source_ids)
    for im in unboxed:  # decoded once into the prepared folder, with the size the file has
        assert cv2.imread(str(tmp_path / "prepared" / im["file_name"])).shape[:2] == (im["height"], im["width"])

    # the pool grows by a second video: every earlier name is still there, meaning the same pixels
    write_video(mine / "day2.mp4", [cv2.imread(str(p)) for p in images[15:20]])
    grown = with_overrides(params, pool | {"data.pool.videos": ["mine/*.mp4"]})
    prepare(grown.data, tmp_path / "again", project_root=tmp_path)
    again = {im["file_name"] for im in json.loads((tmp_path / "again" / "pool.json").read_text())["images"]}
    assert set(names) < again and any("day2.mp4/frame_" in n for n in again)


def test_a_pool_picture_that_is_a_labeled_val_or_test_image_is_left_out_of_the_pool(tmp_path, caplog):
    """A photo copied into the pool folder that is also a val image (saved again as PNG: not the same bytes), and a
    video frame that is a seed image, are the same pictures: in the pool the val one would be labeled and trained
    on. prepare leaves both out and names them; the team's other pictures stay."""
    params, _ = _small_source(tmp_path)
    source = {n: json.loads((tmp_path / "source" / f"{n}.json").read_text()) for n in ("labeled", "val")}
    val_picture = tmp_path / "source" / source["val"]["images"][0]["file_name"]
    seed_picture = tmp_path / "source" / source["labeled"]["images"][0]["file_name"]
    others = _other_pictures(tmp_path, params)
    mine = tmp_path / "mine"
    (mine / "photos").mkdir(parents=True)
    cv2.imwrite(str(mine / "photos" / "copied.png"), cv2.imread(str(val_picture)))
    shutil.copy(others[0], mine / "photos" / "own.jpg")
    write_video(mine / "cam.mp4", [cv2.imread(str(seed_picture)), *(cv2.imread(str(p)) for p in others[1:4])])
    pool = {"data.pool.images": ["mine/photos"], "data.pool.videos": ["mine/cam.mp4"], "data.pool.root": "mine"}
    with caplog.at_level("WARNING"):
        prepare(with_overrides(params, pool).data, tmp_path / "prepared", project_root=tmp_path)
    names = {im["file_name"] for im in json.loads((tmp_path / "prepared" / "pool.json").read_text())["images"]}
    assert "images/pool/photos/own.jpg" in names and "images/pool/cam.mp4/frame_000001.jpg" in names
    assert "images/pool/photos/copied.png" not in names and "images/pool/cam.mp4/frame_000000.jpg" not in names
    assert not (tmp_path / "prepared" / "images" / "pool" / "cam.mp4" / "frame_000000.jpg").exists()
    said = caplog.text
    assert "photos/copied.png is the same picture as" in said and "(val)" in said and "(labeled)" in said


def test_a_pool_file_outside_the_root_is_refused_by_name(tmp_path):
    params, images = _small_source(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(images[0], tmp_path / "elsewhere" / "x.jpg")
    bad = with_overrides(params, {"data.pool.images": ["elsewhere"], "data.pool.root": "mine"})
    (tmp_path / "mine").mkdir()
    with pytest.raises(PoolInputError, match=r"x\.jpg is outside data\.pool\.root"):
        prepare(bad.data, tmp_path / "prepared", project_root=tmp_path)


def test_validate_reads_a_video_and_an_image_folder_as_the_pool_does(tmp_path, capsys):
    from pipeline.data.validate import validate_command

    video = write_video(tmp_path / "clip.mp4", [_scene(40 * (i // 10), i) for i in range(30)], fps=10.0)
    assert validate_command(video) == 0
    out = capsys.readouterr().out
    assert "frames: 30 at 10 fps, 3.0 s; size 80 x 64" in out
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    cv2.imwrite(str(folder / "a.jpg"), _scene(100, 0))
    cv2.imwrite(str(folder / "sub" / "b.png"), _scene(200, 1))
    assert validate_command(folder) == 0
    assert "2 image(s), every one decodes" in capsys.readouterr().out
    (folder / "sub" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    assert validate_command(folder) == 2
    out = capsys.readouterr().out
    assert "1 of 3 image(s) cannot be used" in out and "broken.jpg" in out


def test_a_lightning_pose_project_gives_the_seed_labels_and_its_videos_the_pool(tmp_path, dlc_openfield):
    """Lightning Pose's layout (DeepLabCut's CSV at the top as CollectedData.csv, labeled-data/, videos/, no
    config.yaml) from params.yaml alone: the labeled frames are the seed labels, the videos the pool."""
    from pipeline.data.formats import detect_format
    from pipeline.data.validate import validate_command

    project = tmp_path / "lp"
    frames = sorted((dlc_openfield / "labeled-data" / "m4s1").glob("*.png"))
    (project / "labeled-data" / "m4s1").mkdir(parents=True)
    for frame in frames:
        shutil.copy(frame, project / "labeled-data" / "m4s1" / frame.name)
    [dlc_csv] = (dlc_openfield / "labeled-data" / "m4s1").glob("CollectedData_*.csv")
    shutil.copy(dlc_csv, project / "CollectedData.csv")
    (project / "videos").mkdir()
    write_video(project / "videos" / "session1.mp4", [cv2.imread(str(f)) for f in frames[:12]])
    assert detect_format(project) == "lightning_pose"
    assert validate_command(project) == 0

    overrides = {
        "data.source": "lightning_pose",
        "data.lightning_pose.project": str(project),
        "data.pool.videos": [str(project / "videos")],
        "data.pool.root": str(project),
        "data.pool.frames.per_video": 5,
    }
    params = with_overrides(load_params(REPO / "params.yaml"), overrides)
    counts = prepare(params.data, tmp_path / "prepared")
    labeled = json.loads((tmp_path / "prepared" / "labeled.json").read_text())
    assert labeled["categories"][0]["keypoints"] == ["snout", "leftear", "rightear", "tailbase"]
    rows = len(dlc_csv.read_text().strip().splitlines()) - 3
    assert counts["labeled"] + counts["val"] + counts["test"] + counts["pool"] == rows
    pool = json.loads((tmp_path / "prepared" / "pool.json").read_text())
    frames_in_pool = sorted(im["file_name"] for im in pool["images"] if im.get("video"))
    # the video is made of the labeled frames themselves (as a lab's labeled frames come from its videos): a drawn
    # frame that is a seed, val or test picture is left out of the pool (held-out pictures must not be labeled)
    held = {
        im["file_name"]
        for split in ("labeled", "val", "test")
        for im in json.loads((tmp_path / "prepared" / f"{split}.json").read_text())["images"]
    }
    drawn = uniform_frames(12, 5)
    expected = [
        f"images/pool/videos/session1.mp4/frame_{i:06d}.jpg"
        for i in drawn
        if f"images/labeled-data/m4s1/{frames[i].name}" not in held
    ]
    assert frames_in_pool == expected and 0 < len(expected) < len(drawn)

    (project / "CollectedData.csv").write_text(dlc_csv.read_text().replace("bodyparts,", "parts,", 1))
    with pytest.raises(ValueError, match=r"CollectedData\.csv: line 2 must start with 'bodyparts'"):
        prepare(params.data, tmp_path / "broken")


def test_the_inputs_listing_changes_when_a_pool_or_source_file_is_added_replaced_or_removed(tmp_path):
    """prepare's inputs outside git (the source's files, data.pool's photos and videos) are listed with size and
    modification time: what DVC watches (stage inputs), so a photo dropped into a pool folder prepares the data
    again; the synthetic source reads no file."""
    from pipeline.data.inputs import fingerprint, input_files

    (tmp_path / "site").mkdir()
    cv2.imwrite(str(tmp_path / "site" / "a.jpg"), _scene(50, 0))
    write_video(tmp_path / "cam.mp4", [_scene(100, i) for i in range(4)])
    labels = tmp_path / "labels.slp"
    labels.write_bytes(b"not read here")
    params = with_overrides(
        load_params(REPO / "params.yaml"),
        {
            "data.source": "sleap",
            "data.sleap.labels": str(labels),
            "data.pool.images": [str(tmp_path / "site")],
            "data.pool.videos": [str(tmp_path / "*.mp4")],
        },
    ).data
    before = fingerprint(input_files(params, tmp_path), tmp_path)
    assert sorted(before["files"]) == ["cam.mp4", "labels.slp", "site/a.jpg"]
    assert before == fingerprint(input_files(params, tmp_path), tmp_path)  # stable when nothing changed

    cv2.imwrite(str(tmp_path / "site" / "b.jpg"), _scene(70, 1))
    added = fingerprint(input_files(params, tmp_path), tmp_path)
    assert sorted(added["files"]) == ["cam.mp4", "labels.slp", "site/a.jpg", "site/b.jpg"]
    labels.write_bytes(b"edited in place, same path")
    assert fingerprint(input_files(params, tmp_path), tmp_path)["files"]["labels.slp"] != added["files"]["labels.slp"]
    (tmp_path / "site" / "a.jpg").unlink()
    assert "site/a.jpg" not in fingerprint(input_files(params, tmp_path), tmp_path)["files"]
    assert input_files(load_params(REPO / "params.yaml").data, tmp_path) == []  # the default: synthetic, no pool

    # a source folder that holds what the stages write (Label Studio's document root is the project's data/): those
    # files and hidden ones are not inputs, or prepare would run at every repro
    for name in (
        "photos/p.jpg",
        "prepared/images/x.jpg",
        "inputs.json",
        ".cache/y.jpg",
        "pool.json",
        "corrections/c.json",
    ):
        (tmp_path / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / name).write_bytes(b"x")
    export = tmp_path / "export.json"
    export.write_text("[]")
    studio = with_overrides(
        load_params(REPO / "params.yaml"),
        {"data.source": "labelstudio", "data.labelstudio.export": "export.json", "data.labelstudio.images": "data"},
    ).data
    assert sorted(fingerprint(input_files(studio, tmp_path), tmp_path)["files"]) == ["data/photos/p.jpg", "export.json"]
