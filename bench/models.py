"""Backbone training throughput (forward + backward + SGD step, images/s) and size/cost per backbone.

CPU (``python -m bench models``, part of ``make bench``): every backbone at the default 192x256 crop (w x h); ``tiny``
also at 144x192, with 1 thread and with every core, fp32 and bf16 autocast, NCHW and channels_last. The large
backbones are timed for three iterations of batch 8 only: the whole benchmark takes about a minute on 2 idle cores.

GPU (``python -m bench.models --device cuda``, plain torch, no Ray): every backbone at 192x256, batch 32, fp32 against
bf16 autocast + channels_last; writes its own section.

The loss is a dummy MSE between a 1x1-conv heatmap head's output and a random target; the step includes
``zero_grad``, ``backward`` and an SGD (momentum) update, i.e. everything a training step costs but data loading.
Each iteration is timed separately: the table gives the median and the best. On a shared machine the median drops
when other processes want the same cores (``/proc/pressure/cpu``, reported per row, says when they did): with two
cores and two intra-op threads, one busy neighbour stalls every parallel region, so 1 thread can beat 2.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from bench.report import available_cores, write_section
from models.backbones import build_backbone
from models.summary import count_flops, count_parameters, with_head

Size = tuple[int, int]  # (width, height)

DEFAULT_SIZE: Size = (192, 256)
SMALL_SIZE: Size = (144, 192)  # same 3:4 aspect, 0.56x the pixels (tiny only: resnet/hrnet need multiples of 32)
BIG_MODELS: tuple[tuple[str, int], ...] = (("resnet", 18), ("resnet", 50), ("hrnet", 32), ("hrnet", 48))
ALL_MODELS: tuple[tuple[str, int], ...] = (("tiny", 32), *BIG_MODELS)


def cpu_pressure() -> float | None:
    """Share of the last 10 s in which some runnable task waited for a CPU (``/proc/pressure/cpu``), in %."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        return float(dict(f.split("=") for f in line.split()[1:])["avg10"])
    except (OSError, KeyError, ValueError, IndexError):
        return None


