"""Which selection signal to trust: each signal's Spearman correlation with the teacher's true error on the synthetic
pool, and the pool's AP after the top-B instances chosen by each signal are corrected from the oracle.

Uses the default round's outputs (`make run`: data/prepared with oracle.json and artifacts/model): the teacher is
the model a user would have after round 1. "Oracle" ranks by the true error itself: the ceiling of any signal.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from bench.report import write_section
from pipeline.config import load_params
from pipeline.data.coco import read_coco
from pipeline.data.pool_predictions import list_column, read_pool_predictions, to_coco_results
from pipeline.evaluation import coco_keypoint_ap, oks
from pipeline.pseudolabel import predict_pool
from pipeline.ray_cluster import ray_session
from pipeline.selection import (
    SIGNALS,
    combined_uncertainty,
    rank_normalize,
    select,
    signal_rank,
)

PREPARED, MODEL = Path("data/prepared"), Path("artifacts/model")
WEIGHTS = {"response": 1.0, "min_response": 0.0, "sahr_sigma": 1.0, "difficulty": 1.0, "flip_disagreement": 1.0}
SHARES = (0.05, 0.1, 0.2)
RANDOM_SEEDS = 5


def _corrected_ap(oracle: dict, results: list[dict], chosen_ids: set[int], schema) -> float:
    """Pool AP after the chosen instances' predictions are replaced by their true keypoints."""
    truth = {a["id"]: a for a in oracle["annotations"]}
    fixed = []
    for r in results:
        if r["instance_id"] in chosen_ids:
            gt = np.asarray(truth[r["instance_id"]]["keypoints"], float).reshape(-1, 3)
            r = {**r, "keypoints": np.c_[gt[:, :2], np.ones(len(gt))].ravel().tolist(), "score": 1.0}
        fixed.append(r)
    return coco_keypoint_ap(oracle, fixed, schema)["ap"]


