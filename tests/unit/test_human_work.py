"""What the pipeline guarantees about human work (README "Human work"): every correction is kept, never overwritten,
never applied to another person, with its provenance; one pull is one round; a fresh clone starts clean.

Each test reproduces a case of a probe that found work lost or misapplied (issue #15, items 1-6); the ones that
need real local Label Studio servers are in tests/integration/test_human_work_with_label_studio.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.corrections import Correction, Skip, read_store, round_number, write_pull
from pipeline.data.deeplabcut import read_deeplabcut_project
from pipeline.keypoints import KeypointSchema
from pipeline.merge import merge
from tests.support.human_work import pull_time as _t
from tests.unit.test_deeplabcut import BODYPARTS, ROWS, _project

REPO = Path(__file__).resolve().parents[2]
K = 17
COCO17 = KeypointSchema.coco17()


def _kps(x: float) -> list[float]:
    return [v for j in range(K) for v in (x + j, 50.0 + j, 2)]


def _coco(people: list[tuple[int, str, list[float]]]) -> dict:
    """(instance id, image file, box) per person; one image per file, ids in file order."""
    files = sorted({f for _, f, _ in people})
    image_id = {f: i + 1 for i, f in enumerate(files)}
    return {
        "images": [{"id": image_id[f], "file_name": f, "width": 640, "height": 480} for f in files],
        "annotations": [
            {
                "id": iid,
                "image_id": image_id[f],
                "category_id": 1,
                "bbox": box,
                "area": box[2] * box[3],
                "iscrowd": 0,
                "keypoints": [0.0] * 3 * K,
                "num_keypoints": 0,
            }
            for iid, f, box in people
        ],
        "categories": [COCO17.to_coco_category()],
    }


def _correction(iid: int, image_id: int, image_file: str | None, box: list[float], x: float = 5.0, **kw) -> Correction:
    fields = dict(
        task_id=7,
        annotation_id=9,
        annotator="a@b.c",
        completed_at="2026-11-30T10:00:00Z",
        model_version="pose/1",
        origin="labelstudio:http://127.0.0.1:8080/projects/1@2026-11-30T09:00:00",
    )
    fields.update(kw)
    return Correction(
        instance_id=iid,
        image_id=image_id,
        bbox=tuple(box),
        keypoints=tuple(_kps(x)),
        image_file=image_file,
        instance_bbox=tuple(box),
        **fields,
    )


EMPTY_SEED = {"images": [], "annotations": [], "categories": [COCO17.to_coco_category()]}
BOX_A, BOX_B, BOX_C = [10.0, 20.0, 100.0, 200.0], [300.0, 40.0, 80.0, 160.0], [200.0, 200.0, 50.0, 90.0]


# ---------------------------------------------------------------------------------- 2: the person, not the number


def test_a_renumbered_data_set_gets_each_correction_on_its_own_person():
    old_pool = _coco([(1, "images/a.jpg", BOX_A), (2, "images/b.jpg", BOX_B)])
    made = [_correction(1, 1, "images/a.jpg", BOX_A, x=5), _correction(2, 2, "images/b.jpg", BOX_B, x=300, task_id=8)]
    # The same people after a new split: other ids, other image ids (a new file sorts first).
    new_pool = _coco([(11, "images/0.jpg", BOX_C), (12, "images/b.jpg", BOX_B), (13, "images/a.jpg", BOX_A)])
    train, report = merge(EMPTY_SEED, new_pool, made, [])
    by_id = {a["id"]: a for a in train["annotations"]}
    assert sorted(by_id) == [12, 13]
    assert by_id[13]["keypoints"][:3] == [5.0, 50.0, 2] and by_id[13]["image_id"] == 2  # a.jpg was image 1
    assert by_id[12]["keypoints"][:3] == [300.0, 50.0, 2]
    assert report["remapped"] == [
        {"record": "correction 7:9", "from_instance": 1, "to_instance": 13},
        {"record": "correction 8:9", "from_instance": 2, "to_instance": 12},
    ]
    assert report["mismatched"] == []
    # In the old data set nothing moves.
    train, report = merge(EMPTY_SEED, old_pool, made, [])
    assert report["remapped"] == [] and sorted(a["id"] for a in train["annotations"]) == [1, 2]


def test_a_correction_whose_person_is_gone_is_refused_by_name_never_applied_to_another():
    made = [_correction(1, 1, "images/a.jpg", BOX_A)]
    # data.seed changed: instance 1 is now someone else (another image, another box) and nobody matches
    other = _coco([(1, "images/c.jpg", BOX_C), (2, "images/a.jpg", BOX_B)])
    train, report = merge(EMPTY_SEED, other, made, [])
    assert train["annotations"] == []
    [refused] = report["mismatched"]
    assert refused["instance_id"] == 1 and refused["record"] == "correction 7:9"
    assert "images/a.jpg" in refused["message"] and "not applied" in refused["message"]
    # a no-person verdict is checked the same way: it must not remove somebody else's seed label
    seed = _coco([(1, "images/c.jpg", BOX_C)])
    seed["annotations"][0].update(keypoints=_kps(1), num_keypoints=K)
    skip = Skip(
        1,
        7,
        10,
        "a@b.c",
        "2026-11-30T10:00:00Z",
        "no_person",
        origin="x",
        image_file="images/a.jpg",
        instance_bbox=tuple(BOX_A),
    )
    train, report = merge(seed, _coco([]), [], [skip])
    assert [a["id"] for a in train["annotations"]] == [1] and report["removed_no_person"] == 0
    assert report["mismatched"][0]["record"] == "skip 7:10"


def test_records_of_the_old_format_are_checked_by_their_box():
    """A /1 record has no image file: a box that does not overlap its instance's any more is refused."""
    legacy = Correction(1, 1, tuple(BOX_A), tuple(_kps(5)), 7, 9, None, "2026-11-30T10:00:00Z", None)
    train, report = merge(EMPTY_SEED, _coco([(1, "images/a.jpg", BOX_A)]), [legacy], [])
    assert len(train["annotations"]) == 1 and report["mismatched"] == []
    train, report = merge(EMPTY_SEED, _coco([(1, "images/a.jpg", BOX_C)]), [legacy], [])
    assert train["annotations"] == [] and "does not overlap" in report["mismatched"][0]["message"]


