"""Which pool instances a person should correct: per-instance scores -> a ranked, budgeted selection
(docs/DESIGN.md §6).

Every signal is oriented so that larger = more uncertain and rank-normalised to [0, 1] before it is weighted, so no
signal's scale dominates (a sigma in heatmap pixels and a share of hard keypoints are not comparable, their ranks
are). Everything is vectorised over rows; the Python loops run over the budget (k-center, the clusters of the
cluster policies) or k-means' iterations, never over the pool's rows.

Arrays: ``scores`` frames have one row per pool instance with columns instance_id, image_id, image_readable and the
signals of ``SIGNALS`` (NaN = signal absent, e.g. sahr_sigma of the ASLA head); keypoints (N, 2K) image px as
x0, y0, x1, ...; bbox (N, 4) x, y, w, h.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import SelectParams
from pipeline.corrections import read_store
from pipeline.data.pool_predictions import (
    NOBODY_FOUND_QUEUE,
    SIGNAL_COLUMNS,
    list_column,
    read_pool_predictions,
    stand_in_rows,
)
from pipeline.files import atomic_path

# +1: a larger value means more uncertain; -1: a smaller one does. Orientations are measured, not assumed
# (docs/BENCHMARKS.md, "How good each selection signal is"). sahr_sigma is -1: a SMALL effective sigma (a large SAHR
# scale s) goes with a large error (Spearman 0.27 on the default round's pool). Where the network cannot find a
# keypoint, the heatmap loss is cheapest with a sharper target (less mass to miss), so s grows there; a keypoint whose
# label position is ambiguous gets a wider one (tests/test_sahr_learns.py), but on a pose pool missed keypoints
# dominate.
SIGNALS: dict[str, int] = {
    "response": -1,
    "min_response": -1,
    "sahr_sigma": -1,
    "difficulty": +1,
    "flip_disagreement": +1,
    "detection_score": -1,  # a found person the finder is unsure of may be no person at all (pipeline/finding.py)
    "keypoint_jump": +1,  # DeepLabCut's outlier-frame rule: a pose far from its neighbours' in time is suspect
}
assert tuple(SIGNALS) == SIGNAL_COLUMNS, "every signal column of the pool predictions has an orientation here"
# Policies beyond one signal (issue #14; bench label_efficiency compares them in one run):
#   cold_start     clusters of the embedding (``select.embedding``: the pose, or the teacher's pooled features),
#                  one pick per cluster: the most typical person of it while the labeled set is small, the most
#                  uncertain once it has grown (TypiClust's finding: at small budgets typical examples teach more,
#                  at large ones uncertain ones); ``cold_start_labels`` sets the pace.
#   typiclust      the same clusters, always the most typical person of each (TypiClust, ICML 2022).
#   cluster_uncertainty  the same clusters, the most uncertain person of each: uncertainty acts only inside a
#                  cluster, so one region of hard people cannot take the whole budget.
#   skip_hopeless  combined uncertainty without the instances the teacher finds hopeless (``hopeless_rows``): they
#                  cost an annotator a look and are skipped; the ``review_budget`` largest go to a review queue.
#   effort         combined uncertainty per expected moved keypoint (``expected_moved_keypoints``): what teaches the
#                  model most per keypoint an annotator drags; hopeless instances are left out as for skip_hopeless.
COMBINED_POLICIES = ("cold_start", "typiclust", "cluster_uncertainty", "skip_hopeless", "effort")
POLICIES = ("uncertainty", "random", *COMBINED_POLICIES, *SIGNALS)
EXCLUDES_HOPELESS = ("skip_hopeless", "effort")
# one pick per k-means cluster of the embedding (``cluster_rows``); policy -> the weight of uncertainty against
# typicality inside a cluster (None: cold_start's, which grows with the labeled set)
CLUSTER_POLICIES: dict[str, float | None] = {"cold_start": None, "typiclust": 0.0, "cluster_uncertainty": 1.0}


# --------------------------------------------------------------------------------------------------- scores


def keypoint_jump(table: pa.Table, pool_images: list[dict]) -> np.ndarray:
    """(N,) the ``keypoint_jump`` column of a pool predictions table: for a person on a frame drawn from a video (a
    pool.json image with ``video`` and ``frame_index``), the larger, over the previous and the next drawn frame of
    that video, of the mean keypoint distance to the person there whose box centre is nearest, in units of the box
    size (sqrt(w * h)). NaN for images that are not video frames and for a frame without a drawn neighbour holding a
    person. Drawn frames may be far apart: the jump then includes real motion, which is why it is a rank, not a
    threshold."""
    frame_of = {im["id"]: (im["video"], im["frame_index"]) for im in pool_images if "video" in im}
    n = table.num_rows
    jump = np.full(n, np.nan)
    if not frame_of or n == 0:
        return jump
    image_ids = table.column("image_id").to_numpy()
    boxes = list_column(table, "bbox")
    keypoints = list_column(table, "keypoints").reshape(n, -1, 2)
    centres = boxes[:, :2] + boxes[:, 2:] / 2
    stand_in = stand_in_rows(table)  # a whole frame where nobody was found is nobody to follow
    rows_on: dict[int, list[int]] = {}
    for row, image_id in enumerate(image_ids):
        if int(image_id) in frame_of and not stand_in[row]:
            rows_on.setdefault(int(image_id), []).append(row)
    by_video: dict[str, list[tuple[int, int]]] = {}
    for image_id in rows_on:
        video, index = frame_of[image_id]
        by_video.setdefault(video, []).append((index, image_id))
    size = np.sqrt(np.maximum(boxes[:, 2] * boxes[:, 3], 1e-9))
    for frames in by_video.values():
        frames.sort()
        for position, (_, image_id) in enumerate(frames):
            rows = np.array(rows_on[image_id])
            for p in (position - 1, position + 1):  # one frame pair at a time, all its people at once
                if not 0 <= p < len(frames):
                    continue
                others = np.array(rows_on[frames[p][1]])
                distance = np.linalg.norm(centres[rows][:, None] - centres[others][None], axis=2)  # (R, S)
                nearest = others[distance.argmin(1)]
                moved = np.nanmean(np.linalg.norm(keypoints[rows] - keypoints[nearest], axis=2), axis=1) / size[rows]
                jump[rows] = np.fmax(jump[rows], moved)  # fmax: NaN (no neighbour yet) gives way
    return jump


def rank_normalize(values: np.ndarray) -> np.ndarray:
    """(N,) -> (N,) in [0, 1]: 0 the smallest, 1 the largest, ties share their average rank; NaN stays NaN."""
    ranks = pd.Series(values, copy=False).rank(method="average").to_numpy()
    valid = int(np.isfinite(values).sum())
    if valid <= 1:
        return np.where(np.isfinite(values), 0.5, np.nan)
    return (ranks - 1.0) / (valid - 1.0)


def signal_rank(scores: pd.DataFrame, signal: str) -> np.ndarray:
    """(N,) rank of one signal oriented so that 1 = most uncertain (NaN where the signal is absent)."""
    if signal not in scores:  # a table without it (detection_score: no found people)
        return np.full(len(scores), np.nan)
    values = scores[signal].to_numpy(dtype=np.float64, na_value=np.nan)
    return rank_normalize(SIGNALS[signal] * values)


def informative(values: np.ndarray, rel_spread: float = 1e-4) -> bool:
    """False for a signal that is (nearly) the same everywhere: its ranks would be noise, not information.

    Measured: the SAHR scale head of a short CPU-trained teacher stays at its zero init (sigma 1.999555 +- 2e-6 over
    646 instances), and ranking those last digits only diluted the combination (bench signals).
    """
    finite = values[np.isfinite(values)]
    if finite.size < 2:
        return False
    return float(finite.max() - finite.min()) > rel_spread * max(float(np.abs(finite).mean()), 1e-12)


def combined_uncertainty(scores: pd.DataFrame, weights: dict[str, float]) -> np.ndarray:
    """(N,) weighted mean of the oriented signal ranks; a signal absent on a row drops out of that row's mean, and a
    signal without spread (``informative``) drops out altogether.

    NaN only where no weighted signal exists at all (an unreadable image).
    """
    total = np.zeros(len(scores))
    weight_sum = np.zeros(len(scores))
    for signal, weight in weights.items():
        if weight <= 0 or signal not in scores or not informative(scores[signal].to_numpy(np.float64, na_value=np.nan)):
            continue
        ranks = signal_rank(scores, signal)
        present = np.isfinite(ranks)
        total += np.where(present, weight * ranks, 0.0)
        weight_sum += np.where(present, weight, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight_sum > 0, total / np.maximum(weight_sum, 1e-12), np.nan)


def expected_moved_keypoints(keypoint_scores: np.ndarray) -> np.ndarray:
    """(N, K) per-keypoint confidence in [0, 1] -> (N,) keypoints an annotator is expected to move or place.

    A keypoint scoring s is taken to be off with probability 1 - s (a missing score counts as off): the normalised
    heatmap peak is what the teacher itself says about the point, and it is all the select stage has before a person
    looks. It ranks instances, so its calibration matters less than its order.
    """
    confidence = np.clip(np.nan_to_num(keypoint_scores, nan=0.0), 0.0, 1.0)
    return (1.0 - confidence).sum(axis=1)


def hopeless_rows(keypoint_scores: np.ndarray, min_keypoints: int, min_score: float) -> np.ndarray:
    """(N, K) per-keypoint confidence -> (N,) bool: the teacher finds fewer than ``min_keypoints`` keypoints scoring
    ``min_score`` or more. The simulated annotator's rule for skipping a person (fewer than 3 labeled keypoints,
    pipeline/labelstudio/oracle.py) seen from the model's side: it cannot tell a person it fails on from a person
    nobody could label, which is why these go to a review queue instead of vanishing."""
    confident = (np.nan_to_num(keypoint_scores, nan=0.0) >= min_score).sum(axis=1)
    return confident < min_keypoints


def k_means(embedding: np.ndarray, clusters: int, seed: int = 0, iterations: int = 20) -> np.ndarray:
    """(M, D) -> (M,) cluster index in [0, clusters): Lloyd's algorithm from k-means++ seeds, deterministic per seed."""
    m = len(embedding)
    clusters = max(1, min(clusters, m))
    rng = np.random.default_rng(seed)
    centres = [embedding[rng.integers(m)]]
    distance = np.sum((embedding - centres[0]) ** 2, axis=1)
    for _ in range(clusters - 1):
        total = distance.sum()
        nxt = rng.choice(m, p=distance / total) if total > 0 else rng.integers(m)
        centres.append(embedding[nxt])
        distance = np.minimum(distance, np.sum((embedding - embedding[nxt]) ** 2, axis=1))
    centre = np.stack(centres)
    assignment = np.zeros(m, np.int64)
    for _ in range(iterations):
        d2 = (embedding**2).sum(1)[:, None] - 2 * embedding @ centre.T + (centre**2).sum(1)[None, :]
        assignment = np.argmin(d2, axis=1)
        for c in range(len(centre)):
            members = embedding[assignment == c]
            if len(members):
                centre[c] = members.mean(axis=0)
    return assignment


