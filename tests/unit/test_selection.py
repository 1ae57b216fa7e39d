"""Selection: exclusions, budget, per-image cap, policies, diversity, speed; confident pseudo-labels."""

from __future__ import annotations

import time
from typing import get_args, get_type_hints

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipeline.config import SelectParams
from pipeline.data.pool_predictions import confident_rows, pseudo_label_coco, to_table
from pipeline.labelstudio.oracle import is_unlabelable
from pipeline.selection import (
    POLICIES,
    SIGNALS,
    combined_uncertainty,
    expected_moved_keypoints,
    feature_embedding,
    k_center_greedy,
    pose_embedding,
    rank_normalize,
    select,
    select_with_params,
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
    scores = pd.DataFrame(
        {
            "response": [0.9, 0.1, 0.5],
            "sahr_sigma": [np.nan] * 3,
            "difficulty": [0.0, 1.0, 0.5],
            "flip_disagreement": [np.nan] * 3,
        }
    )
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
    )  # one instance per image
    assert chosen.counts["excluded_labeled"] == 400 and chosen.counts["excluded_pending"] == 300
    assert chosen.counts["excluded_skipped"] == 100 and chosen.counts["eligible"] == 2200
    # without the cap the same budget takes several people of one image
    uncapped = select(scores, policy="uncertainty", budget=150, weights=WEIGHTS, exclude=exclude)
    assert scores["image_id"].to_numpy()[uncapped.rows].tolist() != list(
        dict.fromkeys(scores["image_id"].to_numpy()[uncapped.rows])
    )
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
    picked = {
        p: set(select(scores, policy=p, budget=100, weights=WEIGHTS).rows.tolist())
        for p in ("uncertainty", "random", "response", "difficulty", "flip_disagreement")
    }
    names = list(picked)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert picked[a] != picked[b], (a, b)
    again = select(scores, policy="random", budget=100, weights=WEIGHTS, seed=0).rows
    assert set(again.tolist()) == picked["random"]
    assert set(select(scores, policy="random", budget=100, weights=WEIGHTS, seed=1).rows.tolist()) != picked["random"]
    with pytest.raises(ValueError, match="unknown selection policy"):
        select(scores, policy="entropy", budget=10, weights=WEIGHTS)


def test_skip_top_share_leaves_out_the_policys_extreme_tail_of_the_eligible_people():
    scores = random_scores(2000)
    exclude = {"labeled": scores["instance_id"].to_numpy()[::7].tolist()}
    whole = select(scores, policy="uncertainty", budget=300, weights=WEIGHTS, exclude=exclude)
    eligible = whole.counts["eligible"]
    cut = select(scores, policy="uncertainty", budget=100, weights=WEIGHTS, exclude=exclude, skip_top_share=0.1)
    skipped = round(0.1 * eligible)
    assert cut.counts["skipped_top"] == skipped and len(cut.rows) == 100
    # the next 100 after the eligible top 10%, in order; the excluded ones never counted among the skipped
    ranked = select(scores, policy="uncertainty", budget=skipped + 100, weights=WEIGHTS, exclude=exclude)
    assert cut.rows.tolist() == ranked.rows[skipped:].tolist()
    assert not set(scores["instance_id"].to_numpy()[cut.rows].tolist()) & set(exclude["labeled"])
    # the share is of the eligible people, taken before the per-image cap; random_share draws below the cut
    capped = select(
        scores,
        policy="uncertainty",
        budget=50,
        weights=WEIGHTS,
        exclude=exclude,
        skip_top_share=0.5,
        per_image=1,
        random_share=0.5,
    )
    assert capped.counts["skipped_top"] == round(0.5 * eligible) and len(capped.rows) == 50
    top_half = set(whole.rows[: min(300, round(0.5 * eligible))].tolist())  # all inside the skipped half
    assert not set(capped.rows.tolist()) & top_half
    image_ids = scores["image_id"].to_numpy()[capped.rows]
    assert len(set(image_ids.tolist())) == len(image_ids)
    # a small pool is not starved: the share left out never takes the selection below the budget
    small = select(scores.head(30), policy="uncertainty", budget=20, weights=WEIGHTS, skip_top_share=0.5)
    eligible = small.counts["eligible"]
    assert small.counts["skipped_top"] == max(0, eligible - 20) and len(small.rows) == min(20, eligible)
    with pytest.raises(ValueError, match="skip_top_share"):
        select(scores, policy="uncertainty", budget=10, weights=WEIGHTS, skip_top_share=1.0)


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
    assert scores["image_id"].to_numpy()[capped.rows].tolist() == list(
        dict.fromkeys(scores["image_id"].to_numpy()[capped.rows].tolist())
    )
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
    diverse = select(
        scores,
        policy="response",
        budget=9,
        weights=WEIGHTS,
        diversity=True,
        diversity_candidates=40,
        embedding=embedding,
    )
    assert set(cluster[plain.rows]) == {0}
    assert set(cluster[diverse.rows]) == {0, 1, 2} and diverse.rows[0] == plain.rows[0]
    assert len(k_center_greedy(embedding, 500)) == n


