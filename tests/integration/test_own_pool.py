"""A round whose pool is a team's own material, no boxes and no annotation file: a video and a folder of photos
(made here from synthetic images the labeled source never saw). Real `dvc repro` in a fresh git + DVC project, the
instance finder trained on the seed images, the teacher over the people it found, their tasks on the session's
real Label Studio server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import yaml

from pipeline.config import load_params, with_overrides
from pipeline.data.prepare import prepare
from tests.support.teacher import copy_project, small_params
from tests.unit.test_unlabeled_pool import write_video

TITLE = "own pool"
FRAMES = 5


def _own_material(project: Path) -> None:
    """mine/site/*.jpg (4 photos) and mine/cam1.mp4 (12 frames): other synthetic people than the source's."""
    others = with_overrides(
        load_params(project / "params.yaml"),
        {"data.seed": 99, "data.synthetic.num_images": 16, "data.pool.images": [], "data.pool.videos": []},
    )
    prepare(others.data, project / "other")
    images = sorted((project / "other" / "images").glob("*.jpg"))
    (project / "mine" / "site").mkdir(parents=True)
    for image in images[:4]:
        (project / "mine" / "site" / image.name).write_bytes(image.read_bytes())
    write_video(project / "mine" / "cam1.mp4", [cv2.imread(str(p)) for p in images[4:16]])


def test_a_round_on_a_video_and_a_photo_folder_finds_people_and_sends_each_to_label_studio(labelstudio):
    root = labelstudio.document_root
    project = root / "own-pool-project"
    project.mkdir()
    copy_project(project)
    raw = small_params(epochs=1, min_steps_per_epoch=8)
    raw["data"].update(split="image", labeled=0.9)  # whole seed images for the finder; a small source pool
    raw["data"]["pool"] = {
        "images": ["mine/site"],
        "videos": ["mine/*.mp4"],
        "root": "mine",
        "frames": {"rule": "kmeans", "per_video": FRAMES, "total": 100},
    }
    # a finder this short finds boxes, not yet people: min_score 0 keeps its best three peaks per image, so the
    # plumbing is tested whatever it learned (what it learns is measured in docs/BENCHMARKS.md)
    raw["find"] = {"input_size": [96, 96], "steps": 30, "batch_size": 8, "min_score": 0.0, "max_instances": 3}
    raw["select"] = {**raw.get("select", {}), "budget": 500, "policy": "random"}
    raw["export"] = {**raw.get("export", {}), "project_title": TITLE, "document_root": str(root)}
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    _own_material(project)
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}",
        LABEL_STUDIO_URL=labelstudio.server.url,
        LABEL_STUDIO_API_KEY=labelstudio.server.token,
        PYTHONPATH=str(project),
    )
    env.pop("RAY_ADDRESS", None)
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"]):
        subprocess.run(cmd, cwd=project, env=env, check=True, capture_output=True)
    done = subprocess.run(["dvc", "repro"], cwd=project, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"

    pool = json.loads((project / "data" / "pool.json").read_text())
    unboxed = {im["id"]: im for im in pool["images"] if im["file_name"].startswith("images/pool/")}
    names = sorted(im["file_name"] for im in unboxed.values())
    assert sum(n.startswith("images/pool/site/") for n in names) == 4
    assert sum(n.startswith("images/pool/cam1.mp4/frame_") for n in names) == FRAMES
    # found people (an image with nobody found would hold a whole-image stand-in scoring 0: min_score 0 leaves none)
    found = [a for a in pool["annotations"] if a.get("source") == "found" and a["detection_score"] > 0]
    assert {a["image_id"] for a in found} == set(unboxed) and len(found) == 3 * len(unboxed)
    assert all(0 <= a["detection_score"] <= 1 and a["num_keypoints"] == 0 for a in found)
    metrics = json.loads((project / "metrics" / "find.json").read_text())
    assert metrics["finder"] == "trained" and metrics["found"] == len(found) and "recall_iou50" in metrics["val"]
    assert (project / "artifacts" / "finder" / "finder.pt").is_file()

    # the teacher ran over them: their detection score and, for video frames, the keypoint jump are signals
    import pyarrow.parquet as pq

    table = pq.read_table(project / "artifacts" / "pool_predictions.parquet").to_pandas()
    frames = {i for i, im in unboxed.items() if "video" in im}
    of_found = table[table["instance_id"].isin([a["id"] for a in found])]
    assert len(of_found) == len(found) and of_found["detection_score"].notna().all()
    assert table[table["image_id"].isin(frames)]["keypoint_jump"].notna().all()
    assert table[~table["image_id"].isin(frames)]["keypoint_jump"].isna().all()

    from label_studio_sdk import LabelStudio

    ls = LabelStudio(base_url=labelstudio.server.url, api_key=labelstudio.server.token)
    ls_project = next(p for p in ls.projects.list() if p.title == TITLE)
    tasks = [t.model_dump() for t in ls.tasks.list(project=ls_project.id, fields="all")]
    by_instance = {t["data"]["instance_id"]: t for t in tasks}
    for person in found:  # one task per found person, on its image, pre-annotated with its box
        task = by_instance[person["id"]]
        assert task["data"]["image_file"] == unboxed[person["image_id"]]["file_name"]
        assert task["data"]["bbox"] == person["bbox"]
        assert any(r["type"] == "rectanglelabels" for p in task["predictions"] for r in p["result"])

    # ---- the annotator says the first found box shows nobody and draws the person the finder missed next to it
    person = found[0]
    task = by_instance[person["id"]]
    image = unboxed[person["image_id"]]
    size = {"original_width": image["width"], "original_height": image["height"]}
    missed_box = {
        "x": 60.0,
        "y": 20.0,
        "width": 25.0,
        "height": 60.0,
        "rotation": 0,
        "rectanglelabels": ["missed person"],
    }
    result = [
        {"id": "m1", "from_name": "box", "to_name": "image", "type": "rectanglelabels", "value": missed_box, **size}
    ]
    for i, (name, x, y) in enumerate([("nose", 70.0, 25.0), ("left_hip", 72.0, 50.0), ("right_ankle", 75.0, 75.0)]):
        value = {"x": x, "y": y, "width": 1, "keypointlabels": [name]}
        result.append(
            {
                "id": f"p{i}",
                "from_name": "kp_missed",
                "to_name": "image",
                "type": "keypointlabels",
                "value": value,
                **size,
            }
        )
    ls.annotations.create(id=task["id"], result=result)
    done = subprocess.run(["dvc", "repro", "merge"], cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    train = json.loads((project / "data" / "train.json").read_text())
    [added] = [a for a in train["annotations"] if a.get("added")]
    assert added["image_id"] == person["image_id"] and added["source"] == "human" and added["num_keypoints"] == 3
    assert abs(added["bbox"][0] - 0.6 * image["width"]) < 1 and abs(added["bbox"][3] - 0.6 * image["height"]) < 1
    report = json.loads((project / "data" / "merge_report.json").read_text())
    assert report["added_people"] == 1 and report["skipped"].get("no_person") == 1

    # ---- a photo added to the pool folder: the next `dvc repro` prepares the data again (stage inputs sees it)
    status = subprocess.run(["dvc", "status", "prepare"], cwd=project, env=env, capture_output=True, text=True)
    assert "changed" not in status.stdout, status.stdout
    extra = next((project / "other" / "images").glob("*.jpg"))
    (project / "mine" / "site" / "added.jpg").write_bytes(extra.read_bytes())
    done = subprocess.run(["dvc", "repro", "inputs"], cwd=project, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "mine/site/added.jpg" in json.loads((project / "data" / "inputs.json").read_text())["files"]
    status = subprocess.run(["dvc", "status", "prepare"], cwd=project, env=env, capture_output=True, text=True)
    assert "data/inputs.json" in status.stdout and "modified" in status.stdout, status.stdout
