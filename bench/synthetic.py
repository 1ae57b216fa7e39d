"""Synthetic data generation throughput on one core (target: >= 100 images/s at 256x256, JPEG included)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bench.report import write_section
from pipeline.data.synthetic import SyntheticConfig, generate_dataset

NUM_IMAGES = 1000


def run() -> None:
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})  # one core, as the target says
    try:
        rows = []
        for size in (256, 512):
            cfg = SyntheticConfig(num_images=NUM_IMAGES, image_width=size, image_height=size, seed=0)
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                coco = generate_dataset(Path(tmp), cfg, progress=False)
                seconds = time.perf_counter() - start
            rows.append(
                {
                    "size": size,
                    "images": NUM_IMAGES,
                    "people": len(coco["annotations"]),
                    "seconds": seconds,
                    "images_per_s": NUM_IMAGES / seconds,
                }
            )
    finally:
        os.sched_setaffinity(0, before)
    table = "| image size | images | people | seconds | images/s |\n|---|---|---|---|---|\n" + "\n".join(
        f"| {r['size']}x{r['size']} | {r['images']} | {r['people']} | {r['seconds']:.2f} | {r['images_per_s']:.0f} |"
        for r in rows
    )
    verdict = "met" if rows[0]["images_per_s"] >= 100 else "NOT met"
    body = f"One core (sched_setaffinity), default hard-case mix, JPEG q=92 written to a temp dir.\n\n{table}\n\n"
    body += f"Target >= 100 images/s at 256x256: **{verdict}**."
    write_section("synthetic", "Synthetic data generation", "make bench  # python -m bench synthetic", body, rows)