def typicality(embedding: np.ndarray, neighbours: int = 20, reference: int = 2000, seed: int = 0) -> np.ndarray:
    """(M, D) -> (M,) inverse mean distance to the ``neighbours`` nearest others (TypiClust's density): large where
    many people stand in nearly the same pose. Distances go to at most ``reference`` people drawn at random (memory
    M x reference, not M^2: a cluster of a 150k pool holds thousands)."""
    m = len(embedding)
    if m <= 1:
        return np.ones(m)
    ref = np.arange(m) if m <= reference else np.sort(np.random.default_rng(seed).choice(m, reference, replace=False))
    others = embedding[ref]
    d2 = (embedding**2).sum(1)[:, None] - 2 * embedding @ others.T + (others**2).sum(1)[None, :]
    distance = np.sqrt(np.maximum(d2, 0.0))
    distance[ref, np.arange(len(ref))] = np.inf  # a person is not its own neighbour
    k = min(neighbours, len(ref) - 1)
    nearest = np.partition(distance, k - 1, axis=1)[:, :k]
    return 1.0 / (nearest.mean(axis=1) + 1e-9)


def cluster_rows(
    candidates: np.ndarray,
    uncertainty: np.ndarray,
    embedding: np.ndarray,
    count: int,
    uncertainty_weight: float,
    seed: int = 0,
) -> np.ndarray:
    """``count`` rows of ``candidates`` (positions, best first), one per k-means cluster of their embedding.

    Within a cluster the pick maximises (1 - w) x typicality rank + w x uncertainty rank (both in [0, 1] within the
    cluster), w = ``uncertainty_weight``; clusters are visited largest first, so the picks cover the common poses
    first. ``uncertainty`` (N,) and ``embedding`` (N, D) are indexed by position.
    """
    if count <= 0 or len(candidates) == 0:
        return np.zeros(0, np.int64)
    cluster = k_means(embedding[candidates], count, seed)
    picks: list[tuple[int, int]] = []  # (cluster size, row)
    for c in np.unique(cluster):
        members = candidates[cluster == c]
        typical = rank_normalize(typicality(embedding[members]))
        uncertain = rank_normalize(np.nan_to_num(uncertainty[members], nan=0.0))
        blended = (1.0 - uncertainty_weight) * typical + uncertainty_weight * uncertain
        picks.append((len(members), int(members[np.lexsort((members, -blended))[0]])))
    picks.sort(key=lambda p: (-p[0], p[1]))
    rows = [row for _, row in picks[:count]]
    if len(rows) < count:  # fewer clusters than picks (people in identical poses): the rest in candidate order
        rows += [int(r) for r in candidates if r not in set(rows)][: count - len(rows)]
    return np.asarray(rows, np.int64)


