"""The Label Studio hand-off (pipeline/labelstudio) without a server: the labeling config, conversions between COCO
keypoints and tasks / annotations, client plumbing (retries, the environment, a server that ignores paging).
Against ONE real server per session: tests/integration/test_labelstudio_real_server.py.
"""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET

import httpx
import numpy as np
import pytest

from pipeline import viz
from pipeline.corrections import Correction, Skip
from pipeline.keypoints import KeypointSchema
from tests.support.labelstudio_server import SCHEMA4, require_label_studio, true_instances
from tests.support.labelstudio_server import keypoint_region as _point

require_label_studio()

from label_studio_sdk.core.api_error import ApiError  # noqa: E402  # after the loud skip

from pipeline.data.labelstudio import annotations, config, coordinates  # noqa: E402
from pipeline.data.labelstudio import tasks as task_format  # noqa: E402
from pipeline.labelstudio import client  # noqa: E402

COCO17 = KeypointSchema.coco17()


# ------------------------------------------------------------------------------------------------- pure: config


def test_labeling_config_has_every_control():
    root = ET.fromstring(config.labeling_config(COCO17))
    image = root.find("Image")
    assert image is not None and image.get("name") == "image" and image.get("value") == "$image"
    box = root.find("RectangleLabels")
    assert box.get("name") == "box" and [e.get("value") for e in box.iter("Label")] == ["person", "missed person"]
    kp, missed = root.findall("KeyPointLabels")
    assert kp.get("name") == "kp" and missed.get("name") == "kp_missed"
    for control in (kp, missed):
        labels = list(control.iter("Label"))
        assert [e.get("value") for e in labels] == list(COCO17.names)
        assert [e.get("model_index") for e in labels] == [str(i) for i in range(17)]
    assert all(e.get("maxUsages") == "1" for e in kp.iter("Label"))  # the task's person: each keypoint once
    assert not any(e.get("maxUsages") for e in missed.iter("Label"))  # any number of missed people
    choices = root.find("Choices")
    assert choices.get("name") == "occluded" and choices.get("perRegion") == "true"
    assert [e.get("value") for e in choices.iter("Choice")] == ["occluded"]
    assert config.keypoint_labels(config.labeling_config(SCHEMA4)) == ["snout", "left_ear", "right_ear", "tail"]


def test_labeling_config_tells_the_annotator_what_to_do():
    """Issue #25: the task says whom to correct and how, shows its own note, colours keypoints by side as the
    overlays do, and sets occluded by a key."""
    root = ET.fromstring(config.labeling_config(COCO17))
    headers = [e.get("value") for e in root.findall("Header")]
    assert headers[:2] == [config.TASK_LINE, "$note"]
    assert "magenta box only" in config.TASK_LINE and "O: " in config.TASK_LINE
    (person,) = [e for e in root.find("RectangleLabels").iter("Label") if e.get("value") == "person"]
    assert person.get("background") == "#ff00ff"
    colours = {e.get("value"): e.get("background") for e in root.find("KeyPointLabels").iter("Label")}
    assert colours["left_wrist"] == "#ff8000" and colours["right_wrist"] == "#00a0ff" and colours["nose"] == "#00dc00"
    assert colours["left_wrist"] == "#{:02x}{:02x}{:02x}".format(*viz.LEFT_COLOUR)  # the overlays' orange
    # a schema listing its right keypoints first: sides still come from the names (pairs are stored index-ordered)
    right_first = KeypointSchema.from_coco_category(
        {"id": 1, "name": "mouse", "keypoints": ["snout", "right_ear", "left_ear", "tail"], "skeleton": []}
    )
    sides = {
        e.get("value"): e.get("background")
        for e in ET.fromstring(config.labeling_config(right_first)).find("KeyPointLabels").iter("Label")
    }
    assert (sides["right_ear"], sides["left_ear"], sides["tail"]) == ("#00a0ff", "#ff8000", "#00dc00")
    (occluded,) = root.find("Choices").iter("Choice")
    assert occluded.get("hotkey") == "o" and "press O (occluded)" in " ".join(config.INSTRUCTIONS)
    html = config.instructions_html()
    assert html.count("<li>") == len(config.INSTRUCTIONS) and "magenta box" in html


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
        "uncertainty": 0.7,
        "note": "Check every keypoint.",  # no scores: nothing to point at
    }
    (prediction,) = task["predictions"]
    assert prediction["model_version"] == "pose/3" and "score" not in prediction  # no scores, no confidence
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
    # issue #25: the prediction's percentage is the model's confidence (mean keypoint score), not the uncertainty;
    # the note names the keypoints to check first, least sure first, including one too unsure to pre-place
    assert task["predictions"][0]["score"] == pytest.approx((0.9 + 0.8 + 0.7 + 0.05) / 4)
    assert task["data"]["uncertainty"] == 0.25
    assert task["data"]["note"] == "Model confidence 61%. Check or place first: tail (least sure)."
    # a 30x40 px person: dots of 0.03 x sqrt(1200) = 1.04 px, not 3 px
    assert points["snout"]["value"]["width"] == pytest.approx(0.03 * 1200**0.5 * 100 / 100)
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