def test_a_deeplabcut_project_that_gains_frames_keeps_corrections_on_their_frame(tmp_path):
    project = _project(tmp_path, ROWS)
    before, _ = read_deeplabcut_project(project)
    frame = "labeled-data/vid1/img2.png"
    on_img2 = next(a for a in before["annotations"] if before["images"][a["image_id"] - 1]["file_name"] == frame)
    k = len(BODYPARTS)
    made = Correction(
        on_img2["id"],
        on_img2["image_id"],
        tuple(on_img2["bbox"]),
        tuple([1.0, 2.0, 2] * k),
        3,
        4,
        None,
        "2026-11-30T10:00:00Z",
        None,
        origin="inbox:x.json",
        image_file=frame,
        instance_bbox=tuple(on_img2["bbox"]),
    )
    # a new frame that sorts first renumbers every image and instance
    folder = project / "labeled-data" / "vid1"
    lines = (folder / "CollectedData_me.csv").read_text().splitlines()
    lines.insert(3, "labeled-data/vid1/img0.png,1,1,2,2,3,3,4,4")
    (folder / "CollectedData_me.csv").write_text("\n".join(lines) + "\n")
    (folder / "img0.png").write_bytes((folder / "img1.png").read_bytes())
    after, _ = read_deeplabcut_project(project)
    moved = next(a for a in after["annotations"] if after["images"][a["image_id"] - 1]["file_name"] == frame)
    assert moved["id"] != on_img2["id"]  # the case: the number changed
    seed = {**after, "annotations": []}
    pool = {**after, "annotations": [dict(a, keypoints=[0.0] * 3 * k) for a in after["annotations"]]}
    train, report = merge(seed, pool, [made], [])
    [labeled] = train["annotations"]
    assert labeled["id"] == moved["id"] and labeled["keypoints"][:2] == [1.0, 2.0]
    assert report["remapped"][0]["to_instance"] == moved["id"]


# --------------------------------------------- 1 and 3 without a server: exports, URL aliases, old tasks, odd data


