"""Label efficiency (issue #8, part 1): does uncertainty selection save labels?

A simulated active-learning loop through the real pipeline code, with file hand-off between the steps as in the DVC
stages and the oracle (``oracle.json``, the pool's hidden truth) as the annotator; no Label Studio, no Ray:

    prepare (seed labels: a few % of the labelable people)
    round 0: train on the seed labels                        train_worker, one plain process (local_checkpoint_dir)
    round r = 1..R:
        teacher (round r-1's kept weights) over the pool     pipeline.inference.predict + prediction_columns
                                                             -> pool_predictions.parquet -> scoring.read_scores
        select B instances with the arm's policy,            scoring.select, exclude = labeled (as stages/select.py)
        "annotate" them from oracle.json                     corrections.Correction -> write_pull (store folder)
        merge seed + store -> train.json                     corrections.read_store + merge (the real merge rules)
        train on train.json, evaluate val AP                 train_worker (val OKS AP each epoch, best kept)

An arm is (selection policy, ``train.ssl.mode``): random, combined uncertainty (params.yaml's ``select.weights``),
or one signal of ``pipeline.scoring.SIGNALS`` alone. Round 0 is the same for every policy of one (seed, SSL mode), so
it is trained once and shared. The per-instance signals are exactly the pipeline's: ``prediction_columns`` (which
calls ``instance_scores``) on the output of ``predict``, the function the Ray Data predictor runs per batch, so
nothing is reimplemented; only Ray's actor plumbing is skipped (bench ``inference`` measures that).

The fully supervised reference is trained once per seed on every labelable person (seed + the whole pool, through
the same merge) with SSL off and the same number of optimiser steps as an arm's final model has seen (with warm
start: (R + 1) x the steps of one round, from scratch).

Warm start (CPU grid): each round starts from the previous round's kept weights, with a fresh optimiser and cosine
schedule, like ``train.warm_start: previous``. It saves time, and the AP of a round then also reflects the extra
steps; every arm gets the same steps, so the comparison between arms stays fair. The FULL grid trains each round from
scratch.

Grids: ``CPU`` (the default, what ``python -m bench label_efficiency`` runs: every policy, SSL off and on, 3 seeds,
3 rounds, 96x128 crops; about an hour on 2 cores) and ``FULL`` (the same arms at 192x256 with 5 rounds and longer
training; GPU-sized, days on a CPU). Units (a seed's reference, or a seed's round 0 and every policy for one SSL
mode) run in parallel processes, ``--jobs`` of them (default: cores / threads per training on a CPU, 1 on a GPU).
Every knob is a flag: ``python -m bench.label_efficiency --help``. ``--source coco_mini`` (part 2) runs the same loop
on the real photos of ``../shared/data/coco_mini`` (train as the pool, val as validation); it is skipped with a
message when that folder is absent. ``--source all`` runs both.

Outputs: a section of docs/BENCHMARKS.md (``label_efficiency`` / ``label_efficiency_coco_mini``), the raw numbers in
docs/bench/<section>.json and the plot docs/bench/<section>.png (val AP and PCK@0.1 against labels, one line per arm,
shaded min-max over seeds).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
import yaml

from bench.report import RESULTS_DIR, available_cores, write_section
from pipeline.config import Params, params_from_dict
from pipeline.corrections import Correction, merge, read_store, write_pull
from pipeline.data.coco import read_coco, write_coco
from pipeline.data.dataset import TopDownDataset, instances_from_coco
from pipeline.data.prepare import prepare
from pipeline.data.synthetic import TAGS
from pipeline.inference import predict, prediction_columns, predictions_table
from pipeline.scoring import POLICIES, read_scores, select
from pipeline.training import BEST_FILE, build_codec, model_from_params, train_worker

NAME = "label_efficiency"
COCO_MINI = Path("../shared/data/coco_mini")
SSL_MODES = ("off", "cutout", "adaptive", "adaptive_mixup")
ROUND_ZERO_TIME = datetime(2000, 1, 1, tzinfo=UTC)  # simulated annotation times: round r at + r hours
# Below this reference AP (all labels) the models learned too little for AP to separate arms: targets inconclusive.
MIN_REFERENCE_AP = 0.01


@dataclass(frozen=True)
class Grid:
    """What one run measures. Counts < 1 are fractions of the labelable people (seed + pool)."""

    policies: tuple[str, ...]  # selection policies (pipeline.scoring.POLICIES), optionally "+random<share>"
    ssl: tuple[str, ...]  # train.ssl.mode values; every policy runs with each
    seeds: tuple[int, ...]  # data split and training seed
    rounds: int  # selection rounds R (R + 1 trainings per arm, round 0 shared)
    seed_labels: float  # data.labeled
    budget: float  # instances annotated per round
    epochs: int  # per training (x (R + 1) for the reference when warm starting)
    steps: int  # train.min_steps_per_epoch
    batch_size: int
    input_size: tuple[int, int]  # (w, h)
    variant: int | None  # tiny backbone width (None: its default, 32)
    images: int  # synthetic images (ignored for coco_mini)
    warm_start: bool
    threads: int = 1  # torch threads. On 2 shared cores 2 threads were 20x slower per step than 1 (0.12 s vs 2.5 s)
    loader_workers: int = 0  # DataLoader processes (train.loader_workers); a GPU needs several to be fed


ALL_POLICIES = ("random", "uncertainty", "response", "sahr_sigma", "difficulty", "flip_disagreement")
# The arms (every policy x SSL off / on x 3 seeds) at CPU size: 117 trainings, ~1 h with 2 processes on 2 cores.
CPU = Grid(policies=ALL_POLICIES, ssl=("off", "adaptive_mixup"), seeds=(0, 1, 2), rounds=3, seed_labels=0.05,
           budget=0.05, epochs=3, steps=50, batch_size=32, input_size=(96, 128), variant=None, images=400,
           warm_start=True)  # fmt: skip
FULL = Grid(policies=ALL_POLICIES, ssl=("off", "adaptive_mixup"), seeds=(0, 1, 2), rounds=5, seed_labels=0.05,
            budget=0.05, epochs=10, steps=100, batch_size=32, input_size=(192, 256), variant=None, images=2000,
            warm_start=False, threads=4, loader_workers=8)  # fmt: skip
# coco_mini has 86 people with keypoints in train2017: counts, not fractions, and a seed big enough to learn from.
CPU_COCO = dataclasses.replace(CPU, policies=("random", "uncertainty"), ssl=("off",), rounds=3, seed_labels=8, budget=8)
GRIDS = {"cpu": CPU, "full": FULL}


# --------------------------------------------------------------------------------------------------- setup


def policy_spec(spec: str) -> tuple[str, float]:
    """An arm's policy -> (select's policy, its random_share): "uncertainty" -> ("uncertainty", 0.0);
    "uncertainty+random0.5" -> ("uncertainty", 0.5), half of each round's budget drawn at random."""
    policy, _, share = spec.partition("+random")
    if policy not in POLICIES or (share and not 0.0 < float(share) <= 1.0) or (_ and not share):
        raise argparse.ArgumentTypeError(f"{spec!r}: expected one of {', '.join(POLICIES)}, optionally followed by "
                                         "+random<share in (0, 1]>, e.g. uncertainty+random0.5")  # fmt: skip
    return policy, float(share or 0.0)


