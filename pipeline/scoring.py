"""Which pool instances a person should correct: per-instance scores -> a ranked, budgeted selection (DESIGN.md §6).

Every signal is oriented so that larger = more uncertain and rank-normalised to [0, 1] before it is weighted, so no
signal's scale dominates (a sigma in heatmap pixels and a share of hard keypoints are not comparable, their ranks
are). Everything is vectorised over rows; the only Python loop is k-center's loop over the budget.

Arrays: ``scores`` frames have one row per pool instance with columns instance_id, image_id, image_readable and the
signals of ``SIGNALS`` (NaN = signal absent, e.g. sahr_sigma of the ASLA head); keypoints (N, 2K) image px as
x0, y0, x1, ...; bbox (N, 4) x, y, w, h.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

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
}
POLICIES = ("uncertainty", "random", *SIGNALS)


# --------------------------------------------------------------------------------------------------- reading


def list_column(table: pa.Table, name: str) -> np.ndarray:
    """A fixed-size list column -> (N, L) numpy array without a Python loop over rows."""
    column = table.column(name).combine_chunks()
    width = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), width)


def read_scores(path: Path) -> tuple[pd.DataFrame, pa.Table]:
    """pool_predictions.parquet -> (scalar columns as a DataFrame, the whole Arrow table for the list columns)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no pool predictions (run the pseudolabel stage first)")
    table = pq.read_table(path)
    missing = {"instance_id", "image_id", "image_readable", *SIGNALS} - set(table.column_names)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    scalars = [c for c in table.column_names if not pa.types.is_fixed_size_list(table.schema.field(c).type)]
    return table.select(scalars).to_pandas(), table


# --------------------------------------------------------------------------------------------------- scores


def rank_normalize(values: np.ndarray) -> np.ndarray:
    """(N,) -> (N,) in [0, 1]: 0 the smallest, 1 the largest, ties share their average rank; NaN stays NaN."""
    ranks = pd.Series(values, copy=False).rank(method="average").to_numpy()
    valid = int(np.isfinite(values).sum())
    if valid <= 1:
        return np.where(np.isfinite(values), 0.5, np.nan)
    return (ranks - 1.0) / (valid - 1.0)


def signal_rank(scores: pd.DataFrame, signal: str) -> np.ndarray:
    """(N,) rank of one signal oriented so that 1 = most uncertain (NaN where the signal is absent)."""
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


def policy_scores(scores: pd.DataFrame, policy: str, weights: dict[str, float], seed: int = 0) -> np.ndarray:
    """(N,) the number a policy ranks by (larger = chosen first)."""
    if policy == "uncertainty":
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
    uncertainty: np.ndarray  # (N,) combined uncertainty (the task score shown to annotators)
    counts: dict[str, int]


def pose_embedding(keypoints: np.ndarray, bbox: np.ndarray) -> np.ndarray:
    """(N, 2K) image px, (N, 4) boxes -> (N, 2K) keypoints relative to the box centre in units of its longer side.

    Two people in the same pose get the same embedding wherever and however large they are.
    """
    centre = np.tile(bbox[:, :2] + bbox[:, 2:] / 2.0, keypoints.shape[1] // 2)
    size = np.maximum(bbox[:, 2:].max(axis=1, keepdims=True), 1e-6)
    return np.nan_to_num((keypoints - centre) / size)


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
    seed: int = 0,
) -> Selection:
    """Choose up to ``budget`` instances.

    Args:
        scores: one row per pool instance (see module docstring).
        exclude: {reason: instance ids}, e.g. labeled / pending / skipped; never selected, each reason counted.
        per_image: at most this many instances of one image (0: no cap).
        diversity: k-center greedy on ``embedding`` (N, D) among the ``diversity_candidates`` x budget best.
        random_share: this share of the budget is drawn at random (``seed``) from the eligible candidates the policy
            did not pick; the rest goes to the policy's best. Pure uncertainty over-samples the hardest people (84%
            tagged hard vs 56% for random in bench label_efficiency); a random share keeps the typical ones coming.
    """
    ids = scores["instance_id"].to_numpy(np.int64)
    uncertainty = combined_uncertainty(scores, weights)
    ranked_by = uncertainty if policy == "uncertainty" else policy_scores(scores, policy, weights, seed)
    eligible = np.isfinite(ranked_by)
    counts = {"pool": len(scores), "unreadable": int((~scores["image_readable"].to_numpy(bool)).sum())}
    for reason, excluded_ids in (exclude or {}).items():
        hit = np.isin(ids, np.fromiter(excluded_ids, np.int64)) & eligible
        counts[f"excluded_{reason}"] = int(hit.sum())
        eligible &= ~hit
    counts["eligible"] = int(eligible.sum())

    # most wanted first; ties broken by instance id so the same scores always give the same selection
    order = np.lexsort((ids, -np.nan_to_num(ranked_by, nan=-np.inf)))
    candidates = order[eligible[order]]
    if per_image > 0:
        image_of = scores["image_id"].to_numpy(np.int64)[candidates]
        nth_of_image = pd.Series(image_of).groupby(image_of).cumcount().to_numpy()
        counts["capped_per_image"] = int((nth_of_image >= per_image).sum())
        candidates = candidates[nth_of_image < per_image]
    if not 0.0 <= random_share <= 1.0:
        raise ValueError(f"random_share must be in [0, 1], got {random_share}")
    by_policy = budget - round(budget * random_share)
    if diversity and len(candidates) > by_policy > 0:
        if embedding is None:
            raise ValueError("diversity needs a pose embedding")
        top = candidates[: int(np.ceil(by_policy * diversity_candidates))]
        rows = top[k_center_greedy(embedding[top], by_policy)]
    else:
        rows = candidates[:by_policy]
    if by_policy < budget:
        rest = candidates[~np.isin(candidates, rows)]
        drawn = np.random.default_rng(seed).choice(len(rest), size=min(budget - by_policy, len(rest)), replace=False)
        rows = np.concatenate([rows, rest[np.sort(drawn)]])  # drawn ones after the policy's, in the policy's order
        counts["selected_at_random"] = len(drawn)
    counts["selected"] = len(rows)
    return Selection(rows=rows, policy_score=ranked_by, uncertainty=uncertainty, counts=counts)


