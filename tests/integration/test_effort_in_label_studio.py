"""Annotator effort against a real Label Studio (the session server): what the simulated annotator moves reaches
pull, merge and status, and a person it cannot place is skipped (issue #14, item 1). The counting rule itself is
tested without a server in tests/unit/test_effort.py."""

from __future__ import annotations

import numpy as np

from pipeline.keypoints import KeypointSchema
from pipeline.merge import effort_summary, merge

COCO17 = KeypointSchema.coco17()
K = 17


def test_real_label_studio_effort_reaches_pull_merge_and_status(labelstudio_env, tmp_path):
    from pipeline.data.labelstudio.tasks import instance_to_task
    from pipeline.labelstudio import client, oracle
    from pipeline.status import status_table
    from tests.support.labelstudio_server import true_instances, write_images

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
    from tests.support.labelstudio_server import tasks_for, true_instances, write_images

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