def policy_scores(scores: pd.DataFrame, policy: str, weights: dict[str, float], seed: int = 0) -> np.ndarray:
    """(N,) the number a policy ranks by (larger = chosen first). The cluster policies rank by the combined
    uncertainty here (their picks come from ``cluster_rows``); effort needs the keypoint scores and is ranked in
    ``select``."""
    if policy in ("uncertainty", "skip_hopeless", *CLUSTER_POLICIES):
        return combined_uncertainty(scores, weights)
    if policy == "random":
        random = np.random.default_rng(seed).random(len(scores))
        readable = scores["image_readable"].to_numpy(dtype=bool)
        return np.where(readable, random, np.nan)
    if policy in SIGNALS:
        return signal_rank(scores, policy)
    raise ValueError(f"unknown selection policy {policy!r}; expected one of {', '.join(POLICIES)}")


# --------------------------------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class Selection:
    """Row positions into the scores frame, most wanted first, and the counts behind them."""

    rows: np.ndarray  # (B,) int64 positions into the scores frame
    policy_score: np.ndarray  # (N,) what the policy ranked by
    uncertainty: np.ndarray  # (N,) combined uncertainty (the task's data.uncertainty)
    counts: dict[str, int]
    review_rows: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))  # (R,) hopeless ones
    # for a person to look at (queue "review" in selection.parquet), largest box first
    nobody_found_rows: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))  # (E,) images
    # where the finder found nobody, drawn at random, for a person to look at (queue "nobody_found")


