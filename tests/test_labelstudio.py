"""The Label Studio hand-off (pipeline/labelstudio): pure conversions first, then against ONE real server per session.

The server tests share the session server of ``tests/conftest.py`` (first start ~30 s); each uses its own project.
The test that stops and restarts the server comes last in this file.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import httpx
import numpy as np
import pytest

from pipeline.corrections import Correction, Skip, read_store, write_pull
from pipeline.keypoints import KeypointSchema
from tests.labelstudio_server import require_label_studio, tasks_for, true_instances, write_images

require_label_studio()

from label_studio_sdk.core.api_error import ApiError  # noqa: E402  # after the loud skip

from pipeline.data.labelstudio import annotations, coordinates  # noqa: E402
from pipeline.data.labelstudio import tasks as task_format  # noqa: E402
from pipeline.data.labelstudio.config import keypoint_labels, labeling_config  # noqa: E402
from pipeline.labelstudio import client, oracle  # noqa: E402

SCHEMA4 = KeypointSchema.from_coco_category(
    {"id": 1, "name": "mouse", "keypoints": ["snout", "left_ear", "right_ear", "tail"], "skeleton": [[1, 2], [1, 3]]}
)
COCO17 = KeypointSchema.coco17()


# ------------------------------------------------------------------------------------------------- pure: config


def test_labeling_config_has_every_control():
    root = ET.fromstring(labeling_config(COCO17))
    image = root.find("Image")
    assert image is not None and image.get("name") == "image" and image.get("value") == "$image"
    box = root.find("RectangleLabels")
    assert box.get("name") == "box" and [e.get("value") for e in box.iter("Label")] == ["person"]
    kp = root.find("KeyPointLabels")
    labels = list(kp.iter("Label"))
    assert [e.get("value") for e in labels] == list(COCO17.names)
    assert [e.get("model_index") for e in labels] == [str(i) for i in range(17)]
    choices = root.find("Choices")
    assert choices.get("name") == "occluded" and choices.get("perRegion") == "true"
    assert [e.get("value") for e in choices.iter("Choice")] == ["occluded"]
    assert keypoint_labels(labeling_config(SCHEMA4)) == ["snout", "left_ear", "right_ear", "tail"]


# ---------------------------------------------------------------------------------------------- pure: conversion


def _annotation_from(task: dict, annotation_id: int = 1, **extra) -> dict:
    """An annotation that accepts the task's prediction as it is (what the editor submits on 'accept')."""
    return {
        "id": annotation_id,
        "result": task["predictions"][0]["result"],
        "was_cancelled": False,
        "completed_by": 3,
        "created_at": "2026-11-22T10:00:00.123456Z",
        "updated_at": "2026-11-22T10:00:05Z",
        **extra,
    }


def test_px_percent_round_trip_is_exact():
    rng = np.random.default_rng(0)
    for size in (1, 7, 48, 641, 4000):
        px = rng.uniform(-0.5, size - 0.5, 1000)
        back = coordinates.percent_to_px(coordinates.px_to_percent(px, size), size)
        assert np.abs(back - px).max() < 1e-9
    # The pixel convention: the image's left edge (x = -0.5) is 0 %, its right edge (W - 0.5) 100 %.
    assert coordinates.px_to_percent(-0.5, 64) == 0.0 and coordinates.px_to_percent(63.5, 64) == 100.0