def test_a_servers_export_in_the_inbox_adds_nothing_already_pulled_and_old_records_are_not_pulled_twice(tmp_path):
    store = tmp_path / "corrections"
    pulled = _correction(1, 1, "images/a.jpg", BOX_A)
    assert write_pull(store, [pulled], [], [], "labelstudio", now=_t(0)) is not None
    exported = replace(pulled, origin="inbox:export.json")  # the same annotation, read from the server's JSON export
    assert write_pull(store, [exported], [], [], "inbox:export.json", now=_t(60)) is None
    # a /1 record (no provenance) is the same annotation as its re-pull with provenance
    old_store = tmp_path / "old"
    legacy = replace(pulled, origin=None, image_file=None, instance_bbox=None)
    assert write_pull(old_store, [legacy], [], [], "labelstudio", now=_t(0)) is not None
    assert (
        write_pull(old_store, [replace(pulled, image_file=None, instance_bbox=None)], [], [], "labelstudio", now=_t(60))
        is None
    )
    # but the same ids and time with other content from another server is somebody's work: stored
    other = replace(pulled, origin="labelstudio:http://127.0.0.1:8080/projects/1@2026-12-01T00:00:00")
    other = replace(other, keypoints=tuple(_kps(99)))
    assert write_pull(store, [other], [], [], "labelstudio", now=_t(120)) is not None


def test_a_url_alias_of_the_same_server_does_not_store_everything_again(tmp_path):
    """localhost and 127.0.0.1 (or a new port) are the same server: the project and its creation time identify it."""
    store = tmp_path / "corrections"
    pulled = _correction(1, 1, "images/a.jpg", BOX_A)
    assert write_pull(store, [pulled], [], [], "labelstudio", now=_t(0)) is not None
    alias = replace(pulled, origin=pulled.origin.replace("127.0.0.1:8080", "localhost:8081"))
    assert write_pull(store, [alias], [], [], "labelstudio", now=_t(60)) is None


def test_an_old_task_without_image_file_is_not_moved_to_another_image():
    """Tasks exported before image_file existed carry only the box: a renumbered instance with the same box on
    another frame (a fixed camera) must not receive the correction."""
    made = replace(_correction(1, 1, None, BOX_A), image_file=None)
    other_frame = _coco([(1, "images/b.jpg", BOX_A), (2, "images/a.jpg", BOX_A)])  # id 1 is now on image 2
    other_frame["annotations"][0]["image_id"], other_frame["annotations"][1]["image_id"] = 2, 1
    train, report = merge(EMPTY_SEED, other_frame, [made], [])
    labeled = {a["id"]: a for a in train["annotations"]}
    assert 1 not in labeled or labeled[1]["image_id"] == 1
    assert report["invalid_corrections"] or report["mismatched"] or labeled == {}


def test_odd_label_studio_data_becomes_a_problem_or_clean_text_never_a_poisoned_store(tmp_path):
    from pipeline.data.labelstudio.annotations import collect_task_records
    from pipeline.data.labelstudio.tasks import instance_to_task

    task = instance_to_task(
        instance_id=5,
        image_id=1,
        image_path="prepared/images/a.jpg",
        width=64,
        height=64,
        bbox=[1, 1, 30, 30],
        keypoints=None,
        schema=COCO17,
        model_version="pose/1",
        uncertainty=0.5,
        image_file="images/a.jpg",
    )
    point = {
        "id": "p",
        "type": "keypointlabels",
        "from_name": "kp",
        "to_name": "image",
        "original_width": 64,
        "original_height": 64,
        "value": {"x": 10, "y": 10, "keypointlabels": ["nose"]},
    }
    odd_label = dict(point, id="q", value={"x": 20, "y": 20, "keypointlabels": [["left_eye"]]})
    tasks = [
        {
            "id": 1,
            **task,
            "predictions": 5,
            "annotations": [
                {
                    "id": 1,
                    "result": [point],
                    "completed_by": {"email": 123, "id": 4},
                    "updated_at": "2026-12-01T10:00:00Z",
                }
            ],
        },
        {
            "id": 2,
            **dict(task, data=dict(task["data"], instance_id=6)),
            "annotations": [{"id": 2, "result": [odd_label], "completed_by": 4, "updated_at": "2026-12-01T10:00:00Z"}],
        },
    ]
    records = collect_task_records(tasks, COCO17, origin="inbox:odd.json")
    [c] = records.corrections
    assert c.annotator == "user 4"  # the email was not text: the id instead, never the number 123
    assert len(records.problems) == 1 and "left_eye" in records.problems[0].message
    store = tmp_path / "corrections"
    write_pull(store, records.corrections, records.skips, records.problems, "inbox:odd.json")
    assert read_store(store)[0] == [c]  # the store reads back


