"""The CPU training recipe: does the default round's learner learn, and how far do labels take it?

Trains ``train_worker`` in one plain process (no Ray: this measures the recipe, bench training measures Ray) on a
freshly prepared synthetic set made with params.yaml's ``data`` section, in arms that differ only in what the
command line overrides:

    python -m bench recipe                   # default round, the same in fp32, every person labeled -> BENCHMARKS.md
    python -m bench.recipe --arm "seed:data.labeled=150" --arm "all:data.labeled=0.999;train.epochs=8"

Each arm reports val AP / PCK@0.1 of the kept weights, the training seconds, images/s and steps. ``--set`` applies
to every arm, ``--arm "NAME:KEY=VALUE;KEY=VALUE"`` to one (values are YAML).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

from pipeline.config import Params, ParamsError, load_params, to_dict, with_overrides
from pipeline.data.prepare import prepare
from pipeline.training import after_warmup_mean, train_in_process

# name, overrides: the default round as `make run` trains it, the same round in fp32 (the bf16 check), and the
# reference with every person labeled (SSL off: nothing is left to learn from without labels; more steps, within
# the 10 minutes of training)
BENCH_ARMS = (
    ("default round (params.yaml)", []),
    ("default round, fp32", ['train.amp="off"']),  # quoted: YAML reads a bare off as false
    (
        "every person labeled, SSL off",
        ["data.labeled=0.999", 'train.ssl.mode="off"', "train.epochs=12", "train.min_steps_per_epoch=225"],
    ),
)
DEFAULT_ARMS = tuple(f"{name}:{';'.join(sets)}" for name, sets in BENCH_ARMS)


def apply(params: Params, assignments: list[str]) -> Params:
    """``key.sub=value`` assignments (YAML values) on ``params``, validated as params.yaml is."""
    overrides = {}
    for item in assignments:
        key, _, value = item.partition("=")
        overrides[key.strip()] = yaml.safe_load(value)
    try:
        return with_overrides(params, overrides)
    except ParamsError as e:
        raise SystemExit(f"--set / --arm: {e}") from None


def train_arm(params: Params, root: Path, name: str) -> dict:
    prepared = root / f"prepared-{abs(hash(json.dumps(to_dict(params.data), sort_keys=True)))}"
    if not prepared.exists():
        prepare(params.data, prepared)
    paths = {
        "labels": str(prepared / "labeled.json"),
        "pool": str(prepared / "pool.json"),
        "val": str(prepared / "val.json"),
        "images_root": str(prepared),
    }
    checkpoints = root / f"ckpt-{name}".replace(" ", "_")
    shutil.rmtree(checkpoints, ignore_errors=True)
    started = time.perf_counter()
    history = train_in_process(params, paths, checkpoints, progress=True).history()
    seconds = time.perf_counter() - started
    best = max(history, key=lambda h: h["val_ap"])
    labeled = len(json.loads((prepared / "labeled.json").read_text())["annotations"])
    cfg = params.train
    steps = cfg.epochs * max(math.ceil(labeled / cfg.batch_size), cfg.min_steps_per_epoch)
    return {
        "arm": name,
        "labeled": labeled,
        "steps": steps,
        "seconds": round(seconds, 1),
        "images_per_s": round(after_warmup_mean(history, "images_per_s"), 1),
        "val_ap": round(best["val_ap"], 4),
        "val_pck10": round(best["val_pck10"], 4),
        "final_val_ap": round(history[-1]["val_ap"], 4),
        "best_epoch": best["epoch"],
        "curve": [round(h["val_ap"], 4) for h in history],
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE for every arm")
    parser.add_argument("--arm", action="append", default=None, help="NAME:KEY=VALUE;KEY=VALUE")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    base = apply(load_params(), [*args.set, "train.num_workers=1"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.arm or DEFAULT_ARMS:
            name, _, rest = spec.partition(":")
            row = train_arm(apply(base, [a for a in rest.split(";") if a]), Path(tmp), name)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return rows


def run() -> None:
    """``python -m bench recipe``: the arms of BENCH_ARMS in one run -> docs/BENCHMARKS.md section "recipe"."""
    write_report(main([]))


def write_report(rows: list[dict]) -> None:
    """The "recipe" section of docs/BENCHMARKS.md from the rows of BENCH_ARMS (in that order)."""
    from bench.report import write_section

    by = {r["arm"]: r for r in rows}
    default, fp32 = by[BENCH_ARMS[0][0]], by[BENCH_ARMS[1][0]]
    table = "| arm | labeled people | steps | training s | images/s | val AP | val PCK@0.1 | val AP per epoch |\n"
    table += "|---|---|---|---|---|---|---|---|\n"
    for r in rows:
        curve = " ".join(f"{v:.2f}" for v in r["curve"])
        table += (
            f"| {r['arm']} | {r['labeled']} | {r['steps']} | {r['seconds']:.0f} | {r['images_per_s']:.0f} | "
            f"{r['val_ap']:.3f} | {r['val_pck10']:.3f} | {curve} |\n"
        )
    body = (
        "`train_worker` in one plain process (2 torch threads), on a synthetic set prepared from params.yaml's `data` "
        "section; each arm differs from params.yaml only by what its name says (bench/recipe.py BENCH_ARMS). "
        "Val AP / PCK are those of the kept (best-epoch) weights, as the train stage ships them.\n\n"
        f"{table}\n"
        f"bf16 autocast vs fp32 on this CPU (`train.amp: auto` picks bf16 where oneDNN has native bf16 kernels): "
        f"{default['images_per_s'] / fp32['images_per_s']:.2f}x the images/s, val AP {default['val_ap']:.3f} vs "
        f"{fp32['val_ap']:.3f}, PCK@0.1 {default['val_pck10']:.3f} vs {fp32['val_pck10']:.3f}."
    )
    write_section(
        "recipe",
        "The CPU training recipe: default round, fp32, every person labeled",
        "make bench-recipe  # python -m bench recipe",
        body,
        {"rows": rows},
    )


if __name__ == "__main__":
    main(sys.argv[1:])
