"""Ray Train overhead: the same training loop in a plain process, on Ray with 1 worker and with 2 workers.

Same data, model, steps and seed in one run; images/s is the mean of the epochs after the first (warm-up), from the
loop's own timing, so Ray's start-up is reported separately as wall time.
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from pathlib import Path

import yaml

from bench.report import write_section
from pipeline.config import params_from_dict
from pipeline.data.prepare import prepare
from pipeline.ray_train import fit, ray_session
from pipeline.training import train_worker

EPOCHS, STEPS, BATCH = 4, 20, 16


def _params() -> dict:
    raw = yaml.safe_load(Path("params.yaml").read_text())
    raw["data"].update(labeled=0.5, val_images=10, test_images=2, seed=0)
    raw["data"]["synthetic"]["num_images"] = 120
    raw["train"].update(epochs=EPOCHS, min_steps_per_epoch=STEPS, batch_size=BATCH)
    raw["train"]["ssl"]["mode"] = "off"
    return raw


def _throughput(history: list[dict]) -> float:
    later = history[1:] or history
    return sum(h["images_per_s"] for h in later) / len(later)


def run() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = _params()
        prepare(params_from_dict(base).data, root / "prepared")
        paths = {name: str(root / "prepared" / f"{name}.json") for name in ("pool", "val")}
        paths.update(labels=str(root / "prepared" / "labeled.json"), images_root=str(root / "prepared"))

        plain = copy.deepcopy(base)
        plain["train"].update(num_workers=1, threads_per_worker=2)
        start = time.perf_counter()
        train_worker({"params": plain, "paths": paths, "local_checkpoint_dir": str(root / "plain"), "progress": False})
        history = json.loads((root / "plain" / "latest" / "history.json").read_text())
        rows.append({"setup": "plain process, 2 threads", "images_per_s": _throughput(history),
                     "wall_s": time.perf_counter() - start})  # fmt: skip

        for workers, threads in ((1, 2), (2, 1)):
            raw = copy.deepcopy(base)
            raw["train"].update(num_workers=workers, threads_per_worker=threads)
            start = time.perf_counter()
            with ray_session(log_to_driver=False):
                result = fit(params_from_dict(raw), raw, paths, root / "ray", name=f"bench-{workers}", progress=False)
            with result.checkpoint.as_directory() as ckpt:
                history = json.loads((Path(ckpt) / "history.json").read_text())
            rows.append({"setup": f"Ray Train, {workers} worker(s) x {threads} thread(s)",
                         "images_per_s": _throughput(history), "wall_s": time.perf_counter() - start})  # fmt: skip

    plain_rate = rows[0]["images_per_s"]
    one_worker = rows[1]["images_per_s"]
    table = "| setup | images/s (epochs 2+) | vs plain | wall s (incl. start-up) |\n|---|---|---|---|\n"
    table += "\n".join(
        f"| {r['setup']} | {r['images_per_s']:.1f} | {r['images_per_s'] / plain_rate:.2f} | {r['wall_s']:.1f} |"
        for r in rows
    )
    body = (
        f"tiny backbone, heatmap head (SAHR + WAHR), 192x256 crops, batch {BATCH} per worker, {EPOCHS} epochs x "
        f"{STEPS} steps, SSL off, synthetic data (seed 0), validation excluded from images/s.\n\n{table}\n\n"
        f"Ray 1 worker / plain: **{one_worker / plain_rate:.2f}**; Ray 2 workers / 1 worker: "
        f"**{rows[2]['images_per_s'] / one_worker:.2f}** (2 cores in all, so 2 workers x 1 thread compete with "
        "1 worker x 2 threads for the same cores)."
    )
    write_section("training", "Ray Train overhead", "make bench  # python -m bench training", body, rows)