# --------------------------------------------------------------------- 4 and 5: one pull, one file, no half-writes


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    from tests.support.teacher import make_project, small_params

    return make_project(tmp_path_factory.mktemp("human_work"), small_params())


def _stage(project: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("LABEL_STUDIO_URL", None)
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=project, env=env, capture_output=True, text=True, timeout=300
    )


def _inbox_file(project: Path, name: str, instance_ids: list[int], first_task: int) -> None:
    pool = json.loads((project / "data" / "prepared" / "pool.json").read_text())
    anns = {a["id"]: a for a in pool["annotations"]}
    images = {im["id"]: im for im in pool["images"]}
    from pipeline.data.labelstudio.tasks import instance_to_task

    tasks = []
    for n, iid in enumerate(instance_ids):
        a, im = anns[iid], images[anns[iid]["image_id"]]
        x, y, w, h = a["bbox"]
        centre = np.tile([x + w / 2, y + h / 2], (K, 1))  # every point at the box centre: accepted as predicted
        task = instance_to_task(
            instance_id=iid,
            image_id=a["image_id"],
            image_path=f"prepared/{im['file_name']}",
            width=im["width"],
            height=im["height"],
            bbox=a["bbox"],
            keypoints=centre,
            schema=COCO17,
            model_version="pose/1",
            uncertainty=0.5,
            image_file=im["file_name"],
        )
        annotation = {
            "id": first_task + n,
            "result": task["predictions"][0]["result"],
            "was_cancelled": False,
            "completed_by": 1,
            "created_at": "2026-11-30T10:00:00Z",
            "updated_at": "2026-11-30T10:00:00Z",
        }
        tasks.append({"id": first_task + n, **task, "annotations": [annotation]})
    inbox = project / "data" / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / name).write_text(json.dumps(tasks))


def test_one_pull_of_four_inbox_files_is_one_round_and_a_broken_file_keeps_nothing_out(project):
    pool_ids = [a["id"] for a in json.loads((project / "data" / "prepared" / "pool.json").read_text())["annotations"]]
    for n in range(4):
        _inbox_file(project, f"batch{n}.json", pool_ids[2 * n : 2 * n + 2], first_task=100 + 10 * n)
    (project / "data" / "inbox" / "broken.json").write_text('{"not": "a list"}')
    done = _stage(project, "stages.pull", "--json")
    # the stage succeeds (so DVC caches what it stored) and names the broken file
    assert done.returncode == 0, done.stderr[-3000:]
    assert "broken.json" in done.stderr and "not imported" in done.stderr
    files = sorted((project / "data" / "corrections").iterdir())
    assert len(files) == 1 and json.loads(done.stdout.splitlines()[-1])["unreadable"] == 1
    stored, _ = read_store(project / "data" / "corrections")
    assert len(stored) == 8 and {c.origin for c in stored} == {f"inbox:batch{n}.json" for n in range(4)}
    merged = _stage(project, "stages.merge")
    assert merged.returncode == 0, merged.stderr[-3000:]
    assert json.loads((project / "data" / "merge_report.json").read_text())["round"] == 2  # was 5 (one per file)


_KILLED_WRITER = """
import os, sys, time
from pathlib import Path
from pipeline import corrections
from pipeline.corrections import Correction, write_pull
def stalled_link(src, dst):
    print("writing", flush=True)
    time.sleep(60)
os.link = stalled_link
c = Correction(1, 1, (1.0, 2.0, 3.0, 4.0), (1.0, 2.0, 2), 1, 1, None, "2026-11-30T10:00:00Z", None)
write_pull(Path(sys.argv[1]), [c], [], [], "test")
"""


