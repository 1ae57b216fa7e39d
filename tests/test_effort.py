"""Annotator effort: keypoints moved, added and deleted against the pre-annotation the annotator started from, counted
the same way for the simulated annotator and for a person (issue #14, item 1)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.labelstudio.annotations import keypoint_effort
from pipeline.keypoints import KeypointSchema
from pipeline.merge import effort_summary, merge

COCO17 = KeypointSchema.coco17()
K = 17


def _final(xy: np.ndarray, vis: np.ndarray) -> list[float]:
    return np.c_[xy, vis].ravel().tolist()


def test_a_perfect_pre_annotation_costs_nothing_and_one_with_every_point_off_costs_k():
    rng = np.random.default_rng(0)
    xy = rng.uniform(10, 190, (K, 2))
    vis = np.full(K, 2)
    box = [0.0, 0.0, 200.0, 200.0]
    exact = {name: tuple(xy[j]) for j, name in enumerate(COCO17.names)}
    assert keypoint_effort(exact, _final(xy, vis), box, COCO17) == (0, 0, 0)
    jitter = {name: (x + 0.5, y - 0.5) for name, (x, y) in exact.items()}  # hand-jitter is not a move
    assert keypoint_effort(jitter, _final(xy, vis), box, COCO17) == (0, 0, 0)
    off = {name: (x + 60.0, y + 60.0) for name, (x, y) in exact.items()}
    assert keypoint_effort(off, _final(xy, vis), box, COCO17) == (K, 0, 0)
    # two points not pre-placed but labeled (added), one pre-placed but not labeled (deleted)
    partial = dict(exact)
    partial.pop("nose")
    partial.pop("left_eye")
    vis_hidden = vis.copy()
    vis_hidden[COCO17.names.index("right_ankle")] = 0
    assert keypoint_effort(partial, _final(xy, vis_hidden), box, COCO17) == (0, 2, 1)


def test_the_tolerance_is_a_per_keypoint_oks_so_it_scales_with_the_person():
    xy, vis = np.full((K, 2), 100.0), np.full(K, 2)
    moved_by = {name: (106.0, 100.0) for name in COCO17.names}  # 6 px
    small, large = [90.0, 90.0, 20.0, 20.0], [0.0, 0.0, 400.0, 400.0]
    assert keypoint_effort(moved_by, _final(xy, vis), small, COCO17)[0] == K  # 6 px on a 20 px person: a move
    assert keypoint_effort(moved_by, _final(xy, vis), large, COCO17)[0] == 0  # on a 400 px person: noise


def test_real_label_studio_effort_reaches_pull_merge_and_status(labelstudio_env, tmp_path):
    from pipeline.data.labelstudio.tasks import instance_to_task
    from pipeline.labelstudio import client, oracle
    from pipeline.status import status_table
    from tests.labelstudio_server import true_instances, write_images

    ls = client.connect()
    images = write_images(labelstudio_env.image_root, "effort", [(64, 48), (64, 48)], seed=7)
    coco = true_instances(images, COCO17, per_image=1, first_id=900, seed=7)
    good, bad = coco["annotations"]
    labeled_bad = sum(1 for v in bad["keypoints"][2::3] if v > 0)
    tasks = []
    for ann, spoil in ((good, False), (bad, True)):
        image = images[ann["image_id"] - 1]
        kps = np.asarray(ann["keypoints"], float).reshape(K, 3)
        if spoil:  # every labeled point to the image corner farthest from it
            far_x = np.where(kps[:, 0] < image["width"] / 2, image["width"] - 1.0, 0.0)
            far_y = np.where(kps[:, 1] < image["height"] / 2, image["height"] - 1.0, 0.0)
            kps[:, 0], kps[:, 1] = far_x, far_y
        tasks.append(
            instance_to_task(
                instance_id=ann["id"],
                image_id=ann["image_id"],
                image_path=f"prepared/{image['file_name']}",
                width=image["width"],
                height=image["height"],
                bbox=ann["bbox"],
                keypoints=kps.ravel(),
                schema=COCO17,
                model_version="pose/9",
                uncertainty=0.5,
                image_file=image["file_name"],
            )
        )
    pid = client.get_or_create_project(ls, "effort check", COCO17, labelstudio_env.document_root)
    client.send_tasks(ls, pid, tasks, "pose/9")
    counts = oracle.simulate(ls, pid, coco, COCO17)
    assert counts["annotated"] == 2 and counts["unlabelable"] == 0
    corrections, _, problems, _ = client.fetch_annotations(ls, pid, COCO17)
    assert problems == []
    by_id = {c.instance_id: c for c in corrections}
    assert (by_id[good["id"]].moved_keypoints, by_id[good["id"]].added_keypoints) == (0, 0)
    assert by_id[bad["id"]].moved_keypoints == labeled_bad and by_id[bad["id"]].deleted_keypoints == 0

    summary = effort_summary(corrections)
    assert summary == {
        "tasks": 2,
        "moved_per_task": labeled_bad / 2,
        "added_per_task": 0.0,
        "deleted_per_task": 0.0,
        "moved_total": labeled_bad,
    }
    pool = {**coco, "annotations": [dict(a, keypoints=[0.0] * 3 * K, num_keypoints=0) for a in coco["annotations"]]}
    _, report = merge({**coco, "annotations": []}, pool, corrections, [])
    assert report["effort"] == summary

    from pipeline.corrections import write_pull

    project = tmp_path / "project"
    write_pull(project / "data" / "corrections", corrections, [], [], "labelstudio")
    table = status_table(project)
    assert f"{labeled_bad / 2:.1f} moved, 0.0 added, 0.0 deleted keypoints per task (2 tasks)" in table


def test_the_simulated_annotator_skips_a_person_it_cannot_place(labelstudio_env):
    from pipeline.labelstudio import client, oracle
    from tests.labelstudio_server import tasks_for, true_instances, write_images

    ls = client.connect()
    images = write_images(labelstudio_env.image_root, "unlabelable", [(64, 48)], seed=8)
    coco = true_instances(images, COCO17, per_image=2, first_id=950, seed=8)
    faint = coco["annotations"][0]
    kps = np.asarray(faint["keypoints"], float).reshape(K, 3)
    kps[2:] = 0  # two labeled keypoints: below the rule's three
    faint["keypoints"] = kps.ravel().tolist()
    pid = client.get_or_create_project(ls, "unlabelable check", COCO17, labelstudio_env.document_root)
    client.send_tasks(ls, pid, tasks_for(coco, COCO17, "pose/1"), "pose/1")
    counts = oracle.simulate(ls, pid, coco, COCO17)
    assert counts == {"pending": 2, "annotated": 1, "skipped": 1, "unlabelable": 1, "no_truth": 0}
    _, skips, _, _ = client.fetch_annotations(ls, pid, COCO17)
    assert [s.instance_id for s in skips] == [faint["id"]]


@pytest.mark.parametrize("field", ["moved_keypoints", "added_keypoints", "deleted_keypoints"])
def test_effort_fields_round_trip_through_the_store(tmp_path, field):
    from pipeline.corrections import Correction, read_store, write_pull

    c = Correction(
        1,
        1,
        (1.0, 2.0, 3.0, 4.0),
        tuple([1.0, 2.0, 2] * K),
        5,
        6,
        None,
        "2026-12-01T00:00:00Z",
        None,
        moved_keypoints=3,
        added_keypoints=1,
        deleted_keypoints=2,
    )
    write_pull(tmp_path, [c], [], [], "test")
    [back] = read_store(tmp_path)[0]
    assert getattr(back, field) == getattr(c, field)