def measure_throughput(
    backbone_name: str,
    variant: int | None,
    input_size: Size,
    batch_size: int,
    device: str = "cpu",
    amp: bool = False,
    channels_last: bool = False,
    iters: int = 5,
    warmup: int = 2,
    threads: int | None = None,
    num_keypoints: int = 17,
) -> dict:
    """Training-step throughput of ``backbone + 1x1 head`` on random data.

    Args:
        backbone_name, variant: as ``models.backbones.build_backbone``.
        input_size: ``(w, h)`` of the input crop; the target is ``(batch, num_keypoints, h/4, w/4)``.
        batch_size: images per step.
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:1"`` ...).
        amp: bf16 autocast for the forward pass (loss in fp32), on CPU too (fast where the CPU has AVX512-BF16/AMX).
        channels_last: model and input in NHWC memory format.
        iters: timed iterations, after ``warmup`` untimed ones.
        threads: CPU intra-op threads for this measurement (default: as set); restored afterwards.

    Returns:
        the settings plus ``images_per_s`` (median iteration), ``images_per_s_best``, ``ms_per_step`` (median),
        ``cpu_pressure`` (% avg10 after the run; None where unknown or on GPU), ``peak_memory_mb`` (CUDA only).
    """
    dev = torch.device(device)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        model = with_head(build_backbone(backbone_name, variant), num_keypoints).to(dev)  # type: ignore[arg-type]
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model = model.to(memory_format=fmt)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        w, h = input_size
        x = torch.randn(batch_size, 3, h, w, device=dev).contiguous(memory_format=fmt)
        target = torch.rand(batch_size, num_keypoints, h // 4, w // 4, device=dev)
        cuda = dev.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                out = model(x)
            nn.functional.mse_loss(out.float(), target).backward()
            optimizer.step()

        times = []
        for i in range(warmup + iters):
            if cuda:
                torch.cuda.synchronize(dev)
            start = time.perf_counter()
            step()
            if cuda:
                torch.cuda.synchronize(dev)
            if i >= warmup:
                times.append(time.perf_counter() - start)
        median = statistics.median(times)
        return {
            "backbone": backbone_name,
            "variant": model[0].variant,
            "input_size": list(input_size),
            "batch_size": batch_size,
            "device": torch.cuda.get_device_name(dev) if cuda else "cpu",
            "amp": amp,
            "channels_last": channels_last,
            "threads": torch.get_num_threads() if not cuda else None,
            "iters": iters,
            "images_per_s": batch_size / median,
            "images_per_s_best": batch_size / min(times),
            "ms_per_step": median * 1000,
            "cpu_pressure": None if cuda else cpu_pressure(),
            "peak_memory_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if cuda else None,
        }
    finally:
        torch.set_num_threads(previous_threads)


def _label(r: dict) -> str:
    name = {"tiny": f"tiny-{r['variant']}", "resnet": f"resnet-{r['variant']}"}.get(r["backbone"], "")
    return name or f"hrnet-w{r['variant']}"


def _throughput_table(rows: Sequence[dict], gpu: bool) -> str:
    head = "| backbone | input (w x h) | batch | " + ("" if gpu else "threads | ") + "precision | layout | images/s "
    head += "(median) | best | ms/step | " + ("peak memory (MB) |" if gpu else "CPU pressure avg10 (%) |")
    lines = [head, "|" + "---|" * (10 if not gpu else 9)]
    for r in rows:
        w, h = r["input_size"]
        cells = [_label(r), f"{w}x{h}", str(r["batch_size"])]
        if not gpu:
            cells.append(str(r["threads"]))
        cells += ["bf16 autocast" if r["amp"] else "fp32", "channels_last" if r["channels_last"] else "NCHW"]
        cells += [f"{r['images_per_s']:.1f}", f"{r['images_per_s_best']:.1f}", f"{r['ms_per_step']:.0f}"]
        extra = r["peak_memory_mb"] if gpu else r["cpu_pressure"]
        cells.append("-" if extra is None else f"{extra:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cost_table(sizes: dict[tuple[str, int], Sequence[Size]]) -> tuple[str, list[dict]]:
    rows = []
    for (name, variant), size_list in sizes.items():
        model = with_head(build_backbone(name, variant), 17)  # type: ignore[arg-type]
        for size in size_list:
            gflops = count_flops(model, size)
            rows.append(
                {
                    "backbone": name,
                    "variant": variant,
                    "input_size": list(size),
                    "params": count_parameters(model),
                    "gmacs": gflops / 2,
                    "gflops": gflops,
                }
            )
    lines = ["| backbone | input (w x h) | params (M) | GMACs | GFLOPs |", "|---|---|---|---|---|"]
    lines += [
        f"| {_label(r)} | {r['input_size'][0]}x{r['input_size'][1]} | {r['params'] / 1e6:.2f} | {r['gmacs']:.2f} | "
        f"{r['gflops']:.2f} |"
        for r in rows
    ]
    return "\n".join(lines), rows


def run() -> None:
    """CPU benchmark; rewrites the ``models`` section of docs/BENCHMARKS.md."""
    cores = available_cores()
    rows = []
    for threads in sorted({cores, 1}, reverse=True):
        for amp, cl in ((False, False), (False, True), (True, True)):
            rows.append(
                measure_throughput("tiny", 32, DEFAULT_SIZE, 32, amp=amp, channels_last=cl, iters=6, threads=threads)
            )
    for amp in (False, True):
        rows.append(measure_throughput("tiny", 32, SMALL_SIZE, 32, amp=amp, channels_last=True, iters=6, threads=cores))
    for name, variant in BIG_MODELS:
        for amp in (False, True):
            rows.append(
                measure_throughput(
                    name, variant, DEFAULT_SIZE, 8, amp=amp, channels_last=True, iters=3, warmup=1, threads=cores
                )
            )
    cost, cost_rows = _cost_table(
        {("tiny", 32): (DEFAULT_SIZE, SMALL_SIZE), **{key: (DEFAULT_SIZE,) for key in BIG_MODELS}}
    )
    tiny = {
        (r["threads"], r["amp"], r["channels_last"]): r["images_per_s"]
        for r in rows
        if r["backbone"] == "tiny" and tuple(r["input_size"]) == DEFAULT_SIZE
    }
    best_fp32 = max(v for (_, amp, _), v in tiny.items() if not amp)
    verdict = "met" if best_fp32 >= 60 else "NOT met"
    pressures = [r["cpu_pressure"] for r in rows if r["cpu_pressure"] is not None]
    busy = (
        f"\n\nOther processes competed for the CPU during this run (pressure up to {max(pressures):.0f}%): medians "
        "below the best iteration are that, not the network."
        if pressures and max(pressures) > 10
        else ""
    )
    body = (
        "Training step (forward, backward, SGD momentum) of backbone + 1x1 head (17 keypoints) on random data, "
        f"{cores} cores available; median of the timed iterations (big backbones: 3 iterations of batch 8).\n\n"
        f"{_throughput_table(rows, gpu=False)}\n\n"
        f"Target for `tiny`: >= 60 images/s at 192x256, batch 32, fp32: **{verdict}** "
        f"(best fp32 setting: {best_fp32:.0f} images/s).{busy}\n\n"
        "Size and cost (17-keypoint head; GMACs = multiply-accumulates, the papers' 'GFLOPs'; GFLOPs = 2 x GMACs; "
        f"`python -m pipeline summary`):\n\n{cost}"
    )
    write_section(
        "models",
        "Backbones: training throughput and cost (CPU)",
        "make bench  # python -m bench models",
        body,
        {"throughput": rows, "cost": cost_rows},
    )


def run_cuda(device: str = "cuda", batch_size: int = 32, iters: int = 20) -> None:
    """GPU benchmark (fp32 NCHW against bf16 autocast + channels_last); rewrites the ``models_cuda`` section."""
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels once
    rows = []
    for name, variant in ALL_MODELS:
        for amp, cl in ((False, False), (True, True)):
            rows.append(
                measure_throughput(
                    name,
                    variant,
                    DEFAULT_SIZE,
                    batch_size,
                    device=device,
                    amp=amp,
                    channels_last=cl,
                    iters=iters,
                    warmup=5,
                )
            )
            r = rows[-1]
            print(f"{_label(r)} amp={amp} channels_last={cl}: {r['images_per_s']:.0f} images/s", flush=True)
    body = (
        f"Training step (forward, backward, SGD momentum) of backbone + 1x1 head (17 keypoints) on random data, "
        f"median of {iters} iterations after 5 warm-up ones, cuDNN benchmark mode.\n\n"
        + _throughput_table(rows, gpu=True)
    )
    write_section(
        "models_cuda",
        "Backbones: training throughput (GPU)",
        "python -m bench.models --device cuda",
        body,
        {"throughput": rows},
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.models", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--batch-size", type=int, default=32, help="GPU batch size (default 32)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            parser.error("--device cuda: torch.cuda.is_available() is False on this machine")
        run_cuda(args.device, args.batch_size)
    elif args.device == "cpu":
        run()
    else:
        parser.error(f"--device must be cpu or cuda[:N], got {args.device!r}")


if __name__ == "__main__":
    main()