def test_keypoint_scores_read_on_a_0_to_1_scale_and_the_note_orders_the_unsure():
    """A heatmap peak can overshoot 1 (nose 1.15 was seen in the UI); the task shows it as 100 %."""
    scores = np.array([1.15, 0.2, np.nan, 0.45])
    task = task_format.instance_to_task(
        instance_id=1,
        image_id=2,
        image_path="x.jpg",
        width=640,
        height=480,
        bbox=[10, 10, 200, 300],
        keypoints=np.array([[20.0, 20.0], [30, 30], [np.nan, np.nan], [40, 40]]).ravel(),
        scores=scores,
        schema=SCHEMA4,
        model_version="m/1",
        uncertainty=0.9,
        queue="review",
    )
    result = task["predictions"][0]["result"]
    points = {r["value"]["keypointlabels"][0]: r for r in result if r["type"] == "keypointlabels"}
    assert points["snout"]["score"] == 1.0 and all(0 <= r["score"] <= 1 for r in points.values())
    assert 0 <= task["predictions"][0]["score"] <= 1
    assert task["data"]["note"] == (
        "The model finds this person very hard: label them if you can, else Skip. Model confidence 55%. "
        "Check or place first: left ear, tail (least sure)."
    )
    assert points["snout"]["value"]["width"] == pytest.approx(task_format.POINT_SIZE_PX * 100 / 640)  # a big person


def test_predictions_pass_label_studio_validation():
    """The server validates predictions with the SDK's LabelInterface and silently drops failures in
    import_predictions: ours must pass, points and boxes beyond the border included."""
    from label_studio_sdk.label_interface import LabelInterface

    interface = LabelInterface(config.labeling_config(COCO17))
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


def _box_region(rid: str, label: str, x: float, y: float, w: float, h: float, size=(200, 100)) -> dict:
    return {
        "id": rid,
        "from_name": "box",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": size[0],
        "original_height": size[1],
        "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [label]},
    }


def test_a_missed_person_drawn_in_a_task_becomes_an_added_correction_with_its_own_identity():
    from pipeline.corrections import added_instance_id
    from tests.support.labelstudio_server import keypoint_region

    def missed_point(rid: str, label: str, x: float, y: float) -> dict:
        return {**keypoint_region(rid, label, x, y, size=(200, 100)), "from_name": "kp_missed"}

    data = {"instance_id": 5, "image_id": 3, "bbox": [10.0, 10.0, 40.0, 60.0], "image_file": "images/pool/a.jpg"}
    result = [  # the task's own person deleted (a wrong detection); a missed person with two keypoints instead
        _box_region("m1", "missed person", 50.0, 10.0, 20.0, 80.0),  # (99.5, 9.5) px, 40 x 80 px
        missed_point("p1", "snout", 55.0, 20.0),
        missed_point("p2", "tail", 60.0, 80.0),
    ]
    task = {"id": 1, "data": data, "annotations": [{"id": 2, "result": result, "updated_at": "2026-12-01T10:00:00Z"}]}
    records = annotations.collect_task_records([task], SCHEMA4)
    assert records.problems == [] and [s.reason for s in records.skips] == ["no_person"]
    [added] = records.corrections
    # percent -> px with pixel centres at integers (pipeline/data/labelstudio/coordinates.py): 50% of 200 -> 99.5
    assert added.added and added.image_file == "images/pool/a.jpg" and added.bbox == (99.5, 9.5, 40.0, 80.0)
    assert added.instance_id == added_instance_id("images/pool/a.jpg", added.bbox) and added.instance_bbox == added.bbox
    assert added.keypoints[:3] == (109.5, 19.5, 2.0) and added.keypoints[9:] == (119.5, 79.5, 2.0)
    assert added.keypoints[3:9] == (0.0,) * 6

    outside = [*result, missed_point("p3", "left_ear", 10.0, 10.0)]
    task = {**task, "annotations": [{"id": 2, "result": outside, "updated_at": "2026-12-01T10:00:00Z"}]}
    records = annotations.collect_task_records([task], SCHEMA4)
    [problem] = records.problems
    assert (
        "task 1, annotation 2" in problem.message and "'left_ear'" in problem.message and "inside no" in problem.message
    )
    assert records.corrections == []


def test_a_nobody_found_task_shows_the_whole_image_box_and_no_keypoint():
    """The stand-in of an image where the finder found nobody: the teacher's keypoints on a whole image are a guess
    nobody should have to delete, so the task pre-draws the box alone and its note says what to do."""
    from pipeline.data.pool_predictions import NOBODY_FOUND_QUEUE

    task = task_format.instance_to_task(
        instance_id=5,
        image_id=1,
        image_path="prepared/images/pool/a.jpg",
        width=80,
        height=60,
        bbox=[0, 0, 80, 60],
        keypoints=np.full(2 * COCO17.num_keypoints, 20.0),
        scores=np.full(COCO17.num_keypoints, 0.9),
        schema=COCO17,
        model_version="pose/1",
        uncertainty=0.0,
        queue=NOBODY_FOUND_QUEUE,
    )
    [prediction] = task["predictions"]
    assert [r["type"] for r in prediction["result"]] == ["rectanglelabels"] and "score" not in prediction
    assert task["data"]["queue"] == NOBODY_FOUND_QUEUE
    assert task["data"]["note"].startswith("The model found nobody") and "Delete the box" in task["data"]["note"]
