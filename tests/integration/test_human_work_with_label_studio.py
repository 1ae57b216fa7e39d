"""What the pipeline guarantees about human work (README "Human work") against real local Label Studio servers: a
fresh server that restarts its ids at 1 loses nothing, an annotation edited after the pull and a second annotation
on a pulled task are stored and win (issue #15, items 1 and 3). The guarantees that need no server are tested in
tests/unit/test_human_work.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pipeline.corrections import Correction, read_store, round_number, write_pull
from pipeline.keypoints import KeypointSchema
from pipeline.merge import merge
from tests.support.human_work import pull_time as _t
from tests.support.labelstudio_server import require_label_studio, tasks_for, true_instances, write_images

K = 17
COCO17 = KeypointSchema.coco17()


# ------------------------------------------------------------------- 1 and 3: fresh servers, edited annotations


def _server_round(ls, project_title: str, coco: dict, document_root: Path) -> tuple[list, list]:
    """Export ``coco``'s people as tasks, let the simulated annotator label them, pull what it did."""
    from pipeline.labelstudio import client, oracle

    pid = client.get_or_create_project(ls, project_title, COCO17, document_root)
    client.send_tasks(ls, pid, tasks_for(coco, COCO17, "pose/1"), "pose/1")
    oracle.simulate(ls, pid, coco, COCO17)
    corrections, skips, problems, _ = client.fetch_annotations(ls, pid, COCO17)
    assert problems == []
    return corrections, skips


def test_a_fresh_label_studio_restarting_ids_at_1_loses_nothing(tmp_path, monkeypatch):
    """The work of an old server is in the store (tasks 1, 2, annotations 1, 2, as a new database numbers them); a
    new server on the same URL, with a new database, gives the same ids to two other people: both are kept."""
    require_label_studio()
    from pipeline.labelstudio import client
    from pipeline.labelstudio.server import LocalLabelStudio, free_port

    docs = tmp_path / "docs"
    (docs / "prepared" / "images").mkdir(parents=True)
    images = write_images(docs / "prepared", "fresh", [(64, 48), (50, 70)])
    people = true_instances(images, COCO17, per_image=2, seed=4)
    old_work, new_work = people["annotations"][:2], people["annotations"][2:]
    store = tmp_path / "corrections"
    port = free_port()
    old_origin = f"labelstudio:http://127.0.0.1:{port}/projects/1@2026-11-01T09:00:00+00:00"
    old = [
        Correction(
            a["id"],
            a["image_id"],
            tuple(a["bbox"]),
            tuple(a["keypoints"]),
            n + 1,
            n + 1,
            "a@b.c",
            "2026-11-01T10:00:00Z",
            "pose/1",
            origin=old_origin,
            image_file=images[a["image_id"] - 1]["file_name"],
            instance_bbox=tuple(a["bbox"]),
        )
        for n, a in enumerate(old_work)
    ]
    assert write_pull(store, old, [], [], "labelstudio", now=_t(0)) is not None

    server = LocalLabelStudio(data_dir=tmp_path / "new-server", document_root=docs, port=port).start()
    try:
        monkeypatch.setenv("LABEL_STUDIO_URL", server.url)
        monkeypatch.setenv("LABEL_STUDIO_API_KEY", server.token)
        pulled, skips = _server_round(client.connect(), "fresh ids", {**people, "annotations": new_work}, docs)
    finally:
        server.stop()
    # the case: the new server gave the old ids to other people, and the pull stored nothing ("new_files": [])
    assert {(c.task_id, c.annotation_id) for c in pulled} == {(c.task_id, c.annotation_id) for c in old}
    assert write_pull(store, pulled, skips, [], "labelstudio", now=_t(60)) is not None
    assert pulled[0].origin != old_origin and pulled[0].origin.startswith(f"labelstudio:{server.url}/projects/1@")
    stored, _ = read_store(store)
    assert sorted(c.instance_id for c in stored) == sorted(a["id"] for a in people["annotations"])
    assert round_number(store) == 3


