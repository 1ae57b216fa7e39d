"""``python -m bench hard_people``: issue #26's first question. Why does labeling the people the teacher gets most
wrong make the model worse than not labeling them, and how much of it do occluded-keypoint targets carry?

One seed's project at the CPU grid of bench/label_efficiency.py (1,000 synthetic images, 128x160 crops, 5% seed
labels). The round-0 teacher (seed labels only) predicts the pool; its true error on each pool person (OKS against
oracle.json) ranks them. Each arm labels ``PICKS`` pool people through the simulated annotator and the pipeline's merge
(unlabelable people skipped, as in the loop), then trains a model from scratch on seed + picks:

* none: seed labels only;  random;  easiest: the teacher's highest OKS;  hardest: its lowest OKS (what a perfect
  uncertainty signal picks).

Every arm twice: ``train.occluded_weight`` 1 (an occluded keypoint, COCO v = 1, is a target like a visible one: the
default before this experiment) and 0 (no target where the picture does not show the joint: the default since). The
round-0 teacher that ranks the pool always trains with weight 1 (``TEACHER_OCCLUDED_WEIGHT``), so the picks do not
move with params.yaml. Reported: val AP with flip test of the
kept epoch, on all val people and on the untagged and the tagged-hard ones apart; the picks' share tagged hard and
their occluded keypoints. A contact sheet shows the hardest picks' crops with their labels (occluded keypoints
hollow): what the network is asked to output.

Writes the "hard_people" section of docs/BENCHMARKS.md, docs/bench/hard_people.json and
docs/bench/hard_people_crops.png.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import torch

from bench.label_efficiency import CPU, base_params, make_project
from pipeline.config import Params, with_overrides
from pipeline.corrections import box_iou
from pipeline.data.dataset import TopDownDataset, instances_from_coco
from pipeline.data.images import load_image
from pipeline.evaluation import coco_keypoint_ap
from pipeline.inference import predict, to_coco_results
from pipeline.loop import run_round
from pipeline.model_store import WEIGHTS_FILE, build_codec, model_from_params
from pipeline.viz import contact_sheet, draw_keypoints, save_png

NAME = "hard_people"
COMMAND = "python -m bench hard_people"
PICKS = 280  # pool people each arm sends to the (simulated) annotator, as in the one-shot experiment
ARMS = ("none", "random", "easiest", "hardest")
WEIGHTS = (1.0, 0.0)  # train.occluded_weight of each arm
TEACHER_OCCLUDED_WEIGHT = 1.0  # the round-0 teacher's, as in the recorded run
REPO = Path(__file__).resolve().parents[1]


def grid_params(seed: int, epochs: int, steps: int) -> Params:
    """label_efficiency's CPU grid for one seed, every training from scratch for ``epochs`` x ``steps``."""
    grid = CPU
    params = base_params(grid, seed, "synthetic")
    return with_overrides(params, {"train.epochs": epochs, "train.min_steps_per_epoch": steps})


def tag_picks(project, tag: str, seed: int) -> list[int]:
    """``PICKS`` pool people drawn at random among those tagged ``tag`` ("none": the untagged)."""
    ids = sorted(i for i, a in project.truth.items() if tag in (a.get("synthetic_tags") or ["none"]))
    rng = np.random.default_rng(seed)
    return [int(i) for i in rng.choice(ids, size=min(PICKS, len(ids)), replace=False)]


def picks_of(arm: str, oks_of: dict[int, float], seed: int) -> list[int]:
    ids = sorted(oks_of)
    if arm == "none":
        return []
    if arm == "random":
        return [int(i) for i in np.random.default_rng(seed).choice(ids, size=min(PICKS, len(ids)), replace=False)]
    ranked = sorted(ids, key=lambda i: (oks_of[i], i))  # lowest OKS first
    return ranked[:PICKS] if arm == "hardest" else ranked[-PICKS:]