def pose_embedding(keypoints: np.ndarray, bbox: np.ndarray) -> np.ndarray:
    """(N, 2K) image px, (N, 4) boxes -> (N, 2K) keypoints relative to the box centre in units of its longer side.

    Two people in the same pose get the same embedding wherever and however large they are.
    """
    centre = np.tile(bbox[:, :2] + bbox[:, 2:] / 2.0, keypoints.shape[1] // 2)
    size = np.maximum(bbox[:, 2:].max(axis=1, keepdims=True), 1e-6)
    return np.nan_to_num((keypoints - centre) / size)


def feature_embedding(features: np.ndarray) -> np.ndarray:
    """(N, C) the teacher's pooled backbone features (pool predictions' ``embedding``) -> (N, C) unit vectors, so
    that k-means and typicality measure the angle between people (TypiClust clusters normalised features); an
    unreadable row (NaN) becomes the zero vector."""
    features = np.nan_to_num(features.astype(np.float64))
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def power_sample(count: int, size: int, beta: float, seed: int | list[int]) -> np.ndarray:
    """``size`` of the positions 0..count-1 (a ranking, best first) drawn without replacement with probability
    proportional to r^beta, r = (count - position) / count the rank-normalised score (power acquisition, Kirsch et
    al., TMLR 2023), by the Gumbel-top-k trick; returned in ranking order. r comes from the position, so people the
    policy scores equal get different weights, in the ranking's tie order (instance id)."""
    size = min(size, count)
    if size <= 0:
        return np.zeros(0, np.int64)
    r = (count - np.arange(count)) / count
    keys = beta * np.log(r) + np.random.default_rng(seed).gumbel(size=count)
    return np.sort(np.argpartition(-keys, size - 1)[:size])


def k_center_greedy(embedding: np.ndarray, count: int, first: int = 0) -> np.ndarray:
    """Indices of ``count`` rows of ``embedding`` (M, D), each the farthest from those already chosen.

    Starts at ``first`` (the most uncertain candidate), so diversity is spread around the top of the ranking.
    """
    count = min(count, len(embedding))
    if count == 0:
        return np.zeros(0, np.int64)
    chosen = [first]
    distance = np.linalg.norm(embedding - embedding[first], axis=1)
    for _ in range(count - 1):
        nxt = int(np.argmax(distance))
        chosen.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(embedding - embedding[nxt], axis=1))
    return np.asarray(chosen, np.int64)