def _one_person_pulled(server, tmp_path: Path, title: str, first_id: int, seed: int) -> tuple:
    """One person exported to a project of the session server, annotated, pulled into a new store; then a pause,
    so that what the test does next has a clearly later ``updated_at`` (sub-second resolution).
    Returns (client, coco, store, the pulled correction)."""
    from pipeline.labelstudio import client

    ls = client.connect()
    images = write_images(server.image_root, title.split()[0], [(64, 48)], seed=seed)
    coco = true_instances(images, COCO17, per_image=1, first_id=first_id, seed=seed)
    corrections, _ = _server_round(ls, title, coco, server.document_root)
    store = tmp_path / "corrections"
    assert write_pull(store, corrections, [], [], "labelstudio", now=_t(0)) is not None
    [first] = corrections
    time.sleep(1.1)
    return ls, coco, store, first


def test_an_annotation_edited_after_the_pull_becomes_the_winning_correction(labelstudio_env, tmp_path):
    from pipeline.labelstudio import client

    ls, coco, store, first = _one_person_pulled(labelstudio_env, tmp_path, "edited check", first_id=700, seed=5)
    annotation = ls.annotations.get(id=first.annotation_id)
    result = [dict(r) if isinstance(r, dict) else r.dict() for r in annotation.result]
    for region in result:
        if region["type"] == "keypointlabels":
            x = region["value"]["x"]
            region["value"]["x"] = x - 10.0 if x > 50 else x + 10.0  # every point 10% of the width inwards
    ls.annotations.update(id=first.annotation_id, result=result)

    pid = client.find_project(ls, "edited check")
    again, _, problems, _ = client.fetch_annotations(ls, pid, COCO17)
    assert problems == []
    path = write_pull(store, again, [], [], "labelstudio", now=_t(60))
    assert path is not None  # the case: ignored silently before
    stored, _ = read_store(store)
    assert len(stored) == 2 and stored[1].completed_at > stored[0].completed_at
    pool = {**coco, "annotations": [dict(a, keypoints=[0.0] * 3 * K, num_keypoints=0) for a in coco["annotations"]]}
    train, report = merge({**coco, "annotations": []}, pool, stored, [])
    [labeled] = train["annotations"]
    assert labeled["keypoints"] == list(stored[1].keypoints) and report["conflicts"] == 1
    visible = np.asarray(labeled["keypoints"]).reshape(-1, 3)[:, 2] > 0
    moved = np.asarray(stored[1].keypoints).reshape(-1, 3) - np.asarray(first.keypoints).reshape(-1, 3)
    assert np.all(np.abs(moved[visible, 0]) > 5)  # the edited version, not the first


def test_a_second_annotation_on_a_pulled_task_is_stored_and_the_later_one_labels_the_person(labelstudio_env, tmp_path):
    """A second annotator (or a reviewer) completes a task already pulled: their annotation is stored with its own
    id, and merge takes the later one, counting the instance as a conflict."""
    from pipeline.labelstudio import client

    ls, coco, store, first = _one_person_pulled(labelstudio_env, tmp_path, "second annotator", first_id=800, seed=6)
    annotation = ls.annotations.get(id=first.annotation_id)
    result = [dict(r) if isinstance(r, dict) else r.dict() for r in annotation.result]
    for region in result:
        if region["type"] == "keypointlabels":
            region["value"]["y"] = min(99.0, region["value"]["y"] + 5.0)
    task_id = first.task_id
    second = ls.annotations.create(id=task_id, result=result)

    pid = client.find_project(ls, "second annotator")
    again, _, problems, pending = client.fetch_annotations(ls, pid, COCO17)
    assert problems == [] and pending == []
    assert sorted(c.annotation_id for c in again) == sorted([first.annotation_id, second.id])
    assert write_pull(store, again, [], [], "labelstudio", now=_t(60)) is not None  # the case: nothing stored before
    stored, _ = read_store(store)
    assert [c.annotation_id for c in stored] == [first.annotation_id, second.id]
    pool = {**coco, "annotations": [dict(a, keypoints=[0.0] * 3 * K, num_keypoints=0) for a in coco["annotations"]]}
    train, report = merge({**coco, "annotations": []}, pool, stored, [])
    [labeled] = train["annotations"]
    assert labeled["correction_id"] == f"{task_id}:{second.id}" and report["conflicts"] == 1