def test_pose_embedding_ignores_where_and_how_large_a_person_is():
    kp = np.array([[10.0, 20.0, 30.0, 60.0]])
    moved = np.array([[110.0, 220.0, 150.0, 300.0]])  # twice as large, elsewhere
    assert np.allclose(
        pose_embedding(kp, np.array([[0.0, 0.0, 40.0, 80.0]])),
        pose_embedding(moved, np.array([[90.0, 180.0, 80.0, 160.0]])),
    )


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
    return to_table(
        {
            "instance_id": np.arange(n, dtype=np.int64) + 10,
            "image_id": np.arange(n, dtype=np.int64),
            "bbox": np.tile([1.0, 2.0, 30.0, 40.0], (n, 1)),
            "keypoints": rng.random((n, 2 * k)) * 30,
            "scores": scores,
            "response": scores.mean(1).astype(np.float64),
            "min_response": scores.min(1).astype(float),
            "sahr_sigma": np.full(n, np.nan),
            "difficulty": rng.random(n),
            "flip_disagreement": np.r_[0.01, 0.01, 0.5, np.full(n - 3, 0.2)],
            "image_readable": np.ones(n, bool),
        }
    )


def test_confident_pseudo_labels_pass_every_threshold():
    table = _predictions(6)
    frame = table.to_pandas()
    keypoint_scores = np.stack(frame["scores"].to_numpy())
    assert frame["sahr_sigma"].isna().all()  # NaN written as null, read back as NaN
    ok = confident_rows(frame, keypoint_scores, min_score=0.6, min_keypoints=4, max_flip=0.05)
    assert ok.tolist() == [True, False, False, False, False, False]
    ok3 = confident_rows(frame, keypoint_scores, min_score=0.6, min_keypoints=3, max_flip=0.05)
    assert ok3[:2].tolist() == [True, True]
    pool = {
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 64} for i in range(6)],
        "annotations": [
            {
                "id": i + 10,
                "image_id": i,
                "category_id": 1,
                "bbox": [1, 2, 30, 40],
                "area": 1200,
                "iscrowd": 0,
                "keypoints": [0] * 12,
                "num_keypoints": 0,
            }
            for i in range(6)
        ],
        "categories": [{"id": 1, "name": "x", "keypoints": list("abcd"), "skeleton": []}],
    }
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


# ---------------------------------------------------------------------------------- policies beyond one signal