def val_aps(params: Params, prepared: Path, weights: Path) -> dict[str, float]:
    """Val AP (flip test) on all people, the untagged and the tagged-hard ones (synthetic_tags)."""
    torch.set_num_threads(1)
    val = json.loads((prepared / "val.json").read_text())
    codec = build_codec(params)
    from pipeline.data.coco import read_coco

    schema = read_coco(prepared / "val.json").schema
    model = model_from_params(params, codec, schema)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    records = instances_from_coco(val["images"], val["annotations"], prepared, schema.num_keypoints)
    dataset = TopDownDataset(records, schema, codec, padding=params.codec.box_padding)
    results = to_coco_results(predict(model.eval(), dataset, flip_test=True), records, schema.category_id)
    out = {}
    for group, keep in (
        ("all", lambda a: True),
        ("untagged", lambda a: not a.get("synthetic_tags")),
        ("tagged", lambda a: bool(a.get("synthetic_tags"))),
    ):
        annotations = [a for a in val["annotations"] if keep(a)]
        ids = {a["id"] for a in annotations}
        subset = {**val, "annotations": annotations}
        out[group] = coco_keypoint_ap(subset, [r for r in results if r["instance_id"] in ids], schema)["ap"]
    return out


def run_arm(seed: int, epochs: int, steps: int, workdir: str, arm: str, weight: float, picks: list[int]) -> dict:
    """One arm in its own process: label ``picks``, train from scratch, evaluate."""
    torch.set_num_threads(1)
    params = with_overrides(grid_params(seed, epochs, steps), {"train.occluded_weight": weight})
    root = Path(workdir)
    out = root / f"{arm}-w{weight:g}"
    project = make_project(params, seed, out / "project")  # the same data in every process (seeded), its own copy
    out.mkdir(parents=True, exist_ok=True)
    labeled_picks = 0
    store = out / "store"
    if picks:
        effort = project.annotator(store, 1, arm, CPU.skip_below_visible)(pa.table({"instance_id": picks}))
        labeled_picks = effort["tasks"] - effort["skipped"]
    trained = run_round(params, project.files(store), out / "round", score=False).trained  # merge -> train
    return {
        "arm": arm,
        "occluded_weight": weight,
        "labeled_picks": labeled_picks,
        "val_ap": val_aps(params, project.prepared, trained.model_dir / WEIGHTS_FILE),
        "minutes": round(trained.seconds / 60, 1),
        "steps_per_epoch": steps,
    }


def pick_stats(project, picks: list[int]) -> dict:
    """Share of the picks tagged hard, and their occluded (v = 1) keypoints (skipped picks included)."""
    if not picks:
        return {"tagged_share": None, "occluded_keypoints": 0}
    tagged = sum(bool(project.truth[i].get("synthetic_tags")) for i in picks)
    occluded = sum(int((np.asarray(project.truth[i]["keypoints"]).reshape(-1, 3)[:, 2] == 1).sum()) for i in picks)
    return {"tagged_share": round(tagged / len(picks), 3), "occluded_keypoints": occluded}


