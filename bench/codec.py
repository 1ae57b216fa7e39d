"""Heatmap codec: decode accuracy and speed, standard (argmax + quarter pixel) against DARK, side by side."""

from __future__ import annotations

import time

import numpy as np

from bench.report import write_section
from pipeline.codec import HeatmapCodec

BATCH, K = 64, 17


def run() -> None:
    rng = np.random.default_rng(0)
    input_size, heatmap_size = (192, 256), (48, 64)
    rows = []
    points = rng.uniform([8, 8], [input_size[0] - 9, input_size[1] - 9], size=(BATCH, K, 2))
    plain = HeatmapCodec(input_size, heatmap_size)
    heatmaps = np.stack([plain.encode(p, np.full(K, 2))[0] for p in points])  # (B, K, H, W)
    for dark in (False, True):
        codec = HeatmapCodec(input_size, heatmap_size, dark=dark)
        decoded, _ = codec.decode(heatmaps)
        err_hm = np.linalg.norm(codec.to_heatmap(decoded) - codec.to_heatmap(points), axis=-1)
        repeats = 20
        start = time.perf_counter()
        for _ in range(repeats):
            codec.decode(heatmaps)
        ms = (time.perf_counter() - start) / repeats * 1000
        rows.append(
            {
                "decoder": "DARK" if dark else "standard",
                "mean_err_hm_px": float(err_hm.mean()),
                "max_err_hm_px": float(err_hm.max()),
                "ms_per_batch": ms,
            }
        )
    start = time.perf_counter()
    for p in points:
        plain.encode(p, np.full(K, 2))
    encode_ms = (time.perf_counter() - start) / BATCH * 1000
    table = "| decoder | mean error (heatmap px) | max error | ms per 64x17 batch |\n|---|---|---|---|\n"
    table += "\n".join(
        f"| {r['decoder']} | {r['mean_err_hm_px']:.4f} | {r['max_err_hm_px']:.4f} | {r['ms_per_batch']:.2f} |"
        for r in rows
    )
    body = (
        f"{BATCH}x{K} random sub-pixel keypoints at least 8 px inside a 192x256 crop, 48x64 heatmaps, sigma 2; "
        f"noise-free targets.\n\n{table}\n\nEncoding: {encode_ms:.2f} ms per instance ({K} keypoints)."
    )
    write_section(
        "codec",
        "Heatmap codec",
        "make bench  # python -m bench codec",
        body,
        {"rows": rows, "encode_ms_per_instance": encode_ms},
    )
