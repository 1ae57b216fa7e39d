"""SSL gain with 5% of the synthetic instances labeled: supervised only, fixed-count joint cutout, adaptive
keypoint masking, adaptive masking + dual-branch Mixup. Same epochs, same data split per seed; val AP over seeds.

CPU-sized on purpose (tiny backbone, 128x160 crops, a few hundred steps) so `make bench` finishes on 2 cores; the
absolute APs are far below a GPU-length schedule's, the comparison between arms is what this measures.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from bench.report import write_section
from pipeline.config import Params, load_params, with_overrides
from pipeline.data.prepare import prepare
from pipeline.training import train_in_process

ARMS = ("off", "cutout", "adaptive", "adaptive_mixup")
SEEDS = (0, 1, 2)
EPOCHS, STEPS = 8, 25


def _params(seed: int, mode: str) -> Params:
    data = {"labeled": 0.05, "seed": seed, "val_images": 40, "test_images": 10}
    train = {"epochs": EPOCHS, "min_steps_per_epoch": STEPS, "batch_size": 32, "seed": seed, "num_workers": 1}
    train |= {"threads_per_worker": 2, "ssl.mode": mode, "ssl.rampup_epochs": 2}
    overrides = {f"data.{k}": v for k, v in data.items()} | {f"train.{k}": v for k, v in train.items()}
    return with_overrides(load_params(), overrides | {"codec.input_size": [128, 160]})


def run() -> None:
    results: dict[str, list[float]] = {arm: [] for arm in ARMS}
    pck: dict[str, list[float]] = {arm: [] for arm in ARMS}
    raw_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in SEEDS:
            root = Path(tmp) / f"seed{seed}"
            prepare(_params(seed, "off").data, root / "prepared")
            paths = {
                "labels": str(root / "prepared" / "labeled.json"),
                "pool": str(root / "prepared" / "pool.json"),
                "val": str(root / "prepared" / "val.json"),
                "images_root": str(root / "prepared"),
            }
            for arm in ARMS:
                start = time.perf_counter()
                out = root / arm
                history = train_in_process(_params(seed, arm), paths, out).history()
                best = max(h["val_ap"] for h in history)
                results[arm].append(best)
                pck[arm].append(max(h["val_pck10"] for h in history))
                last = history[-1]
                raw_rows.append(
                    {
                        "seed": seed,
                        "arm": arm,
                        "best_val_ap": best,
                        "final_val_ap": last["val_ap"],
                        "final_pck10": last["val_pck10"],
                        "seconds": time.perf_counter() - start,
                    }
                )
                print(f"[ssl_gain] seed {seed} {arm}: best val AP {best:.4f}", flush=True)

    def stats(arm: str, values_by_arm: dict[str, list[float]] = results) -> tuple[float, float]:
        values = values_by_arm[arm]
        return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    table = "| arm (train.ssl.mode) | best val AP, mean ± sd | per seed | best val PCK@0.1, mean ± sd |\n"
    table += "|---|---|---|---|\n"
    for arm in ARMS:
        (mean, sd), (pmean, psd) = stats(arm), stats(arm, pck)
        seeds = ", ".join(f"{v:.4f}" for v in results[arm])
        table += f"| {arm} | {mean:.4f} ± {sd:.4f} | {seeds} | {pmean:.3f} ± {psd:.3f} |\n"
    supervised, full = stats("off")[0], stats("adaptive_mixup")[0]
    gain = (full - supervised) * 100
    met = "met" if gain >= 5 and full >= stats("cutout")[0] else "NOT met"
    body = (
        f"5% labeled (data.labeled 0.05 of the synthetic default, 400 images), seeds {list(SEEDS)} (split and "
        f"training), tiny backbone, heatmap head (SAHR + WAHR), 128x160 crops, {EPOCHS} epochs x {STEPS} steps, "
        f"batch 32 labeled + 16 unlabeled, one process with 2 threads.\n\n{table}\n"
        f"adaptive masking + Mixup vs supervised: {gain:+.1f} AP points. Target (>= +5 AP and >= fixed cutout): "
        f"**{met}**."
    )
    write_section(
        "ssl_gain",
        "SSL gain at 5% labels (CPU-sized)",
        "make bench  # python -m bench ssl_gain",
        body,
        {"rows": raw_rows},
    )