def select(
    scores: pd.DataFrame,
    *,
    policy: str,
    budget: int,
    weights: dict[str, float],
    exclude: dict[str, Iterable[int]] | None = None,
    per_image: int = 0,
    diversity: bool = False,
    diversity_candidates: float = 4.0,
    embedding: np.ndarray | None = None,
    random_share: float = 0.0,
    skip_top_share: float = 0.0,
    sampling: str = "top",
    power_beta: float = 1.0,
    seed: int = 0,
    keypoint_scores: np.ndarray | None = None,
    labeled_count: int = 0,
    cold_start_labels: int = 400,
    hopeless_min_keypoints: int = 3,
    hopeless_min_score: float = 0.3,
    review_budget: int = 0,
    box_area: np.ndarray | None = None,
    nobody_found_budget: int = 0,
) -> Selection:
    """Choose up to ``budget`` instances.

    Args:
        scores: one row per pool instance (see module docstring).
        exclude: {reason: instance ids}, e.g. labeled / pending / skipped; never selected, each reason counted.
        per_image: at most this many instances of one image (0: no cap).
        diversity: k-center greedy on ``embedding`` (N, D) among the ``diversity_candidates`` x budget best.
        embedding: (N, D) what the cluster policies (``CLUSTER_POLICIES``) and diversity measure likeness in
            (``pose_embedding`` or ``feature_embedding``).
        random_share: this share of the budget is drawn at random (``seed``) from the candidates the policy did not
            pick (below the ``skip_top_share`` left out); the rest goes to the policy's best. Pure uncertainty
            over-samples the hardest people (84% tagged hard vs 56% for random in bench label_efficiency); a random
            share keeps the typical ones coming.
        skip_top_share: this share of the eligible candidates, the ones the policy ranks first, is left out before
            anything is picked and before the per-image cap (counted as ``skipped_top``), but never so many that fewer
            than ``budget`` remain. It applies to every policy; it was measured with ``uncertainty``.
            The people a teacher gets most wrong (few visible keypoints, a pair of legs at the image border) teach
            a model trained on few labels something wrong, while the hard people just below them teach nearly as
            much as random ones (docs/BENCHMARKS.md, "Issue #26 at a glance").
        sampling: "top" takes the policy's best; "power" draws them (``power_sample``, exponent ``power_beta``,
            ``seed`` and ``labeled_count``) from the ranking that is left after the skip and the cap. Not with a
            cluster policy or diversity, which choose by their own rule.
        keypoint_scores: (N, K) per-keypoint confidence, needed by skip_hopeless and effort (hopeless_rows,
            expected_moved_keypoints).
        labeled_count, cold_start_labels: cold_start weighs uncertainty by labeled_count / cold_start_labels (capped
            at 1) against typicality.
        review_budget: policies that leave hopeless instances out (EXCLUDES_HOPELESS) put up to this many of them,
            largest box first (``box_area`` (N,) px^2), in ``Selection.review_rows``; not part of ``budget``.
        nobody_found_budget: the stand-ins of images where the finder found nobody (``detection_score`` 0,
            ``pool_predictions.nobody_found``) are never ranked (their keypoints are the teacher's guess at a whole
            image); up to this many, drawn at random (``seed``), go to ``Selection.nobody_found_rows``, for a person to
            draw whoever the finder missed there or say there is nobody; not part of ``budget``.

    Long because the policies share one ranked table and one budget; each branch is a few lines and reads best
    beside the others.
    """
    ids = scores["instance_id"].to_numpy(np.int64)
    # the stand-in of an image where the finder found nobody is no person: its signals (the teacher's guess at a
    # whole image) are neither ranked nor part of any signal's normalisation
    stand_in = stand_in_rows(scores)
    if stand_in.any():
        scores = scores.copy()
        scores.loc[stand_in, [c for c in SIGNAL_COLUMNS if c in scores]] = np.nan
    uncertainty = combined_uncertainty(scores, weights)
    if policy == "uncertainty":
        ranked_by = uncertainty
    elif policy == "effort":
        if keypoint_scores is None:
            raise ValueError("the effort policy needs the per-keypoint scores")
        ranked_by = uncertainty / (1.0 + expected_moved_keypoints(keypoint_scores))
    else:
        ranked_by = policy_scores(scores, policy, weights, seed)
    eligible = np.isfinite(ranked_by)
    counts = {"pool": len(scores), "unreadable": int((~scores["image_readable"].to_numpy(bool)).sum())}
    for reason, excluded_ids in (exclude or {}).items():
        hit = np.isin(ids, np.fromiter(excluded_ids, np.int64))
        counts[f"excluded_{reason}"] = int((hit & eligible).sum())
        eligible &= ~hit
        stand_in &= ~hit
    if stand_in.any():
        eligible &= ~stand_in  # their own queue below, whatever the policy ranks by
        stand_in &= scores["image_readable"].to_numpy(bool)
        counts["nobody_found"] = int(stand_in.sum())
    hopeless = np.zeros(len(scores), bool)
    if policy in EXCLUDES_HOPELESS:
        if keypoint_scores is None:
            raise ValueError(f"the {policy} policy needs the per-keypoint scores")
        hopeless = hopeless_rows(keypoint_scores, hopeless_min_keypoints, hopeless_min_score) & eligible
        counts["excluded_hopeless"] = int(hopeless.sum())
        eligible &= ~hopeless
    counts["eligible"] = int(eligible.sum())

    # most wanted first; ties broken by instance id so the same scores always give the same selection
    order = np.lexsort((ids, -np.nan_to_num(ranked_by, nan=-np.inf)))
    candidates = order[eligible[order]]
    if not 0.0 <= skip_top_share < 1.0:
        raise ValueError(f"skip_top_share must be in [0, 1), got {skip_top_share}")
    if skip_top_share > 0:
        # never below the budget: a pool with no more eligible people than the budget is sent whole
        skipped_top = min(round(skip_top_share * len(candidates)), max(0, len(candidates) - budget))
        counts["skipped_top"] = skipped_top
        candidates = candidates[skipped_top:]
    if per_image > 0:
        image_of = scores["image_id"].to_numpy(np.int64)[candidates]
        nth_of_image = pd.Series(image_of).groupby(image_of).cumcount().to_numpy()
        counts["capped_per_image"] = int((nth_of_image >= per_image).sum())
        candidates = candidates[nth_of_image < per_image]
    if not 0.0 <= random_share <= 1.0:
        raise ValueError(f"random_share must be in [0, 1], got {random_share}")
    by_policy = budget - round(budget * random_share)
    if hopeless.any() and len(candidates) < budget:
        # a weak teacher finds most people hopeless: fill the budget with them (policy order) rather than starve it,
        # under the same per-image cap
        filling = order[hopeless[order]]
        if per_image > 0:
            image_ids = scores["image_id"].to_numpy(np.int64)
            taken = pd.Series(image_ids[candidates]).value_counts()
            nth = pd.Series(image_ids[filling]).groupby(image_ids[filling]).cumcount().to_numpy()
            already = taken.reindex(image_ids[filling], fill_value=0).to_numpy()
            filling = filling[nth + already < per_image]
        filling = filling[: budget - len(candidates)]
        counts["hopeless_selected"] = len(filling)
        candidates = np.concatenate([candidates, filling])
        hopeless[filling] = False
    clustered = policy in CLUSTER_POLICIES
    if (clustered or diversity) and embedding is None:
        raise ValueError(f"{f'the {policy} policy' if clustered else 'diversity'} needs an embedding")
    if sampling not in ("top", "power"):
        raise ValueError(f"sampling must be 'top' or 'power', got {sampling!r}")
    if sampling == "power" and (clustered or diversity):
        raise ValueError(f"sampling 'power' draws from a ranking; {policy if clustered else 'diversity'} does not rank")
    if clustered:
        weight = CLUSTER_POLICIES[policy]
        if weight is None:
            weight = min(1.0, labeled_count / max(cold_start_labels, 1))
            counts["cold_start_uncertainty_weight_pct"] = round(100 * weight)
        rows = cluster_rows(candidates, uncertainty, embedding, by_policy, weight, seed)
    elif diversity and len(candidates) > by_policy > 0:
        top = candidates[: int(np.ceil(by_policy * diversity_candidates))]
        rows = top[k_center_greedy(embedding[top], by_policy)]
    elif sampling == "power":
        # the labeled count in the seed: a new draw each round, not the same rank positions again
        rows = candidates[power_sample(len(candidates), by_policy, power_beta, [seed, labeled_count])]
    else:
        rows = candidates[:by_policy]
    if by_policy < budget:
        rest = candidates[~np.isin(candidates, rows)]
        drawn = np.random.default_rng(seed).choice(len(rest), size=min(budget - by_policy, len(rest)), replace=False)
        rows = np.concatenate([rows, rest[np.sort(drawn)]])  # drawn ones after the policy's, in the policy's order
        counts["selected_at_random"] = len(drawn)
    counts["selected"] = len(rows)
    review = np.zeros(0, np.int64)
    if review_budget > 0 and hopeless.any():
        # a large box the teacher finds nothing in is more likely the teacher's failure than an unlabelable person
        hopeless_at = np.flatnonzero(hopeless)
        area = np.zeros(len(hopeless_at)) if box_area is None else box_area[hopeless_at]
        review = hopeless_at[np.lexsort((ids[hopeless_at], -area))][:review_budget]
    counts["review_queue"] = len(review)
    look = np.zeros(0, np.int64)
    if nobody_found_budget > 0 and stand_in.any():
        at = np.flatnonzero(stand_in)
        look = np.sort(np.random.default_rng([seed, 1]).choice(at, min(nobody_found_budget, len(at)), replace=False))
        counts["nobody_found_queue"] = len(look)
    return Selection(
        rows=rows,
        policy_score=ranked_by,
        uncertainty=uncertainty,
        counts=counts,
        review_rows=review,
        nobody_found_rows=look,
    )


