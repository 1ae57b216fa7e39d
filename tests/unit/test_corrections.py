"""The corrections store (append-only, deduplicated) and the merge rules of docs/DESIGN.md §3, on real files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.corrections import AnnotationProblem, Correction, Skip, read_store, write_pull
from pipeline.data.coco import read_coco
from pipeline.keypoints import KeypointSchema
from pipeline.merge import merge

REPO = Path(__file__).resolve().parents[2]
K = 17
NOW = datetime(2026, 11, 22, 15, 40, 0, tzinfo=UTC)


def _kps(x: float, v: int = 2) -> list[float]:
    """17 keypoints around (x, 50); the x makes two labels of one instance tell apart."""
    return [val for j in range(K) for val in (x + j, 50.0 + j, v)]


def _coco(annotations: list[dict], image_ids: list[int]) -> dict:
    return {
        "info": {"description": "test"},
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 640, "height": 480} for i in image_ids],
        "annotations": annotations,
        "categories": [KeypointSchema.coco17().to_coco_category()],
    }


def _ann(aid: int, image_id: int, keypoints: list[float], **extra) -> dict:
    return {
        "id": aid,
        "image_id": image_id,
        "category_id": 1,
        "bbox": [10.0, 20.0, 100.0, 200.0],
        "area": 15000.0,
        "iscrowd": 0,
        "keypoints": keypoints,
        "num_keypoints": sum(v > 0 for v in keypoints[2::3]),
        **extra,
    }


@pytest.fixture
def seed() -> dict:
    return _coco([_ann(1, 10, _kps(1), source="seed"), _ann(2, 10, _kps(2), source="seed")], [10])


@pytest.fixture
def pool() -> dict:
    return _coco([_ann(100, 11, [0.0] * 3 * K), _ann(101, 12, [0.0] * 3 * K)], [11, 12])


def _corr(iid: int, image_id: int, task: int | None, ann: int | None, at: str, x: float = 5.0) -> Correction:
    return Correction(
        instance_id=iid,
        image_id=image_id,
        bbox=(12.0, 22.0, 90.0, 190.0),
        keypoints=tuple(_kps(x)),
        task_id=task,
        annotation_id=ann,
        annotator="a@b.c",
        completed_at=at,
        model_version="pose/3",
    )


def _skip(iid: int, task: int, ann: int, at: str, reason: str = "skipped") -> Skip:
    return Skip(instance_id=iid, task_id=task, annotation_id=ann, annotator="a@b.c", at=at, reason=reason)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _by_id(train: dict) -> dict[int, dict]:
    return {a["id"]: a for a in train["annotations"]}


# ------------------------------------------------------------------------------------------------------------ store


def test_write_pull_creates_a_file_and_repeating_it_writes_nothing(tmp_path):
    store = tmp_path / "corrections"
    c = [_corr(100, 11, 12, 40, "2026-11-22T15:00:00Z")]
    s = [_skip(101, 13, 41, "2026-11-22T15:01:00Z", "no_person")]
    p = [AnnotationProblem(14, 42, "unknown label 'tail'")]
    path = write_pull(store, c, s, p, "labelstudio", now=NOW)
    assert path is not None and path.parent == store
    assert path.name.startswith("20261122T154000Z-") and len(path.name) == len("20261122T154000Z-") + 12 + 5
    doc = json.loads(path.read_text())
    assert doc["format"] == "poseloop-corrections/2" and doc["created"] == "2026-11-22T15:40:00Z"
    assert doc["source"] == "labelstudio"
    assert [Correction.from_json(d) for d in doc["corrections"]] == c
    assert [Skip.from_json(d) for d in doc["skipped"]] == s
    assert [AnnotationProblem.from_json(d) for d in doc["problems"]] == p
    assert read_store(store) == (c, s)

    before = _snapshot(store)
    assert write_pull(store, c, s, p, "labelstudio", now=datetime(2026, 11, 23, tzinfo=UTC)) is None
    assert _snapshot(store) == before
    # problems alone never make a file
    assert write_pull(store, [], [], [AnnotationProblem(15, 43, "bad")], "labelstudio", now=NOW) is None
    assert _snapshot(store) == before


def test_write_pull_is_deterministic_in_its_input(tmp_path):
    c = [_corr(101, 12, 13, 41, "2026-11-22T15:00:00Z"), _corr(100, 11, 12, 40, "2026-11-22T15:00:00.5Z")]
    a = write_pull(tmp_path / "a", c, [], [], "labelstudio", now=NOW)
    b = write_pull(tmp_path / "b", c[::-1], [], [], "labelstudio", now=NOW)
    assert a is not None and b is not None and a.name == b.name and a.read_bytes() == b.read_bytes()


def test_only_new_records_are_written_and_old_files_never_change(tmp_path):
    store = tmp_path / "corrections"
    old = _corr(100, 11, 12, 40, "2026-11-22T15:00:00Z")
    old_skip = _skip(101, 13, 41, "2026-11-22T15:00:00Z")
    first = write_pull(store, [old], [old_skip], [], "labelstudio", now=NOW)
    before = _snapshot(store)

    new = _corr(101, 12, 14, 42, "2026-11-22T16:00:00Z")
    # same (task, annotation) as `old`, a later version (edited in Label Studio after the pull): new, stored
    edited = _corr(100, 11, 12, 40, "2026-11-22T17:00:00Z", x=9.0)
    second = write_pull(
        store, [old, new, edited], [old_skip], [], "labelstudio", now=datetime(2026, 11, 23, tzinfo=UTC)
    )
    assert second is not None and second != first
    assert {k: v for k, v in _snapshot(store).items() if k in before} == before
    doc = json.loads(second.read_text())
    assert [Correction.from_json(d) for d in doc["corrections"]] == [edited, new] and doc["skipped"] == []
    corrections, skips = read_store(store)
    assert corrections == [old, edited, new] and skips == [old_skip]


def test_inbox_records_without_ids_are_keyed_by_content(tmp_path):
    store = tmp_path / "corrections"
    a = _corr(100, 11, None, None, "2026-11-22T15:00:00Z")
    assert write_pull(store, [a], [], [], "inbox:batch1.json", now=NOW) is not None
    b = _corr(100, 11, None, None, "2026-11-22T15:00:00Z", x=6.0)  # same time, other keypoints: a new record
    assert write_pull(store, [a, b], [], [], "inbox:batch1.json", now=datetime(2026, 11, 23, tzinfo=UTC)) is not None
    assert write_pull(store, [a, b], [], [], "inbox:batch1.json", now=datetime(2026, 11, 24, tzinfo=UTC)) is None
    assert read_store(store)[0] == [a, b]


def test_an_existing_name_is_never_overwritten(tmp_path):
    c = [_corr(100, 11, 12, 40, "2026-11-22T15:00:00Z")]
    name = write_pull(tmp_path / "elsewhere", c, [], [], "labelstudio", now=NOW).name
    # A valid file under the name this pull will want, holding other records (e.g. renamed by hand).
    store = tmp_path / "corrections"
    other = write_pull(store, [_corr(101, 12, 13, 41, "2026-11-22T15:00:00Z")], [], [], "labelstudio", now=NOW)
    other.rename(store / name)
    before = _snapshot(store)
    with pytest.raises(FileExistsError, match=re.escape(name)):
        write_pull(store, c, [], [], "labelstudio", now=NOW)
    assert _snapshot(store) == before  # no temp file left behind either


def test_missing_store_is_empty_and_corrupt_file_names_itself(tmp_path):
    assert read_store(tmp_path / "nope") == ([], [])
    store = tmp_path / "corrections"
    write_pull(store, [_corr(100, 11, 12, 40, "2026-11-22T15:00:00Z")], [], [], "labelstudio", now=NOW)
    bad = store / "20261123T000000Z-000000000000.json"
    bad.write_text('{"format": "poseloop-corrections/1", "corrections": [')
    with pytest.raises(ValueError, match=r"20261123T000000Z-000000000000\.json"):
        read_store(store)
    doc = {
        "format": "poseloop-corrections/1",
        "created": "x",
        "source": "labelstudio",
        "skipped": [],
        "problems": [],
        "corrections": [{**_corr(100, 11, 12, 41, "2026-11-22T15:00:00Z").to_json(), "bbox": [1, 2, 3]}],
    }
    bad.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"000000000000\.json: corrections\[0\]: field 'bbox'"):
        read_store(store)


def test_from_json_names_file_record_and_field():
    d = _corr(100, 11, 12, 40, "2026-11-22T15:00:00Z").to_json()
    del d["completed_at"]
    with pytest.raises(ValueError, match=r"f\.json: corrections\[3\]: field 'completed_at': missing"):
        Correction.from_json(d, "f.json", 3)
    with pytest.raises(ValueError, match=r"field 'instance_id'"):
        Correction.from_json({**d, "completed_at": "2026-11-22T15:00:00Z", "instance_id": "7"}, "f.json", 0)
    with pytest.raises(ValueError, match=r"skipped\[0\]: field 'reason'"):
        Skip.from_json({**_skip(1, 2, 3, "2026-11-22T15:00:00Z").to_json(), "reason": "bored"}, "f.json", 0)


# ------------------------------------------------------------------------------------------------------------ merge


def test_round_one_is_the_seed(seed, pool):
    train, report = merge(seed, pool, [], [])
    assert [a["id"] for a in train["annotations"]] == [1, 2]
    assert all(a["source"] == "seed" for a in train["annotations"])
    assert [im["id"] for im in train["images"]] == [10]
    assert train["categories"] == seed["categories"] and train["info"] == seed["info"]
    assert report["labeled_total"] == 2 and report["seed"] == 2 and report["human_instances"] == 0


def test_human_beats_seed_and_adds_pool_instances(seed, pool):
    fix_seed = _corr(2, 10, 20, 60, "2026-11-22T15:00:00Z", x=7.0)
    new = _corr(100, 11, 21, 61, "2026-11-22T15:00:00Z", x=8.0)
    train, report = merge(seed, pool, [fix_seed, new], [])
    anns = _by_id(train)
    assert sorted(anns) == [1, 2, 100]
    assert anns[1]["source"] == "seed"
    assert anns[2]["source"] == "human" and anns[2]["keypoints"] == _kps(7.0) and anns[2]["correction_id"] == "20:60"
    assert anns[100]["source"] == "human" and anns[100]["keypoints"] == _kps(8.0)
    assert anns[100]["model_version"] == "pose/3" and anns[100]["num_keypoints"] == K
    assert anns[100]["area"] == 15000.0 and anns[100]["bbox"] == [12.0, 22.0, 90.0, 190.0]
    assert [im["id"] for im in train["images"]] == [10, 11]  # image 12: nobody labeled there
    assert report["overridden_seed"] == 1 and report["human_instances"] == 2 and report["labeled_total"] == 3
    assert pool["annotations"][0]["keypoints"] == [0.0] * 3 * K  # inputs untouched


def test_later_human_wins_and_the_conflict_is_counted(seed, pool):
    late = _corr(100, 11, 31, 71, "2026-11-22T16:00:00Z", x=9.0)
    early = _corr(100, 11, 30, 70, "2026-11-22T15:00:00Z", x=8.0)
    train, report = merge(seed, pool, [late, early], [])  # store order differs from time order
    assert _by_id(train)[100]["keypoints"] == _kps(9.0) and _by_id(train)[100]["correction_id"] == "31:71"
    assert report["conflicts"] == 1 and report["conflict_instance_ids"] == [100]
    # equal times: the later in store order wins; fractional seconds compare as times, not text
    tie = [early, _corr(100, 11, 32, 72, "2026-11-22T15:00:00Z", x=3.0)]
    assert _by_id(merge(seed, pool, tie, [])[0])[100]["correction_id"] == "32:72"
    frac = [_corr(100, 11, 33, 73, "2026-11-22T15:00:00.5Z", x=4.0), early]
    assert _by_id(merge(seed, pool, frac, [])[0])[100]["correction_id"] == "33:73"


def test_no_person_removes_unless_corrected_later(seed, pool):
    corr = _corr(100, 11, 30, 70, "2026-11-22T15:00:00Z")
    gone = [
        _skip(1, 40, 80, "2026-11-22T15:30:00Z", "no_person"),
        _skip(100, 41, 81, "2026-11-22T15:30:00Z", "no_person"),
    ]
    train, report = merge(seed, pool, [corr], [*gone, _skip(101, 42, 82, "2026-11-22T15:30:00Z")])
    assert sorted(_by_id(train)) == [2]
    assert report["removed_no_person"] == 2 and report["removed_no_person_ids"] == [1, 100]
    assert report["skipped"] == {"skipped": 1, "cancelled": 0, "no_person": 2}
    later = _corr(100, 11, 31, 71, "2026-11-22T16:00:00Z", x=9.0)
    train, report = merge(seed, pool, [corr, later], gone)
    assert sorted(_by_id(train)) == [2, 100] and _by_id(train)[100]["correction_id"] == "31:71"
    assert report["removed_no_person_ids"] == [1]


def test_unknown_and_misfit_instances_are_reported_not_raised(seed, pool):
    unknown = _corr(999, 11, 30, 70, "2026-11-22T15:00:00Z")
    wrong_image = _corr(101, 11, 31, 71, "2026-11-22T15:00:00Z")  # instance 101 is on image 12
    short = Correction(**{**_corr(100, 11, 32, 72, "2026-11-22T15:00:00Z").__dict__, "keypoints": (1.0, 2.0, 2)})
    train, report = merge(seed, pool, [unknown, wrong_image, short], [_skip(998, 1, 1, "2026-11-22T15:00:00Z")])
    assert sorted(_by_id(train)) == [1, 2]
    assert report["unknown_instances"] == [998, 999]
    assert [d["instance_id"] for d in report["invalid_corrections"]] == [100, 101]
    # a broken later record does not shadow an earlier good one
    good = _corr(100, 11, 33, 73, "2026-11-22T14:00:00Z")
    train, report = merge(seed, pool, [good, short], [])
    assert _by_id(train)[100]["correction_id"] == "33:73" and report["conflicts"] == 0


def test_merge_is_deterministic_and_idempotent(seed, pool, tmp_path):
    store = tmp_path / "corrections"
    write_pull(store, [_corr(100, 11, 30, 70, "2026-11-22T15:00:00Z")], [], [], "labelstudio", now=NOW)
    write_pull(
        store,
        [_corr(100, 11, 31, 71, "2026-11-22T16:00:00Z", x=2.0), _corr(2, 10, 32, 72, "2026-11-22T16:00:00Z")],
        [_skip(101, 33, 73, "2026-11-22T16:00:00Z", "cancelled")],
        [],
        "labelstudio",
        now=datetime(2026, 11, 23, tzinfo=UTC),
    )
    seed_before = json.dumps(seed)
    first = merge(seed, pool, *read_store(store))
    second = merge(seed, pool, *read_store(store))
    assert json.dumps(first) == json.dumps(second)
    assert json.dumps(seed) == seed_before


# ------------------------------------------------------------------------------------------------------------ stage


def _run_stage(tmp_path: Path, store: Path) -> subprocess.CompletedProcess:
    args = {"--seed": "seed.json", "--pool": "pool.json", "--out": "out/train.json", "--report": "out/report.json"}
    cmd = [sys.executable, "-m", "stages.merge", "--corrections", str(store)]
    cmd += [x for flag, name in args.items() for x in (flag, str(tmp_path / name))]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


def test_stage_writes_a_valid_train_file(seed, pool, tmp_path):
    (tmp_path / "seed.json").write_text(json.dumps(seed))
    (tmp_path / "pool.json").write_text(json.dumps(pool))
    store = tmp_path / "corrections"
    write_pull(store, [_corr(100, 11, 30, 70, "2026-11-22T15:00:00Z")], [], [], "labelstudio", now=NOW)
    out, report = tmp_path / "out" / "train.json", tmp_path / "out" / "report.json"

    run = _run_stage(tmp_path, store)
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.strip().splitlines()) == 1
    assert [(a["id"], a["source"]) for a in read_coco(out).annotations] == [(1, "seed"), (2, "seed"), (100, "human")]
    assert json.loads(report.read_text())["human_instances"] == 1 and report.read_text().endswith("}\n")
    first = out.read_bytes()
    assert _run_stage(tmp_path, store).returncode == 0
    assert out.read_bytes() == first  # same inputs, same bytes: DVC sees no change

    run = _run_stage(tmp_path, tmp_path / "no_store_yet")  # round 1
    assert run.returncode == 0, run.stderr
    assert [a["source"] for a in read_coco(out).annotations] == ["seed", "seed"]
