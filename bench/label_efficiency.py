"""Label efficiency (issue #14): which selection policy saves annotation work, in the label-limited regime?

A simulated active-learning loop on the library's round (``pipeline.loop.run_round``: the functions the DVC stages
call, in one process, with file hand-off between the steps) and the oracle (``oracle.json``, the pool's hidden truth)
as the annotator; no Label Studio, no Ray:

    prepare (seed labels: a few % of the labelable people)
    round 0: merge (seed labels only) -> train -> score the pool        run_round without a teacher
    round r = 1..R:                                                     run_round(teacher=round r-1)
        select B instances with the arm's policy from round r-1's       pipeline.selection.select_next
        pool predictions (labeled, corrected and skipped ones excluded)
        "annotate" them from oracle.json                                pipeline.loop.annotate_from_truth: one pull
                                                                        into the arm's store; effort against the
                                                                        teacher's keypoints; unlabelable people
                                                                        skipped
        merge seed + store -> train.json                                pipeline.merge.merge_labels
        train on train.json, val AP each epoch, best kept               pipeline.ray_train.train_model (in process)
        the new model over the pool (not in the last round)             pipeline.pseudolabel.score_pool (in process)

An arm is (selection policy, ``train.ssl.mode``): any policy of ``pipeline.selection.POLICIES`` (random, combined
uncertainty, cold_start, typiclust, cluster_uncertainty, skip_hopeless, effort, or one signal), optionally followed by
the options of ``policy_spec`` (+skip, +random, +power, +features, +scratch, +reinit). The SSL-off arms run
first with the references; then ``Grid.ssl_policies`` (on the CPU grid the best SSL-off policy) run with SSL on. Round 0
is the same for every policy of one (seed, SSL mode), so it is trained once and shared.

The regime check: the fully supervised reference (every labelable person through the same merge, SSL off, from
scratch, as many optimiser steps as an arm's final model has seen) must reach ``MIN_REFERENCE_AP`` val AP, or the
verdicts are void: below it more labels cannot help enough for selection to matter.

Warm start (CPU grid): each round starts from the previous round's kept weights, with a fresh optimiser and cosine
schedule, like ``train.warm_start: previous``; every arm gets the same steps, so the comparison stays fair; an arm
with ``+scratch`` trains each round from random weights for as many steps as a warm-started model has seen by then;
one with ``+reinit`` from random weights for the round's own steps, as the product's ``train.warm_start: scratch``.
The FULL grid trains each round from scratch.

Grids: ``CPU`` (the default, what ``python -m bench label_efficiency`` runs; sized in its comment to fit 2 hours on 2
cores) and ``FULL`` (192x256, 5 rounds, every policy with SSL too; GPU-sized: ``--grid full``). Units (a seed's
reference, or a seed's round 0 and its policies for one SSL mode) run in parallel processes, ``--jobs`` of them
(default: cores / threads per training on a CPU, 1 on a GPU). Every knob is a flag: ``python -m
bench.label_efficiency --help``. ``--source coco_mini`` runs the same loop on the real photos of
``../shared/data/coco_mini`` (skipped with a message when absent); ``--source all`` runs both.

Outputs: a section of docs/BENCHMARKS.md (``label_efficiency`` / ``label_efficiency_coco_mini``), the raw numbers in
docs/bench/<section>.json, docs/bench/label_efficiency_summary.json (the issue's keys) and the plot
docs/bench/<section>.png (val AP against labels and against moved keypoints, PCK@0.1, shaded min-max over seeds).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import multiprocessing
import os
import re
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
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from bench.report import RESULTS_DIR, available_cores, write_section
from pipeline.config import Params, load_params, with_overrides
from pipeline.data.coco import read_coco
from pipeline.data.pool_predictions import list_column, read_pool_predictions
from pipeline.data.pool_predictions import to_coco_results as table_results
from pipeline.data.prepare import prepare
from pipeline.data.synthetic import TAGS
from pipeline.evaluation import oks
from pipeline.keypoints import KeypointSchema
from pipeline.labelstudio.oracle import is_unlabelable
from pipeline.loop import Round, RoundFiles, annotate_from_truth, run_round
from pipeline.ray_train import TrainedModel
from pipeline.selection import (
    CLUSTER_POLICIES,
    EXCLUDES_HOPELESS,
    POLICIES,
    hopeless_rows,
)
from pipeline.training import epoch_steps

NAME = "label_efficiency"
COCO_MINI = Path("../shared/data/coco_mini")
SSL_MODES = ("off", "cutout", "adaptive", "adaptive_mixup")
ROUND_ZERO_TIME = datetime(2000, 1, 1, tzinfo=UTC)  # simulated annotation times: round r at + r hours
# The regime check (issue #14): below this all-labels AP more labels cannot help much, and the verdicts are void.
MIN_REFERENCE_AP = 0.4


@dataclass(frozen=True)
class Grid:
    """What one run measures. Counts < 1 are fractions of the labelable people (seed + pool)."""

    policies: tuple[str, ...]  # selection policies (pipeline.selection.POLICIES), with policy_spec's options
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
    # policies that also run with each SSL mode other than "off"; "best" = the SSL-off policy that needed the fewest
    # labels to reach random's final AP (chosen after the SSL-off arms ran: the SSL arms run second)
    ssl_policies: tuple[str, ...] = ("random", "best")
    skip_below_visible: int = 4  # the simulated annotator skips a person with fewer clearly visible keypoints
    threads: int = 1  # torch threads. On 2 shared cores 2 threads were 20x slower per step than 1 (0.12 s vs 2.5 s)
    loader_workers: int = 0  # DataLoader processes (train.loader_workers); a GPU needs several to be fed


# The arms of the default run (issue #26): random, plain top-k uncertainty, the product's default (the most uncertain
# half left out), the oracle bounds (what a perfect uncertainty signal picks, and its opposite), and, on the CPU
# grid, random and the default trained from scratch each round for the steps a warm start has seen. Earlier arms
# (cold_start, skip_hopeless, effort, typiclust, cluster_uncertainty, power sampling) have their own sections.
POLICIES_MEASURED = ("random", "uncertainty", "uncertainty+skip0.5", "oracle_hardest", "oracle_easiest")
# CPU size, sized to fit about an hour on 2 cores with 2 seeds: 1000 synthetic images (~1,900 labelable people),
# 5% seed labels then 4 rounds of 3.75% (20% labeled at the end), 2 x 100 steps per round from the previous round's
# weights, so the final model and the reference have seen 1000 steps. 128x160 crops: at 96x128 the all-labels
# reference reached 0.375 AP in 1000 steps (below the regime check's 0.4), and input size was the largest lever of
# the recipe search. SSL off for every arm, then on for the best: a warm-started arm's 4 rounds take ~1.6 min of wall
# time per seed with two single-thread processes at a time (issue #26's runs), a scratch arm 2.5x that, SSL ~2.3x.
CPU = Grid(
    policies=(*POLICIES_MEASURED, "random+scratch", "uncertainty+skip0.5+scratch"),
    ssl=("off", "adaptive_mixup"),
    seeds=(0, 1),
    rounds=4,
    seed_labels=0.05,
    budget=0.0375,
    epochs=2,
    steps=100,
    batch_size=32,
    input_size=(128, 160),
    variant=None,
    images=1000,
    warm_start=True,
    ssl_policies=("best",),
)
FULL = Grid(
    policies=POLICIES_MEASURED,
    ssl=("off", "adaptive_mixup"),
    seeds=(0, 1, 2),
    rounds=5,
    seed_labels=0.05,
    budget=0.05,
    epochs=10,
    steps=100,
    batch_size=32,
    input_size=(192, 256),
    variant=None,
    images=2000,
    warm_start=False,
    ssl_policies=POLICIES_MEASURED,
    threads=4,
    loader_workers=8,
)
# coco_mini has 86 people with keypoints in train2017: counts, not fractions, and a seed big enough to learn from.
CPU_COCO = dataclasses.replace(CPU, policies=("random", "uncertainty"), ssl=("off",), rounds=3, seed_labels=8, budget=8)
GRIDS = {"cpu": CPU, "full": FULL}


# --------------------------------------------------------------------------------------------------- setup


# The bounds: what a perfect uncertainty signal picks (the people the teacher gets most wrong, by its true OKS) and
# its opposite. The bench writes the teacher's true error into the ``difficulty`` column of a copy of its pool
# predictions and selects by that column alone (``oracle_teacher``): the library's selection, with the oracle's signal.
ORACLE_POLICIES = ("oracle_hardest", "oracle_easiest")
# Issue #26 step 4, an arm option rather than a grid: warm start against training from scratch in one run. A scratch
# arm's round r trains (r + 1) x the grid's epochs from random weights: as many steps as the warm-started model has
# seen by then (Ash & Adams, NeurIPS 2020, compare models trained to the same point, not the same last increment).
SCRATCH = "train_from"
# Issue #26's finding, one sentence, for the summary (docs/BENCHMARKS.md, "Why hard people hurt", has the numbers)
CAUSE = (
    "bug fixed and property shown: occluded keypoints were training targets (fixed, train.occluded_weight 0); beyond "
    "that the extreme tail of the teacher's errors (people it cannot read: cut to a pair of legs, occluded, tiny) "
    "teaches a model trained on few labels something wrong, so the default leaves the most uncertain half out "
    "(select.skip_top_share 0.5)"
)


def policy_spec(spec: str) -> tuple[str, dict[str, float | str]]:
    """An arm's policy -> (select's policy, the select settings it changes): "uncertainty" -> ("uncertainty", {});
    "uncertainty+random0.5" -> half of each round's budget drawn at random (``random_share``); "uncertainty+skip0.1"
    -> the 10% the policy ranks first left out (``skip_top_share``); "+power2" -> the picks drawn with p ~ rank^2
    (``sampling: power``, ``power_beta``); "+features" -> clusters in the teacher's pooled features
    (``embedding: features``); "+scratch" -> every round trains from scratch (``SCRATCH``), where the grid warm
    starts, for as many steps as the warm-started model has seen; "+reinit" -> from scratch for the round's own
    steps (the product's switch). Options may follow one policy in any order, each once. An oracle policy
    (``ORACLE_POLICIES``) stays itself; ``run_unit`` turns it into ``difficulty`` on the oracle's column."""
    policy, plus, rest = spec.partition("+")
    options = re.findall(r"\+(skip|random|power|features|scratch|reinit)(\d*\.?\d+)?", plus + rest)
    settings: dict[str, float | str] = {}
    for name, value in options:
        if name in ("features", "scratch", "reinit"):
            settings |= {"embedding": "features"} if name == "features" else {SCRATCH: name}
        elif name == "power":
            settings |= {"sampling": "power", "power_beta": float(value)}
        else:
            settings[{"skip": "skip_top_share", "random": "random_share"}[name]] = float(value or "nan")
    valid = (
        policy in (*POLICIES, *ORACLE_POLICIES)
        and "".join(f"+{name}{value}" for name, value in options) == plus + rest
        and len({name for name, _ in options}) == len(options)
        and all((name in ("features", "scratch", "reinit")) != bool(value) for name, value in options)
        and sum(name in ("scratch", "reinit") for name, _ in options) <= 1
        # a cluster policy picks by its own rule (select refuses power sampling with it), and only it clusters
        and not (policy in CLUSTER_POLICIES and "sampling" in settings)
        and (policy in CLUSTER_POLICIES or "embedding" not in settings)
        and 0.0 < settings.get("random_share", 1.0) <= 1.0
        and 0.0 < settings.get("skip_top_share", 0.5) < 1.0
        and settings.get("power_beta", 1.0) > 0.0
    )
    if not valid:
        raise argparse.ArgumentTypeError(
            f"{spec!r}: expected one of {', '.join((*POLICIES, *ORACLE_POLICIES))}, optionally followed by "
            "+skip<share in (0, 1)>, +random<share in (0, 1]>, +power<beta > 0> (not with a cluster policy), "
            "+features (only with one) and / or one of +scratch / +reinit, e.g. uncertainty+skip0.1+random0.5 or "
            "cluster_uncertainty+features+skip0.5"
        )
    return policy, settings


def coco_mini_overrides() -> dict:
    """``data`` settings for ../shared/data/coco_mini: train2017 feeds seed and pool, 28 of the 32 val2017 images with
    keypoint people are val, 4 test."""
    root = COCO_MINI.resolve()
    return {
        "data.source": "coco",
        "data.val_images": 28,
        "data.test_images": 4,
        "data.coco.annotations": str(root / "annotations/person_keypoints_train2017.json"),
        "data.coco.images": str(root / "train2017"),
        "data.coco.val_annotations": str(root / "annotations/person_keypoints_val2017.json"),
        "data.coco.val_images": str(root / "val2017"),
    }


def base_params(grid: Grid, seed: int, source: str) -> Params:
    """params.yaml with the grid's sizes; select / pseudolabel sections (weights, tau, flip test) unchanged."""
    params = load_params()
    overrides: dict = {"data.labeled": grid.seed_labels, "data.seed": seed}
    if source == "synthetic":
        overrides |= {
            "data.source": "synthetic",
            "data.val_images": min(100, grid.images // 4),
            "data.test_images": min(10, grid.images // 20),
            "data.synthetic.num_images": grid.images,
        }
    else:
        overrides |= coco_mini_overrides()
    train = {
        "epochs": grid.epochs,
        "min_steps_per_epoch": grid.steps,
        "batch_size": grid.batch_size,
        "seed": seed,
        "warmup_steps": min(params.train.warmup_steps, grid.steps),
        "num_workers": 1,
        "threads_per_worker": grid.threads,
        "loader_workers": grid.loader_workers,
        "warm_start": "scratch",
        "pseudo_labels": False,
        "ssl.rampup_epochs": min(params.train.ssl.rampup_epochs, max(1, grid.epochs // 3)),
    }
    overrides |= {"codec.input_size": list(grid.input_size), "model.variant": grid.variant}
    return with_overrides(params, overrides | {f"train.{k}": v for k, v in train.items()})


def with_ssl(params: Params, mode: str, epochs: int | None = None) -> Params:
    return with_overrides(params, {"train.ssl.mode": mode} | ({"train.epochs": epochs} if epochs is not None else {}))


def count_of(value: float, total: int) -> int:
    """A fraction (< 1) of ``total`` or a count, at least 1."""
    return max(1, round(value * total) if value < 1 else int(value))


@dataclass
class Project:
    """One seed's prepared data and what every arm of it shares."""

    seed: int
    root: Path
    prepared: Path
    seed_labels: int
    pool_size: int
    truth: dict[int, dict]  # instance id -> oracle annotation (synthetic_tags kept as written)
    schema: KeypointSchema

    @property
    def labelable(self) -> int:
        return self.seed_labels + self.pool_size

    def files(self, store: Path) -> RoundFiles:
        """What a round of one arm reads: the prepared split and the arm's own corrections store."""
        prepared = self.prepared
        return RoundFiles(prepared / "labeled.json", prepared / "pool.json", prepared / "val.json", prepared, store)

    def teacher_oks(self, table: pa.Table) -> dict[int, float]:
        """Pool instance id -> OKS of a model's keypoints (pool predictions ``table``) against the oracle's."""
        sigmas = self.schema.sigma_array
        out = {}
        for r in table_results(table, self.schema.category_id):
            truth = self.truth[int(r["instance_id"])]
            gt = np.asarray(truth["keypoints"], np.float64).reshape(-1, 3)
            pred = np.asarray(r["keypoints"], np.float64).reshape(-1, 3)[:, :2]
            out[int(r["instance_id"])] = oks(pred, gt, float(truth["area"]), sigmas)
        return out

    def annotator(self, store: Path, round_: int, arm: str, skip_below_visible: int):
        """The simulated annotator of round ``round_`` (``annotate_from_truth``), for ``run_round``'s ``annotate``."""
        at = ROUND_ZERO_TIME + timedelta(hours=round_)
        return functools.partial(
            annotate_from_truth,
            truth=self.truth,
            schema=self.schema,
            store=store,
            at=at,
            model_version=f"bench/{arm}/round{round_ - 1}",
            skip_below_visible=skip_below_visible,
        )


def make_project(params: Params, seed: int, root: Path) -> Project:
    prepared = root / "prepared"
    prepare(params.data, prepared)
    seed_coco = read_coco(prepared / "labeled.json")
    oracle = json.loads((prepared / "oracle.json").read_text())  # raw JSON: keeps synthetic_tags as written
    return Project(
        seed=seed,
        root=root,
        prepared=prepared,
        seed_labels=len(seed_coco.annotations),
        pool_size=len(json.loads((prepared / "pool.json").read_text())["annotations"]),
        truth={int(a["id"]): a for a in oracle["annotations"]},
        schema=seed_coco.schema,
    )


# --------------------------------------------------------------------------------------------------- the loop


def arm_name(policy: str, ssl: str) -> str:
    return policy if ssl == "off" else f"{policy} + SSL ({ssl})"


@dataclass(frozen=True)
class Unit:
    """One process's share of a grid: a seed's reference, or a seed's round 0 plus its policies for one SSL mode."""

    seed: int
    ssl: str | None  # None: the fully supervised reference of this seed
    policies: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"seed {self.seed} " + ("reference" if self.ssl is None else f"ssl {self.ssl}")


def units_of(grid: Grid, ssl_modes: tuple[str, ...], policies: tuple[str, ...], references: bool) -> list[Unit]:
    """Longest first (SSL on, SSL off, references), so that parallel jobs end close together."""
    by_cost = sorted(ssl_modes, key=lambda mode: mode == "off")
    units = [Unit(s, m, policies) for m in by_cost for s in grid.seeds]
    return units + ([Unit(s, None) for s in grid.seeds] if references else [])


def default_jobs(grid: Grid) -> int:
    """Processes in parallel: one per ``grid.threads`` cores on a CPU; one on a GPU (they would share it)."""
    if torch.cuda.is_available():
        return 1
    return max(1, available_cores() // grid.threads)


def oracle_teacher(project: Project, teacher: Round, policy: str, folder: Path) -> Round:
    """``teacher`` as an oracle arm selects from it: its labels and pool predictions copied into ``folder``, the
    ``difficulty`` column replaced by the teacher's true error (1 - OKS against oracle.json) for oracle_hardest, by
    its OKS for oracle_easiest, so that ``select.policy: difficulty`` picks the hardest or the easiest people (NaN,
    never picked, where the truth has no labeled keypoint)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(teacher.labels, folder / "train.json")
    truth = project.teacher_oks(teacher.table)
    ids = teacher.table.column("instance_id").to_pylist()
    # a person with no labeled keypoint has no error to measure (OKS 0 by convention): left out, not ranked hardest
    labeled = {i for i, a in project.truth.items() if any(v > 0 for v in a["keypoints"][2::3])}
    true_oks = np.array([truth[int(i)] if int(i) in labeled and int(i) in truth else np.nan for i in ids])
    column = 1.0 - true_oks if policy == "oracle_hardest" else true_oks
    index = teacher.table.column_names.index("difficulty")
    table = teacher.table.set_column(index, "difficulty", pa.array(column, pa.float64(), mask=np.isnan(column)))
    pq.write_table(table, folder / "pool_predictions.parquet")
    scores, table = read_pool_predictions(folder / "pool_predictions.parquet")  # what select_next will read
    return dataclasses.replace(teacher, folder=folder, scores=scores, table=table)


def run_unit(grid: Grid, source: str, unit: Unit, workdir: Path) -> dict:
    """One unit in this process; returns its raw rows (the same keys for every unit, lists possibly empty). Every
    training is a round of the library (``pipeline.loop.run_round``): select from the previous round's pool
    predictions, the simulated annotator, merge, train, score the pool."""
    results: dict[str, list[dict]] = {key: [] for key in RESULT_KEYS}
    seed = unit.seed
    params = base_params(grid, seed, source)
    project = make_project(params, seed, workdir / f"seed{seed}-{unit.ssl or 'reference'}")
    trainings = 1 if unit.ssl is None else 1 + len(unit.policies) * grid.rounds
    done, started = 0, time.perf_counter()

    def progress(text: str) -> None:
        elapsed = time.perf_counter() - started
        eta = elapsed / done * (trainings - done) if done else float("nan")
        print(
            f"[{NAME}] {source} {unit.label}: {done}/{trainings} trainings, {elapsed / 60:.1f} min elapsed, "
            f"~{eta / 60:.0f} min left | {text}",
            flush=True,
        )

    budget = count_of(grid.budget, project.labelable)
    n0 = project.seed_labels
    visible = grid.skip_below_visible
    unlabelable = {i for i, a in project.truth.items() if is_unlabelable(a["keypoints"], min_visible=visible)}
    try:
        if unit.ssl is None:
            # the fully supervised reference: every labelable person through the same merge, SSL off, same steps
            tags = Counter(t for a in project.truth.values() for t in a.get("synthetic_tags", []))
            tagged = sum(bool(a.get("synthetic_tags")) for a in project.truth.values())
            results["base_rates"].append(
                {
                    "seed": seed,
                    "pool": len(project.truth),
                    "labelable": project.labelable,
                    "seed_labels": n0,
                    "budget": budget,
                    "tags": dict(tags),
                    "any_tag": tagged,
                    "unlabelable": len(unlabelable),
                }
            )
            ref_dir = project.root / "reference"
            store = ref_dir / "corrections"
            labelable = pa.table({"instance_id": [i for i in sorted(project.truth) if i not in unlabelable]})
            project.annotator(store, 1, "reference", visible)(labelable)
            epochs = grid.epochs * (grid.rounds + 1 if grid.warm_start else 1)
            ref_params = with_ssl(params, "off", epochs)
            ref = run_round(ref_params, project.files(store), ref_dir, score=False)
            done += 1
            labeled = ref.merge_report["labeled_total"]
            metrics = _metrics(ref_params, ref.trained)
            results["references"].append({"seed": seed, "labeled": labeled, **metrics})
            progress(f"reference ({labeled} labels): val AP {ref.trained.ap:.4f}")
            return results

        ssl = unit.ssl
        arm_params = with_ssl(params, ssl)
        zero_dir = project.root / f"ssl-{ssl}"
        progress(f"{project.labelable} labelable people, {n0} seed labels, budget {budget} per round")
        zero = run_round(arm_params, project.files(zero_dir / "corrections"), zero_dir / "round0")  # seed labels
        done += 1
        progress(f"round 0 ({n0} labels): val AP {zero.trained.ap:.4f}")
        for policy in unit.policies:
            arm = arm_name(policy, ssl)
            base_policy, settings = policy_spec(policy)
            train_from = settings.pop(SCRATCH, None)
            scratch = train_from is not None and grid.warm_start
            oracle = base_policy in ORACLE_POLICIES
            select_by = "difficulty" if oracle else base_policy
            # an arm is its spec alone: params.yaml's own random / skip shares do not leak into it
            arm_select = {"random_share": 0.0, "skip_top_share": 0.0, "sampling": "top", "embedding": "pose"}
            arm_select |= settings
            cfg = dataclasses.replace(arm_params.select, policy=select_by, **arm_select)
            policy_params = dataclasses.replace(arm_params, select=cfg)
            store = zero_dir / policy / "corrections"
            spent = Counter(tasks=0, skipped=0, moved=0, added=0, deleted=0, review=0)
            row = {"seed": seed, "ssl": ssl, "policy": policy, "arm": arm}
            results["rows"].append(
                {**row, "round": 0, "labeled": n0, "share": n0 / project.labelable, **dict(spent)}
                | _metrics(arm_params, zero.trained)
            )
            teacher = zero
            for r in range(1, grid.rounds + 1):
                ids = teacher.scores["instance_id"].to_numpy()
                if r == 1 or base_policy in EXCLUDES_HOPELESS:
                    flagged = hopeless_rows(
                        list_column(teacher.table, "scores"), cfg.hopeless_min_keypoints, cfg.hopeless_min_score
                    )
                    truly = np.isin(ids, list(unlabelable))
                    results["hopeless_checks"].append(
                        {
                            "seed": seed,
                            "arm": arm,
                            "round": r,
                            "flagged": int(flagged.sum()),
                            "unlabelable": int(truly.sum()),
                            "both": int((flagged & truly).sum()),
                            "pool": len(ids),
                        }
                    )
                if oracle:
                    teacher = oracle_teacher(project, teacher, base_policy, zero_dir / policy / f"oracle{r - 1}")
                epochs = grid.epochs * (r + 1) if train_from == "scratch" else grid.epochs
                round_params = with_overrides(policy_params, {"train.epochs": epochs})
                current = run_round(
                    round_params if scratch else policy_params,
                    project.files(store),
                    zero_dir / policy / f"round{r}",
                    teacher=teacher,
                    annotate=project.annotator(store, r, arm, visible),
                    init_weights=teacher.weights if grid.warm_start and not scratch else None,
                    select_seed=seed * 1000 + r,
                    budget=budget,
                    score=r < grid.rounds,
                )
                done += 1
                chosen = current.selection
                for queue, rows in (("correct", chosen.rows), ("review", chosen.review_rows)):
                    for iid in ids[rows]:
                        results["selections"].append(
                            {
                                "seed": seed,
                                "arm": arm,
                                "round": r,
                                "instance_id": int(iid),
                                "queue": queue,
                                "skipped": int(iid) in unlabelable,
                                "tags": list(project.truth[int(iid)].get("synthetic_tags", [])),
                            }
                        )
                spent.update(current.effort)
                spent["review"] += len(chosen.review_rows)
                labeled = current.merge_report["labeled_total"]
                results["rows"].append(
                    {**row, "round": r, "labeled": labeled, "share": labeled / project.labelable, **dict(spent)}
                    | _metrics(round_params if scratch else policy_params, current.trained)
                )
                progress(
                    f"{arm} round {r} ({labeled} labels, {spent['moved']} moved keypoints, "
                    f"{spent['skipped']} skipped): val AP {current.trained.ap:.4f}"
                )
                teacher = current
        return results
    finally:
        shutil.rmtree(project.root, ignore_errors=True)  # images, checkpoints: hundreds of MB per unit


RESULT_KEYS = ("rows", "references", "selections", "base_rates", "hopeless_checks")


def run_units(grid: Grid, source: str, units: list[Unit], workdir: Path, jobs: int) -> dict:
    """``units`` of ``grid`` on ``source``, ``jobs`` at a time (spawned processes, one per unit); the raw results
    concatenated in unit order (seed, reference first), the same whatever ``jobs`` is."""
    started = time.perf_counter()
    print(f"[{NAME}] {source}: {len(units)} units ({', '.join(u.label for u in units)}), {jobs} at a time", flush=True)
    if jobs <= 1:
        results = {u: run_unit(grid, source, u, workdir) for u in units}
    else:
        results = {}
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(run_unit, grid, source, u, workdir): u for u in units}
            for future in as_completed(futures):
                unit = futures[future]
                results[unit] = future.result()  # a failed unit fails the run, with its traceback
                print(
                    f"[{NAME}] {source}: {unit.label} done ({len(results)}/{len(units)} units, "
                    f"{(time.perf_counter() - started) / 60:.1f} min)",
                    flush=True,
                )
    modes = ("off", *grid.ssl)
    ordered = sorted(units, key=lambda u: (u.seed, u.ssl is not None, modes.index(u.ssl) if u.ssl else 0))
    return {key: [item for u in ordered for item in results[u][key]] for key in RESULT_KEYS}


def run_grid(grid: Grid, source: str, workdir: Path, jobs: int = 1) -> dict:
    """Every arm of ``grid`` on ``source``: first every policy without SSL and the references, then
    ``grid.ssl_policies`` (with "best" resolved from the first part) under each SSL mode. Returns the raw rows (one
    per training), the per-seed references, every selected instance with its tags, the pool's tag base rates and the
    hopeless flags' agreement with the annotator's skips."""
    off = tuple(m for m in grid.ssl if m == "off")
    on = tuple(m for m in grid.ssl if m != "off")
    first = run_units(grid, source, units_of(grid, off, grid.policies, references=True), workdir, jobs)
    best = best_policy(curves(first["rows"])) if off else None
    ssl_policies = tuple(dict.fromkeys(best if p == "best" else p for p in grid.ssl_policies if best or p != "best"))
    if not on or not ssl_policies:
        return {**first, "best_policy": best}
    print(f"[{NAME}] {source}: SSL arms for {', '.join(ssl_policies)} (best without SSL: {best})", flush=True)
    second = run_units(grid, source, units_of(grid, on, ssl_policies, references=False), workdir, jobs)
    return {**{key: first[key] + second[key] for key in RESULT_KEYS}, "best_policy": best}


def _metrics(params: Params, t: TrainedModel) -> dict:
    """One row's training figures: val AP of the kept and the last epoch, PCK@0.1, optimiser steps, seconds."""
    steps = params.train.epochs * epoch_steps(t.labeled, params)
    pck10 = float(t.summary["val_pck10"])
    return {"ap": t.ap, "final_ap": t.final_ap, "pck10": pck10, "steps": steps, "seconds": round(t.seconds, 1)}


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
            point = {
                "round": rnd,
                "labeled": statistics.mean(r["labeled"] for r in sel),
                "share": statistics.mean(r["share"] for r in sel),
                "seeds": len(sel),
            }
            for key in ("moved", "added", "deleted", "tasks", "skipped", "review"):  # cumulative annotator work
                point[key] = statistics.mean(r.get(key, 0) for r in sel)
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


def cost_to_reach(points: list[dict], level: float, cost: str) -> float | None:
    """``cost`` ("labeled" or "moved") at which the mean curve first reaches ``level`` AP, interpolated linearly
    between the two rounds around the crossing (None: never reached)."""
    for before, after in zip([None, *points[:-1]], points, strict=True):
        if after["ap"] >= level:
            if before is None or after["ap"] == before["ap"]:
                return float(after[cost])
            t = (level - before["ap"]) / (after["ap"] - before["ap"])
            return float(before[cost] + t * (after[cost] - before[cost]))
    return None


def supervised_arms(curve: dict[str, list[dict]]) -> list[str]:
    return [a for a in curve if " + SSL (" not in a]


def best_policy(curve: dict[str, list[dict]]) -> str | None:
    """The SSL-off policy other than random (random with any option, e.g. ``random+scratch``, is the baseline, not a
    policy; the oracle bounds need the truth) that reaches random's final AP with the fewest labels; when none does,
    the one with the highest final AP."""
    if "random" not in curve:
        return None
    target = curve["random"][-1]["ap"]
    others = [a for a in supervised_arms(curve) if a.partition("+")[0] not in ("random", *ORACLE_POLICIES)]
    if not others:
        return None
    reached = {a: cost_to_reach(curve[a], target, "labeled") for a in others}
    hits = {a: c for a, c in reached.items() if c is not None}
    if hits:
        return min(hits, key=lambda a: (hits[a], -curve[a][-1]["ap"]))
    return max(others, key=lambda a: curve[a][-1]["ap"])


def ssl_arm_at_seed_share(curve: dict[str, list[dict]], best: str | None) -> str | None:
    """The SSL arm whose round 0 measures SSL on the seed labels alone: the best policy's, else any. Round 0 trains
    on the seed labels only and is shared by every policy of one (seed, SSL mode), so against random's round 0 it is
    SSL's gain at the seed share, whichever policy the arm follows later."""
    ssl_best = next((a for a in curve if best and a.startswith(f"{best} + SSL (")), None)
    return ssl_best or next((a for a in curve if " + SSL (" in a), None)


def at_share(points: list[dict], share: float) -> dict:
    """The last round with at most ``share`` of the labelable people labeled (the first round when none is)."""
    within = [p for p in points if p["share"] <= share + 1e-9]
    return within[-1] if within else points[0]


def summary(curve: dict[str, list[dict]], ref_ap: float, best: str | None, grid: Grid, seconds: float) -> dict:
    """docs/bench/label_efficiency_summary.json: the issue's keys (numbers on the 0-1 AP scale, None where a value
    does not exist, e.g. a level never reached)."""
    random_final = curve["random"][-1] if "random" in curve else None
    out: dict = {
        "reference_ap": round(ref_ap, 4),
        "random_final_ap": round(random_final["ap"], 4) if random_final else None,
        "best_policy": best,
        "best_labels_to_random_final": None,
        "best_moved_keypoints_to_random_final": None,
        "ssl_best_fraction_of_reference_at_20pct": None,
        "ssl_gain_ap_at_5pct": None,
        "seeds": len(grid.seeds),
        "wall_minutes": round(seconds / 60, 1),
        "regime_check_passed": ref_ap >= MIN_REFERENCE_AP,
        # the bounds: a perfect uncertainty signal's picks (the teacher's true hardest) and their opposite
        **{
            f"{policy}_final_ap": round(curve[policy][-1]["ap"], 4) if policy in curve else None
            for policy in ORACLE_POLICIES
        },
        "cause": CAUSE,
    }
    if best and random_final:
        labels = cost_to_reach(curve[best], random_final["ap"], "labeled")
        moved = cost_to_reach(curve[best], random_final["ap"], "moved")
        out["best_labels_to_random_final"] = round(labels / random_final["labeled"], 4) if labels else None
        out["best_moved_keypoints_to_random_final"] = (
            round(moved / random_final["moved"], 4) if moved is not None and random_final["moved"] else None
        )
    ssl_best = next((a for a in curve if best and a.startswith(f"{best} + SSL (")), None)
    if ssl_best and ref_ap > 0:
        out["ssl_best_fraction_of_reference_at_20pct"] = round(at_share(curve[ssl_best], 0.20)["ap"] / ref_ap, 4)
    ssl_first = ssl_arm_at_seed_share(curve, best)
    if ssl_first and "random" in curve:
        out["ssl_gain_ap_at_5pct"] = round(curve[ssl_first][0]["ap"] - curve["random"][0]["ap"], 4)
    return out


def targets(curve: dict[str, list[dict]], ref_ap: float, best: str | None) -> list[tuple[str, str, str]]:
    """(target, verdict, evidence) for the issue's targets, on the mean curves over seeds. Below a reference AP of
    ``MIN_REFERENCE_AP`` the regime check failed and every verdict is void."""
    names = (
        "the best policy reaches random's final AP with <= 60% of random's labels",
        "... and with <= 60% of random's moved keypoints",
        "SSL + the best policy reaches >= 95% of the reference AP with <= 20% of the pool labeled",
        "SSL >= supervised + 5 AP at the seed labels (5%)",
    )
    if ref_ap < MIN_REFERENCE_AP:
        why = (
            f"void: the all-labels reference reached {ref_ap:.4f} val AP, below the regime check's "
            f"{MIN_REFERENCE_AP}: more labels cannot help enough for selection to matter"
        )
        return [(n, "void", why) for n in names]
    out = []
    if best is None or "random" not in curve:
        out += [
            (names[0], "not measured", "needs random and another policy"),
            (names[1], "not measured", "needs random and another policy"),
        ]
    else:
        final = curve["random"][-1]
        for name, cost, unit in ((names[0], "labeled", "labels"), (names[1], "moved", "moved keypoints")):
            reach = cost_to_reach(curve[best], final["ap"], cost)
            if reach is None:
                out.append(
                    (
                        name,
                        "NOT met",
                        f"{best} never reached random's final AP {final['ap']:.4f}; its final "
                        f"mean AP {curve[best][-1]['ap']:.4f}",
                    )
                )
                continue
            ratio = reach / final[cost] if final[cost] else float("nan")
            out.append(
                (
                    name,
                    "met" if ratio <= 0.6 else "NOT met",
                    f"{best}: {reach:.0f} {unit} (interpolated between rounds) against random's {final[cost]:.0f}"
                    f" for {final['ap']:.4f} AP = {ratio:.0%}",
                )
            )
    ssl_best = next((a for a in curve if best and a.startswith(f"{best} + SSL (")), None)
    if ssl_best is None:
        out.append((names[2], "not measured", "no SSL arm of the best policy in this grid"))
    else:
        point = at_share(curve[ssl_best], 0.20)
        fraction = point["ap"] / ref_ap
        out.append(
            (
                names[2],
                "met" if fraction >= 0.95 else "NOT met",
                f"{ssl_best}: {point['ap']:.4f} at {point['share']:.0%} labeled = {fraction:.0%} of the "
                f"reference {ref_ap:.4f}",
            )
        )
    ssl_first = ssl_arm_at_seed_share(curve, best)
    if ssl_first is None or "random" not in curve:
        out.append((names[3], "not measured", "needs an arm with SSL off and one with SSL on"))
    else:
        gain = (curve[ssl_first][0]["ap"] - curve["random"][0]["ap"]) * 100
        out.append(
            (
                names[3],
                "met" if gain >= 5 else "NOT met",
                f"{gain:+.1f} AP points at round 0 "
                f"({curve[ssl_first][0]['ap']:.4f} vs {curve['random'][0]['ap']:.4f}, same steps)",
            )
        )
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
    """Val AP against labeled instances and against moved keypoints (cumulative, the annotators' work), and PCK@0.1
    against labels: one colour per policy, solid without SSL and dashed with it, shaded min-max over seeds; the fully
    supervised reference as a black line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), dpi=110)
    panels = (
        (axes[0], "labeled", "ap", "labeled instances", "val OKS AP"),
        (axes[1], "moved", "ap", "moved keypoints (cumulative)", "val OKS AP"),
        (axes[2], "labeled", "pck10", "labeled instances", "val PCK@0.1"),
    )
    policies = list(dict.fromkeys(arm.split(" + SSL", 1)[0] for arm in curve))
    for ax, x_key, key, x_label, label in panels:
        for arm, points in curve.items():
            x = [p.get(x_key, 0) for p in points]
            colour = f"C{policies.index(arm.split(' + SSL', 1)[0]) % 10}"
            ssl = " + SSL" in arm
            ax.plot(
                x,
                [p[key] for p in points],
                marker="s" if ssl else "o",
                linestyle="--" if ssl else "-",
                color=colour,
                label=arm,
            )
            ax.fill_between(
                x,
                [p[f"{key}_min"] for p in points],
                [p[f"{key}_max"] for p in points],
                color=colour,
                alpha=0.06 if len(curve) > 4 else 0.15,
                linewidth=0,
            )
        ax.axhline(ref[key], color="black", linestyle="--", linewidth=1, label=f"all {ref['labeled']:.0f} labels")
        if key == "ap":
            ax.axhline(0.95 * ref[key], color="grey", linestyle=":", linewidth=1, label="95% of that")
        ax.set_xlabel(x_label)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05 * math.ceil(len(labels) / 5), 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_title(source: str, seeds: tuple[int, ...] | list[int]) -> str:
    return f"{source}: val AP / PCK against labels and moved keypoints (mean over seeds {list(seeds)}, shaded min-max)"


def replot(section: str) -> Path:
    """Redraw docs/bench/<section>.png from the raw numbers of docs/bench/<section>.json (no training)."""
    raw = json.loads((RESULTS_DIR / f"{section}.json").read_text())
    title = plot_title(raw["source"], raw["grid"]["seeds"])
    return plot(raw["curves"], raw["reference"], RESULTS_DIR / f"{section}.png", title)


SUMMARY_FILE = "label_efficiency_summary.json"


def hopeless_table(checks: list[dict]) -> str:
    """How well the teacher's hopeless flag (``hopeless_rows``) finds the people the annotator skips, per round."""
    if not checks:
        return ""
    lines = [
        "| round | pool | flagged hopeless | annotator would skip | both | precision | recall |",
        "|---|---|---|---|---|---|---|",
    ]
    for rnd in sorted({c["round"] for c in checks}):
        sel = [c for c in checks if c["round"] == rnd]
        total = {k: sum(c[k] for c in sel) for k in ("pool", "flagged", "unlabelable", "both")}
        precision = f"{total['both'] / total['flagged']:.0%}" if total["flagged"] else "-"
        recall = f"{total['both'] / total['unlabelable']:.0%}" if total["unlabelable"] else "-"
        lines.append(
            f"| {rnd} | {total['pool']} | {total['flagged']} | {total['unlabelable']} | {total['both']} | "
            f"{precision} | {recall} |"
        )
    return "\n".join(lines) + "\n"


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
    ref = {
        "ap": statistics.mean(r["ap"] for r in refs),
        "pck10": statistics.mean(r["pck10"] for r in refs),
        "labeled": statistics.mean(r["labeled"] for r in refs),
    }
    ref_ap_sd = _mean_sd([r["ap"] for r in refs])[1]
    best = result.get("best_policy")
    picture = plot(curve, ref, RESULTS_DIR / f"{section}.png", plot_title(source, grid.seeds))

    rounds = sorted({r["round"] for r in rows})
    head = "| arm | " + " | ".join(f"round {r}" for r in rounds) + " |\n|---|" + "---|" * len(rounds) + "\n"
    ap_table = pck_table = head
    for arm, points in curve.items():
        ap_table += (
            f"| {arm} | "
            + " | ".join(
                f"{p['labeled']:.0f} ({p['share']:.0%}), {p['moved']:.0f} moved: {p['ap']:.4f} ± {p['ap_sd']:.4f}"
                for p in points
            )
            + " |\n"
        )
        pck_table += (
            f"| {arm} | "
            + " | ".join(f"{p['labeled']:.0f}: {p['pck10']:.3f} ± {p['pck10_sd']:.3f}" for p in points)
            + " |\n"
        )

    random_final = curve["random"][-1]["ap"] if "random" in curve else None
    reach = (
        "| arm | labels to random's final AP | moved keypoints to random's final AP | labels to 95% of the "
        "reference | moved / deleted keypoints per task | skipped tasks | review-queue tasks | final AP (share of "
        "the reference) |\n|---|---|---|---|---|---|---|---|\n"
    )
    for arm, points in curve.items():
        last = points[-1]

        def cost(level: float | None, key: str, pts: list[dict] = points) -> str:
            value = cost_to_reach(pts, level, key) if level is not None else None
            return "never" if value is None else f"{value:.0f}"

        per_task = last["moved"] / last["tasks"] if last["tasks"] else 0.0
        deleted_per_task = last.get("deleted", 0) / last["tasks"] if last["tasks"] else 0.0
        skipped = f"{last['skipped'] / last['tasks']:.1%}" if last["tasks"] else "-"
        share = f" ({last['ap'] / ref['ap']:.0%})" if ref["ap"] > 0 else ""
        reach += (
            f"| {arm} | {cost(random_final, 'labeled')} | {cost(random_final, 'moved')} | "
            f"{cost(0.95 * ref['ap'], 'labeled')} | {per_task:.2f} / {deleted_per_task:.2f} | {skipped} | "
            f"{last['review']:.0f} | {last['ap']:.4f}{share} |\n"
        )

    verdict_rows = targets(curve, ref["ap"], best)
    verdicts = "\n".join(f"- {name}: **{verdict}** ({evidence})." for name, verdict, evidence in verdict_rows)
    trained = [r for r in rows if r["round"] > 0]
    trainings = len(refs) + len({(r["seed"], r["ssl"]) for r in rows}) + len(trained)
    per_training = statistics.mean([r["seconds"] for r in trained] + [r["seconds"] for r in refs])
    budget = statistics.mean(b["budget"] for b in result["base_rates"])
    seed_labels = statistics.mean(b["seed_labels"] for b in result["base_rates"])
    labelable = statistics.mean(b["labelable"] for b in result["base_rates"])
    unlabelable = statistics.mean(b.get("unlabelable", 0) for b in result["base_rates"])
    data = (
        f"{grid.images} synthetic images per seed (data.seed = seed; val: 100 images)"
        if source == "synthetic"
        else "coco_mini's real photos: the people of train2017 as seed + pool, 28 val2017 images as validation"
    )
    start = (
        "from the previous round's kept weights (fresh optimiser and cosine schedule; so later rounds have also "
        "seen more steps, equally in every arm)"
        if grid.warm_start
        else "from scratch"
    )
    regime = (
        f"**Regime check passed**: the all-labels reference reaches {ref['ap']:.4f} val AP (>= {MIN_REFERENCE_AP}), "
        "so labels are what limits the arms and selection can matter."
        if ref["ap"] >= MIN_REFERENCE_AP
        else f"**Regime check FAILED**: the all-labels reference reaches only {ref['ap']:.4f} val AP (< "
        f"{MIN_REFERENCE_AP}); every verdict below is void."
    )
    paragraphs = [
        "Which selection policy saves annotation work? A simulated labeling loop on the library's round "
        "(`pipeline.loop.run_round`: `select_next`, the select stage's step, which never offers a labeled or "
        "skipped person again; the simulated annotator `annotate_from_truth` answering into a corrections store; "
        "`merge_labels`; `train_model` in process; `score_pool` in process, flip test on, as the pseudolabel stage), "
        "with oracle.json as the annotator (bench/label_efficiency.py explains each step). The oracle arms are "
        "bounds, not policies: they select by the teacher's true error (hardest first, or easiest first), what a "
        "perfect uncertainty signal would know. The annotator's effort is counted as pull counts "
        "a person's (`keypoint_effort`: a pre-placed keypoint with per-keypoint OKS < 0.5 against the truth is "
        f"moved); it skips a person with fewer than 3 labeled or fewer than {grid.skip_below_visible} clearly "
        f"visible keypoints (`is_unlabelable`; {unlabelable:.0f} of the pool on average).",
        f"Setup: {data}; {labelable:.0f} labelable people on average; seed {seed_labels:.0f} labels "
        f"(data.labeled {grid.seed_labels:g}), then {grid.rounds} rounds of {budget:.0f} tasks (budget "
        f"{grid.budget:g}); seeds {list(grid.seeds)} (data split, random selection and training). Tiny backbone"
        f"{f' width {grid.variant}' if grid.variant else ''}, heatmap head (SAHR + WAHR), "
        f"{grid.input_size[0]}x{grid.input_size[1]} crops, {grid.epochs} epochs of at least {grid.steps} steps of "
        f"batch {grid.batch_size} per round, each round {start}. A round's val AP is that of the weights the train "
        "stage keeps (its best epoch). Round 0 (seed labels only) is trained once per seed and SSL mode and shared "
        f"by every policy. SSL ({', '.join(m for m in grid.ssl if m != 'off') or 'none'}) runs for "
        f"{', '.join(grid.ssl_policies)} after the supervised arms (best = {best}).",
        f"Fully supervised reference: every labelable person, SSL off, from scratch, {refs[0]['steps']} steps (as "
        f"many as an arm's final model has seen): val AP {ref['ap']:.4f} ± {ref_ap_sd:.4f} with {ref['labeled']:.0f} "
        f"labels. {regime} Wall time {seconds / 60:.1f} min for {trainings} trainings ({per_training:.0f} s each on "
        f"average, each training in one process with {grid.threads} torch thread(s), {jobs} such processes at a "
        "time).",
        'Val OKS AP after each round, mean ± sd over seeds; a cell is "labeled instances (share of the labelable '
        f'people), cumulative moved keypoints: AP":\n\n{ap_table}',
        f"Val PCK@0.1, mean ± sd over seeds:\n\n{pck_table}",
        "What each arm cost to get where (mean curves over seeds; labels and moved keypoints interpolated linearly "
        f"between rounds; random's final AP {random_final if random_final is None else round(random_final, 4)}, 95% "
        f"of the reference {0.95 * ref['ap']:.4f}; labels include the {seed_labels:.0f} seed labels, moved "
        f"keypoints count the annotators' corrections only):\n\n{reach}",
        f"Targets (on the mean curves over seeds):\n\n{verdicts}",
    ]
    hopeless = hopeless_table(result.get("hopeless_checks", []))
    if hopeless:
        paragraphs.append(
            "The teacher's hopeless flag (fewer than 3 keypoints scoring >= 0.3) against the "
            f"annotator's skips, over the pool (all seeds):\n\n{hopeless}"
        )
    tags = tag_table(result["selections"], result["base_rates"])
    if tags:
        paragraphs.append(
            "Share of the selected instances (all rounds and seeds) carrying each synthetic tag, against the pool's "
            f"base rate (an instance can carry several tags):\n\n{tags}"
        )
    paragraphs.append(f"![label efficiency: AP against labels and moved keypoints](bench/{picture.name})")
    body = "\n\n".join(p.strip() for p in paragraphs)
    raw = {
        "grid": dataclasses.asdict(grid),
        "source": source,
        "command": command,
        "wall_seconds": seconds,
        "curves": curve,
        "reference": ref,
        "targets": [list(t) for t in verdict_rows],
        **result,
    }
    title = (title or "Label efficiency: which selection policy saves annotation work?") + (
        "" if grid == FULL else " (CPU-sized)"
    )
    if source != "synthetic":
        title += ", real photos (coco_mini)"
    write_section(section, title, command, body, raw)
    if section == NAME:
        numbers = summary(curve, ref["ap"], best, grid, seconds)
        (RESULTS_DIR / SUMMARY_FILE).write_text(json.dumps({**numbers, "command": command}, indent=1) + "\n")
    print(f"[{NAME}] wrote the {section} section of docs/BENCHMARKS.md and {picture}", flush=True)


# --------------------------------------------------------------------------------------------------- entry points


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.label_efficiency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", choices=sorted(GRIDS), default="cpu", help="preset; the flags below override it")
    parser.add_argument(
        "--source",
        choices=("synthetic", "coco_mini", "all"),
        default="all",
        help="synthetic (part 1), real photos of coco_mini (part 2), or both",
    )
    parser.add_argument(
        "--policies",
        nargs="+",
        type=lambda v: policy_spec(v) and v,
        metavar="POLICY",
        help=f"of {', '.join((*POLICIES, *ORACLE_POLICIES))}, each optionally followed by +skip<share> "
        "(select.skip_top_share), +random<share> (select.random_share), +power<beta> (select.sampling power), "
        "+features (select.embedding features), +scratch (every round from scratch, the steps a warm start has "
        "seen) or +reinit (from scratch, the round's own steps); the oracle ones select by the teacher's true error "
        "(bounds)",
    )
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
    parser.add_argument(
        "--jobs", type=int, help="units trained in parallel processes (default: cores / threads on a CPU, 1 on a GPU)"
    )
    parser.add_argument(
        "--section",
        help="the docs/BENCHMARKS.md section to write (default: label_efficiency"
        "[_coco_mini]); name a new one for a side experiment so the main grid's stays",
    )
    parser.add_argument("--title", help="that section's title")
    parser.add_argument("--replot", action="store_true", help="only redraw the plots from docs/bench/*.json")
    parser.add_argument("--no-report", action="store_true", help="print the summary only (smoke runs)")
    return parser.parse_args(argv)


def grid_from(args: argparse.Namespace, base: Grid) -> Grid:
    overrides = {
        "policies": args.policies,
        "ssl": args.ssl,
        "seeds": args.seeds,
        "rounds": args.rounds,
        "seed_labels": args.seed_labels,
        "budget": args.budget,
        "epochs": args.epochs,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "input_size": args.input_size,
        "variant": args.variant,
        "images": args.images,
        "warm_start": args.warm_start,
        "threads": args.threads,
        "loader_workers": args.loader_workers,
    }
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
                print(arm, [(round(p["labeled"]), round(p["moved"]), round(p["ap"], 4)) for p in points])
            print("best policy", result.get("best_policy"))
            print("reference", result["references"])
        else:
            report(section, grid, source, result, command, seconds, jobs, args.title)


def run() -> None:
    """``python -m bench label_efficiency``: the CPU grid on both sources."""
    main([], via_bench=True)


if __name__ == "__main__":
    main()