def selection_table(table: pa.Table, selection: Selection) -> pa.Table:
    """The selected rows of the pool predictions with ``rank`` (0 = first) and ``uncertainty`` / ``policy_score``
    columns: the artifacts/selection.parquet contract (docs/contracts/labelstudio.md)."""
    rows = selection.rows
    chosen = table.take(pa.array(rows, pa.int64()))
    chosen = chosen.append_column("rank", pa.array(np.arange(len(rows), dtype=np.int32)))
    chosen = chosen.append_column("uncertainty", pa.array(np.nan_to_num(selection.uncertainty[rows])))
    return chosen.append_column("policy_score", pa.array(np.nan_to_num(selection.policy_score[rows])))


# --------------------------------------------------------------------------------------------------- pseudo-labels


def confident_rows(
    scores: pd.DataFrame, keypoint_scores: np.ndarray, *, min_score: float, min_keypoints: int, max_flip: float
) -> np.ndarray:
    """(N,) bool: instances whose prediction can serve as a label without a person looking at it.

    At least ``min_keypoints`` keypoints score >= ``min_score`` and (where flip test ran) the plain and flipped
    predictions agree within ``max_flip`` box units. ``keypoint_scores`` (N, K).
    """
    confident_keypoints = (np.nan_to_num(keypoint_scores, nan=0.0) >= min_score).sum(axis=1)
    flip = scores["flip_disagreement"].to_numpy(dtype=np.float64, na_value=np.nan)
    agree = np.where(np.isfinite(flip), flip <= max_flip, True)
    readable = scores["image_readable"].to_numpy(bool)
    return readable & agree & (confident_keypoints >= min_keypoints)


def pseudo_label_coco(
    pool: dict, table: pa.Table, rows: np.ndarray, *, min_score: float, model_version: str | None
) -> dict:
    """COCO keypoints of the confident rows (``source: "pseudo"``): keypoints scoring below ``min_score`` get v=0 so
    training ignores them; the others v=2. Images and categories from pool.json; annotations keep the pool's ids."""
    keypoints = list_column(table, "keypoints")[rows]
    keypoint_scores = list_column(table, "scores")[rows]
    ids = table.column("instance_id").to_numpy()[rows]
    by_id = {int(a["id"]): a for a in pool["annotations"]}
    annotations = []
    for iid, kp, sc in zip(ids, keypoints, keypoint_scores, strict=True):
        base = by_id[int(iid)]
        xy = kp.reshape(-1, 2)
        keep = np.nan_to_num(sc, nan=0.0) >= min_score
        flat = np.concatenate([np.where(keep[:, None], xy, 0.0), np.where(keep, 2.0, 0.0)[:, None]], axis=1)
        annotations.append({**base, "keypoints": [round(float(v), 3) for v in flat.ravel()],
                            "num_keypoints": int(keep.sum()), "source": "pseudo", "model_version": model_version,
                            "score": round(float(np.nanmean(sc)), 4)})  # fmt: skip
    image_ids = {a["image_id"] for a in annotations}
    images = [im for im in pool["images"] if im["id"] in image_ids]
    return {"images": images, "annotations": annotations, "categories": pool["categories"]}