def _clustered(n: int = 300, k: int = 17, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Three pose clusters (one per third of the rows): scores, cluster of each row, pose embedding (n, 2k)."""
    rng = np.random.default_rng(seed)
    cluster = np.repeat([0, 1, 2], n // 3)
    poses = rng.normal(0, 1, (3, 2 * k)) * 40
    spread = rng.normal(0, 1, (n, 2 * k)) * rng.uniform(0.2, 5.0, (n, 1))  # some people far from their cluster's pose
    keypoints = 100 + poses[cluster] + spread
    embedding = pose_embedding(keypoints, np.tile([0.0, 0.0, 200.0, 200.0], (n, 1)))
    return random_scores(n, seed), cluster, embedding


def _distance_to_cluster_pose(embedding: np.ndarray, cluster: np.ndarray) -> np.ndarray:
    """(n,) each row's distance to its cluster's mean pose: small = typical."""
    return np.linalg.norm(embedding - np.stack([embedding[cluster == c].mean(0) for c in cluster]), axis=1)


def test_cold_start_picks_one_typical_person_per_pose_cluster_then_moves_to_uncertainty():
    scores, cluster, embedding = _clustered()
    # the most uncertain people all stand far from their cluster's pose (atypical)
    distance = _distance_to_cluster_pose(embedding, cluster)
    scores["response"] = 1.0 / (1.0 + distance)
    by_response = {"response": 1.0}
    early = select(
        scores,
        policy="cold_start",
        budget=3,
        weights=by_response,
        embedding=embedding,
        labeled_count=0,
        cold_start_labels=100,
    )
    late = select(
        scores,
        policy="cold_start",
        budget=3,
        weights=by_response,
        embedding=embedding,
        labeled_count=500,
        cold_start_labels=100,
    )
    assert sorted(cluster[early.rows]) == [0, 1, 2] and sorted(cluster[late.rows]) == [0, 1, 2]
    rank_in_cluster = pd.Series(distance).groupby(cluster).rank().to_numpy()  # 1 = nearest the cluster's pose
    assert rank_in_cluster[early.rows].max() <= 10  # typical: among the 10 closest of 100 to the cluster's pose
    assert (rank_in_cluster[late.rows] == 100).all()  # the most uncertain of each cluster = its least typical here
    assert (
        early.counts["cold_start_uncertainty_weight_pct"] == 0
        and late.counts["cold_start_uncertainty_weight_pct"] == 100
    )
    with pytest.raises(ValueError, match="cold_start policy needs an embedding"):
        select(scores, policy="cold_start", budget=3, weights=WEIGHTS)


def test_typiclust_and_cluster_uncertainty_pick_one_person_per_cluster_whatever_the_labeled_count():
    scores, cluster, embedding = _clustered()
    distance = _distance_to_cluster_pose(embedding, cluster)
    scores["response"] = 1.0 / (1.0 + distance)  # the atypical are the uncertain
    # and the 3 most uncertain of all stand in cluster 0: top-k would send cluster 0 three times
    scores.loc[np.flatnonzero(cluster == 0)[:3], "response"] = -1.0
    rank_in_cluster = pd.Series(distance).groupby(cluster).rank().to_numpy()
    common = {"budget": 3, "weights": {"response": 1.0}, "embedding": embedding, "labeled_count": 10_000}
    typical = select(scores, policy="typiclust", **common)
    uncertain = select(scores, policy="cluster_uncertainty", **common)
    top_k = select(scores, policy="uncertainty", **common)
    assert sorted(cluster[typical.rows]) == [0, 1, 2] and sorted(cluster[uncertain.rows]) == [0, 1, 2]
    assert rank_in_cluster[typical.rows].max() <= 10  # typical even with 10,000 labels (cold_start would switch)
    assert set(cluster[top_k.rows]) == {0}
    assert scores["response"].to_numpy()[uncertain.rows].min() == -1.0  # cluster 0's pick is one of its 3
    assert sorted(np.sort(scores["response"].to_numpy()[uncertain.rows])[1:]) == sorted(
        scores["response"].to_numpy()[cluster == c].min() for c in (1, 2)
    )
    with pytest.raises(ValueError, match="typiclust policy needs an embedding"):
        select(scores, policy="typiclust", budget=3, weights=WEIGHTS)
    with pytest.raises(ValueError, match="does not rank"):
        select(scores, policy="typiclust", sampling="power", **common)


def test_power_sampling_favours_the_top_of_the_ranking_without_taking_it_whole():
    scores = random_scores(1000, seed=4)
    common = {"policy": "uncertainty", "budget": 50, "weights": WEIGHTS}
    position = np.empty(1000, np.int64)
    position[select(scores, budget=1000, policy="uncertainty", weights=WEIGHTS).rows] = np.arange(1000)
    top = select(scores, **common)
    drawn = [
        select(scores, sampling="power", power_beta=beta, seed=seed, **common) for beta in (1.0, 8.0) for seed in (0, 1)
    ]
    assert np.array_equal(select(scores, sampling="power", power_beta=1.0, seed=0, **common).rows, drawn[0].rows)
    assert not np.array_equal(drawn[0].rows, drawn[1].rows)  # another seed, other people
    next_round = select(scores, sampling="power", power_beta=1.0, seed=0, labeled_count=20, **common)
    assert not np.array_equal(next_round.rows, drawn[0].rows)  # and another round another draw
    mean_position = [position[d.rows].mean() for d in drawn]
    assert position[top.rows].mean() == pytest.approx(24.5)
    # p ~ r^beta over r in (0, 1]: the picks' mean position ~ 1 / (beta + 2) of the ranking; uniform would be 1/2
    assert 250 < mean_position[0] < 420 and 250 < mean_position[1] < 420
    assert 50 < mean_position[2] < 170 and 50 < mean_position[3] < 170
    assert all(len(set(d.rows)) == 50 for d in drawn)
    # it draws below the skipped tail, from what is left
    skipped = select(scores, sampling="power", power_beta=8.0, skip_top_share=0.5, **common)
    assert position[skipped.rows].min() >= 500


def test_every_policy_of_the_library_is_a_valid_params_value():
    assert set(get_args(get_type_hints(SelectParams)["policy"])) == set(POLICIES)


def test_feature_embedding_clusters_by_angle_and_needs_the_column():
    embedding = feature_embedding(np.array([[3.0, 4.0], [np.nan, np.nan], [0.0, 2.0]], np.float32))
    assert np.allclose(embedding, [[0.6, 0.8], [0.0, 0.0], [0.0, 1.0]])
    n = 6
    columns = {
        "instance_id": np.arange(n, dtype=np.int64),
        "image_id": np.arange(n, dtype=np.int64),
        "bbox": np.tile([0.0, 0.0, 50.0, 50.0], (n, 1)),
        "keypoints": np.zeros((n, 4)),
        "scores": np.ones((n, 2), np.float32),
        "image_readable": np.ones(n, bool),
        "response": np.linspace(0.1, 0.9, n),
    }
    cfg = SelectParams(policy="typiclust", embedding="features", budget=2, skip_top_share=0.0)
    without = to_table(columns)
    with pytest.raises(ValueError, match="no embedding column"):
        select_with_params(
            without.select(["instance_id", "image_id", "image_readable", "response"]).to_pandas(),
            without,
            cfg,
            exclude={},
            labeled_count=0,
        )
    # two directions of the feature space, at any length: one pick in each
    features = np.array([[1, 0], [2, 0.1], [5, 0.2], [0, 1], [0.1, 3], [0.2, 9]], np.float32)
    table = to_table(columns | {"embedding": features})
    chosen = select_with_params(
        table.select(["instance_id", "image_id", "image_readable", "response"]).to_pandas(),
        table,
        cfg,
        exclude={},
        labeled_count=0,
    )
    assert sorted(np.asarray(chosen.rows) // 3) == [0, 1]


def test_skip_hopeless_leaves_hopeless_people_out_and_queues_the_largest_for_review():
    n, k = 200, 17
    rng = np.random.default_rng(3)
    scores = random_scores(n)
    keypoint_scores = rng.uniform(0.5, 1.0, (n, k))
    hopeless = np.arange(n) < 30
    keypoint_scores[hopeless] = rng.uniform(0.0, 0.1, (30, k))  # the teacher finds nothing in these
    keypoint_scores[hopeless, :2] = 0.9  # ... two keypoints at most: still hopeless (< 3)
    scores["response"] = keypoint_scores.mean(1)  # so pure uncertainty would take the hopeless ones first
    area = rng.uniform(100, 10_000, n)
    by_response = {"response": 1.0}
    plain = select(scores, policy="uncertainty", budget=20, weights=by_response)
    assert hopeless[plain.rows].all()
    skipping = select(
        scores,
        policy="skip_hopeless",
        budget=20,
        weights=by_response,
        keypoint_scores=keypoint_scores,
        review_budget=3,
        box_area=area,
    )
    assert not hopeless[skipping.rows].any() and len(skipping.rows) == 20
    assert skipping.counts["excluded_hopeless"] == 30 and skipping.counts["review_queue"] == 3
    largest = np.flatnonzero(hopeless)[np.argsort(-area[hopeless])][:3]
    assert skipping.review_rows.tolist() == largest.tolist()
    # a teacher that finds (nearly) everyone hopeless does not starve the budget
    weak = select(scores, policy="skip_hopeless", budget=20, weights=by_response, keypoint_scores=keypoint_scores * 0.1)
    assert len(weak.rows) == 20 and weak.counts["hopeless_selected"] == 20
    with pytest.raises(ValueError, match="needs the per-keypoint scores"):
        select(scores, policy="skip_hopeless", budget=3, weights=by_response)
    out = selection_table(
        to_table(
            {
                "instance_id": scores["instance_id"].to_numpy(),
                "image_id": scores["image_id"].to_numpy(),
                "bbox": np.tile([0.0, 0.0, 10.0, 10.0], (n, 1)),
                "keypoints": rng.random((n, 2 * k)),
                "scores": keypoint_scores.astype(np.float32),
                **{s: scores[s].to_numpy() for s in SIGNALS if s in scores},
                "image_readable": np.ones(n, bool),
            }
        ),
        skipping,
    )
    assert out.column("queue").to_pylist() == ["correct"] * 20 + ["review"] * 3
    assert out.column("rank").to_pylist() == list(range(23))


def test_effort_prefers_the_person_with_fewer_keypoints_to_move_at_equal_uncertainty():
    k = 17
    scores = random_scores(4)
    scores["response"] = [0.2, 0.2, 0.9, 0.9]  # 0 and 1 equally uncertain; 2 and 3 confident
    keypoint_scores = np.full((4, k), 0.9)
    keypoint_scores[0] = 0.35  # every point of 0 probably off: ~11 moves
    keypoint_scores[1, :4] = 0.35  # four points of 1 probably off
    assert expected_moved_keypoints(keypoint_scores).round(2).tolist() == [11.05, 3.9, 1.7, 1.7]
    chosen = select(scores, policy="effort", budget=1, weights={"response": 1.0}, keypoint_scores=keypoint_scores)
    assert chosen.rows.tolist() == [1]
    assert select(scores, policy="uncertainty", budget=1, weights={"response": 1.0}).rows.tolist() == [0]


def test_the_annotators_skip_rule():
    visible_2 = [10, 10, 2, 20, 20, 2, 30, 30, 1, 40, 40, 1] + [0, 0, 0] * 13
    assert not is_unlabelable(visible_2)  # 4 labeled keypoints
    assert is_unlabelable(visible_2, min_visible=3)  # only 2 clearly visible
    assert is_unlabelable([10, 10, 2, 20, 20, 2] + [0, 0, 0] * 15)  # 2 labeled


def test_hopeless_filling_keeps_the_per_image_cap_and_cold_start_fills_its_budget():
    n, k = 12, 17
    scores = random_scores(n)
    scores["image_id"] = 0  # one image holds everyone
    keypoint_scores = np.full((n, k), 0.05)
    keypoint_scores[:2] = 0.9  # two people the teacher sees, ten hopeless ones
    chosen = select(
        scores,
        policy="skip_hopeless",
        budget=6,
        weights={"response": 1.0},
        per_image=3,
        keypoint_scores=keypoint_scores,
    )
    assert len(chosen.rows) == 3 and chosen.counts["hopeless_selected"] == 1  # 2 + 1 filled: the image's cap is 3
    # five distinct poses, ten people each: k-means finds at most five clusters, the budget of 20 is filled anyway
    same = random_scores(50)
    embedding = np.repeat(np.random.default_rng(0).normal(size=(5, 34)), 10, axis=0)
    picked = select(same, policy="cold_start", budget=20, weights={"response": 1.0}, embedding=embedding)
    assert len(picked.rows) == 20 == len(set(picked.rows.tolist()))


def test_detection_score_picks_the_found_people_the_finder_doubts_and_given_boxes_have_none():
    """detection_score is a signal like the others: low = uncertain; a person whose box was given has none (NaN),
    so the policy ranks only the found people and a pool without found people falls back as for any absent signal."""
    n = 10
    scores = pd.DataFrame(
        {
            "instance_id": np.arange(n, dtype=np.int64),
            "image_id": np.arange(n, dtype=np.int64),
            "image_readable": np.ones(n, bool),
            "response": np.linspace(0.1, 0.9, n),
            "detection_score": [np.nan, np.nan, 0.9, 0.35, 0.8, 0.31, 0.95, 0.5, np.nan, 0.7],
        }
    )
    chosen = select(scores, policy="detection_score", budget=3, weights={"detection_score": 1.0})
    assert scores["instance_id"].to_numpy()[chosen.rows].tolist() == [5, 3, 7]


def test_images_where_the_finder_found_nobody_are_never_ranked_and_a_few_go_to_their_own_queue():
    """The stand-in of an image where the finder found nobody (detection_score 0, the whole image) is no person to
    rank; up to nobody_found_budget of them, at random and never one already answered, go to the "nobody_found"
    queue beside the budget, so the people the finder missed there reach an annotator."""
    from pipeline.data.pool_predictions import NOBODY_FOUND_QUEUE
    from pipeline.selection import selection_table

    n = 12
    scores = pd.DataFrame(
        {
            "instance_id": np.arange(n, dtype=np.int64),
            "image_id": np.arange(n, dtype=np.int64),
            "image_readable": np.ones(n, bool),
            "response": np.linspace(0.1, 0.9, n),  # the stand-ins (0-4) are the least sure: the policy's first picks
            "detection_score": [0.0] * 5 + [0.5] * 7,
        }
    )
    chosen = select(
        scores,
        policy="uncertainty",
        budget=3,
        weights={"response": 1.0},
        nobody_found_budget=2,
        exclude={"skipped": [0]},
    )
    assert chosen.rows.tolist() == [5, 6, 7] and chosen.counts["nobody_found"] == 4
    assert len(chosen.nobody_found_rows) == 2 and set(chosen.nobody_found_rows.tolist()) <= {1, 2, 3, 4}
    table = selection_table(pa.table({"instance_id": scores["instance_id"], "image_id": scores["image_id"]}), chosen)
    assert table.column("queue").to_pylist() == ["correct"] * 3 + [NOBODY_FOUND_QUEUE] * 2
    unsent = select(scores, policy="uncertainty", budget=3, weights={"response": 1.0})
    assert len(unsent.nobody_found_rows) == 0 and unsent.rows.tolist() == [5, 6, 7]
    # a policy whose signal the stand-ins lack (NaN) still queues them, and their signals never shift the others'
    # ranks: the same people are chosen as without any stand-in
    no_signal = scores.assign(keypoint_jump=[np.nan] * 5 + list(np.linspace(1.0, 0.1, 7)))
    chosen = select(no_signal, policy="keypoint_jump", budget=2, weights={"keypoint_jump": 1.0}, nobody_found_budget=3)
    alone = select(no_signal.iloc[5:].reset_index(drop=True), policy="keypoint_jump", budget=2, weights={})
    assert len(chosen.nobody_found_rows) == 3 and (chosen.rows - 5).tolist() == alone.rows.tolist()


def test_keypoint_jump_measures_a_pose_against_the_nearest_person_of_the_neighbouring_drawn_frames():
    from pipeline.selection import keypoint_jump

    k = 3
    pose = np.array([[10.0, 10.0], [20.0, 10.0], [15.0, 30.0]])
    # video "a": frames 0, 10, 20, each with one person (box 10 x 40 -> size 20); the frame-10 person's keypoints are
    # 5 px off (a jump of 0.25 box units to each neighbour), frame 20 has a second person far away (not the nearest);
    # image 9 is a photo, not a frame
    rows = [
        (1, 100, [0, 0, 10, 40], pose),
        (2, 101, [0, 0, 10, 40], pose + np.array([5.0, 0.0])),
        (3, 102, [0, 0, 10, 40], pose),
        (4, 102, [200, 0, 10, 40], pose + np.array([200.0, 0.0])),
        (5, 9, [0, 0, 10, 40], pose),
    ]
    table = to_table(
        {
            "instance_id": np.array([r[0] for r in rows], np.int64),
            "image_id": np.array([r[1] for r in rows], np.int64),
            "bbox": np.array([r[2] for r in rows], np.float64),
            "keypoints": np.array([r[3].ravel() for r in rows]),
            "scores": np.ones((len(rows), k), np.float32),
        }
    )
    images = [{"id": 100 + i, "video": "a.mp4", "frame_index": 10 * i} for i in range(3)] + [{"id": 9}]
    jump = keypoint_jump(table, images)
    np.testing.assert_allclose(jump[:3], [0.25, 0.25, 0.25])
    assert jump[3] > 5 and np.isnan(jump[4])  # the far person's nearest neighbour is the frame-10 person

    # frame 10 with nobody found: its whole-frame stand-in is nobody to follow, so the others' jumps skip it
    stand_in = table.append_column("detection_score", pa.array([0.5, 0.0, 0.5, 0.5, np.nan]))
    jump = keypoint_jump(stand_in, images)
    assert np.isnan(jump[1]) and jump[0] == 0.0 and jump[2] == 0.0  # frames 0 and 20 are each other's neighbours