def base_params(grid: Grid, seed: int, source: str) -> dict:
    """params.yaml with the grid's sizes; select / pseudolabel sections (weights, tau, flip test) unchanged."""
    raw = yaml.safe_load(Path("params.yaml").read_text())
    data = raw["data"]
    data.update(labeled=grid.seed_labels, seed=seed)
    if source == "synthetic":
        data.update(source="synthetic", val_images=40, test_images=10)
        data["synthetic"]["num_images"] = grid.images
    else:  # coco_mini: 32 val2017 images hold people with keypoints
        root = COCO_MINI.resolve()
        data.update(source="coco", val_images=28, test_images=4)
        data["coco"].update(annotations=str(root / "annotations/person_keypoints_train2017.json"),
                            images=str(root / "train2017"),
                            val_annotations=str(root / "annotations/person_keypoints_val2017.json"),
                            val_images=str(root / "val2017"))  # fmt: skip
    raw["codec"]["input_size"] = list(grid.input_size)
    raw["model"]["variant"] = grid.variant
    raw["train"].update(epochs=grid.epochs, min_steps_per_epoch=grid.steps, batch_size=grid.batch_size, seed=seed,
                        warmup_steps=min(raw["train"]["warmup_steps"], grid.steps), num_workers=1,
                        threads_per_worker=grid.threads,
                        loader_workers=grid.loader_workers, warm_start="scratch", pseudo_labels=False)  # fmt: skip
    raw["train"]["ssl"]["rampup_epochs"] = min(raw["train"]["ssl"]["rampup_epochs"], max(1, grid.epochs // 3))
    return raw


def with_ssl(raw: dict, mode: str, epochs: int | None = None) -> dict:
    out = json.loads(json.dumps(raw))
    out["train"]["ssl"]["mode"] = mode
    if epochs is not None:
        out["train"]["epochs"] = epochs
    return out


def count_of(value: float, total: int) -> int:
    """A fraction (< 1) of ``total`` or a count, at least 1."""
    return max(1, round(value * total) if value < 1 else int(value))


@dataclass
class Project:
    """One seed's prepared data and what every arm of it shares."""

    seed: int
    root: Path
    prepared: Path
    seed_coco: dict
    pool: dict
    truth: dict[int, dict]  # instance id -> oracle annotation
    pool_set: TopDownDataset  # evaluation crops of the pool, in pool order
    image_of: dict[int, int]
    bbox_of: dict[int, list[float]]

    @property
    def labelable(self) -> int:
        return len(self.seed_coco["annotations"]) + len(self.pool["annotations"])

    def paths(self, labels: Path) -> dict[str, str]:
        return {"labels": str(labels), "pool": str(self.prepared / "pool.json"),
                "val": str(self.prepared / "val.json"), "images_root": str(self.prepared)}  # fmt: skip


def make_project(raw: dict, seed: int, root: Path) -> Project:
    params = params_from_dict(raw)
    prepared = root / "prepared"
    prepare(params.data, prepared)
    seed_coco = read_coco(prepared / "labeled.json").to_dict()
    pool = json.loads((prepared / "pool.json").read_text())
    oracle = json.loads((prepared / "oracle.json").read_text())  # raw JSON: keeps synthetic_tags as written
    schema = read_coco(prepared / "labeled.json").schema
    records = instances_from_coco(pool["images"], pool["annotations"], prepared, schema.num_keypoints,
                                  require_keypoints=False)  # fmt: skip
    pool_set = TopDownDataset(records, schema, build_codec(params), padding=params.codec.box_padding)
    return Project(seed=seed, root=root, prepared=prepared, seed_coco=seed_coco, pool=pool,
                   truth={int(a["id"]): a for a in oracle["annotations"]}, pool_set=pool_set,
                   image_of={int(a["id"]): int(a["image_id"]) for a in pool["annotations"]},
                   bbox_of={int(a["id"]): [float(v) for v in a["bbox"]] for a in pool["annotations"]})  # fmt: skip


# --------------------------------------------------------------------------------------------------- the steps


@dataclass(frozen=True)
class Trained:
    weights: Path  # the kept (best val AP) weights, a state dict
    ap: float  # val AP of the kept weights (= best over epochs, what the train stage ships)
    final_ap: float  # val AP after the last epoch
    pck10: float  # val PCK@0.1 of the kept weights
    steps: int
    seconds: float


def train(raw: dict, project: Project, labels: Path, out: Path, init: Path | None) -> Trained:
    """train_worker in this process; the kept weights are copied to ``out`` and the checkpoints removed."""
    checkpoints = out.with_name(out.stem + "-checkpoints")
    shutil.rmtree(checkpoints, ignore_errors=True)  # a leftover would resume instead of training anew
    started = time.perf_counter()
    train_worker({"params": raw, "paths": project.paths(labels), "local_checkpoint_dir": str(checkpoints),
                  "init_weights": str(init) if init else None, "progress": False,
                  "use_gpu": torch.cuda.is_available()})  # fmt: skip
    history = json.loads((checkpoints / "latest" / "history.json").read_text())
    shutil.copyfile(checkpoints / "latest" / BEST_FILE, out)
    shutil.rmtree(checkpoints)
    best = max(history, key=lambda h: h["val_ap"])  # the first epoch with the best AP: the one kept
    labeled = len(json.loads(labels.read_text())["annotations"])
    cfg = raw["train"]
    steps = cfg["epochs"] * max(math.ceil(labeled / cfg["batch_size"]), cfg["min_steps_per_epoch"])
    return Trained(out, float(best["val_ap"]), float(history[-1]["val_ap"]), float(best["val_pck10"]), steps,
                   time.perf_counter() - started)  # fmt: skip


def score_pool(raw: dict, project: Project, weights: Path, out: Path):
    """The teacher over the pool -> pool_predictions.parquet (the pseudolabel stage's columns) -> read_scores."""
    params: Params = params_from_dict(raw)
    torch.set_num_threads(params.train.threads_per_worker)
    model = model_from_params(params, project.pool_set.codec, project.pool_set.schema)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    pred = predict(model.eval(), project.pool_set, batch_size=64, flip_test=params.pseudolabel.flip_test)
    ids = pred.instance_id.astype(np.int64)
    batch = {"instance_id": ids, "image_id": np.array([project.image_of[int(i)] for i in ids], np.int64),
             "bbox": np.array([project.bbox_of[int(i)] for i in ids], np.float64)}  # fmt: skip
    columns = prediction_columns(batch, {f.name: getattr(pred, f.name) for f in dataclasses.fields(pred)},
                                 params.pseudolabel.tau)  # fmt: skip
    pq.write_table(predictions_table(columns), out)
    scores, _ = read_scores(out)
    return scores


def annotate(project: Project, store: Path, chosen: list[int], round_: int, arm: str) -> None:
    """The simulated annotator: one Correction per chosen instance from oracle.json, written as one pull."""
    at = ROUND_ZERO_TIME + timedelta(hours=round_)
    corrections = []
    for iid in chosen:
        ann = project.truth[iid]
        corrections.append(Correction(instance_id=iid, image_id=int(ann["image_id"]), bbox=tuple(ann["bbox"]),
                                      keypoints=tuple(ann["keypoints"]), task_id=None, annotation_id=None,
                                      annotator="oracle", completed_at=at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                      model_version=f"bench/{arm}/round{round_ - 1}"))  # fmt: skip
    write_pull(store, corrections, [], [], source=f"inbox:{NAME}-round{round_}", now=at)


def merged_labels(project: Project, store: Path, out: Path) -> dict:
    """seed + the store -> train.json (written to ``out``) with the pipeline's merge; returns the merge report."""
    corrections, skips = read_store(store)
    train_coco, report = merge(project.seed_coco, project.pool, corrections, skips)
    write_coco(out, train_coco)
    return report


# --------------------------------------------------------------------------------------------------- the loop


def arm_name(policy: str, ssl: str) -> str:
    return policy if ssl == "off" else f"{policy} + SSL ({ssl})"


@dataclass(frozen=True)
class Unit:
    """One process's share of a grid: a seed's reference, or a seed's round 0 plus every policy for one SSL mode."""

    seed: int
    ssl: str | None  # None: the fully supervised reference of this seed

    @property
    def label(self) -> str:
        return f"seed {self.seed} " + ("reference" if self.ssl is None else f"ssl {self.ssl}")


def units_of(grid: Grid) -> list[Unit]:
    """Longest first (SSL on, SSL off, references), so that parallel jobs end close together."""
    by_cost = sorted(grid.ssl, key=lambda mode: mode == "off")
    return [Unit(s, m) for m in by_cost for s in grid.seeds] + [Unit(s, None) for s in grid.seeds]


def default_jobs(grid: Grid) -> int:
    """Processes in parallel: one per ``grid.threads`` cores on a CPU; one on a GPU (they would share it)."""
    if torch.cuda.is_available():
        return 1
    return max(1, available_cores() // grid.threads)


def run_unit(grid: Grid, source: str, unit: Unit, workdir: Path) -> dict:
    """One unit in this process; returns its raw rows (the same keys for every unit, lists possibly empty)."""
    rows: list[dict] = []
    references: list[dict] = []
    selections: list[dict] = []
    base_rates: list[dict] = []
    seed = unit.seed
    raw = base_params(grid, seed, source)
    project = make_project(raw, seed, workdir / f"seed{seed}-{unit.ssl or 'reference'}")
    trainings = 1 if unit.ssl is None else 1 + len(grid.policies) * grid.rounds
    done, started = 0, time.perf_counter()

    def progress(text: str) -> None:
        elapsed = time.perf_counter() - started
        eta = elapsed / done * (trainings - done) if done else float("nan")
        print(f"[{NAME}] {source} {unit.label}: {done}/{trainings} trainings, {elapsed / 60:.1f} min elapsed, "
              f"~{eta / 60:.0f} min left | {text}", flush=True)  # fmt: skip

    budget = count_of(grid.budget, project.labelable)
    n0 = len(project.seed_coco["annotations"])
    try:
        if unit.ssl is None:
            # the fully supervised reference: every labelable person through the same merge, SSL off, same steps
            tags = Counter(t for a in project.truth.values() for t in a.get("synthetic_tags", []))
            tagged = sum(bool(a.get("synthetic_tags")) for a in project.truth.values())
            base_rates.append({"seed": seed, "pool": len(project.truth), "labelable": project.labelable,
                               "seed_labels": n0, "budget": budget, "tags": dict(tags), "any_tag": tagged})  # fmt: skip
            ref_dir = project.root / "reference"
            ref_dir.mkdir(parents=True)
            annotate(project, ref_dir / "corrections", sorted(project.truth), 1, "reference")
            report = merged_labels(project, ref_dir / "corrections", ref_dir / "train.json")
            epochs = grid.epochs * (grid.rounds + 1 if grid.warm_start else 1)
            ref = train(with_ssl(raw, "off", epochs), project, ref_dir / "train.json", ref_dir / "model.pt", None)
            done += 1
            references.append({"seed": seed, "labeled": report["labeled_total"], "ap": ref.ap,
                               "final_ap": ref.final_ap, "pck10": ref.pck10, "steps": ref.steps,
                               "seconds": ref.seconds})  # fmt: skip
            progress(f"reference ({report['labeled_total']} labels): val AP {ref.ap:.4f}")
            return {"rows": rows, "references": references, "selections": selections, "base_rates": base_rates}

        select_cfg = params_from_dict(raw).select
        weights = dataclasses.asdict(select_cfg.weights)
        ssl = unit.ssl
        arm_raw = with_ssl(raw, ssl)
        zero_dir = project.root / f"ssl-{ssl}"
        zero_dir.mkdir(parents=True)
        progress(f"{project.labelable} labelable people, {n0} seed labels, budget {budget} per round")
        zero = train(arm_raw, project, project.prepared / "labeled.json", zero_dir / "round0.pt", None)
        done += 1
        zero_scores = score_pool(arm_raw, project, zero.weights, zero_dir / "pool_predictions_round0.parquet")
        progress(f"round 0 ({n0} labels): val AP {zero.ap:.4f}")
        for policy in grid.policies:
            arm = arm_name(policy, ssl)
            base_policy, share = policy_spec(policy)
            arm_dir = zero_dir / policy
            arm_dir.mkdir()
            store = arm_dir / "corrections"
            labeled_ids = {int(a["id"]) for a in project.seed_coco["annotations"]}
            current, scores = zero, zero_scores
            rows.append({"seed": seed, "ssl": ssl, "policy": policy, "arm": arm, "round": 0, "labeled": n0,
                         "share": n0 / project.labelable, **_metrics(zero)})  # fmt: skip
            for r in range(1, grid.rounds + 1):
                chosen = select(scores, policy=base_policy, budget=budget, weights=weights, random_share=share,
                                exclude={"labeled": labeled_ids}, per_image=select_cfg.per_image,
                                seed=seed * 1000 + r)  # fmt: skip
                ids = [int(i) for i in scores["instance_id"].to_numpy()[chosen.rows]]
                for iid in ids:
                    selections.append({"seed": seed, "arm": arm, "round": r, "instance_id": iid,
                                       "tags": list(project.truth[iid].get("synthetic_tags", []))})  # fmt: skip
                annotate(project, store, ids, r, arm)
                labels = arm_dir / f"train_round{r}.json"
                report = merged_labels(project, store, labels)
                labeled_ids = {int(a["id"]) for a in json.loads(labels.read_text())["annotations"]}
                init = current.weights if grid.warm_start else None
                current = train(arm_raw, project, labels, arm_dir / f"round{r}.pt", init)
                done += 1
                rows.append({"seed": seed, "ssl": ssl, "policy": policy, "arm": arm, "round": r,
                             "labeled": report["labeled_total"], "share": report["labeled_total"] /
                             project.labelable, **_metrics(current)})  # fmt: skip
                progress(f"{arm} round {r} ({report['labeled_total']} labels): val AP {current.ap:.4f}")
                if r < grid.rounds:
                    out = arm_dir / f"pool_predictions_round{r}.parquet"
                    scores = score_pool(arm_raw, project, current.weights, out)
        return {"rows": rows, "references": references, "selections": selections, "base_rates": base_rates}
    finally:
        shutil.rmtree(project.root, ignore_errors=True)  # images, checkpoints: hundreds of MB per unit


def run_grid(grid: Grid, source: str, workdir: Path, jobs: int = 1) -> dict:
    """Every arm of ``grid`` on ``source``, ``jobs`` units at a time (spawned processes, one per unit).

    Returns the raw rows (one per training), the per-seed references, every selected instance with its tags and the
    pool's tag base rates, in the same order whatever ``jobs`` is.
    """
    units = units_of(grid)
    started = time.perf_counter()
    print(f"[{NAME}] {source}: {len(units)} units ({', '.join(u.label for u in units)}), {jobs} at a time",
          flush=True)  # fmt: skip
    if jobs <= 1:
        results = {u: run_unit(grid, source, u, workdir) for u in units}
    else:
        results = {}
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(run_unit, grid, source, u, workdir): u for u in units}
            for future in as_completed(futures):
                unit = futures[future]
                results[unit] = future.result()  # a failed unit fails the run, with its traceback
                print(f"[{NAME}] {source}: {unit.label} done ({len(results)}/{len(units)} units, "
                      f"{(time.perf_counter() - started) / 60:.1f} min)", flush=True)  # fmt: skip
    ordered = sorted(units, key=lambda u: (u.seed, u.ssl is not None, grid.ssl.index(u.ssl) if u.ssl else 0))
    return {key: [item for u in ordered for item in results[u][key]]
            for key in ("rows", "references", "selections", "base_rates")}  # fmt: skip


def _metrics(t: Trained) -> dict:
    return {"ap": t.ap, "final_ap": t.final_ap, "pck10": t.pck10, "steps": t.steps, "seconds": round(t.seconds, 1)}


# --------------------------------------------------------------------------------------------------- summary


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def curves(rows: list[dict]) -> dict[str, list[dict]]:
    """arm -> one point per round: labels and share (mean over seeds), AP / PCK mean, sd, min, max."""
    out: dict[str, list[dict]] = {}
    for arm in dict.fromkeys(r["arm"] for r in rows):
        points = []
        for rnd in sorted({r["round"] for r in rows if r["arm"] == arm}):
            sel = [r for r in rows if r["arm"] == arm and r["round"] == rnd]
            point = {"round": rnd, "labeled": statistics.mean(r["labeled"] for r in sel),
                     "share": statistics.mean(r["share"] for r in sel), "seeds": len(sel)}  # fmt: skip
            for key in ("ap", "pck10"):
                values = [r[key] for r in sel]
                mean, sd = _mean_sd(values)
                point.update({key: mean, f"{key}_sd": sd, f"{key}_min": min(values), f"{key}_max": max(values)})
            points.append(point)
        out[arm] = points
    return out


def first_reaching(points: list[dict], level: float, key: str = "ap") -> dict | None:
    """The first round whose mean reaches ``level`` (None: never)."""
    return next((p for p in points if p[key] >= level), None)


def targets(curve: dict[str, list[dict]], ref_ap: float, grid: Grid) -> list[tuple[str, str, str]]:
    """(target, verdict, evidence) for the issue's three targets, on the mean curves over seeds.

    A target whose yardstick did not move (random's AP no higher than the seed model's, a reference AP below
    ``MIN_REFERENCE_AP``) is "inconclusive", not met: reaching a level of 0 says nothing.
    """
    out = []
    weak = (
        f"the fully supervised reference reaches only {ref_ap:.4f} AP (< {MIN_REFERENCE_AP}): the models learned too "
        "little for AP to separate the arms"
    )
    name1 = "combined uncertainty reaches random's final AP with <= 60% of random's labels"
    if "random" in curve and "uncertainty" in curve:
        start, final = curve["random"][0], curve["random"][-1]
        hit = first_reaching(curve["uncertainty"], final["ap"])
        last = curve["uncertainty"][-1]
        noise = (
            f"; at the last round uncertainty - random = {(last['ap'] - final['ap']) * 100:+.1f} AP points, against "
            f"a per-arm sd over seeds of {last['ap_sd'] * 100:.1f} / {final['ap_sd'] * 100:.1f}"
        )
        if ref_ap < MIN_REFERENCE_AP:
            out.append((name1, "inconclusive", weak))
        elif final["ap"] <= start["ap"]:
            out.append((name1, "inconclusive", f"random's final AP {final['ap']:.4f} is no higher than the seed "
                        f"model's {start['ap']:.4f}"))  # fmt: skip
        elif hit is None:
            out.append((name1, "NOT met", f"uncertainty never reached random's final AP {final['ap']:.4f} "
                        f"({final['labeled']:.0f} labels); its best mean AP was "
                        f"{max(p['ap'] for p in curve['uncertainty']):.4f}{noise}"))  # fmt: skip
        else:
            ratio = hit["labeled"] / final["labeled"]
            out.append((name1, "met" if ratio <= 0.6 else "NOT met",
                        f"random's final AP {final['ap']:.4f} at {final['labeled']:.0f} labels; uncertainty "
                        f"{hit['ap']:.4f} at {hit['labeled']:.0f} labels (round {hit['round']}) = {ratio:.0%} of "
                        f"random's labels; resolution: one round of {_step(curve['uncertainty'])} "
                        f"labels{noise}"))  # fmt: skip
    else:
        out.append((name1, "not measured", "needs the random and uncertainty arms"))
    name2 = "SSL + uncertainty reaches 95% of the fully supervised AP with <= 20% of the pool labeled"
    ssl_arms = [a for a in curve if a.startswith("uncertainty + SSL")]
    if not ssl_arms:
        out.append((name2, "not measured", "no SSL arm in this grid (add one with `--ssl off adaptive_mixup`)"))
    for arm in ssl_arms:
        hit = first_reaching(curve[arm], 0.95 * ref_ap)
        if ref_ap < MIN_REFERENCE_AP:
            out.append((name2, "inconclusive", weak))
        elif hit is None:
            best = max(p["ap"] for p in curve[arm])
            out.append((name2, "NOT met", f"{arm}: not reached within {curve[arm][-1]['share']:.0%} labeled "
                        f"(best {best:.4f} = {best / ref_ap:.0%} of the reference {ref_ap:.4f})"))  # fmt: skip
        else:
            out.append((name2, "met" if hit["share"] <= 0.2 else "NOT met",
                        f"{arm}: {hit['ap']:.4f} >= 0.95 x {ref_ap:.4f} at {hit['share']:.0%} labeled"))  # fmt: skip
    seed = f"{grid.seed_labels:.0%}" if grid.seed_labels < 1 else f"{grid.seed_labels:.0f}"
    name3 = f"SSL >= supervised + 5 AP at {seed} labels (round 0, the seed labels)"
    off = next((a for a in curve if a in POLICIES), None)
    on = [a for a in curve if " + SSL (" in a]
    if off is None or not on:
        out.append((name3, "not measured", "needs SSL off and on in the grid (`--ssl off adaptive_mixup`)"))
    elif ref_ap < MIN_REFERENCE_AP:
        out.append((name3, "inconclusive", weak))
    else:
        for mode in dict.fromkeys(a.split(" + ", 1)[1] for a in on):
            ssl_arm = next(a for a in on if a.endswith(mode))
            gain = (curve[ssl_arm][0]["ap"] - curve[off][0]["ap"]) * 100
            out.append((name3, "met" if gain >= 5 else "NOT met", f"{mode}: {gain:+.1f} AP points at round 0 "
                        f"({curve[ssl_arm][0]['ap']:.4f} vs {curve[off][0]['ap']:.4f})"))  # fmt: skip
    return out


def _step(points: list[dict]) -> str:
    return f"{points[1]['labeled'] - points[0]['labeled']:.0f}" if len(points) > 1 else "?"


def tag_table(selections: list[dict], base_rates: list[dict]) -> str:
    """Share of selected instances carrying each synthetic tag, per arm, against the pool's base rate."""
    pool = sum(b["pool"] for b in base_rates)
    if not pool or not any(b["tags"] for b in base_rates):
        return ""
    head = "| instances | count | " + " | ".join(TAGS) + " | any tag |\n|---|---|" + "---|" * (len(TAGS) + 1) + "\n"
    base = [sum(b["tags"].get(t, 0) for b in base_rates) / pool for t in TAGS]
    base.append(sum(b["any_tag"] for b in base_rates) / pool)
    lines = [f"| the pool (base rate, all seeds) | {pool} | " + " | ".join(f"{v:.0%}" for v in base) + " |"]
    for arm in dict.fromkeys(s["arm"] for s in selections):
        chosen = [s for s in selections if s["arm"] == arm]
        shares = [sum(t in s["tags"] for s in chosen) / len(chosen) for t in TAGS]
        shares.append(sum(bool(s["tags"]) for s in chosen) / len(chosen))
        lines.append(f"| selected by {arm} | {len(chosen)} | " + " | ".join(f"{v:.0%}" for v in shares) + " |")
    return head + "\n".join(lines) + "\n"


def hard_share_vs_ap(curve: dict[str, list[dict]], selections: list[dict]) -> tuple[float, int] | None:
    """Spearman rho, across arms, between the share of an arm's picks that carry a synthetic tag and its final mean
    AP (and the number of arms): do arms that pick more hard cases end better or worse?"""
    arms = [a for a in curve if any(s["arm"] == a for s in selections)]
    if len(arms) < 3:
        return None
    share = [statistics.mean(bool(s["tags"]) for s in selections if s["arm"] == a) for a in arms]
    final = [curve[a][-1]["ap"] for a in arms]
    return float(pd.Series(share).corr(pd.Series(final), method="spearman")), len(arms)


def plot(curve: dict[str, list[dict]], ref: dict, path: Path, title: str) -> Path:
    """AP and PCK@0.1 against labeled instances: one colour per policy, solid without SSL and dashed with it, shaded
    min-max over seeds; the fully supervised reference as a black line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), dpi=110)
    for ax, key, label in ((axes[0], "ap", "val OKS AP"), (axes[1], "pck10", "val PCK@0.1")):
        policies = list(dict.fromkeys(arm.split(" + SSL", 1)[0] for arm in curve))
        for arm, points in curve.items():
            x = [p["labeled"] for p in points]
            colour = f"C{policies.index(arm.split(' + SSL', 1)[0]) % 10}"
            ssl = " + SSL" in arm
            ax.plot(x, [p[key] for p in points], marker="s" if ssl else "o", linestyle="--" if ssl else "-",
                    color=colour, label=arm)  # fmt: skip
            ax.fill_between(x, [p[f"{key}_min"] for p in points], [p[f"{key}_max"] for p in points], color=colour,
                            alpha=0.06 if len(curve) > 4 else 0.15, linewidth=0)  # fmt: skip
        ax.axhline(ref[key], color="black", linestyle="--", linewidth=1, label=f"all {ref['labeled']:.0f} labels")
        if key == "ap":
            ax.axhline(0.95 * ref[key], color="grey", linestyle=":", linewidth=1, label="95% of that")
        ax.set_xlabel("labeled instances")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06 * math.ceil(len(labels) / 4), 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_title(source: str, seeds: tuple[int, ...] | list[int]) -> str:
    return f"{source}: val AP / PCK against labels (mean over seeds {list(seeds)}, shaded min-max)"


def replot(section: str) -> Path:
    """Redraw docs/bench/<section>.png from the raw numbers of docs/bench/<section>.json (no training)."""
    raw = json.loads((RESULTS_DIR / f"{section}.json").read_text())
    title = plot_title(raw["source"], raw["grid"]["seeds"])
    return plot(raw["curves"], raw["reference"], RESULTS_DIR / f"{section}.png", title)


def report(
    section: str,
    grid: Grid,
    source: str,
    result: dict,
    command: str,
    seconds: float,
    jobs: int,
    title: str | None = None,
) -> None:
    rows, refs = result["rows"], result["references"]
    curve = curves(rows)
    ref = {"ap": statistics.mean(r["ap"] for r in refs), "pck10": statistics.mean(r["pck10"] for r in refs),
           "labeled": statistics.mean(r["labeled"] for r in refs)}  # fmt: skip
    ref_ap_sd = _mean_sd([r["ap"] for r in refs])[1]
    picture = plot(curve, ref, RESULTS_DIR / f"{section}.png", plot_title(source, grid.seeds))

    rounds = sorted({r["round"] for r in rows})
    head = "| arm | " + " | ".join(f"round {r}" for r in rounds) + " |\n|---|" + "---|" * len(rounds) + "\n"
    ap_table = pck_table = head
    for arm, points in curve.items():
        ap_table += (
            f"| {arm} | "
            + " | ".join(f"{p['labeled']:.0f} ({p['share']:.0%}): {p['ap']:.4f} ± {p['ap_sd']:.4f}" for p in points)
            + " |\n"
        )
        pck_table += (
            f"| {arm} | "
            + " | ".join(f"{p['labeled']:.0f}: {p['pck10']:.3f} ± {p['pck10_sd']:.3f}" for p in points)
            + " |\n"
        )

    reach = "| arm | labels to 95% of the reference AP | best mean AP (share of the reference) |\n|---|---|---|\n"
    for arm, points in curve.items():
        hit = first_reaching(points, 0.95 * ref["ap"])
        best = max(p["ap"] for p in points)
        where = (f"{hit['labeled']:.0f} ({hit['share']:.0%} of the labelable people, round {hit['round']})" if hit
                 else f"not reached within {points[-1]['labeled']:.0f} ({points[-1]['share']:.0%})")  # fmt: skip
        reach += f"| {arm} | {where} | {best:.4f} ({best / ref['ap']:.0%}) |\n" if ref["ap"] > 0 else \
            f"| {arm} | reference AP is 0 | {best:.4f} |\n"  # fmt: skip

    verdicts = "\n".join(f"- {name}: **{verdict}** ({evidence})." for name, verdict, evidence in
                         targets(curve, ref["ap"], grid))  # fmt: skip
    trained = [r for r in rows if r["round"] > 0]
    trainings = len(refs) + len({(r["seed"], r["ssl"]) for r in rows}) + len(trained)
    per_training = statistics.mean([r["seconds"] for r in trained] + [r["seconds"] for r in refs])
    budget = statistics.mean(b["budget"] for b in result["base_rates"])
    seed_labels = statistics.mean(b["seed_labels"] for b in result["base_rates"])
    labelable = statistics.mean(b["labelable"] for b in result["base_rates"])
    data = (
        f"{grid.images} synthetic images per seed (data.seed = seed; val: 40 images)"
        if source == "synthetic"
        else "coco_mini's real photos: the people of train2017 as seed + pool, 28 val2017 images as validation"
    )
    start = (
        "from the previous round's kept weights (fresh optimiser and cosine schedule; so later rounds have also "
        "seen more steps, equally in every arm)"
        if grid.warm_start
        else "from scratch"
    )
    paragraphs = [
        "Does uncertainty selection save labels? A simulated labeling loop through the pipeline's own code: "
        "train_worker in one process, `predict` + `prediction_columns` for the pool signals (flip test on, as the "
        "pseudolabel stage), `select` excluding labeled instances, and `Correction` + `write_pull` + `read_store` + "
        "`merge` for the annotations, with oracle.json as the annotator (bench/label_efficiency.py explains each "
        "step).",
        f"Setup: {data}; {labelable:.0f} labelable people on average; seed {seed_labels:.0f} labels "
        f"(data.labeled {grid.seed_labels:g}), then {grid.rounds} rounds of {budget:.0f} labels (budget "
        f"{grid.budget:g}); seeds {list(grid.seeds)} (data split, random selection and training). Tiny backbone"
        f"{f' width {grid.variant}' if grid.variant else ''}, heatmap head (SAHR + WAHR), "
        f"{grid.input_size[0]}x{grid.input_size[1]} crops, {grid.epochs} epochs of at least {grid.steps} steps of "
        f"batch {grid.batch_size} per round, each round {start}. A round's val AP is that of the weights the train "
        "stage keeps (its best epoch). Round 0 (seed labels only) is trained once per seed and SSL mode and shared "
        "by every policy.",
        f"Fully supervised reference: every labelable person, SSL off, from scratch, {refs[0]['steps']} steps (as "
        f"many as an arm's final model has seen): val AP {ref['ap']:.4f} ± {ref_ap_sd:.4f} with {ref['labeled']:.0f} "
        f"labels. Wall time {seconds / 60:.1f} min for {trainings} trainings ({per_training:.0f} s each on average, "
        f"each training in one process with {grid.threads} torch thread(s), {jobs} such processes at a time).",
        "**These are CPU-sized, small-sample numbers**: "
        f"{len(grid.seeds)} seeds, a small validation set and models trained for a minute or two, so APs are low and "
        "differences of a few AP points between arms are within the noise (compare the ± sd and the shaded "
        "spread). They show that the loop works end to end and which way the arms lean, not a settled answer; the "
        "FULL grid (`python -m bench.label_efficiency --grid full`, GPU-sized) is what answers the issue."
        if grid != FULL
        else f"FULL grid, {len(grid.seeds)} seeds: compare differences with the ± sd before reading them.",
        'Val OKS AP after each round, mean ± sd over seeds; a cell is "labeled instances (share of the labelable '
        f'people): AP":\n\n{ap_table}',
        f"Val PCK@0.1 (more sensitive than AP at this scale), mean ± sd over seeds:\n\n{pck_table}",
        f"Labels needed to reach 95% of the reference AP ({0.95 * ref['ap']:.4f}): the first round whose mean over "
        f"seeds reaches it (resolution: one round):\n\n{reach}",
        f"Targets (on the mean curves over seeds):\n\n{verdicts}",
    ]
    tags = tag_table(result["selections"], result["base_rates"])
    if tags:
        paragraphs.append(
            "Share of the selected instances (all rounds and seeds) carrying each synthetic tag, against the pool's "
            f"base rate (an instance can carry several tags):\n\n{tags}"
        )
        relation = hard_share_vs_ap(curve, result["selections"])
        if relation is not None:
            paragraphs.append(
                f"Across the {relation[1]} arms, Spearman rho between the share of tagged (hard) picks and the final "
                f"mean AP: **{relation[0]:+.2f}** (negative: the arms that pick more hard cases end lower)."
            )
    paragraphs.append(f"![label efficiency: AP and PCK against labels](bench/{picture.name})")
    body = "\n\n".join(p.strip() for p in paragraphs)
    raw = {"grid": dataclasses.asdict(grid), "source": source, "command": command, "wall_seconds": seconds,
           "curves": curve, "reference": ref, "targets": [list(t) for t in targets(curve, ref["ap"], grid)],
           **result}  # fmt: skip
    title = (title or "Label efficiency: does uncertainty selection save labels?") + (
        "" if grid == FULL else " (CPU-sized)"
    )
    if source != "synthetic":
        title += ", real photos (coco_mini)"
    write_section(section, title, command, body, raw)
    print(f"[{NAME}] wrote the {section} section of docs/BENCHMARKS.md and {picture}", flush=True)


# --------------------------------------------------------------------------------------------------- entry points


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.label_efficiency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", choices=sorted(GRIDS), default="cpu", help="preset; the flags below override it")
    parser.add_argument("--source", choices=("synthetic", "coco_mini", "all"), default="all",
                        help="synthetic (part 1), real photos of coco_mini (part 2), or both")  # fmt: skip
    parser.add_argument("--policies", nargs="+", type=lambda v: policy_spec(v) and v, metavar="POLICY",
                        help=f"of {', '.join(POLICIES)}; POLICY+random<share> draws that share of each round's "
                        "budget at random (select.random_share)")  # fmt: skip
    parser.add_argument("--ssl", nargs="+", choices=SSL_MODES, help="train.ssl.mode of each arm (off = supervised)")
    parser.add_argument("--seeds", nargs="+", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--seed-labels", type=float, help="fraction (< 1) or count of seed labels")
    parser.add_argument("--budget", type=float, help="instances annotated per round: fraction (< 1) or count")
    parser.add_argument("--epochs", type=int, help="epochs per training")
    parser.add_argument("--steps", type=int, help="min steps per epoch")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--input-size", nargs=2, type=int, metavar=("W", "H"))
    parser.add_argument("--variant", type=int, help="tiny backbone width")
    parser.add_argument("--images", type=int, help="synthetic images")
    parser.add_argument("--warm-start", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--threads", type=int, help="torch threads (default 1: see Grid.threads)")
    parser.add_argument("--loader-workers", type=int, help="DataLoader worker processes per training")
    parser.add_argument("--jobs", type=int, help="units trained in parallel processes (default: cores / threads on a "
                        "CPU, 1 on a GPU)")  # fmt: skip
    parser.add_argument("--section", help="the docs/BENCHMARKS.md section to write (default: label_efficiency"
                        "[_coco_mini]); name a new one for a side experiment so the main grid's stays")  # fmt: skip
    parser.add_argument("--title", help="that section's title")
    parser.add_argument("--replot", action="store_true", help="only redraw the plots from docs/bench/*.json")
    parser.add_argument("--no-report", action="store_true", help="print the summary only (smoke runs)")
    return parser.parse_args(argv)


def grid_from(args: argparse.Namespace, base: Grid) -> Grid:
    overrides = {"policies": args.policies, "ssl": args.ssl, "seeds": args.seeds, "rounds": args.rounds,
                 "seed_labels": args.seed_labels, "budget": args.budget, "epochs": args.epochs, "steps": args.steps,
                 "batch_size": args.batch_size, "input_size": args.input_size, "variant": args.variant,
                 "images": args.images, "warm_start": args.warm_start, "threads": args.threads,
                 "loader_workers": args.loader_workers}  # fmt: skip
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(base, **overrides)


def command_line(argv: list[str], via_bench: bool) -> str:
    niceness = os.nice(0) if hasattr(os, "nice") else 0
    prefix = f"nice -n {niceness} " if niceness > 0 else ""
    if via_bench:
        return f"{prefix}python -m bench {NAME}  # = python -m bench.label_efficiency (CPU grid, both sources)"
    return f"{prefix}python -m bench.label_efficiency {shlex.join(argv)}".rstrip()


def main(argv: list[str] | None = None, via_bench: bool = False) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    sources = ("synthetic", "coco_mini") if args.source == "all" else (args.source,)
    command = command_line(argv, via_bench)
    for source in sources:
        if source == "coco_mini" and not (COCO_MINI / "annotations" / "person_keypoints_train2017.json").is_file():
            print(f"[{NAME}] skipping coco_mini: {COCO_MINI.resolve()} is absent (see ../shared/data/README.md)")
            continue
        base = GRIDS[args.grid] if source == "synthetic" or args.grid != "cpu" else CPU_COCO
        grid = grid_from(args, base)
        section = args.section or (NAME if source == "synthetic" else f"{NAME}_{source}")
        if args.replot:
            print(f"[{NAME}] redrew {replot(section)}")
            continue
        jobs = args.jobs or default_jobs(grid)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"{section}-") as tmp:
            result = run_grid(grid, source, Path(tmp), jobs)
        seconds = time.perf_counter() - started
        if args.no_report:
            for arm, points in curves(result["rows"]).items():
                print(arm, [(round(p["labeled"]), round(p["ap"], 4)) for p in points])
            print("reference", result["references"])
        else:
            report(section, grid, source, result, command, seconds, jobs, args.title)


def run() -> None:
    """``python -m bench label_efficiency``: the CPU grid on both sources."""
    main([], via_bench=True)


if __name__ == "__main__":
    main()