def test_task_to_correction_round_trip_keeps_visibility():
    """COCO 3K keypoints with v=0/1/2 -> task prediction -> annotation accepting it -> Correction, within 0.01 px."""
    image = {"id": 9, "file_name": "images/a b&c.png", "width": 641, "height": 479}
    coco = true_instances([image], SCHEMA4, per_image=1)
    ann = coco["annotations"][0]
    task = task_format.instance_to_task(
        instance_id=ann["id"],
        image_id=9,
        image_path="prepared/images/a b&c.png",
        width=641,
        height=479,
        bbox=ann["bbox"],
        keypoints=ann["keypoints"],
        schema=SCHEMA4,
        model_version="pose/3",
        uncertainty=0.7,
        image_file="images/a b&c.png",
    )
    assert task["data"] == {
        "image": "/data/local-files/?d=prepared/images/a%20b%26c.png",
        "instance_id": ann["id"],
        "image_id": 9,
        "bbox": ann["bbox"],
        "image_file": "images/a b&c.png",
    }
    (prediction,) = task["predictions"]
    assert prediction["model_version"] == "pose/3" and prediction["score"] == 0.7
    kps = [r for r in prediction["result"] if r["type"] == "keypointlabels"]
    assert all(r["parentID"] == "box" for r in kps)
    assert len(kps) == ann["num_keypoints"]
    record = annotations.annotation_to_correction(
        {"id": 5, **task}, _annotation_from(task), SCHEMA4, annotators={3: "a@b.c"}
    )
    assert isinstance(record, Correction)
    assert (record.instance_id, record.image_id, record.task_id, record.annotation_id) == (ann["id"], 9, 5, 1)
    assert record.annotator == "a@b.c" and record.model_version == "pose/3"
    assert record.completed_at == "2026-11-22T10:00:05Z"
    assert record.image_file == "images/a b&c.png" and record.instance_bbox == tuple(ann["bbox"])  # provenance
    got, want = np.array(record.keypoints).reshape(-1, 3), np.array(ann["keypoints"]).reshape(-1, 3)
    assert np.array_equal(got[:, 2], want[:, 2])  # 2 stays 2, 1 stays 1 (the occluded choice), 0 stays 0
    assert np.abs(got[:, :2] - want[:, :2]).max() < 0.01
    assert np.abs(np.array(record.bbox) - np.array(ann["bbox"])).max() < 0.01


def test_instance_to_task_prediction_details():
    xy = np.array([[10.2, 5.5], [np.nan, np.nan], [-3.0, 700.0], [20.0, 30.0]])
    task = task_format.instance_to_task(
        instance_id=1,
        image_id=2,
        image_path="prepared/images/x.jpg",
        width=100,
        height=50,
        bbox=[1, 2, 30, 40],
        keypoints=xy.ravel(),
        scores=[0.9, 0.8, 0.7, 0.05],
        min_score=0.1,
        schema=SCHEMA4,
        model_version="m/1",
        uncertainty=0.25,
    )
    result = task["predictions"][0]["result"]
    box = result[0]
    assert box["type"] == "rectanglelabels" and box["value"]["rectanglelabels"] == ["person"]
    assert box["original_width"] == 100 and box["original_height"] == 50
    points = {r["value"]["keypointlabels"][0]: r for r in result[1:]}
    # NaN = no prediction; score below min_score = not pre-placed; outside the image = clipped onto the border.
    assert set(points) == {"snout", "right_ear"}
    assert points["snout"]["score"] == 0.9
    assert points["right_ear"]["value"]["x"] == 0.0 and points["right_ear"]["value"]["y"] == 100.0
    with pytest.raises(ValueError, match="3 scores for 4 keypoints"):
        task_format.instance_to_task(
            instance_id=1,
            image_id=2,
            image_path="a.png",
            width=10,
            height=10,
            bbox=[0, 0, 1, 1],
            keypoints=None,
            scores=[1, 1, 1],
            schema=SCHEMA4,
            model_version="m",
            uncertainty=0,
        )
    with pytest.raises(ValueError, match="relative to the document root"):
        task_format.image_url("/abs/a.png")


def test_predictions_pass_label_studio_validation():
    """The server validates predictions with the SDK's LabelInterface and silently drops failures in
    import_predictions: ours must pass, points and boxes beyond the border included."""
    from label_studio_sdk.label_interface import LabelInterface

    interface = LabelInterface(labeling_config(COCO17))
    rng = np.random.default_rng(1)
    for width, height in ((64, 48), (1, 1), (1920, 1080)):
        xy = np.c_[rng.uniform(-5, width + 5, 17), rng.uniform(-5, height + 5, 17)]
        xy[:4] = [(-0.5, -0.5), (width - 0.5, height - 0.5), (-3, height + 2), (width + 9, -7)]
        kps = np.c_[xy, rng.choice([0, 1, 2], 17)].ravel()
        task = task_format.instance_to_task(
            instance_id=1,
            image_id=1,
            image_path="a.png",
            width=width,
            height=height,
            bbox=[-3.0, -2.0, width + 10.0, height + 10.0],
            keypoints=kps,
            scores=rng.random(17),
            schema=COCO17,
            model_version="m/1",
            uncertainty=0.5,
        )
        assert interface.validate_prediction(task["predictions"][0], return_errors=True) == [], (width, height)
        box = task["predictions"][0]["result"][0]["value"]
        assert (box["x"], box["y"], box["width"], box["height"]) == (0.0, 0.0, 100.0, 100.0)


def _point(rid: str, label: str, x: float, y: float, size: tuple | None = (100, 50)) -> dict:
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


