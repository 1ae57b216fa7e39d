"""Selection: exclusions, budget, per-image cap, policies, diversity, speed; confident pseudo-labels."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipeline.inference import predictions_table
from pipeline.scoring import (
    SIGNALS,
    combined_uncertainty,
    confident_rows,
    k_center_greedy,
    pose_embedding,
    pseudo_label_coco,
    rank_normalize,
    select,
    selection_table,
)

WEIGHTS = {"response": 1.0, "min_response": 0.0, "sahr_sigma": 1.0, "difficulty": 1.0, "flip_disagreement": 1.0}


def random_scores(n: int, seed: int = 0, images: int | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "instance_id": np.arange(1000, 1000 + n, dtype=np.int64),
            "image_id": rng.integers(0, images or max(n // 3, 1), n),
            "image_readable": np.ones(n, bool),
            "response": rng.random(n),
            "min_response": rng.random(n) * 0.5,
            "sahr_sigma": 1.5 + rng.random(n),
            "difficulty": rng.integers(0, 18, n) / 17,
            "flip_disagreement": rng.exponential(0.1, n),
        }
    )


def test_rank_normalize_orders_ties_and_keeps_nan():
    out = rank_normalize(np.array([3.0, 1.0, np.nan, 1.0, 5.0]))
    assert out[1] == out[3] == pytest.approx(1 / 6)  # tied pair shares the average rank
    assert out[4] == 1.0 and np.isnan(out[2]) and out[0] == pytest.approx(2 / 3)


def test_combined_uncertainty_orients_signals_and_drops_absent_ones():
    scores = pd.DataFrame({"response": [0.9, 0.1, 0.5], "sahr_sigma": [np.nan] * 3, "difficulty": [0.0, 1.0, 0.5],
                           "flip_disagreement": [np.nan] * 3})  # fmt: skip
    u = combined_uncertainty(scores, WEIGHTS)
    # low response and high difficulty = uncertain; the absent SAHR / flip signals (ASLA head, no flip) drop out
    assert np.argsort(u).tolist() == [0, 2, 1] and u[1] == 1.0 and u[0] == 0.0


def test_selection_respects_exclusions_budget_and_per_image_cap():
    scores = random_scores(3000, images=500)
    ids = scores["instance_id"].to_numpy()
    exclude = {"labeled": set(ids[:400]), "pending": set(ids[400:700]), "skipped": set(ids[700:800])}
    chosen = select(scores, policy="uncertainty", budget=150, weights=WEIGHTS, exclude=exclude, per_image=1)
    picked = ids[chosen.rows]
    assert len(picked) == 150 == len(set(picked))
    assert not set(picked) & (exclude["labeled"] | exclude["pending"] | exclude["skipped"])
    assert scores["image_id"].to_numpy()[chosen.rows].tolist() == list(
        dict.fromkeys(scores["image_id"].to_numpy()[chosen.rows])
    )  # fmt: skip  (one instance per image)
    assert chosen.counts["excluded_labeled"] == 400 and chosen.counts["excluded_pending"] == 300
    assert chosen.counts["excluded_skipped"] == 100 and chosen.counts["eligible"] == 2200
    # without the cap the same budget takes several people of one image
    uncapped = select(scores, policy="uncertainty", budget=150, weights=WEIGHTS, exclude=exclude)
    assert scores["image_id"].to_numpy()[uncapped.rows].tolist() != list(dict.fromkeys(
        scores["image_id"].to_numpy()[uncapped.rows]))  # fmt: skip
    # the most uncertain eligible instances, in order
    u = uncapped.uncertainty[uncapped.rows]
    assert np.all(np.diff(u) <= 0)
    excluded = np.isin(ids, list(exclude["labeled"] | exclude["pending"] | exclude["skipped"]))
    assert u[-1] >= np.sort(uncapped.uncertainty[~excluded])[-150]


def test_a_small_pool_gives_what_it_has_and_unreadable_images_are_never_chosen():
    scores = random_scores(10)
    scores.loc[:4, "image_readable"] = False
    for column in SIGNALS:
        scores.loc[:4, column] = np.nan
    for policy in ("uncertainty", "random", "response"):
        chosen = select(scores, policy=policy, budget=50, weights=WEIGHTS)
        assert sorted(chosen.rows.tolist()) == [5, 6, 7, 8, 9]


def test_policies_give_different_selections_and_are_deterministic():
    scores = random_scores(2000)
    picked = {p: set(select(scores, policy=p, budget=100, weights=WEIGHTS).rows.tolist())
              for p in ("uncertainty", "random", "response", "difficulty", "flip_disagreement")}  # fmt: skip
    names = list(picked)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert picked[a] != picked[b], (a, b)
    again = select(scores, policy="random", budget=100, weights=WEIGHTS, seed=0).rows
    assert set(again.tolist()) == picked["random"]
    assert set(select(scores, policy="random", budget=100, weights=WEIGHTS, seed=1).rows.tolist()) != picked["random"]
    with pytest.raises(ValueError, match="unknown selection policy"):
        select(scores, policy="entropy", budget=10, weights=WEIGHTS)


def test_random_share_draws_part_of_the_budget_from_what_the_policy_left():
    scores = random_scores(2000)
    exclude = {"labeled": scores["instance_id"].to_numpy()[::7].tolist()}
    top60 = select(scores, policy="uncertainty", budget=60, weights=WEIGHTS, exclude=exclude)
    mixed = select(scores, policy="uncertainty", budget=100, weights=WEIGHTS, exclude=exclude, random_share=0.4)
    assert len(mixed.rows) == 100 and len(set(mixed.rows.tolist())) == 100
    assert mixed.counts["selected_at_random"] == 40
    assert mixed.rows[:60].tolist() == top60.rows.tolist()  # the policy's share is the policy's best, in order
    drawn = mixed.rows[60:]
    assert not set(scores["instance_id"].to_numpy()[drawn].tolist()) & set(exclude["labeled"])
    assert np.all(np.isfinite(mixed.uncertainty[drawn]))  # only eligible rows (readable images) are drawn
    # drawn from everything that was left, not from just below the cut
    assert np.median(mixed.uncertainty[drawn]) < np.quantile(mixed.uncertainty[np.isfinite(mixed.uncertainty)], 0.8)
    again = select(scores, policy="uncertainty", budget=100, weights=WEIGHTS, exclude=exclude, random_share=0.4)
    other = select(scores, policy="uncertainty", budget=100, weights=WEIGHTS, exclude=exclude, random_share=0.4, seed=1)
    assert again.rows.tolist() == mixed.rows.tolist() and set(other.rows[60:]) != set(drawn)
    capped = select(scores, policy="uncertainty", budget=100, weights=WEIGHTS, per_image=1, random_share=0.5)
    assert scores["image_id"].to_numpy()[capped.rows].tolist() == list(dict.fromkeys(
        scores["image_id"].to_numpy()[capped.rows].tolist()))  # fmt: skip
    small = select(scores.head(30), policy="uncertainty", budget=100, weights=WEIGHTS, random_share=0.5)
    assert len(small.rows) == len(set(small.rows.tolist())) <= 30
    with pytest.raises(ValueError, match="random_share"):
        select(scores, policy="uncertainty", budget=10, weights=WEIGHTS, random_share=1.5)


def test_k_center_diversity_spreads_over_poses():
    # 3 pose clusters; the most uncertain 60 instances all share cluster 0's pose
    rng = np.random.default_rng(0)
    n, k = 300, 17
    cluster = np.repeat([0, 1, 2], n // 3)
    poses = rng.normal(0, 1, (3, 2 * k)) * 40
    keypoints = 100 + poses[cluster] + rng.normal(0, 0.5, (n, 2 * k))
    bbox = np.tile([0.0, 0.0, 200.0, 200.0], (n, 1))
    scores = random_scores(n)
    scores["response"] = np.where(cluster == 0, 0.01 * rng.random(n), 0.5 + rng.random(n))
    embedding = pose_embedding(keypoints, bbox)
    plain = select(scores, policy="response", budget=9, weights=WEIGHTS)
    diverse = select(scores, policy="response", budget=9, weights=WEIGHTS, diversity=True, diversity_candidates=40,
                     embedding=embedding)  # fmt: skip
    assert set(cluster[plain.rows]) == {0}
    assert set(cluster[diverse.rows]) == {0, 1, 2} and diverse.rows[0] == plain.rows[0]
    assert len(k_center_greedy(embedding, 500)) == n


def test_pose_embedding_ignores_where_and_how_large_a_person_is():
    kp = np.array([[10.0, 20.0, 30.0, 60.0]])
    moved = np.array([[110.0, 220.0, 150.0, 300.0]])  # twice as large, elsewhere
    assert np.allclose(pose_embedding(kp, np.array([[0.0, 0.0, 40.0, 80.0]])),
                       pose_embedding(moved, np.array([[90.0, 180.0, 80.0, 160.0]])))  # fmt: skip


def test_100k_rows_are_scored_and_selected_quickly():
    scores = random_scores(100_000)
    exclude = {"labeled": set(range(1000, 6000))}
    started = time.perf_counter()
    chosen = select(scores, policy="uncertainty", budget=1000, weights=WEIGHTS, exclude=exclude, per_image=2)
    seconds = time.perf_counter() - started
    print(f"100k rows scored and selected in {seconds:.2f} s")
    assert len(chosen.rows) == 1000 and seconds < 10.0  # loose: the benchmark has the real figure


def _predictions(n: int, k: int = 4) -> pa.Table:
    rng = np.random.default_rng(1)
    scores = rng.random((n, k)).astype(np.float32)
    scores[0] = 0.9  # confident
    scores[1] = [0.9, 0.9, 0.1, 0.9]
    return predictions_table({
        "instance_id": np.arange(n, dtype=np.int64) + 10, "image_id": np.arange(n, dtype=np.int64),
        "bbox": np.tile([1.0, 2.0, 30.0, 40.0], (n, 1)), "keypoints": rng.random((n, 2 * k)) * 30,
        "scores": scores, "response": scores.mean(1).astype(np.float64), "min_response": scores.min(1).astype(float),
        "sahr_sigma": np.full(n, np.nan), "difficulty": rng.random(n), "flip_disagreement": np.r_[0.01, 0.01, 0.5,
                                                                                                   np.full(n - 3, 0.2)],
        "image_readable": np.ones(n, bool)})  # fmt: skip


def test_confident_pseudo_labels_pass_every_threshold():
    table = _predictions(6)
    frame = table.to_pandas()
    keypoint_scores = np.stack(frame["scores"].to_numpy())
    assert frame["sahr_sigma"].isna().all()  # NaN written as null, read back as NaN
    ok = confident_rows(frame, keypoint_scores, min_score=0.6, min_keypoints=4, max_flip=0.05)
    assert ok.tolist() == [True, False, False, False, False, False]
    ok3 = confident_rows(frame, keypoint_scores, min_score=0.6, min_keypoints=3, max_flip=0.05)
    assert ok3[:2].tolist() == [True, True]
    pool = {"images": [{"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 64} for i in range(6)],
            "annotations": [{"id": i + 10, "image_id": i, "category_id": 1, "bbox": [1, 2, 30, 40], "area": 1200,
                             "iscrowd": 0, "keypoints": [0] * 12, "num_keypoints": 0} for i in range(6)],
            "categories": [{"id": 1, "name": "x", "keypoints": list("abcd"), "skeleton": []}]}  # fmt: skip
    coco = pseudo_label_coco(pool, table, ok3.nonzero()[0], min_score=0.6, model_version="m/1")
    assert [a["id"] for a in coco["annotations"]] == [10, 11]
    second = coco["annotations"][1]
    assert second["keypoints"][6:9] == [0.0, 0.0, 0.0] and second["keypoints"][11] == 2.0  # third point: v=0
    assert second["num_keypoints"] == 3
    assert second["source"] == "pseudo" and second["model_version"] == "m/1" and len(coco["images"]) == 2


def test_selection_table_carries_rank_and_scores():
    table = _predictions(8)
    frame = table.to_pandas()
    chosen = select(frame, policy="uncertainty", budget=3, weights=WEIGHTS)
    out = selection_table(table, chosen)
    assert out.column("rank").to_pylist() == [0, 1, 2]
    assert out.column("instance_id").to_pylist() == frame["instance_id"].to_numpy()[chosen.rows].tolist()
    assert out.schema.field("keypoints").type.list_size == 8