def test_a_write_killed_half_way_leaves_nothing_in_the_store(tmp_path):
    store = tmp_path / "data" / "corrections"
    store.mkdir(parents=True)
    (store / ".20260101T000000Z-abc.json.1.x.tmp").write_text("{")  # what an older version left behind
    writer = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(store)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert writer.stdout.readline().strip() == "writing"  # the temp file is written, the link not yet made
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert list(store.iterdir()) == []  # nothing DVC would cache: not a record, not a hidden temp file
    assert len(list((tmp_path / "data" / ".corrections.tmp").iterdir())) == 1  # the half-write lies beside it
    # the next pull removes the half-write (it is not a record) and stores its own
    c = Correction(1, 1, (1.0, 2.0, 3.0, 4.0), (1.0, 2.0, 2), 1, 1, None, "2026-11-30T10:00:00Z", None)
    assert write_pull(store, [c], [], [], "test", now=_t(0)) is not None
    assert list((tmp_path / "data" / ".corrections.tmp").iterdir()) == []


_CONCURRENT_PULL = """
import sys, time
from pathlib import Path
from pipeline import corrections
from pipeline.corrections import Correction, write_pull
read_store = corrections.read_store
def slow_read(store):  # both pulls read the store before either writes, as two real pulls at once would
    records = read_store(store)
    time.sleep(1.5)
    return records
corrections.read_store = slow_read
c = Correction(1, 1, (1.0, 2.0, 3.0, 4.0), (1.0, 2.0, 2), 1, 1, None, "2026-11-30T10:00:00Z", None)
print(write_pull(Path(sys.argv[1]), [c], [], [], "test"))
"""


def test_clones_sharing_a_symlinked_store_share_its_lock(tmp_path):
    """Two clones whose data/corrections link to one folder on another disk: one lock, beside the real folder."""
    from pipeline import corrections

    shared = tmp_path / "disk" / "corrections"
    shared.mkdir(parents=True)
    for clone in ("a", "b"):
        (tmp_path / clone / "data").mkdir(parents=True)
        (tmp_path / clone / "data" / "corrections").symlink_to(shared)
    with (
        corrections.store_lock(tmp_path / "a" / "data" / "corrections"),
        pytest.raises(TimeoutError, match=r"disk/\.corrections\.lock: another pull"),
        corrections.store_lock(tmp_path / "b" / "data" / "corrections", timeout_s=0.5),
    ):
        pass


def test_two_pulls_at_once_store_each_record_once(tmp_path):
    store = tmp_path / "data" / "corrections"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    pulls = [
        subprocess.Popen(
            [sys.executable, "-c", _CONCURRENT_PULL, str(store)], cwd=REPO, env=env, text=True, stdout=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120)[0].strip() for p in pulls]
    assert all(p.returncode == 0 for p in pulls)
    assert sorted(outputs, key=lambda o: o != "None")[0] == "None"  # the second waited and found the record stored
    assert len(list(store.iterdir())) == 1 and round_number(store) == 2


# --------------------------------------------------------------------------------------- 6: a fresh clone is clean


