"""Weight decay on every parameter (the loop before issue #17) against none on norms and biases (now), paired runs.

``python -m bench.weight_decay [--seeds 0 1] [--input-size 96 128]``: the default recipe of params.yaml (warm start
off) on the project's prepared data (``make run`` first: data/train.json, data/prepared/val.json), once per seed and
rule, in this process (train_in_process); prints the best val AP of each run as JSON. The old rule is one parameter
group with ``train.weight_decay``; the section "Weight decay on norms and biases" of docs/BENCHMARKS.md has the
figures of 2026-12-01.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from pipeline import training
from pipeline.config import load_params, with_overrides


def one_group(model, weight_decay: float) -> list[dict]:
    return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.weight_decay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--input-size", nargs=2, type=int, default=[96, 128], metavar=("W", "H"))
    args = parser.parse_args(argv)
    base = with_overrides(load_params(), {"codec.input_size": list(args.input_size), "train.warm_start": "scratch"})
    prepared = Path("data/prepared")
    paths = {"labels": "data/train.json", "val": str(prepared / "val.json"), "images_root": str(prepared)}
    if not Path(paths["labels"]).is_file():
        raise SystemExit("data/train.json is missing: run `make run` first")
    rules = {"every_parameter": one_group, "not_norms_or_biases": training.parameter_groups}
    results = {}
    with tempfile.TemporaryDirectory(prefix="weight-decay-") as tmp:
        for seed in args.seeds:
            for name, groups in rules.items():
                training.parameter_groups = groups  # the loop builds its optimiser through this name
                run = with_overrides(base, {"train.seed": seed})
                history = training.train_in_process(run, paths, Path(tmp) / f"{name}{seed}").history()
                results[f"{name}/seed{seed}"] = round(max(h["val_ap"] for h in history), 4)
                print(json.dumps({f"{name}/seed{seed}": results[f"{name}/seed{seed}"]}), flush=True)
                shutil.rmtree(Path(tmp) / f"{name}{seed}", ignore_errors=True)
    training.parameter_groups = rules["not_norms_or_biases"]
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