TASK = {"id": 11, "data": {"instance_id": 7, "image_id": 3, "bbox": [1.0, 2.0, 30.0, 40.0]}}


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ([_point("a", "tail", 10, 10), _point("b", "paw", 10, 10)], "unknown label 'paw' (region b)"),
        ([_point("a", "snout", 150.0, 20.0)], "keypoint 'snout' (region a) at x=150%, y=20% is outside the image"),
        ([_point("a", "snout", 10, 10, size=None)], "missing original_width / original_height"),
        ([_point("a", "snout", 10, 10), _point("b", "snout", 20, 10)], "label 'snout' placed 2 times"),
        ([{"id": "t", "from_name": "notes", "type": "textarea", "value": {"text": ["x"]}}], "unknown control 'notes'"),
        (
            [
                _point("a", "snout", 10, 10),
                {"id": "zz", "from_name": "occluded", "type": "choices", "value": {"choices": ["occluded"]}},
            ],
            "'occluded' choice for region zz",
        ),
    ],
)
def test_malformed_annotation_is_a_problem_naming_task_and_annotation(result, message):
    annotation = {"id": 40, "result": result, "created_at": "2026-11-22T10:00:00Z"}
    with pytest.raises(annotations.AnnotationError) as info:
        annotations.annotation_to_correction(TASK, annotation, SCHEMA4)
    problem = info.value.problem
    assert (problem.task_id, problem.annotation_id) == (11, 40)
    assert problem.message.startswith("task 11, annotation 40: ")
    assert message in problem.message
    assert annotations.convert_annotation(TASK, annotation, SCHEMA4) == problem


def test_skip_no_person_and_missing_box():
    base = {"id": 40, "created_at": "2026-11-22T10:00:00Z", "completed_by": {"id": 2, "email": "x@y.z"}}
    skip = annotations.annotation_to_correction(
        TASK, {**base, "result": [_point("a", "snout", 1, 1)], "was_cancelled": True}, SCHEMA4
    )
    # the skip carries the task's box as the person's fingerprint (the task has no image_file: an older export)
    assert skip == Skip(7, 11, 40, "x@y.z", "2026-11-22T10:00:00Z", "skipped", instance_bbox=(1.0, 2.0, 30.0, 40.0))
    assert annotations.annotation_to_correction(TASK, {**base, "result": []}, SCHEMA4).reason == "no_person"
    # Keypoints without a rectangle: the task's box is kept; unplaced keypoints are 0, 0, 0.
    record = annotations.annotation_to_correction(TASK, {**base, "result": [_point("a", "tail", 50.0, 50.0)]}, SCHEMA4)
    assert record.bbox == (1.0, 2.0, 30.0, 40.0)
    assert record.keypoints == (0.0, 0.0, 0, 0.0, 0.0, 0, 0.0, 0.0, 0, 49.5, 24.5, 2)


def test_collect_task_records_rules():
    accepted = {"id": 1, "created_at": "2026-11-22T10:00:00Z", "result": [_point("a", "snout", 10, 10)]}
    tasks = [
        # two completed annotations (two annotators): both are kept, merge picks the later
        {**TASK, "annotations": [{**accepted, "id": 2}, {**accepted, "id": 1}]},
        {"id": 12, "data": {"instance_id": 8, "image_id": 3}, "annotations": [{**accepted, "was_cancelled": True}]},
        {"id": 13, "data": {"instance_id": 9, "image_id": 3}, "annotations": []},
        {"id": 14, "data": {"image": "x.png"}, "annotations": [{**accepted, "id": 5}]},  # not exported by us
        {"id": 15, "data": {"image": "y.png"}, "annotations": []},  # not ours, nothing done: ignored
        {"id": 16, "data": {"instance_id": 10, "image_id": 3}, "annotations": [{**accepted, "id": 6, "result": 7}]},
    ]
    records = annotations.collect_task_records(tasks, SCHEMA4)
    assert [(c.task_id, c.annotation_id) for c in records.corrections] == [(11, 1), (11, 2)]
    assert [(s.instance_id, s.reason) for s in records.skips] == [(8, "skipped")]
    assert records.pending == [9, 10]  # a task whose annotation is an AnnotationProblem stays pending
    by_task = {p.task_id: p for p in records.problems}
    assert set(by_task) == {14, 16}
    assert "not exported by poseloop" in by_task[14].message