def test_git_holds_no_label_studio_or_registry_state():
    """DVC's own examples commit dvc.lock, metrics and plots; every other stage output is cached, not in git, so a
    fresh clone has nothing pending and sends only its own selection."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    outs = []
    for stage in stages.values():
        for entry in stage.get("outs", []):
            path, opts = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
            outs.append((path, opts))
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    in_git = [p for p, _ in outs if any(t == p or t.startswith(p.rstrip("/") + "/") for t in tracked)]
    # outputs in git must be the loop's history (plots/rounds.*, eval tables), never a project's pending state
    allowed = {"plots/eval_worst.csv", "plots/rounds.png"}
    assert set(in_git) <= allowed, set(in_git) - allowed
    for state in ("artifacts/export.json", "data/labelstudio/pending.json", "artifacts/registry.json"):
        assert state not in tracked
        assert any(p == state and opts.get("cache", True) for p, opts in outs), state


def test_a_person_the_finder_missed_is_added_once_kept_in_the_store_and_later_aimed_at_whoever_covers_them(tmp_path):
    """An annotator adds a missed person on a found person's image: the record has its own identity (image file +
    box), survives the store, and merge makes it a new labeled person; a second annotator's box around the same
    person labels that person, not a third one; a person whose image left the data set is reported, not applied."""
    from pipeline.corrections import ADDED_ID_BASE, added_instance_id

    pool = _coco([(10**9 + 1000, "images/pool/cam1.mp4/frame_000004.jpg", [10.0, 10.0, 50.0, 100.0])])
    seed = {**_coco([]), "images": []}
    frame = "images/pool/cam1.mp4/frame_000004.jpg"
    box = (200.0, 20.0, 60.0, 110.0)
    first = _correction(added_instance_id(frame, box), 1, frame, list(box), x=210.0, added=True)
    assert first.instance_id > ADDED_ID_BASE and first.instance_id < 2**53
    assert write_pull(tmp_path, [first], [], [], "labelstudio", now=_t(0)) is not None
    [stored], _ = read_store(tmp_path)
    assert stored == first and stored.added  # the flag survives the store
    train, report = merge(seed, pool, [stored], [])
    [person] = train["annotations"]
    assert person["id"] == first.instance_id and person["added"] and person["source"] == "human"
    assert person["bbox"] == list(box) and person["num_keypoints"] == K and report["added_people"] == 1

    redrawn = (203.0, 18.0, 58.0, 112.0)  # the same person, boxed again by another annotator, later
    second = _correction(
        added_instance_id(frame, redrawn),
        1,
        frame,
        list(redrawn),
        x=211.0,
        added=True,
        annotation_id=10,
        completed_at="2026-11-30T11:00:00Z",
    )
    train, report = merge(seed, pool, [first, second], [])
    [person] = train["annotations"]
    assert person["id"] == first.instance_id and person["correction_id"] == "7:10" and report["conflicts"] == 1

    # the found box drawn around nobody, deleted ("no person"), and the real person drawn over it in the same annotation
    found_id = 10**9 + 1000
    wrong = Skip(
        found_id,
        7,
        9,
        "a@b.c",
        "2026-11-30T10:00:00Z",
        "no_person",
        origin=first.origin,
        image_file=frame,
        instance_bbox=(10.0, 10.0, 50.0, 100.0),
    )
    over = (12.0, 12.0, 50.0, 100.0)
    drawn = _correction(added_instance_id(frame, over), 1, frame, list(over), added=True)
    train, report = merge(seed, pool, [drawn], [wrong])
    [person] = train["annotations"]
    assert person["id"] == drawn.instance_id and person["added"] and report["added_people"] == 1

    gone = _correction(added_instance_id("images/old.jpg", box), 1, "images/old.jpg", list(box), added=True)
    train, report = merge(seed, pool, [gone], [])
    assert train["annotations"] == [] and len(report["mismatched"]) == 1


def test_a_correction_of_a_found_person_survives_a_retrained_finder_and_a_withdrawn_missed_person_adds_nobody():
    """A retrained finder gives other boxes, so other ids: the correction of a found person then labels the re-found
    person over the same spot (IoU >= 0.5), or becomes a person of its own when nobody is found there; it is never
    dropped. A missed-person box the annotator deleted in a later version of the annotation adds nobody."""
    from pipeline.corrections import added_instance_id, found_instance_id

    frame = "images/pool/cam1.mp4/frame_000004.jpg"
    old_box = [10.0, 10.0, 50.0, 100.0]
    corrected = _correction(found_instance_id(frame, old_box), 1, frame, old_box, x=12.0)
    seed = {**_coco([]), "images": []}

    refound_box = [14.0, 16.0, 52.0, 96.0]  # IoU 0.76 with the old box: the same person, found a little elsewhere
    refound = _coco([(found_instance_id(frame, refound_box), frame, refound_box)])
    train, report = merge(seed, refound, [corrected], [])
    [person] = train["annotations"]
    assert person["id"] == found_instance_id(frame, refound_box) and person["keypoints"][0] == 12.0
    assert report["mismatched"] == [] and report["added_people"] == 0

    elsewhere = _coco([(found_instance_id(frame, [300.0, 10.0, 40.0, 90.0]), frame, [300.0, 10.0, 40.0, 90.0])])
    train, report = merge(seed, elsewhere, [corrected], [])
    [person] = train["annotations"]
    assert person["id"] == corrected.instance_id and person["bbox"] == old_box and report["added_people"] == 1

    box = (200.0, 20.0, 60.0, 110.0)
    drawn = _correction(added_instance_id(frame, box), 1, frame, list(box), added=True)
    withdrawn = _correction(  # the same annotation, edited later: the task's own person only
        found_instance_id(frame, refound_box), 1, frame, refound_box, completed_at="2026-11-30T12:00:00Z"
    )
    train, report = merge(seed, refound, [drawn, withdrawn], [])
    assert [a["id"] for a in train["annotations"]] == [found_instance_id(frame, refound_box)]
    assert report["added_people"] == 0


def test_a_no_person_verdict_on_a_found_box_holds_for_the_false_find_a_retrained_finder_moves(tmp_path):
    """An annotator deletes a found box drawn around nobody ("no person"). A retrained finder gives the same false
    find a little elsewhere, so under another id: the verdict follows it there (IoU >= 0.5, as a correction of a
    found person does), merge reports it in ``no_person_ids``, and select never sends that box again. A found box
    elsewhere on the image is someone else and stays selectable."""
    from pipeline.corrections import added_instance_id, found_instance_id
    from pipeline.selection import excluded_instances

    frame = "images/pool/cam1.mp4/frame_000004.jpg"
    old_box = [10.0, 10.0, 50.0, 100.0]
    denied = Skip(
        found_instance_id(frame, old_box),
        7,
        9,
        "a@b.c",
        "2026-11-30T10:00:00Z",
        "no_person",
        origin="labelstudio",
        image_file=frame,
        instance_bbox=tuple(old_box),
    )
    moved, other = [14.0, 16.0, 52.0, 96.0], [300.0, 10.0, 40.0, 90.0]
    pool = _coco([(found_instance_id(frame, moved), frame, moved), (found_instance_id(frame, other), frame, other)])
    seed = {**_coco([]), "images": []}
    _, report = merge(seed, pool, [], [denied])
    assert report["no_person_ids"] == [found_instance_id(frame, moved)] and report["mismatched"] == []
    assert report["remapped"][0]["to_instance"] == found_instance_id(frame, moved)

    # the wrong box deleted and the real person drawn over it in the same annotation; a retrained finder now finds
    # that person (a box near both): the verdict reaches them only by re-mapping and never removes their label
    over = [12.0, 12.0, 50.0, 100.0]
    drawn = _correction(added_instance_id(frame, over), 1, frame, over, added=True, completed_at=denied.at)
    refound = [12.5, 12.0, 50.0, 99.0]
    finds_them = _coco([(found_instance_id(frame, refound), frame, refound)])
    train, kept = merge(seed, finds_them, [drawn], [denied])
    [person] = train["annotations"]
    assert person["id"] == found_instance_id(frame, refound) and person["source"] == "human"
    assert kept["no_person_ids"] == [] and kept["removed_no_person"] == 0

    store = tmp_path / "corrections"
    assert write_pull(store, [], [denied], [], "labelstudio", now=_t(0)) is not None
    labeled = tmp_path / "train.json"
    labeled.write_text(json.dumps({**_coco([]), "images": []}))
    exclude = excluded_instances([labeled], store, None, report["no_person_ids"])
    assert found_instance_id(frame, moved) in exclude["skipped"]
    assert found_instance_id(frame, other) not in exclude["skipped"]


def test_a_person_drawn_on_an_image_where_the_finder_found_nobody_keeps_the_box_the_annotator_fitted():
    """An image with nobody found stands in whole (box = the image). The annotator fits the box to the person there:
    merge labels the stand-in with that box; when a retrained finder now finds that person (the stand-in is gone),
    the correction labels the person found over the fitted box, not a second person of its own."""
    from pipeline.corrections import found_instance_id

    frame = "images/pool/cam1.mp4/frame_000008.jpg"
    whole = [0.0, 0.0, 640.0, 480.0]  # _coco's image size
    fitted = (100.0, 50.0, 120.0, 300.0)
    stand_in_id = found_instance_id(frame, whole)
    drawn = replace(_correction(stand_in_id, 1, frame, whole, x=130.0), bbox=fitted)
    seed = {**_coco([]), "images": []}
    pool = _coco([(stand_in_id, frame, whole)])
    pool["annotations"][0]["detection_score"] = 0.0  # what the find stage gives an image with nobody found
    train, report = merge(seed, pool, [drawn], [])
    [person] = train["annotations"]
    assert person["id"] == stand_in_id and person["bbox"] == list(fitted) and report["mismatched"] == []
    assert person["area"] == 120.0 * 300.0 and "detection_score" not in person  # nothing of the whole image left

    refound_box = [104.0, 48.0, 118.0, 296.0]
    refound = _coco([(found_instance_id(frame, refound_box), frame, refound_box)])
    train, report = merge(seed, refound, [drawn], [])
    [person] = train["annotations"]
    assert person["id"] == found_instance_id(frame, refound_box) and person["keypoints"][0] == 130.0
    assert report["added_people"] == 0


def test_an_answered_nobody_found_task_completes_its_image_for_the_instance_finder():
    """The finder may learn only from images whose every person is boxed. An answered "nobody found" task is one:
    the fitted person and the missed people of the latest version of that annotation, or nobody at all; a skipped
    task, a task on a found person and a missed person deleted in a later edit complete nothing."""
    from pipeline.corrections import completed_images

    files = ["images/pool/a.jpg", "images/pool/b.jpg", "images/pool/c.jpg", "images/pool/d.jpg"]
    pool = {
        **_coco([]),
        "images": [{"id": i + 1, "file_name": f, "width": 640, "height": 480} for i, f in enumerate(files)],
    }
    whole = [0.0, 0.0, 640.0, 480.0]
    first = "2026-11-30T10:00:00Z"
    edited = "2026-11-30T11:00:00Z"
    fitted = replace(_correction(1, 1, files[0], whole, x=60.0, completed_at=first), bbox=(50.0, 40.0, 100.0, 300.0))
    missed = _correction(2, 1, files[0], [300.0, 50.0, 80.0, 200.0], x=320.0, added=True, completed_at=first)
    refitted = replace(fitted, completed_at=edited)  # the same annotation edited: the missed person deleted
    nobody = Skip(
        3, 8, 1, "a@b.c", first, "no_person", origin=fitted.origin, image_file=files[1], instance_bbox=tuple(whole)
    )
    skipped = Skip(
        4, 9, 1, "a@b.c", first, "skipped", origin=fitted.origin, image_file=files[2], instance_bbox=tuple(whole)
    )
    found_person = _correction(5, 4, files[3], [10.0, 10.0, 50.0, 100.0])

    done = completed_images([fitted, missed, found_person], [nobody, skipped], pool)
    assert [im["file_name"] for im in done["images"]] == files[:2]
    assert [a["bbox"] for a in done["annotations"]] == [[50.0, 40.0, 100.0, 300.0], [300.0, 50.0, 80.0, 200.0]]
    assert all(a["image_id"] == 1 for a in done["annotations"])  # b.jpg: an image of nobody, background only
    after_edit = completed_images([fitted, missed, refitted], [], pool)
    assert [a["bbox"] for a in after_edit["annotations"]] == [[50.0, 40.0, 100.0, 300.0]]

    # the whole-image box deleted and everyone drawn as missed people: a "no person" verdict on the stand-in plus
    # those people, who make the image (not background)
    box_gone = replace(nobody, image_file=files[0], task_id=7, annotation_id=9, origin=fitted.origin)
    drawn_all = completed_images([missed], [box_gone], pool)
    assert [a["bbox"] for a in drawn_all["annotations"]] == [[300.0, 50.0, 80.0, 200.0]]
    # the same annotation edited later to "nobody here": merge withdraws the missed person as completed_images does
    nobody_after_all = replace(box_gone, at=edited)
    train, _ = merge({**_coco([]), "images": []}, pool, [missed], [nobody_after_all])
    assert train["annotations"] == []
    assert completed_images([missed], [nobody_after_all], pool)["annotations"] == []
    # keypoints placed but the whole-image box kept: the person's box is unknown, the image is not used
    unfitted = _correction(1, 1, files[0], whole, x=60.0)
    assert completed_images([unfitted], [], pool)["images"] == []
    # another annotation labeled someone on that image too: two answers that may disagree, not knowingly complete
    other = _correction(6, 1, files[0], [400.0, 60.0, 50.0, 150.0], annotation_id=99)
    assert [im["file_name"] for im in completed_images([fitted, missed, other], [], pool)["images"]] == []