def run() -> None:
    if not (MODEL / "model.json").is_file() or not (PREPARED / "oracle.json").is_file():
        raise SystemExit("bench signals needs the default round's outputs: run `make run` first")
    oracle = read_coco(PREPARED / "oracle.json")
    schema = oracle.schema
    with tempfile.TemporaryDirectory() as tmp, ray_session(log_to_driver=False):
        out = Path(tmp) / "pool.parquet"
        predict_pool(MODEL, json.loads((PREPARED / "pool.json").read_text()), PREPARED, out, flip_test=True)
        scores, table = read_pool_predictions(out)
    results = to_coco_results(table, schema.category_id)
    by_id = {r["instance_id"]: r for r in results}
    truth = {a["id"]: a for a in oracle.annotations}
    error, hard = [], []
    for iid in scores["instance_id"]:
        gt = truth[int(iid)]
        gt_kp = np.asarray(gt["keypoints"], float).reshape(-1, 3)
        pred = np.asarray(by_id[int(iid)]["keypoints"]).reshape(-1, 3)[:, :2]
        labeled = gt_kp[:, 2].any()
        error.append(1.0 - oks(pred, gt_kp, gt["area"], schema.sigma_array) if labeled else np.nan)
        hard.append(bool(gt.get("synthetic_tags")))
    error, hard = np.asarray(error), np.asarray(hard)

    rankings = {name: signal_rank(scores, name) for name in SIGNALS}
    # What the adaptive-mask difficulty throws away: it min-max normalises the responses within each person, so a
    # person whose every keypoint is weak scores like one whose every keypoint is strong. The same count of weak
    # keypoints against the heatmap's absolute scale (the target peak is 1) is measured beside it.
    tau = load_params().pseudolabel.tau
    keypoint_scores = list_column(table, "scores").astype(np.float64)
    rankings[f"share of keypoints with response < {tau:g} (absolute)"] = rank_normalize(
        np.where(np.isfinite(keypoint_scores).all(1), (keypoint_scores < tau).mean(1), np.nan)
    )
    defaults = dataclasses.asdict(load_params().select.weights)
    rankings["combined, params.yaml weights"] = combined_uncertainty(scores, defaults)
    rankings["combined, every signal weight 1"] = combined_uncertainty(scores, dict.fromkeys(SIGNALS, 1.0))
    rankings["oracle (true error)"] = np.nan_to_num(error, nan=-1.0)
    base_ap = coco_keypoint_ap(oracle.to_dict(), results, schema)["ap"]
    n = len(scores)
    rows = []
    for name, ranking in rankings.items():
        valid = np.isfinite(ranking) & np.isfinite(error)
        rho = pd.Series(ranking[valid]).corr(pd.Series(error[valid]), method="spearman") if valid.any() else np.nan
        row = {"signal": name, "spearman": float(rho)}
        for share in SHARES:
            budget = max(1, round(share * n))
            chosen = np.argsort(-np.nan_to_num(ranking, nan=-np.inf), kind="stable")[:budget]
            ids = set(scores["instance_id"].to_numpy()[chosen].tolist())
            row[f"ap@{share:g}"] = _corrected_ap(oracle.to_dict(), results, ids, schema)
            row[f"hard@{share:g}"] = float(hard[chosen].mean())
        rows.append(row)
    random_row = {"signal": f"random (mean of {RANDOM_SEEDS} seeds)", "spearman": 0.0}
    for share in SHARES:
        budget = max(1, round(share * n))
        aps, hards = [], []
        for seed in range(RANDOM_SEEDS):
            chosen = select(scores, policy="random", budget=budget, weights=WEIGHTS, seed=seed).rows
            aps.append(_corrected_ap(oracle.to_dict(), results, set(scores["instance_id"].to_numpy()[chosen]), schema))
            hards.append(hard[chosen].mean())
        random_row[f"ap@{share:g}"], random_row[f"hard@{share:g}"] = float(np.mean(aps)), float(np.mean(hards))
    rows.insert(0, random_row)

    head = " | ".join(f"AP after fixing top {s:.0%}" for s in SHARES)
    table = f"| signal | Spearman rho with 1 - OKS | {head} | hard cases in top {SHARES[1]:.0%} |\n"
    table += "|---|---|" + "---|" * len(SHARES) + "---|\n"
    for r in rows:
        aps = " | ".join(f"{r[f'ap@{s:g}']:.3f}" for s in SHARES)
        table += f"| {r['signal']} | {r['spearman']:.3f} | {aps} | {r[f'hard@{SHARES[1]:g}']:.0%} |\n"
    body = (
        f"Teacher: artifacts/model of the default round (`make run`); pool: data/prepared/pool.json, {n} synthetic "
        f"people, {hard.mean():.0%} of them tagged hard (occluded, rare pose, small, truncated, low contrast, "
        f"crowded); flip test on. Pool AP before any correction: {base_ap:.3f}. Corrections come from oracle.json; "
        f'"hard cases" is the share of chosen instances with a synthetic_tag.\n\n{table}\n'
        "Reading it: each signal is oriented as pipeline/selection.py SIGNALS says, so a positive rho means the signal "
        "finds the errors. sahr_sigma counts a SMALL effective sigma as uncertain: where the network cannot find a "
        "keypoint, the loss is lowest with a sharper target, so the SAHR scale grows there (a label-jittered keypoint "
        "widens instead: tests/test_sahr_learns.py). difficulty is the adaptive-mask rule of SSL, which min-max "
        "normalises the responses within each person, so a person whose every keypoint is weak looks as easy as one "
        "whose every keypoint is strong; the same count on the heatmap's absolute scale is the row below it. Both "
        "carry information but add nothing to response in the combination (params.yaml select.weights says why "
        "each weight is what it is)."
    )
    write_section("signals", "How good each selection signal is", "make run && python -m bench signals", body, rows)