def select_with_params(
    scores: pd.DataFrame,
    table: pa.Table,
    cfg: SelectParams,
    *,
    exclude: dict[str, Iterable[int]],
    labeled_count: int,
    seed: int | None = None,
    budget: int | None = None,
) -> Selection:
    """``select`` with params.yaml's ``select`` section (``cfg``: pipeline.config.SelectParams), the embedding and
    keypoint scores read from the pool predictions ``table`` where the policy needs them: what the select stage and
    bench label_efficiency both call. ``seed`` / ``budget`` override the section's."""
    bbox = list_column(table, "bbox")
    embedding = None
    if cfg.diversity or cfg.policy in CLUSTER_POLICIES:
        if cfg.embedding == "pose":
            embedding = pose_embedding(list_column(table, "keypoints"), bbox)
        elif "embedding" in table.column_names:
            embedding = feature_embedding(list_column(table, "embedding"))
        else:
            raise ValueError(
                "select.embedding is 'features' but the pool predictions have no embedding column (written before "
                "it): run the pseudolabel stage again (dvc repro -f -s pseudolabel)"
            )
    keypoint_scores = list_column(table, "scores") if cfg.policy in EXCLUDES_HOPELESS else None
    return select(
        scores,
        policy=cfg.policy,
        budget=cfg.budget if budget is None else budget,
        weights=dataclasses.asdict(cfg.weights),
        exclude=exclude,
        per_image=cfg.per_image,
        diversity=cfg.diversity,
        diversity_candidates=cfg.diversity_candidates,
        embedding=embedding,
        random_share=cfg.random_share,
        skip_top_share=cfg.skip_top_share,
        sampling=cfg.sampling,
        power_beta=cfg.power_beta,
        seed=cfg.seed if seed is None else seed,
        keypoint_scores=keypoint_scores,
        labeled_count=labeled_count,
        cold_start_labels=cfg.cold_start_labels,
        hopeless_min_keypoints=cfg.hopeless_min_keypoints,
        hopeless_min_score=cfg.hopeless_min_score,
        review_budget=cfg.review_budget,
        box_area=bbox[:, 2] * bbox[:, 3],
        nobody_found_budget=cfg.nobody_found_budget,
    )