def crops_sheet(project, picks: list[int], path: Path, count: int = 16) -> Path:
    """The first ``count`` of ``picks``: each person's crop (1.25 x its box) with its oracle labels drawn."""
    tiles = []
    pool = json.loads((project.prepared / "pool.json").read_text())
    images = {im["id"]: im for im in pool["images"]}
    schema = project.schema
    for iid in picks[:count]:
        truth = project.truth[iid]
        image = load_image(project.prepared / images[truth["image_id"]]["file_name"])
        x, y, w, h = truth["bbox"]
        side = 1.25 * max(w, h)
        cx, cy = x + w / 2, y + h / 2
        drawn = draw_keypoints(image, np.asarray(truth["keypoints"]).reshape(1, -1, 3), schema, [truth["bbox"]], 2)
        x0, y0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
        tile = drawn[y0 : int(cy + side / 2) + 1, x0 : int(cx + side / 2) + 1]
        tags = ",".join(t[:4] for t in truth.get("synthetic_tags") or ["none"])
        tile = cv2.resize(tile, (192, 192), interpolation=cv2.INTER_NEAREST)
        cv2.putText(tile, tags, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    return save_png(path, contact_sheet(tiles, columns=8, tile_size=(192, 192)))


def run_arms(seed: int, epochs: int, steps: int, jobs: int, workdir: Path, units: list[tuple]) -> list[dict]:
    """``run_arm`` for each (arm, occluded weight, picks[, steps per epoch: ``steps`` when absent]) in ``jobs``
    processes; rows in ``units`` order."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = [
            pool.submit(run_arm, seed, epochs, unit[3] if len(unit) > 3 else steps, str(workdir), *unit[:3])
            for unit in units
        ]
        rows = []
        for future in futures:
            rows.append(future.result())
            r = rows[-1]
            print(f"[{NAME}] {r['arm']} w={r['occluded_weight']:g}: val AP {r['val_ap']}", flush=True)
    return rows


def measure(seed: int, epochs: int, steps: int, jobs: int, workdir: Path) -> dict:
    started = time.perf_counter()
    params = with_overrides(grid_params(seed, epochs, steps), {"train.occluded_weight": TEACHER_OCCLUDED_WEIGHT})
    project = make_project(params, seed, workdir / "project")
    print(f"[{NAME}] round-0 teacher: {project.seed_labels} seed labels", flush=True)
    teacher = run_round(params, project.files(workdir / "teacher-store"), workdir / "teacher")  # merge, train, score
    oks_of = project.teacher_oks(teacher.table)
    picks = {arm: picks_of(arm, oks_of, seed) for arm in ARMS}
    suffix = "" if seed == 0 else f"_seed{seed}"
    crops = crops_sheet(project, picks["hardest"], REPO / "docs" / "bench" / f"hard_people_crops{suffix}.png")
    units = [(arm, w, picks[arm]) for w in WEIGHTS for arm in ARMS]
    rows = run_arms(seed, epochs, steps, jobs, workdir, units)
    return {
        "seed": seed,
        "epochs": epochs,
        "steps_per_epoch": steps,
        "picks": PICKS,
        "seed_labels": project.seed_labels,
        "teacher_val_ap": round(teacher.trained.ap, 4),
        "teacher_occluded_weight": TEACHER_OCCLUDED_WEIGHT,
        "pick_stats": {arm: pick_stats(project, p) for arm, p in picks.items()},
        "rows": rows,
        "crops": str(crops.relative_to(REPO)),
        "minutes": round((time.perf_counter() - started) / 60, 1),
    }


def measure_tags(seed: int, epochs: int, steps: int, jobs: int, weight: float, workdir: Path) -> dict:
    """Each tag on its own: seed + ``PICKS`` people of one tag (at random among them), trained from scratch."""
    from pipeline.data.synthetic import TAGS

    started = time.perf_counter()
    project = make_project(grid_params(seed, epochs, steps), seed, workdir / "project")
    picks = {tag: tag_picks(project, tag, seed) for tag in ("none", *TAGS)}
    arms = [("seed only", [])] + [(f"tag:{tag}", p) for tag, p in picks.items()]
    rows = run_arms(seed, epochs, steps, jobs, workdir, [(arm, weight, p) for arm, p in arms])
    rows = [{**row, **pick_stats(project, p), "picked": len(p)} for row, (_, p) in zip(rows, arms, strict=True)]
    return {
        "seed": seed,
        "epochs": epochs,
        "steps_per_epoch": steps,
        "occluded_weight": weight,
        "seed_labels": project.seed_labels,
        "rows": rows,
        "minutes": round((time.perf_counter() - started) / 60, 1),
    }


TAIL_MIN_VISIBLE = 8  # clearly visible (v = 2) keypoints of 17 a "hardest, visible" pick must have
TAIL_ALONE_IOU = 0.05  # a "hardest, alone" pick's box overlaps no other person's more than this (IoU)
TAIL_FROM = 0.1  # the "hard, not the hardest" picks start this far down the teacher's ranking (share of the pool)
DILUTED = "none, with the seed people's share of the steps"


def max_overlap(project) -> dict[int, float]:
    """Pool instance id -> the largest IoU of its box with another person's box in the same image (pool or seed)."""
    seed = json.loads((project.prepared / "labeled.json").read_text())["annotations"]
    by_image: dict[int, list[tuple[int, list[float]]]] = {}
    for a in [*project.truth.values(), *seed]:
        by_image.setdefault(int(a["image_id"]), []).append((int(a["id"]), a["bbox"]))
    out = {}
    for iid, a in project.truth.items():
        others = [box for j, box in by_image[int(a["image_id"])] if j != iid]
        out[iid] = max((box_iou(a["bbox"], box) for box in others), default=0.0)
    return out


def tail_picks(project, oks_of: dict[int, float], seed: int) -> dict[str, list[int]]:
    """The tail experiment's arms: which part of the hardest picks does the harm?"""
    ranked = sorted(oks_of, key=lambda i: (oks_of[i], i))  # lowest OKS (hardest) first
    visible = {i: int((np.asarray(project.truth[i]["keypoints"])[2::3] == 2).sum()) for i in ranked}
    overlap = max_overlap(project)
    start = int(TAIL_FROM * len(ranked))
    return {
        "none": [],
        "random": picks_of("random", oks_of, seed),
        "hardest": ranked[:PICKS],
        f"hardest with >= {TAIL_MIN_VISIBLE} visible keypoints": [i for i in ranked if visible[i] >= TAIL_MIN_VISIBLE][
            :PICKS
        ],
        "hardest alone in their box": [i for i in ranked if overlap[i] <= TAIL_ALONE_IOU][:PICKS],
        f"hard, from the {TAIL_FROM:.0%} mark down": ranked[start : start + PICKS],
    }


def tail_stats(project, picks: list[int], oks_of: dict[int, float], overlap: dict[int, float]) -> dict:
    """What the picks carry: teacher OKS, clearly visible and occluded keypoints, overlap with another person, tags."""
    if not picks:
        return {}
    kps = [np.asarray(project.truth[i]["keypoints"]).reshape(-1, 3) for i in picks]
    return {
        "teacher_oks": round(float(np.mean([oks_of[i] for i in picks])), 3),
        "visible_keypoints": round(float(np.mean([(k[:, 2] == 2).sum() for k in kps])), 1),
        "occluded_keypoints": round(float(np.mean([(k[:, 2] == 1).sum() for k in kps])), 1),
        "overlapping_share": round(float(np.mean([overlap[i] > TAIL_ALONE_IOU for i in picks])), 3),
        "tagged_share": round(float(np.mean([bool(project.truth[i].get("synthetic_tags")) for i in picks])), 3),
    }


def measure_tail(seed: int, epochs: int, steps: int, jobs: int, workdir: Path) -> dict:
    """The hardest picks taken apart, every arm with occluded weight 0: is the harm in the few extreme people
    (nothing visible, someone else in the box) or in hardness as such?"""
    started = time.perf_counter()
    params = with_overrides(grid_params(seed, epochs, steps), {"train.occluded_weight": TEACHER_OCCLUDED_WEIGHT})
    project = make_project(params, seed, workdir / "project")
    teacher = run_round(params, project.files(workdir / "teacher-store"), workdir / "teacher")
    oks_of = project.teacher_oks(teacher.table)
    overlap = max_overlap(project)
    picks = tail_picks(project, oks_of, seed)
    # the dilution control: seed labels alone with only the steps the seed people get in an arm of PICKS more
    # (every arm trains the same steps, so PICKS people that teach nothing leave the seed people this share)
    diluted = max(1, round(steps * project.seed_labels / (project.seed_labels + PICKS)))
    units = [(arm, 0.0, p) for arm, p in picks.items()] + [(DILUTED, 0.0, [], diluted)]
    rows = run_arms(seed, epochs, steps, jobs, workdir, units)
    for row, p in zip(rows, [*picks.values(), []], strict=True):
        row.update(picked=len(p), **tail_stats(project, p, oks_of, overlap))
    return {
        "seed": seed,
        "epochs": epochs,
        "steps_per_epoch": steps,
        "seed_labels": project.seed_labels,
        "teacher_val_ap": round(teacher.trained.ap, 4),
        "rows": rows,
        "minutes": round((time.perf_counter() - started) / 60, 1),
    }


def report_tail(r: dict) -> None:
    from bench.report import write_section

    lines = [
        "| seed labels + | people (labeled) | teacher OKS | visible / occluded keypoints | overlapping another "
        "person | tagged hard | val AP all | untagged | tagged |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        ap = row["val_ap"]
        stats = (
            "— | — | — | —"
            if not row["picked"]
            else (
                f"{row['teacher_oks']:.2f} | {row['visible_keypoints']:.1f} / {row['occluded_keypoints']:.1f} | "
                f"{row['overlapping_share']:.0%} | {row['tagged_share']:.0%}"
            )
        )
        lines.append(
            f"| {row['arm']} | {row['picked']} ({row['labeled_picks']}) | {stats} | "
            f"{ap['all']:.3f} | {ap['untagged']:.3f} | {ap['tagged']:.3f} |"
        )
    body = (
        f"Seed {r['seed']}, the same grid and round-0 teacher (val AP {r['teacher_val_ap']:.3f}), every arm with "
        f"train.occluded_weight 0: the hardest {PICKS} picks against the hardest among people with at least "
        f"{TAIL_MIN_VISIBLE} clearly visible keypoints, among people whose box overlaps nobody else's (IoU <= "
        f"{TAIL_ALONE_IOU}), and {PICKS} hard people from the {TAIL_FROM:.0%} mark of the teacher's ranking down "
        "(the extreme tail left out). Keypoints and overlap are means over the picks. The last row is the dilution "
        "control: seed labels alone, trained only the steps the seed people get in an arm of "
        f"{PICKS} more people (steps x seed / (seed + {PICKS}); an arm whose picks were partly skipped leaves the "
        "seed people a little more): where an arm lands there, its picks taught nothing and took the seed people's "
        "steps; below it, they taught something wrong.\n\n"
        + "\n".join(lines)
        + f"\n\n{r['minutes']:.0f} min on this machine.\n"
    )
    seed = "" if r["seed"] == 0 else f"_seed{r['seed']}"
    title = "Why hard people hurt (issue #26): the hardest picks taken apart" + (f", seed {r['seed']}" if seed else "")
    write_section(f"{NAME}_tail{seed}", title, COMMAND + " --tail" + (f" --seed {r['seed']}" if seed else ""), body, r)


def report_tags(r: dict) -> None:
    from bench.report import write_section

    lines = [
        "| seed labels + | people (labeled) | occluded keypoints | val AP all | untagged | tagged |",
        "|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        ap = row["val_ap"]
        lines.append(
            f"| {row['arm']} | {row['picked']} ({row['labeled_picks']}) | {row['occluded_keypoints']} | "
            f"{ap['all']:.3f} | {ap['untagged']:.3f} | {ap['tagged']:.3f} |"
        )
    body = (
        f"Seed {r['seed']}, the same grid: {r['seed_labels']} seed labels plus up to {PICKS} pool people drawn at "
        "random among those carrying one tag (they may carry others too; `none`: untagged people), oracle labels "
        f"(unlabelable people skipped), trained from scratch {r['epochs']} x {r['steps_per_epoch']} steps with "
        f"train.occluded_weight {r['occluded_weight']:g}. Which kind of person, labeled, lowers val AP below seed "
        f"labels alone?\n\n" + "\n".join(lines) + f"\n\n{r['minutes']:.0f} min on this machine.\n"
    )
    write_section(f"{NAME}_tags", "Why hard people hurt (issue #26): one tag at a time", COMMAND + " --by-tag", body, r)


def report(r: dict) -> None:
    from bench.report import write_section

    by = {(row["arm"], row["occluded_weight"]): row for row in r["rows"]}
    lines = [
        "| picks | labeled (the rest skipped as unlabelable) | share tagged hard | occluded keypoints in the picks | "
        "val AP, w = 1 (all / untagged / tagged) | val AP, w = 0 (all / untagged / tagged) |",
        "|---|---|---|---|---|---|",
    ]
    for arm in ARMS:
        stats = r["pick_stats"][arm]
        share = "—" if stats["tagged_share"] is None else f"{stats['tagged_share']:.0%}"
        cells = []
        for w in WEIGHTS:
            ap = by[(arm, w)]["val_ap"]
            cells.append(f"{ap['all']:.3f} / {ap['untagged']:.3f} / {ap['tagged']:.3f}")
        labeled = by[(arm, WEIGHTS[0])]["labeled_picks"]
        lines.append(f"| {arm} | {labeled} | {share} | {stats['occluded_keypoints']} | {cells[0]} | {cells[1]} |")
    body = (
        f"Seed {r['seed']}, CPU grid of bench/label_efficiency.py (1,000 synthetic images, 128x160): round-0 teacher "
        f"from {r['seed_labels']} seed labels (val AP {r['teacher_val_ap']:.3f}, occluded weight "
        f"{r.get('teacher_occluded_weight', 1.0):g}) ranks the pool by its true OKS; "
        f"each arm labels {r['picks']} pool people (oracle, unlabelable ones skipped) and trains from scratch "
        f"{r['epochs']} x {r['steps_per_epoch']} steps on seed + picks. w = train.occluded_weight (the target weight "
        "of an occluded, v = 1, keypoint). Val AP with flip test of the kept epoch.\n\n"
        + "\n".join(lines)
        + "\n\nThe hardest picks' crops and labels (occluded keypoints hollow): "
        f"![hardest picks]({Path(r['crops']).relative_to('docs')})" + f"\n\n{r['minutes']:.0f} min on this machine.\n"
    )
    seed = "" if r["seed"] == 0 else f"_seed{r['seed']}"  # another seed gets its own section beside seed 0's
    title = "Why hard people hurt (issue #26): oracle picks and occluded targets" + (
        f", seed {r['seed']}" if seed else ""
    )
    write_section(NAME + seed, title, COMMAND + (f" --seed {r['seed']}" if seed else ""), body, r)


def report_seeds() -> dict | None:
    """The oracle arms over every seed measured (docs/bench/hard_people.json and hard_people_seed<N>.json): mean and
    range of val AP per arm and occluded weight, and in how many seeds each arm beat seed labels alone."""
    from bench.report import write_section

    results = REPO / "docs" / "bench"
    files = [results / f"{NAME}.json", *sorted(results.glob(f"{NAME}_seed[0-9]*.json"))]
    runs = [json.loads(f.read_text()) for f in files if f.is_file()]
    if len(runs) < 2:
        return None
    settings = {(r["epochs"], r["steps_per_epoch"], r["picks"]) for r in runs}
    if len(settings) > 1:
        raise ValueError(f"the seeds' runs differ in (epochs, steps, picks): {sorted(settings)}; not pooled")
    runs.sort(key=lambda r: r["seed"])
    ap = {(r["seed"], row["arm"], row["occluded_weight"]): row["val_ap"]["all"] for r in runs for row in r["rows"]}
    seeds = [r["seed"] for r in runs]
    lines = [
        "| picks | " + " | ".join(f"w = {w:g}: mean (min-max) | above seed labels alone" for w in WEIGHTS) + " |",
        "|---|" + "---|---|" * len(WEIGHTS),
    ]
    table = {}
    for arm in ARMS:
        cells = []
        for w in WEIGHTS:
            values = [ap[(s, arm, w)] for s in seeds]
            above = sum(ap[(s, arm, w)] > ap[(s, "none", w)] for s in seeds)
            table[f"{arm} w={w:g}"] = {"mean": round(float(np.mean(values)), 4), "values": values, "above_none": above}
            beat = "—" if arm == "none" else f"{above} of {len(seeds)}"
            cells.append(f"{np.mean(values):.3f} ({min(values):.3f}-{max(values):.3f}) | {beat}")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    body = (
        f"Seeds {', '.join(map(str, seeds))} of the oracle arms above (each seed its own data, teacher and picks): "
        "val AP on all val people.\n\n" + "\n".join(lines) + "\n"
    )
    summary = {"seeds": seeds, "arms": table}
    write_section(
        f"{NAME}_over_seeds", "Why hard people hurt (issue #26): the oracle arms over seeds", COMMAND, body, summary
    )
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hard_people", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=10, help="epochs per training (from scratch)")
    parser.add_argument("--steps", type=int, default=100, help="min steps per epoch")
    parser.add_argument("--jobs", type=int, default=2, help="arms trained in parallel processes (1 thread each)")
    parser.add_argument(
        "--by-tag", action="store_true", help="instead: seed + people of one synthetic tag at a time (no teacher)"
    )
    parser.add_argument("--occluded-weight", type=float, default=0.0, help="train.occluded_weight of --by-tag")
    parser.add_argument(
        "--tail", action="store_true", help="instead: the hardest picks taken apart (visible keypoints, overlap, rank)"
    )
    parser.add_argument("--report-only", action="store_true", help="only rewrite the sections from docs/bench/*.json")
    args = parser.parse_args(argv)
    if args.report_only:
        results = REPO / "docs" / "bench"
        for run in [results / f"{NAME}.json", *sorted(results.glob(f"{NAME}_seed[0-9]*.json"))]:
            report(json.loads(run.read_text()))
        report_tags(json.loads((results / f"{NAME}_tags.json").read_text()))
        for tail in sorted(results.glob(f"{NAME}_tail*.json")):
            report_tail(json.loads(tail.read_text()))
        report_seeds()
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.tail:
            result = measure_tail(args.seed, args.epochs, args.steps, args.jobs, Path(tmp))
            report_tail(result)
        elif args.by_tag:
            result = measure_tags(args.seed, args.epochs, args.steps, args.jobs, args.occluded_weight, Path(tmp))
            report_tags(result)
        else:
            result = measure(args.seed, args.epochs, args.steps, args.jobs, Path(tmp))
            report(result)
            report_seeds()
    print(json.dumps(result, indent=1))


def run() -> None:
    main([])


if __name__ == "__main__":
    main()
