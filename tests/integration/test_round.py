"""The library's round (pipeline.loop.run_round) end to end, as the benchmarks call it: round 0 on the seed labels,
then rounds that select from the previous model's pool predictions, let the simulated annotator answer into the
corrections store, merge, train and score again. Real files at every step; nothing mocked."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import params_from_dict
from pipeline.corrections import Skip, read_store, write_pull
from pipeline.data.coco import read_coco
from pipeline.labelstudio.oracle import is_unlabelable
from pipeline.loop import RoundFiles, annotate_from_truth, run_round
from pipeline.selection import select_next
from tests.support.teacher import make_project, small_params


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    raw = small_params(epochs=1, min_steps_per_epoch=8)
    return make_project(tmp_path_factory.mktemp("round"), raw), params_from_dict(raw)


def test_rounds_select_annotate_merge_train_and_score_through_the_store(project, tmp_path):
    root, params = project
    prepared = root / "data" / "prepared"
    store = tmp_path / "corrections"
    files = RoundFiles(prepared / "labeled.json", root / "data" / "pool.json", prepared / "val.json", prepared, store)
    oracle = read_coco(prepared / "oracle.json")
    truth = {int(a["id"]): a for a in json.loads((prepared / "oracle.json").read_text())["annotations"]}
    seed_ids = {int(a["id"]) for a in read_coco(files.seed).annotations}
    pool_ids = {int(a["id"]) for a in read_coco(files.pool).annotations}
    start = datetime(2001, 1, 1, tzinfo=UTC)

    def annotator(r: int):
        return functools.partial(
            annotate_from_truth,
            truth=truth,
            schema=oracle.schema,
            store=store,
            at=start + timedelta(hours=r),
            model_version=f"test/round{r - 1}",
        )

    zero = run_round(params, files, tmp_path / "round0")
    assert zero.selection is None and zero.effort is None
    assert zero.merge_report["labeled_total"] == len(seed_ids)  # an empty store: the seed labels only
    assert (zero.trained.model_dir / "model.json").is_file() and zero.weights.is_file()
    assert set(zero.scores["instance_id"]) == pool_ids  # every pool person scored by the new model

    # the person round 1 would send first, skipped by an annotator before the round: it must not be sent again
    probe, _, _ = select_next(
        params.select, zero.predictions, [zero.labels], store, None, tmp_path / "probe.parquet", seed=1, budget=6
    )
    first = int(zero.scores["instance_id"].to_numpy()[probe.rows[0]])
    skip = Skip(
        instance_id=first, task_id=None, annotation_id=None, annotator="t", at="2000-12-31T00:00:00Z", reason="skipped"
    )
    write_pull(store, [], [skip], [], source="inbox:test", now=start)

    one = run_round(params, files, tmp_path / "round1", teacher=zero, annotate=annotator(1), budget=6, select_seed=1)
    chosen = pq.read_table(one.selected).to_pydict()
    picked = [i for i, q in zip(chosen["instance_id"], chosen["queue"], strict=True) if q == "correct"]
    assert len(picked) == 6 and first not in picked and set(picked) <= pool_ids - seed_ids
    corrections, skips = read_store(store)
    answered = {c.instance_id for c in corrections} | {s.instance_id for s in skips}
    assert answered == set(chosen["instance_id"]) | {first}  # every task answered: corrected, or skipped
    assert one.effort["tasks"] == len(chosen["instance_id"]) and one.effort["skipped"] == len(skips) - 1
    assert one.effort["moved"] + one.effort["added"] > 0  # the teacher's keypoints were not the truth
    train = {int(a["id"]): a for a in json.loads(one.labels.read_text())["annotations"]}
    assert one.merge_report["labeled_total"] == len(seed_ids) + len(corrections) == len(train)
    for c in corrections:  # the human work landed on its person, with the truth's keypoints
        assert train[c.instance_id]["keypoints"] == truth[c.instance_id]["keypoints"]

    two = run_round(
        params, files, tmp_path / "round2", teacher=one, annotate=annotator(2), budget=6, select_seed=2, score=False
    )
    again = set(pq.read_table(two.selected, columns=["instance_id"]).column("instance_id").to_pylist())
    assert not again & answered, "a person already corrected or skipped was selected again"
    assert two.scores is None and two.merge_report["labeled_total"] > one.merge_report["labeled_total"]
    with pytest.raises(ValueError, match="did not score the pool"):
        run_round(params, files, tmp_path / "round3", teacher=two)


def test_the_simulated_annotator_skips_the_unlabelable_and_counts_added_points_without_a_pre_annotation(
    project, tmp_path
):
    root, _ = project
    prepared = root / "data" / "prepared"
    oracle = read_coco(prepared / "oracle.json")
    truth = {int(a["id"]): a for a in json.loads((prepared / "oracle.json").read_text())["annotations"]}
    ids = sorted(truth)[:5]
    at = datetime(2001, 1, 1, tzinfo=UTC)
    store = tmp_path / "store"
    # nobody has 18 clearly visible keypoints of 17: every person is skipped, nothing is labeled
    effort = annotate_from_truth(
        pa.table({"instance_id": ids}), truth, oracle.schema, store, at, model_version="m", skip_below_visible=18
    )
    assert effort["skipped"] == 5 and read_store(store)[0] == []
    store = tmp_path / "store2"
    effort = annotate_from_truth(pa.table({"instance_id": ids}), truth, oracle.schema, store, at, model_version="m")
    kept = [i for i in ids if not is_unlabelable(truth[i]["keypoints"])]
    assert effort["skipped"] == len(ids) - len(kept) and len(read_store(store)[0]) == len(kept) > 0
    labeled = sum(sum(v > 0 for v in truth[i]["keypoints"][2::3]) for i in kept)
    assert effort["moved"] == 0 and effort["added"] == labeled  # nothing pre-placed: every point is added