def selection_table(table: pa.Table, selection: Selection) -> pa.Table:
    """The selected rows of the pool predictions with ``rank`` (0 = first), ``queue`` ("correct", then "review" for
    the review queue's rows, then "nobody_found" for images where the finder found nobody) and ``uncertainty`` /
    ``policy_score`` columns: the artifacts/selection.parquet contract (docs/contracts/labelstudio.md)."""
    rows = np.concatenate([selection.rows, selection.review_rows, selection.nobody_found_rows]).astype(np.int64)
    chosen = table.take(pa.array(rows, pa.int64()))
    chosen = chosen.append_column("rank", pa.array(np.arange(len(rows), dtype=np.int32)))
    queue = (
        ["correct"] * len(selection.rows)
        + ["review"] * len(selection.review_rows)
        + [NOBODY_FOUND_QUEUE] * len(selection.nobody_found_rows)
    )
    chosen = chosen.append_column("queue", pa.array(queue, pa.string()))
    chosen = chosen.append_column("uncertainty", pa.array(np.nan_to_num(selection.uncertainty[rows])))
    return chosen.append_column("policy_score", pa.array(np.nan_to_num(selection.policy_score[rows])))


def excluded_instances(
    labeled: list[Path], corrections: Path, pending: Path | None, no_person_ids: Iterable[int] = ()
) -> dict[str, set[int]]:
    """{reason: instance ids} that must not be selected again: labeled (the labeled sets and every stored
    correction), skipped (stored skips, and ``no_person_ids``: the people merge ruled "no person", its report's
    ``no_person_ids``, among them a false find a retrained finder gives under another id), pending (sent to Label
    Studio, not answered yet)."""
    labeled_ids: set[int] = set()
    for path in labeled:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: labeled set not found")
        labeled_ids |= {int(a["id"]) for a in json.loads(path.read_text())["annotations"]}
    done, skips = read_store(corrections)
    pending_ids: set[int] = set()
    if pending is not None and pending.is_file():
        pending_ids = {int(i) for i in json.loads(pending.read_text())["pending"]}
    return {
        "labeled": labeled_ids | {c.instance_id for c in done},
        "skipped": {s.instance_id for s in skips} | {int(i) for i in no_person_ids},
        "pending": pending_ids,
    }