def test_parse_export_file(tmp_path):
    task = task_format.instance_to_task(
        instance_id=3,
        image_id=1,
        image_path="prepared/images/a.png",
        width=80,
        height=60,
        bbox=[0, 0, 10, 10],
        keypoints=[1, 2, 2, 3, 4, 1, 0, 0, 0, 70.25, 50.75, 2],
        schema=SCHEMA4,
        model_version="m/2",
        uncertainty=0,
    )
    export = [
        {"id": 21, **task, "annotations": [_annotation_from(task, 31, completed_by=1)]},
        {
            "id": 22,
            "data": {**task["data"], "instance_id": 4},
            "annotations": [_annotation_from(task, 32, was_cancelled=True)],
        },
        {
            "id": 23,
            "data": {**task["data"], "instance_id": 5},
            "annotations": [_annotation_from(task, 33, result=[_point("q", "whisker", 1, 1)])],
        },
    ]
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "export.json").write_text(json.dumps(export))
    corrections, skips, problems = annotations.parse_export_file(inbox / "export.json", SCHEMA4)
    assert [c.keypoints for c in corrections] == [(1.0, 2.0, 2, 3.0, 4.0, 1, 0.0, 0.0, 0, 70.25, 50.75, 2)]
    assert corrections[0].annotator == "user 1" and corrections[0].model_version == "m/2"
    assert [(s.instance_id, s.task_id) for s in skips] == [(4, 22)]
    assert [(p.task_id, p.annotation_id) for p in problems] == [(23, 33)]
    (inbox / "bad.json").write_text('{"tasks": []}')
    with pytest.raises(ValueError, match="not a Label Studio JSON export"):
        annotations.parse_export_file(inbox / "bad.json", SCHEMA4)


# ----------------------------------------------------------------------------------------- pure: client plumbing


def test_with_retries_backs_off_then_gives_a_clear_error():
    calls = []

    def refused():
        calls.append(time.monotonic())
        raise httpx.ConnectError("[Errno 111] Connection refused")

    with pytest.raises(client.LabelStudioUnavailableError) as info:
        client.with_retries(refused, attempts=3, base_delay=0.05, url="http://127.0.0.1:9", what="list tasks")
    assert str(info.value).startswith("Label Studio at http://127.0.0.1:9 is not answering after 3 attempts")
    assert info.value.__cause__ is None and info.value.__suppress_context__  # one message, no chained traceback
    assert len(calls) == 3 and calls[2] - calls[1] >= 0.09  # 0.05 s, then 0.1 s

    outcomes = iter([httpx.ReadError("dropped"), "ok"])

    def flaky():
        value = next(outcomes)
        if isinstance(value, Exception):
            raise value
        return value

    assert client.with_retries(flaky, attempts=2, base_delay=0.01) == "ok"

    cookie = {"set-cookie": "sessionid=SECRET-COOKIE", "content-type": "application/json"}
    bad = ApiError(status_code=400, headers=cookie, body={"detail": "Validation error", "validation_errors": {"x": 1}})
    with pytest.raises(client.LabelStudioError) as info:
        client.with_retries(lambda: (_ for _ in ()).throw(bad), url="u", what="create project")
    assert info.value.status == 400 and "SECRET-COOKIE" not in str(info.value)
    assert "create project failed: HTTP 400: {'x': 1}" in str(info.value)


def test_connect_reads_only_the_environment(monkeypatch):
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "k" * 40)
    with pytest.raises(client.LabelStudioError, match="LABEL_STUDIO_URL is not set") as info:
        client.connect()
    assert "k" * 40 not in str(info.value)
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("LABEL_STUDIO_API_KEY")
    with pytest.raises(client.LabelStudioError, match="LABEL_STUDIO_API_KEY is not set"):
        client.connect()


# ------------------------------------------------------------------------------------------ against a real server


def _dataset(labelstudio, prefix: str, schema: KeypointSchema, sizes, per_image: int, seed: int = 0) -> dict:
    images = write_images(labelstudio.image_root, prefix, sizes, seed=seed)
    return true_instances(images, schema, per_image=per_image, seed=seed)


