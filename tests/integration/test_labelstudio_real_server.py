"""The Label Studio hand-off (pipeline/labelstudio) against ONE real server per session: the project, its storage and
images, export, the simulated annotator, fetch, pagination, the command line, the API key kept secret, a server that
dies midway. Conversions and client plumbing without a server are tested in tests/unit/test_labelstudio.py.

The tests share the session server of ``tests/conftest.py`` (first start ~30 s); each uses its own project.
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

import numpy as np
import pytest

from pipeline.corrections import read_store, write_pull
from pipeline.keypoints import KeypointSchema
from tests.support.labelstudio_server import SCHEMA4, require_label_studio, tasks_for, true_instances, write_images
from tests.support.labelstudio_server import keypoint_region as _point

require_label_studio()

from pipeline.data.labelstudio import annotations  # noqa: E402  # after the loud skip
from pipeline.data.labelstudio import tasks as task_format  # noqa: E402
from pipeline.data.labelstudio.config import (  # noqa: E402
    INSTRUCTIONS_START,
    instructions_html,
    keypoint_labels,
    labeling_config,
)
from pipeline.labelstudio import client, oracle  # noqa: E402

COCO17 = KeypointSchema.coco17()


def _dataset(labelstudio, prefix: str, schema: KeypointSchema, sizes, per_image: int, seed: int = 0) -> dict:
    images = write_images(labelstudio.image_root, prefix, sizes, seed=seed)
    return true_instances(images, schema, per_image=per_image, seed=seed)


def test_project_config_accepted_storage_once_and_images_served(labelstudio_env, caplog):
    ls = client.connect()
    root = labelstudio_env.document_root
    coco = _dataset(labelstudio_env, "served", COCO17, [(64, 48)], per_image=1)
    pid = client.get_or_create_project(ls, "config check", COCO17, root)
    caplog.set_level(logging.INFO, logger="pipeline.labelstudio.client")
    assert client.get_or_create_project(ls, "config check", COCO17, root) == pid  # reused by title
    # the server drops the config's trailing newline: an unchanged project is not rewritten at every export
    assert not [r for r in caplog.records if "brought up to date" in r.getMessage()]
    assert len(ls.import_storage.local.list(project=pid)) == 1  # attached once
    project = ls.projects.get(id=pid)
    assert keypoint_labels(project.label_config) == list(COCO17.names)
    # issue #25: the server accepted the config with its instructions, note header and hotkey, and shows the
    # instructions before the first task; a project made with older instructions is brought up to date
    assert project.label_config.strip() == labeling_config(COCO17).strip() and 'hotkey="o"' in project.label_config
    assert project.expert_instruction == instructions_html() and project.show_instruction is True
    ls.projects.update(id=pid, expert_instruction=INSTRUCTIONS_START + "<ul><li>an older version's</li></ul>")
    client.get_or_create_project(ls, "config check", COCO17, root)
    assert ls.projects.get(id=pid).expert_instruction == instructions_html()
    ls.projects.update(id=pid, expert_instruction="<p>Our team rules</p>")  # written in the UI: theirs
    client.get_or_create_project(ls, "config check", COCO17, root)
    assert ls.projects.get(id=pid).expert_instruction == "<p>Our team rules</p>"
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
    round2 = tasks_for(coco, COCO17, "pose/2")
    for task in round2:
        task["data"]["note"] = f"pose/2 says: check instance {task['data']['instance_id']}"
    assert client.send_tasks(ls, pid, round2, "pose/2", batch_size=4, prediction_batch_size=3) == mapping
    versions = _versions_by_instance(ls, pid)
    assert len(versions) == n
    notes = {t.data["instance_id"]: t.data.get("note") for t in ls.tasks.list(project=pid, fields="all")}
    for iid, tid in mapping.items():
        expected = ["pose/1"] if tid in (annotated, skipped) else ["pose/1", "pose/2"]
        assert versions[iid] == expected, iid
        # the line above the image follows the prediction shown (issue #25); answered tasks keep theirs
        assert (notes[iid] == f"pose/2 says: check instance {iid}") == (tid not in (annotated, skipped)), iid
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


def test_an_image_where_the_finder_found_nobody_reaches_an_annotator_who_draws_the_people_there(labelstudio_env):
    """The stand-in of an image where the instance finder found nobody: its task on the real server shows the whole
    image as the box and no keypoints, with a note saying so; the annotator fits the box to one person, places their
    keypoints and draws a second person as missed. fetch brings back a correction of the stand-in with the fitted box
    and an added person; an annotator who deletes the box instead says there is nobody."""
    from pipeline.corrections import found_instance_id
    from pipeline.data.labelstudio.config import ADDED_KEYPOINT_NAME, ADDED_LABEL, BOX_NAME, PERSON_LABEL
    from pipeline.data.pool_predictions import NOBODY_FOUND_QUEUE

    ls = client.connect()
    [image, empty] = write_images(labelstudio_env.image_root, "nobody", [(100, 50), (100, 50)], seed=5)
    pid = client.get_or_create_project(ls, "nobody found", COCO17, labelstudio_env.document_root)
    guess = np.full((17, 2), 30.0)  # the teacher's guess at a whole image: never shown
    tasks = [
        task_format.instance_to_task(
            instance_id=found_instance_id(im["file_name"], [0, 0, 100, 50]),
            image_id=im["id"],
            image_path=f"prepared/{im['file_name']}",
            image_file=im["file_name"],
            width=100,
            height=50,
            bbox=[0, 0, 100, 50],
            keypoints=guess.ravel(),
            scores=np.full(17, 0.9),
            schema=COCO17,
            model_version="pose/3",
            uncertainty=0.0,
            queue=NOBODY_FOUND_QUEUE,
        )
        for im in (image, empty)
    ]
    mapping = client.send_tasks(ls, pid, tasks, "pose/3")
    stand_in, nobody = (t["data"]["instance_id"] for t in tasks)
    sent = ls.tasks.get(id=mapping[stand_in]).model_dump()
    [prediction] = sent["predictions"]
    assert [r["type"] for r in prediction["result"]] == ["rectanglelabels"]  # the whole image, no keypoint
    assert sent["data"]["queue"] == NOBODY_FOUND_QUEUE and sent["data"]["note"].startswith("The model found nobody")

    size = {"original_width": 100, "original_height": 50}
    fitted = {"x": 10.0, "y": 20.0, "width": 20.0, "height": 60.0, "rotation": 0, "rectanglelabels": [PERSON_LABEL]}
    missed = {"x": 60.0, "y": 10.0, "width": 25.0, "height": 80.0, "rotation": 0, "rectanglelabels": [ADDED_LABEL]}
    result = [
        {"id": "b1", "from_name": BOX_NAME, "to_name": "image", "type": "rectanglelabels", "value": fitted, **size},
        {"id": "b2", "from_name": BOX_NAME, "to_name": "image", "type": "rectanglelabels", "value": missed, **size},
        _point("k1", "nose", 20.0, 30.0),
        _point("k2", "left_hip", 22.0, 50.0),
        {**_point("m1", "nose", 70.0, 20.0), "from_name": ADDED_KEYPOINT_NAME},
    ]
    ls.annotations.create(id=mapping[stand_in], result=result)
    ls.annotations.create(id=mapping[nobody], result=[])
    corrections, skips, problems, pending = client.fetch_annotations(ls, pid, COCO17)
    assert problems == [] and pending == []
    [person] = [c for c in corrections if not c.added]
    [added] = [c for c in corrections if c.added]
    assert person.instance_id == stand_in and person.instance_bbox == (0.0, 0.0, 100.0, 50.0)
    # percent of the image -> pixel-centre coordinates (pipeline/data/labelstudio/coordinates.py): half a pixel less
    assert np.allclose(person.bbox, [9.5, 9.5, 20.0, 30.0]) and person.keypoints[0:3] == (19.5, 14.5, 2)
    assert np.allclose(added.bbox, [59.5, 4.5, 25.0, 40.0]) and added.image_file == image["file_name"]
    [empty_verdict] = skips
    assert empty_verdict.instance_id == nobody and empty_verdict.reason == "no_person"


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
    # status's one line about waiting tasks comes from the live server when there is one (issue #25)
    from pipeline.status import label_studio_state, status_dict, status_table

    status = {**status_dict(tmp_path), "label_studio": label_studio_state("cli check")}
    table = status_table(tmp_path, status)
    assert "waiting       0 tasks (Label Studio now: 3 completed, 0 skipped of 3)" in table, table
    assert "annotators see model" in table and "pending" not in table
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