def selection_metrics(
    scores: pd.DataFrame, selection: Selection, policy: str, budget: int
) -> tuple[dict, dict[str, np.ndarray], np.ndarray]:
    """metrics/selection.json (policy, budget, the selection's counts, images selected, each signal's mean over the
    selected and the rest), the signals (N,) per name including the combined uncertainty, and the (N,) chosen mask."""
    chosen = np.zeros(len(scores), bool)
    chosen[selection.rows] = True
    signals = {s: scores[s].to_numpy(np.float64, na_value=np.nan) for s in SIGNALS}
    signals["uncertainty"] = selection.uncertainty
    metrics = {
        "policy": policy,
        "budget": budget,
        **selection.counts,
        "images_selected": int(scores["image_id"][chosen].nunique()),
    }
    for name, values in signals.items():
        if np.isfinite(values).any() and chosen.any():
            metrics[f"{name}_selected_mean"] = round(float(np.nanmean(values[chosen])), 5)
            metrics[f"{name}_rest_mean"] = round(float(np.nanmean(values[~chosen])), 5) if (~chosen).any() else None
    return metrics, signals, chosen


def select_next(
    cfg: SelectParams,
    predictions: Path,
    labeled: list[Path],
    corrections: Path,
    pending: Path | None,
    out: Path,
    *,
    seed: int | None = None,
    budget: int | None = None,
    no_person_ids: Iterable[int] = (),
) -> tuple[Selection, pd.DataFrame, pa.Table]:
    """The people annotators should see next -> ``out`` (selection.parquet: the chosen rows of the pool predictions,
    ``rank`` 0 first, then the review queue). Never an instance that is labeled (``labeled`` files and stored
    corrections), skipped or ruled "no person" (``no_person_ids``, merge's report), or pending in Label Studio.
    ``cfg`` is params.yaml's ``select``; ``seed`` / ``budget`` override its own. Returns (the selection, the
    predictions' scalar frame, the predictions table)."""
    scores, table = read_pool_predictions(predictions)
    exclude = excluded_instances(labeled, corrections, pending, no_person_ids)
    selection = select_with_params(
        scores, table, cfg, exclude=exclude, labeled_count=len(exclude["labeled"]), seed=seed, budget=budget
    )
    with atomic_path(out) as tmp:
        pq.write_table(selection_table(table, selection), tmp)
    return selection, scores, table