def test_project_config_accepted_storage_once_and_images_served(labelstudio_env):
    ls = client.connect()
    root = labelstudio_env.document_root
    coco = _dataset(labelstudio_env, "served", COCO17, [(64, 48)], per_image=1)
    pid = client.get_or_create_project(ls, "config check", COCO17, root)
    assert client.get_or_create_project(ls, "config check", COCO17, root) == pid  # reused by title
    assert len(ls.import_storage.local.list(project=pid)) == 1  # attached once
    assert keypoint_labels(ls.projects.get(id=pid).label_config) == list(COCO17.names)
    # The editor loads images through the local-files URL of the task: the storage makes it servable.
    url = task_format.image_url(f"prepared/{coco['images'][0]['file_name']}")
    request = urllib.request.Request(
        labelstudio_env.url + url, headers={"Authorization": f"Token {labelstudio_env.token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
    assert body == (labelstudio_env.image_root / coco["images"][0]["file_name"]).read_bytes()
    # Same title, other keypoints: refused with a clear message instead of mixing schemas.
    with pytest.raises(client.LabelStudioError, match="use another project title"):
        client.get_or_create_project(ls, "config check", SCHEMA4, root)


def _versions_by_instance(ls, pid) -> dict[int, list[str]]:
    out = {}
    for task in ls.tasks.list(project=pid, fields="all"):
        out[task.data["instance_id"]] = sorted(
            p["model_version"] if isinstance(p, dict) else p.model_version for p in task.predictions
        )
    return out


def test_export_is_idempotent_and_updates_predictions(labelstudio_env):
    ls = client.connect()
    coco = _dataset(labelstudio_env, "export", COCO17, [(64, 48), (50, 70), (33, 41)], per_image=2, seed=1)
    n = len(coco["annotations"])
    pid = client.get_or_create_project(ls, "export check", COCO17, labelstudio_env.document_root, "pose/1")
    mapping = client.send_tasks(ls, pid, tasks_for(coco, COCO17, "pose/1"), "pose/1", batch_size=4)
    assert sorted(mapping) == sorted(a["id"] for a in coco["annotations"]) and len(set(mapping.values())) == n
    listed = list(ls.tasks.list(project=pid, fields="all"))
    assert len(listed) == n
    first = listed[0].predictions[0]
    first = first if isinstance(first, dict) else first.dict()
    assert first["model_version"] == "pose/1" and first["result"][0]["type"] == "rectanglelabels"
    assert ls.projects.get(id=pid).model_version == "pose/1"

    assert client.send_tasks(ls, pid, tasks_for(coco, COCO17, "pose/1"), "pose/1") == mapping
    assert len(list(ls.tasks.list(project=pid, fields="task_only"))) == n

    # One task annotated and one skipped before the next round: they keep their predictions.
    annotated, skipped = mapping[coco["annotations"][0]["id"]], mapping[coco["annotations"][1]["id"]]
    ls.annotations.create(id=annotated, result=[], was_cancelled=False)
    ls.annotations.create(id=skipped, result=[], was_cancelled=True)
    assert (
        client.send_tasks(ls, pid, tasks_for(coco, COCO17, "pose/2"), "pose/2", batch_size=4, prediction_batch_size=3)
        == mapping
    )
    versions = _versions_by_instance(ls, pid)
    assert len(versions) == n
    for iid, tid in mapping.items():
        expected = ["pose/1"] if tid in (annotated, skipped) else ["pose/1", "pose/2"]
        assert versions[iid] == expected, iid
    assert ls.projects.get(id=pid).model_version == "pose/2"
    with pytest.raises(ValueError, match="must not contain a comma"):
        client.send_tasks(ls, pid, [], "pose, 3")


def test_simulate_then_fetch_round_trip(labelstudio_env, tmp_path):
    ls = client.connect()
    coco = _dataset(labelstudio_env, "oracle", COCO17, [(64, 48), (50, 70), (97, 31)], per_image=3, seed=2)
    pid = client.get_or_create_project(ls, "oracle check", COCO17, labelstudio_env.document_root)
    tasks = tasks_for(coco, COCO17, "pose/7")
    outsider = task_format.instance_to_task(  # exported, but the oracle does not know it: stays pending
        instance_id=999,
        image_id=1,
        image_path=tasks[0]["data"]["image"].split("?d=")[1],
        width=64,
        height=48,
        bbox=[0, 0, 5, 5],
        keypoints=None,
        schema=COCO17,
        model_version="pose/7",
        uncertainty=0,
    )
    mapping = client.send_tasks(ls, pid, [*tasks, outsider], "pose/7")
    counts = oracle.simulate(ls, pid, coco, COCO17, miss_rate=0.3, seed=3)
    assert counts["pending"] == 10 and counts["no_truth"] == 1
    assert counts["annotated"] + counts["skipped"] == 9 and counts["skipped"] >= 1

    corrections, skips, problems, pending = client.fetch_annotations(ls, pid, COCO17, page_size=4)
    assert problems == [] and pending == [999]
    assert len(corrections) == counts["annotated"] and len(skips) == counts["skipped"]
    truth = {a["id"]: a for a in coco["annotations"]}
    assert {s.reason for s in skips} == {"skipped"}
    assert {c.instance_id for c in corrections} | {s.instance_id for s in skips} == set(truth)
    for c in corrections:
        want = np.array(truth[c.instance_id]["keypoints"]).reshape(-1, 3)
        got = np.array(c.keypoints).reshape(-1, 3)
        assert np.array_equal(got[:, 2], want[:, 2])  # visibility 1 survives the round trip
        assert np.abs(got[:, :2] - want[:, :2]).max() < 0.01
        assert np.abs(np.array(c.bbox) - np.array(truth[c.instance_id]["bbox"])).max() < 0.01
        assert c.task_id == mapping[c.instance_id] and c.model_version == "pose/7"
        assert c.annotator == "admin@poseloop.local" and c.completed_at.endswith("Z")
    assert any(1 in c.keypoints[2::3] for c in corrections)
    # The same work read from Label Studio's own JSON export (what an inbox file is) gives the same records.
    export = f"{labelstudio_env.url}/api/projects/{pid}/export?exportType=JSON&download_all_tasks=true"
    headers = {"Authorization": f"Token {labelstudio_env.token}"}
    with urllib.request.urlopen(urllib.request.Request(export, headers=headers), timeout=60) as response:
        (tmp_path / "export.json").write_bytes(response.read())
    from_file, file_skips, file_problems = annotations.parse_export_file(tmp_path / "export.json", COCO17)
    # Same records; only the origin differs (the file, not the server), and the key holds it.
    assert file_problems == [] and [s.key()[2:] for s in file_skips] == [s.key()[2:] for s in skips]
    assert [(c.key()[2:], c.model_version, c.image_file) for c in from_file] == [
        (c.key()[2:], c.model_version, c.image_file) for c in corrections
    ]
    assert {c.origin for c in from_file} == {"inbox:export.json"}
    assert {c.origin for c in corrections} == {client.project_origin(ls, ls.projects.get(id=pid))}
    assert all(c.image_file is not None and c.instance_bbox is not None for c in corrections)
    # Nothing pending with a truth is left: a second run annotates nothing.
    again = oracle.simulate(ls, pid, coco, COCO17)
    assert again == {"pending": 1, "annotated": 0, "skipped": 0, "unlabelable": 0, "no_truth": 1}


def test_noisy_oracle_moves_points_by_about_the_noise(labelstudio_env):
    ls = client.connect()
    coco = _dataset(labelstudio_env, "noisy", SCHEMA4, [(400, 300)], per_image=6, seed=4)
    for ann in coco["annotations"]:  # keep the truth away from the border so clipping does not shrink the noise
        kps = np.array(ann["keypoints"], dtype=float).reshape(-1, 3)
        kps[kps[:, 2] > 0, :2] = np.clip(kps[kps[:, 2] > 0, :2], 50, 250)
        ann["keypoints"] = kps.ravel().tolist()
    pid = client.get_or_create_project(ls, "noise check", SCHEMA4, labelstudio_env.document_root)
    client.send_tasks(ls, pid, tasks_for(coco, SCHEMA4, "pose/1"), "pose/1")
    oracle.simulate(ls, pid, coco, SCHEMA4, noise_px=2.0, seed=5)
    corrections, _, _, _ = client.fetch_annotations(ls, pid, SCHEMA4)
    truth = {a["id"]: np.array(a["keypoints"]).reshape(-1, 3) for a in coco["annotations"]}
    errors = np.concatenate(
        [
            (np.array(c.keypoints).reshape(-1, 3) - truth[c.instance_id])[truth[c.instance_id][:, 2] > 0, :2].ravel()
            for c in corrections
        ]
    )
    assert 1.0 < errors.std() < 3.5


def test_malformed_annotations_are_reported_and_the_rest_returned(labelstudio_env):
    ls = client.connect()
    coco = _dataset(labelstudio_env, "bad", SCHEMA4, [(80, 60)], per_image=4, seed=6)
    pid = client.get_or_create_project(ls, "problem check", SCHEMA4, labelstudio_env.document_root)
    mapping = client.send_tasks(ls, pid, tasks_for(coco, SCHEMA4, "pose/1"), "pose/1")
    ids = [a["id"] for a in coco["annotations"]]
    oracle.simulate(ls, pid, {**coco, "annotations": coco["annotations"][:1]}, SCHEMA4)  # a good one
    size = {"original_width": 80, "original_height": 60}
    unknown = ls.annotations.create(id=mapping[ids[1]], result=[{**_point("a", "whisker", 10, 10), **size}])
    outside = ls.annotations.create(id=mapping[ids[2]], result=[{**_point("b", "snout", 101.5, 10), **size}])
    second = ls.annotations.create(id=mapping[ids[0]], result=[{**_point("c", "snout", 10, 10), **size}])
    # A task someone imported by hand (no instance_id) and annotated: reported, not guessed.
    (foreign,) = ls.projects.import_tasks(id=pid, request=[{"data": {"image": "x.png"}}], return_task_ids=True).task_ids
    stray = ls.annotations.create(id=foreign, result=[{**_point("d", "snout", 10, 10), **size}])

    corrections, skips, problems, pending = client.fetch_annotations(ls, pid, SCHEMA4)
    # the second completed annotation of a task is kept as a correction of its own (merge picks the later)
    assert [(c.instance_id, c.annotation_id) for c in corrections][1] == (ids[0], second.id)
    assert [c.instance_id for c in corrections] == [ids[0], ids[0]] and skips == []
    assert pending == [ids[1], ids[2], ids[3]]
    found = {(p.task_id, p.annotation_id): p.message for p in problems}
    assert set(found) == {(mapping[ids[1]], unknown.id), (mapping[ids[2]], outside.id), (foreign, stray.id)}
    assert "unknown label 'whisker'" in found[(mapping[ids[1]], unknown.id)]
    assert "is outside the image" in found[(mapping[ids[2]], outside.id)]
    assert found[(mapping[ids[2]], outside.id)].startswith(f"task {mapping[ids[2]]}, annotation {outside.id}: ")
    assert "not exported by poseloop" in found[(foreign, stray.id)]


def test_pagination_returns_every_task(labelstudio_env):
    ls = client.connect()
    coco = _dataset(labelstudio_env, "pages", SCHEMA4, [(30, 30)], per_image=7, seed=7)
    pid = client.get_or_create_project(ls, "page check", SCHEMA4, labelstudio_env.document_root)
    mapping = client.send_tasks(ls, pid, tasks_for(coco, SCHEMA4, "pose/1"), "pose/1", batch_size=3)
    for page_size in (1, 3, 7, 1000):
        listed = [t["id"] for t in client.iter_tasks(ls, pid, page_size=page_size)]
        assert sorted(listed) == sorted(mapping.values()), page_size
    assert client.fetch_annotations(ls, pid, SCHEMA4, page_size=2)[3] == sorted(mapping)


def test_simulate_command_line(labelstudio_env, tmp_path, capsys):
    from pipeline.__main__ import main

    ls = client.connect()
    coco = _dataset(labelstudio_env, "cli", SCHEMA4, [(40, 30)], per_image=3, seed=8)
    pid = client.get_or_create_project(ls, "cli check", SCHEMA4, labelstudio_env.document_root)
    client.send_tasks(ls, pid, tasks_for(coco, SCHEMA4, "pose/1"), "pose/1")
    path = tmp_path / "oracle.json"
    path.write_text(json.dumps(coco))
    code = main(["labelstudio", "simulate", "--oracle", str(path), "--project", "cli check", "--miss-rate", "0"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "3 annotated, 0 skipped" in out.out
    assert main(["labelstudio", "simulate", "--oracle", str(path), "--project", "no such project"]) == 1
    assert "no Label Studio project titled 'no such project'" in capsys.readouterr().err


def test_api_key_never_printed_logged_or_written(labelstudio_env, tmp_path, caplog, capsys, monkeypatch):
    token = labelstudio_env.token
    caplog.set_level(logging.DEBUG)
    ls = client.connect()
    coco = _dataset(labelstudio_env, "secret", SCHEMA4, [(40, 30)], per_image=2, seed=9)
    pid = client.get_or_create_project(ls, "secret check", SCHEMA4, labelstudio_env.document_root, "pose/1")
    mapping = client.send_tasks(ls, pid, tasks_for(coco, SCHEMA4, "pose/1"), "pose/1")
    oracle.simulate(ls, pid, coco, SCHEMA4, miss_rate=0.5, seed=1)
    corrections, skips, problems, _ = client.fetch_annotations(ls, pid, SCHEMA4)
    store = tmp_path / "corrections"
    written = write_pull(store, corrections, skips, problems, "labelstudio")
    (tmp_path / "export.json").write_text(json.dumps({str(k): v for k, v in mapping.items()}))
    assert read_store(store)[0] == corrections
    errors = []
    for call in (lambda: ls.projects.get(id=987654), lambda: client.send_tasks(ls, 987654, [], "pose/1")):
        with pytest.raises(client.LabelStudioError) as info:
            client.with_retries(call, url=labelstudio_env.url, what="probe")
        errors.append(str(info.value))
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "f" * 40)
    with pytest.raises(client.LabelStudioError, match="rejected the key") as info:
        client.connect(attempts=1)
    errors.append(str(info.value))
    assert "f" * 40 not in errors[-1]

    out = capsys.readouterr()
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("pipeline")]
    ours += [out.out, out.err, *errors, *(p.read_text() for p in tmp_path.rglob("*") if p.is_file())]
    assert written is not None and len(ours) >= 6
    for text in [caplog.text, *ours]:  # caplog.text: every library's DEBUG output included
        assert token not in text
    for text in ours:
        # The server answers token-authenticated calls with a session cookie; the SDK's ApiError text shows it.
        assert "sessionid" not in text


def test_server_dies_midway_then_restart_completes_without_duplicates(labelstudio_env, monkeypatch):
    """Runs last: stops the session server in the middle of an export, restarts it on the same data and token."""
    server = labelstudio_env.server
    ls = client.connect()
    coco = _dataset(labelstudio_env, "crash", SCHEMA4, [(40, 30), (30, 40)], per_image=5, seed=10)
    tasks = tasks_for(coco, SCHEMA4, "pose/1")
    pid = client.get_or_create_project(ls, "crash check", SCHEMA4, labelstudio_env.document_root)

    original = ls.projects.import_tasks
    batches = []

    def import_then_die(**kwargs):
        response = original(**kwargs)
        batches.append(len(kwargs["request"]))
        if len(batches) == 1:
            server.stop()  # the first batch landed; the server is gone before the second
        return response

    monkeypatch.setattr(ls.projects, "import_tasks", import_then_die)
    with pytest.raises(client.LabelStudioUnavailableError) as info:
        client.send_tasks(ls, pid, tasks, "pose/1", batch_size=4, attempts=2, base_delay=0.05)
    message = str(info.value)
    assert message.startswith(f"Label Studio at {server.url} is not answering after 2 attempts"), message
    assert "\n" not in message and batches == [4]

    started = time.monotonic()
    server.start()
    restart_s = time.monotonic() - started
    print(f"\nLabel Studio restart took {restart_s:.1f} s")
    ls = client.connect()  # same token: the credentials file is reused
    mapping = client.send_tasks(ls, pid, tasks, "pose/1", batch_size=4)
    listed = [t["data"]["instance_id"] for t in client.iter_tasks(ls, pid)]
    assert sorted(listed) == sorted(mapping) == sorted(a["id"] for a in coco["annotations"])  # no duplicates

    # The command line: `serve` on the same data (the session server stopped first), Ctrl-C stops it cleanly.
    server.stop()
    cmd = [
        sys.executable,
        "-m",
        "pipeline",
        "labelstudio",
        "serve",
        "--port",
        str(server.port),
        "--data-dir",
        str(server.data_dir),
        "--document-root",
        str(server.document_root),
    ]
    # SIGINT as in a terminal: a test run started in the background (`make test &`, nohup) passes SIGINT on as
    # ignored, and Python then keeps ignoring it, so Ctrl-C would never reach `serve`.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C"):
                break
        text = "".join(lines)
        assert f"export LABEL_STUDIO_URL={server.url}\n" in text, text
        assert f"export LABEL_STUDIO_API_KEY={server.token}\n" in text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:  # the command stops its server on SIGTERM too; SIGKILL would orphan the server
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{server.url}/health", timeout=2)
    server.start()  # leave the session server running for whatever runs after


def test_a_server_that_ignores_the_page_parameter_is_named_not_looped_on():
    """A proxy or an old server answering page 1 to every page: listing stopped after one repeated page (pull looped
    forever before). A small HTTP server stands in for it: a real Label Studio pages correctly."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from label_studio_sdk.client import LabelStudio

    class SamePage(BaseHTTPRequestHandler):
        def do_GET(self):
            tasks = [{"id": 1, "data": {"instance_id": 5}}, {"id": 2, "data": {"instance_id": 6}}]
            body = json.dumps({"tasks": tasks, "total": 2}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), SamePage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ls = LabelStudio(base_url=f"http://127.0.0.1:{server.server_address[1]}", api_key="x", max_retries=0)
        seen = []
        with pytest.raises(client.LabelStudioError, match=r"page 2 of project 1's tasks holds only tasks of earlier"):
            seen.extend(t["id"] for t in client.iter_tasks(ls, 1, page_size=2))
        assert seen == [1, 2]
    finally:
        server.shutdown()
