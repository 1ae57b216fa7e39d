"""The per-worker training loop: supervised + semi-supervised, one readable path (nanoGPT's train.py is the model).

``train_worker(config)`` is what every Ray Train worker runs (pipeline/ray_train.py) and what a plain process runs
for benchmarks: the only difference is the ``Session`` that says who we are and where checkpoints go.

One step:
1. a labeled batch (L_s: the head's loss on ground truth);
2. with SSL, an unlabeled batch: the teacher (the same network without gradient, or its EMA) predicts heatmaps H on
   the weak view; the strong view masks keypoints (fixed-count joint cutout, or adaptive keypoint masking); with
   Mixup, the weak view is also mixed with a permutation of itself at image level and at stem-feature level;
3. labeled, strong and mixed images go through the network in ONE forward call (DDP allows one pass per backward),
   L = L_s + ramp * (lambda_u * L_u + lambda_m * L_m); clip, step, EMA.

For the ASLA head the pseudo target is the teacher's decoded keypoints, encoded as ASLA's own targets (positives
around each keypoint whose teacher score passes ``ssl.asla_min_score``): ASLA has no heatmap to regress to.

Validation runs on rank 0 at the end of every epoch (OKS AP on val.json with ground-truth boxes) and the checkpoint
holds the training state plus the best weights so far, so a restarted worker group (FailureConfig) or a re-run stage
continues from the last epoch instead of starting over.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from models.asla import asla_decode
from models.pose_model import PoseModel
from models.summary import count_flops
from pipeline import ssl
from pipeline.codec import HeatmapCodec
from pipeline.config import Params, params_from_dict
from pipeline.data.coco import read_coco
from pipeline.data.dataset import TopDownDataset, instances_from_coco
from pipeline.data.transforms import Augment, half_body_ids
from pipeline.evaluation import evaluate_keypoints
from pipeline.inference import predict, to_coco_results
from pipeline.keypoints import KeypointSchema
from pipeline.model_store import build_codec, model_from_params

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"  # in a checkpoint directory: the whole training state
BEST_FILE = "best.pt"  # in a checkpoint directory: the best weights so far (by val AP)
IMAGE_CACHE = 2048  # decoded images kept per data set and loader process (256x256 synthetic: 0.4 GB)


# --------------------------------------------------------------------------------------------------- session


def load_training_state(path: Path, device: torch.device | str = "cpu") -> dict:
    """A checkpoint's training state (weights, optimiser, schedule, epoch, history), loaded with
    ``weights_only=True``: a checkpoint folder is a file on disk like any other, and a full unpickle of a planted
    one would run its code. The state holds only tensors and plain values (history is saved through JSON)."""
    return torch.load(path, map_location=device, weights_only=True)


class Session:
    """Who this worker is and where its checkpoints go: Ray Train's session, or a plain single process."""

    def __init__(self, local_checkpoint_dir: Path | None = None) -> None:
        self.ray = local_checkpoint_dir is None
        if self.ray:
            import ray.train

            ctx = ray.train.get_context()
            self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        else:
            self.rank, self.world_size = 0, 1
            self.local_dir = Path(local_checkpoint_dir)  # type: ignore[arg-type]

    def device(self, use_gpu: bool) -> torch.device:
        if self.ray and use_gpu:
            import ray.train.torch

            return ray.train.torch.get_device()
        return torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")

    @contextmanager
    def latest_checkpoint(self) -> Iterator[Path | None]:
        if self.ray:
            import ray.train

            checkpoint = ray.train.get_checkpoint()
            if checkpoint is None:
                yield None
            else:
                with checkpoint.as_directory() as d:
                    yield Path(d)
        else:
            latest = self.local_dir / "latest"
            yield latest if (latest / STATE_FILE).exists() else None

    def report(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        if self.ray:
            import ray.train

            checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
            ray.train.report(metrics, checkpoint=checkpoint)
        elif checkpoint_dir is not None:
            latest = self.local_dir / "latest"
            tmp = self.local_dir / "latest.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(checkpoint_dir, tmp)
            shutil.rmtree(latest, ignore_errors=True)
            tmp.rename(latest)


# --------------------------------------------------------------------------------------------------- data


@dataclass
class Data:
    schema: KeypointSchema
    codec: HeatmapCodec
    labeled: TopDownDataset
    unlabeled: TopDownDataset | None
    val: TopDownDataset
    val_gt: dict


def load_data(params: Params, paths: dict[str, str]) -> Data:
    """Datasets from the stage's files: ``labels`` (COCO, human labels), ``pool``, ``val``, ``images_root``, and
    ``pseudo`` (confident pseudo-labels, used when ``train.pseudo_labels``)."""
    root = Path(paths["images_root"])
    labeled = read_coco(paths["labels"], sigmas=params.data.sigmas, flip_pairs=params.data.flip_pairs)
    schema = labeled.schema
    codec = build_codec(params)
    size = tuple(params.codec.input_size)
    aug = params.train.augment
    body = half_body_ids(schema) if aug.half_body > 0 else None
    augment = Augment(
        scale_range=tuple(aug.scale),
        rotation_deg=aug.rotation,
        flip_prob=aug.flip,
        half_body_prob=aug.half_body if body else 0.0,
        upper_body_ids=body[0] if body else None,
        lower_body_ids=body[1] if body else None,
    )
    k = schema.num_keypoints
    pad = params.codec.box_padding
    seed = params.train.seed

    def dataset(records: list, augmented: bool, offset: int) -> TopDownDataset:
        # decoded images stay in memory: imread was 38% of a sample's time (profiled at 96x128), and every image
        # is read again each epoch
        return TopDownDataset(records, schema, codec, input_size=size, augment=augment if augmented else None,
                              seed=seed + offset, padding=pad, cache_size=IMAGE_CACHE)  # fmt: skip

    labeled_records = instances_from_coco(labeled.images, labeled.annotations, root, k)
    if not labeled_records:
        raise ValueError(f"{paths['labels']}: no labeled person to train on")
    if params.train.pseudo_labels and paths.get("pseudo") and Path(paths["pseudo"]).is_file():
        # confident teacher predictions of the last round; a human label of the same instance always wins
        pseudo = read_coco(paths["pseudo"], sigmas=params.data.sigmas, flip_pairs=params.data.flip_pairs)
        human = {r.instance_id for r in labeled_records}
        extra = [
            r for r in instances_from_coco(pseudo.images, pseudo.annotations, root, k) if r.instance_id not in human
        ]
        log.info("training on %d human + %d pseudo labels", len(labeled_records), len(extra))
        labeled_records += extra
    unlabeled = None
    if params.train.ssl.mode != "off" and paths.get("pool"):
        pool = read_coco(paths["pool"], sigmas=params.data.sigmas, flip_pairs=params.data.flip_pairs)
        pool_records = instances_from_coco(pool.images, pool.annotations, root, k, require_keypoints=False)
        unlabeled = dataset(pool_records, True, 1) if pool_records else None
    val = read_coco(paths["val"], sigmas=params.data.sigmas, flip_pairs=params.data.flip_pairs)
    val_records = instances_from_coco(val.images, val.annotations, root, k)
    return Data(schema, codec, dataset(labeled_records, True, 0), unlabeled, dataset(val_records, False, 2),
                val.to_dict())  # fmt: skip


def _loader(dataset: TopDownDataset, batch_size: int, session: Session, seed: int, workers: int) -> DataLoader:
    """Shuffled loader; each Ray worker reads its own shard (DistributedSampler) of the data set."""
    if session.world_size > 1:
        sampler = DistributedSampler(dataset, num_replicas=session.world_size, rank=session.rank, seed=seed)
    else:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    # drop_last keeps BatchNorm away from batches of one when the set is not a multiple of the batch size
    drop_last = len(dataset) // session.world_size > batch_size
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=drop_last,
                      persistent_workers=False)  # fmt: skip


def _cycle(loader: DataLoader, dataset: TopDownDataset, epoch: int) -> Iterator[dict]:
    """Endless batches; each new pass re-seeds augmentation and the shard shuffle."""
    passes = 0
    while True:
        dataset.set_epoch(epoch * 1000 + passes)
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch * 1000 + passes)
        yield from loader
        passes += 1


# --------------------------------------------------------------------------------------------------- the step


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _slice(outputs: dict[str, torch.Tensor], start: int, stop: int) -> dict[str, torch.Tensor]:
    return {k: v[start:stop] for k, v in outputs.items()}


def ramp_up(epoch_progress: float, rampup_epochs: int) -> float:
    """The usual sigmoid ramp-up exp(-5 (1 - t)^2) of the unsupervised weights over the first epochs."""
    if rampup_epochs <= 0:
        return 1.0
    t = min(max(epoch_progress / rampup_epochs, 0.0), 1.0)
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


def _asla_pseudo_batch(raw: PoseModel, teacher_out: dict, batch: dict, min_score: float) -> dict:
    """ASLA's pseudo targets: the teacher's decoded keypoints, crop px, weight 1 where the teacher is confident."""
    keypoints_hm, scores = asla_decode(teacher_out, top_n=raw.asla_top_n)
    stride = torch.as_tensor(raw.codec.stride, dtype=keypoints_hm.dtype, device=keypoints_hm.device)
    return {
        "keypoints": (keypoints_hm + 0.5) * stride - 0.5,
        "target_weight": (scores >= min_score).float(),
        "bbox": batch["bbox"],
        "matrix": batch["matrix"],
    }


def ssl_step_inputs(
    raw: PoseModel, teacher: PoseModel, unlabeled: dict, params: Params, rng: np.random.Generator,
    generator: torch.Generator,
) -> dict:  # fmt: skip
    """Teacher targets and the student's unlabeled inputs of one step (see the module docstring)."""
    cfg = params.train.ssl
    weak = unlabeled["image"]
    teacher.eval()
    with torch.no_grad():
        teacher_out = teacher(weak)
        teacher_pred = teacher.decode(teacher_out)
    teacher_kp = torch.from_numpy(teacher_pred.keypoints).to(weak.device)
    if raw.head_type == "heatmap":
        targets = teacher_out["heatmaps"].float()
    else:
        targets = _asla_pseudo_batch(raw, teacher_out, unlabeled, cfg.asla_min_score)
    if cfg.mode == "cutout":
        strong = ssl.joint_cutout(weak.cpu(), teacher_kp.cpu(), num_masks=cfg.max_masks, generator=generator)
        mask_counts = torch.full((weak.shape[0],), cfg.max_masks)
    else:
        heat = teacher_out["heatmaps"] if raw.head_type == "heatmap" else torch.sigmoid(teacher_out["logits"])
        strong, mask_counts = ssl.adaptive_keypoint_masking(
            weak.cpu(), heat.float().cpu(), teacher_kp.cpu(), max_masks=cfg.max_masks, tau=cfg.tau, floor=cfg.floor,
            generator=generator,
        )  # fmt: skip
    out = {"targets": targets, "strong": strong.to(weak.device), "mask_counts": mask_counts}
    if cfg.mode == "adaptive_mixup":
        permutation = torch.randperm(weak.shape[0], generator=generator).to(weak.device)
        alpha = ssl.sample_mixup_alpha(rng)
        out.update(permutation=permutation, alpha=alpha, mixed=ssl.mix(weak, permutation, alpha), weak=weak)
    return out


def unsupervised_losses(raw: PoseModel, outputs: dict, sizes: list[int], ssl_in: dict, unlabeled: dict) -> dict:
    """L_u (student on the strong view against the teacher) and L_m (Mixup branches) from the joint forward."""
    bounds = np.cumsum([0, *sizes])
    targets = ssl_in["targets"]

    def u_loss(out: dict, tgt: dict | torch.Tensor) -> torch.Tensor:
        if raw.head_type == "heatmap":
            return ((out["heatmaps"].float() - tgt) ** 2).mean()
        return raw.loss(out, tgt)["loss"]

    losses = {"unsup": u_loss(_slice(outputs, bounds[1], bounds[2]), targets)}
    if "permutation" in ssl_in:
        perm, alpha = ssl_in["permutation"], ssl_in["alpha"]
        branch_losses = []
        for b in range(2, len(sizes)):
            out = _slice(outputs, bounds[b], bounds[b + 1])
            if raw.head_type == "heatmap":
                branch_losses.append(ssl.mixup_loss(out["heatmaps"].float(), targets, targets[perm], alpha))
            else:
                permuted = {k: v[perm] for k, v in targets.items()}
                branch_losses.append(alpha * u_loss(out, targets) + (1 - alpha) * u_loss(out, permuted))
        losses["mixup"] = torch.stack(branch_losses).mean()
    return losses


# --------------------------------------------------------------------------------------------------- helpers


def build_schedule(optimizer: torch.optim.Optimizer, params: Params, steps_per_epoch: int):
    cfg = params.train
    total = cfg.epochs * steps_per_epoch

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        if cfg.schedule == "cosine":
            return warm * 0.5 * (1.0 + math.cos(math.pi * min(step / max(total, 1), 1.0)))
        epoch = step // steps_per_epoch
        return warm * 0.1 ** sum(epoch >= e for e in cfg.step_epochs)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.mul_(decay).add_(p.detach(), alpha=1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)


def cpu_supports_bf16() -> bool:
    """True where oneDNN has native bf16 kernels (AVX512-BF16 / AMX): there bf16 autocast is faster than fp32; on
    a CPU without them it is emulated and slower, so ``amp: auto`` keeps fp32."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_amp(device: torch.device, amp: str) -> str:
    """``train.amp`` -> the mode used: ``auto`` is bf16 on CUDA and on CPUs with native bf16, off elsewhere."""
    if amp != "auto":
        return amp
    if device.type == "cuda":
        return "bf16"
    return "bf16" if device.type == "cpu" and cpu_supports_bf16() else "off"


def autocast_for(device: torch.device, amp: str):
    """(autocast context factory, GradScaler or None) for ``train.amp`` (see ``resolve_amp``)."""
    mode = resolve_amp(device, amp)
    if mode == "off":
        return (lambda: nullcontext()), None
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(device.type) if mode == "fp16" else None
    return (lambda: torch.autocast(device.type, dtype=dtype)), scaler


_PEAK_FLOPS: dict[tuple[str, str], float] = {}


def measured_peak_flops(device: torch.device, mode: str, seconds: float = 0.3) -> float:
    """FLOP/s of a large matmul in the training dtype on this device with this process's threads: the machine's
    practical peak, the denominator of MFU (nanoGPT compares with a datasheet peak; a CPU has none to quote, so
    it is measured, once per process)."""
    key = (str(device), mode)
    if key not in _PEAK_FLOPS:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode, torch.float32)
        n = 2048 if device.type == "cpu" else 8192
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        a @ b  # warm-up
        count, started = 0, time.perf_counter()
        while count < 3 or time.perf_counter() - started < seconds:
            a @ b
            count += 1
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        _PEAK_FLOPS[key] = 2 * n**3 * count / (time.perf_counter() - started)
    return _PEAK_FLOPS[key]


class Progress:
    """One line for the whole run: steps, loss, val AP, ETA.

    ``sink``: False (silent), True (a tqdm line in this process), or a ``ray.util.queue.Queue`` that the driver reads
    and shows (pipeline/ray_train.py ``show_progress``): a Ray worker's own terminal output would arrive through
    Ray's log forwarding, one line per update. Updates are throttled to ``every_s`` seconds.
    """

    def __init__(self, sink: object, total: int, done: int, every_s: float = 0.5) -> None:
        self.queue = None if isinstance(sink, bool) or sink is None else sink
        self.every_s = every_s
        self.state: dict = {"step": done, "total": total}
        self.last = 0.0
        self.bar = draw_progress(None, self.state) if sink is True else None

    def update(self, force: bool = False, **state: float) -> None:
        self.state.update(state)
        now = time.perf_counter()
        if not force and now - self.last < self.every_s:
            return
        self.last = now
        if self.bar is not None:
            draw_progress(self.bar, self.state)
        elif self.queue is not None:
            self._put(dict(self.state))

    def note(self, text: str) -> None:
        """An event worth a line of its own above the progress line (a resume, a restarted worker group)."""
        if self.bar is not None:
            self.bar.write(text)
        elif self.queue is not None:
            self._put({"message": text})

    def _put(self, message: dict) -> None:
        import ray.util.queue

        with suppress(ray.util.queue.Full):  # the driver is behind: a dropped update is only a stale line
            self.queue.put_nowait(message)  # type: ignore[union-attr]

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def draw_progress(bar: tqdm | None, state: dict) -> tqdm:
    """Show a ``Progress`` state (step, total and postfix fields) on ``bar``, made on the first call."""
    if bar is None:
        bar = tqdm(total=state["total"], initial=state["step"], desc="train", unit="step", dynamic_ncols=True)
    bar.n = int(state["step"])
    bar.set_postfix({k: v for k, v in state.items() if k not in ("step", "total")}, refresh=True)
    return bar


def after_warmup_mean(history: list[dict], key: str) -> float:
    """Mean of ``key`` over the epochs after the first (which holds allocator and oneDNN kernel warm-up)."""
    later = history[1:] or history
    return sum(h[key] for h in later) / len(later)


def validate(model: PoseModel, data: Data, flip_test: bool) -> dict:
    predictions = predict(model, data.val, batch_size=64, flip_test=flip_test)
    results = to_coco_results(predictions, data.val.records, data.schema.category_id)
    metrics = evaluate_keypoints(data.val_gt, results, data.schema)
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


# --------------------------------------------------------------------------------------------------- the loop


def train_worker(config: dict) -> None:
    """Ray Train's per-worker function. config: ``params`` (params.yaml as a dict), ``paths`` (see load_data),
    ``init_weights`` (a model.pt to warm-start from, or None), ``local_checkpoint_dir`` (plain process only),
    ``progress`` (bool)."""
    params = params_from_dict(config["params"])
    cfg = params.train
    session = Session(config.get("local_checkpoint_dir"))
    torch.set_num_threads(cfg.threads_per_worker)
    torch.manual_seed(cfg.seed + session.rank)
    use_gpu = bool(config.get("use_gpu", False))
    device = session.device(use_gpu)
    data = load_data(params, config["paths"])
    is_main = session.rank == 0

    raw = model_from_params(params, data.codec, data.schema)
    if config.get("init_weights"):
        raw.load_state_dict(torch.load(config["init_weights"], map_location="cpu", weights_only=True))
    raw.to(device)
    if cfg.channels_last:
        raw.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(raw).eval() if (cfg.ema or cfg.ssl.ema_teacher) else None
    model: torch.nn.Module = raw
    if session.world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(raw, device_ids=[device.index] if device.type == "cuda"
                                                          else None)  # fmt: skip
    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(raw.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_worker = math.ceil(len(data.labeled) / session.world_size)
    steps_per_epoch = max(math.ceil(per_worker / cfg.batch_size), cfg.min_steps_per_epoch)
    scheduler = build_schedule(optimizer, params, steps_per_epoch)
    amp_mode = resolve_amp(device, cfg.amp)
    autocast, scaler = autocast_for(device, amp_mode)
    # MFU as nanoGPT reports it: model FLOPs of the step (forward x 3 for forward + backward; the SSL teacher's
    # forward x 1) over the machine's peak, measured on rank 0 only (the others would compete for the same cores)
    flops_per_image = count_flops(raw, tuple(params.codec.input_size)) * 1e9
    peak_flops = measured_peak_flops(device, amp_mode) if is_main else float("nan")

    start_epoch, best_ap, history = 0, -1.0, []
    with session.latest_checkpoint() as ckpt:
        if ckpt is not None:
            state = load_training_state(ckpt / STATE_FILE, device)
            raw.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if ema is not None and state.get("ema") is not None:
                ema.load_state_dict(state["ema"])
            start_epoch, best_ap, history = state["epoch"] + 1, state["best_ap"], state["history"]
            best_weights = torch.load(ckpt / BEST_FILE, map_location="cpu", weights_only=True)
            if is_main:
                log.info("resumed from %s at epoch %d (best val AP %.4f)", ckpt, start_epoch, best_ap)
        else:
            best_weights = None

    labeled_iter = _cycle(_loader(data.labeled, cfg.batch_size, session, cfg.seed, cfg.loader_workers),
                          data.labeled, start_epoch)  # fmt: skip
    unlabeled_iter = None
    if data.unlabeled is not None:
        loader = _loader(data.unlabeled, cfg.ssl.unlabeled_batch_size, session, cfg.seed + 1, cfg.loader_workers)
        unlabeled_iter = _cycle(loader, data.unlabeled, start_epoch)
    rng = np.random.default_rng([cfg.seed, session.rank, start_epoch])
    generator = torch.Generator().manual_seed(cfg.seed * 1000 + session.rank * 100 + start_epoch)

    progress = Progress(config.get("progress", True) if is_main else False, cfg.epochs * steps_per_epoch,
                        start_epoch * steps_per_epoch)  # fmt: skip
    if best_ap >= 0:
        progress.note(f"resumed from the checkpoint of epoch {start_epoch}/{cfg.epochs} (best val AP {best_ap:.4f})")
        progress.update(force=True, best_ap=round(best_ap, 4))
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        sums: dict[str, float] = {}
        started = time.perf_counter()
        step_flops = 0.0
        for step in range(steps_per_epoch):
            batch = _to(next(labeled_iter), device)
            parts, sizes, ssl_in, unlabeled = [batch["image"]], [batch["image"].shape[0]], None, None
            feature_mix = None
            if unlabeled_iter is not None:
                unlabeled = _to(next(unlabeled_iter), device)
                teacher = ema if (cfg.ssl.ema_teacher and ema is not None) else raw
                ssl_in = ssl_step_inputs(raw, teacher, unlabeled, params, rng, generator)
                parts.append(ssl_in["strong"])
                sizes.append(ssl_in["strong"].shape[0])
                if "mixed" in ssl_in:
                    parts.append(ssl_in["mixed"])
                    sizes.append(ssl_in["mixed"].shape[0])
                    if cfg.ssl.feature_mixup:
                        feature_mix = (sum(sizes), ssl_in["permutation"], ssl_in["alpha"])
                        parts.append(ssl_in["weak"])
                        sizes.append(ssl_in["weak"].shape[0])
            images = torch.cat(parts)
            step_flops += flops_per_image * (3 * images.shape[0] + (unlabeled["image"].shape[0] if unlabeled else 0))
            if cfg.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast():
                outputs = model(images, feature_mix=feature_mix)
            outputs = {k: v.float() for k, v in outputs.items()}
            losses = raw.loss(_slice(outputs, 0, sizes[0]), batch)
            total = losses["loss"]
            if ssl_in is not None:
                weight = ramp_up(epoch + step / steps_per_epoch, cfg.ssl.rampup_epochs)
                extra = unsupervised_losses(raw, outputs, sizes, ssl_in, unlabeled)
                total = total + weight * cfg.ssl.lambda_u * extra["unsup"]
                if "mixup" in extra:
                    total = total + weight * cfg.ssl.lambda_m * extra["mixup"]
                losses = {**losses, **extra}
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(total).backward()
                scaler.unscale_(optimizer)
            else:
                total.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(raw.parameters(), cfg.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            if ema is not None:
                ema_update(ema, raw, cfg.ssl.ema_decay if cfg.ssl.ema_teacher else cfg.ema_decay)
            for key, value in losses.items():
                if key != "num_pos":  # "loss" is the supervised total of the head
                    name = "supervised" if key == "loss" else key
                    sums[name] = sums.get(name, 0.0) + float(value.detach())
            sums["total"] = sums.get("total", 0.0) + float(total.detach())
            if is_main:
                progress.update(step=epoch * steps_per_epoch + step + 1, epoch=epoch + 1,
                                loss=round(sums["total"] / (step + 1), 5))  # fmt: skip

        seconds = time.perf_counter() - started
        metrics = {f"loss_{k}": v / steps_per_epoch for k, v in sums.items()}
        metrics.update(epoch=epoch, lr=scheduler.get_last_lr()[0], epoch_seconds=seconds,
                       images_per_s=steps_per_epoch * sum(sizes) * session.world_size / seconds,
                       mfu=step_flops / seconds / peak_flops, gflops_per_image=flops_per_image / 1e9,
                       peak_tflops=peak_flops / 1e12, amp=amp_mode)  # fmt: skip
        checkpoint_dir = None
        with tempfile.TemporaryDirectory() as tmp:
            if is_main:
                evaluated = ema if (cfg.ema and ema is not None) else raw
                val = validate(evaluated, data, cfg.flip_test)
                metrics.update({f"val_{k}": v for k, v in val.items()})
                if val["ap"] > best_ap or best_weights is None:
                    best_ap = val["ap"]
                    best_weights = {k: v.detach().cpu().clone() for k, v in evaluated.state_dict().items()}
                metrics["best_val_ap"] = best_ap
                history.append(metrics)
                checkpoint_dir = Path(tmp)
                torch.save(
                    {"model": raw.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "epoch": epoch,
                     "best_ap": float(best_ap), "history": json.loads(json.dumps(history))},
                    checkpoint_dir / STATE_FILE,
                )  # fmt: skip
                torch.save(best_weights, checkpoint_dir / BEST_FILE)
                (checkpoint_dir / "history.json").write_text(json.dumps(history))
                line = (
                    f"epoch {epoch + 1}/{cfg.epochs}: loss {metrics['loss_total']:.4f} val AP {val['ap']:.4f} "
                    f"(best {best_ap:.4f}) {metrics['images_per_s']:.0f} img/s, MFU {metrics['mfu']:.1%}"
                )
                if progress.bar is not None:
                    progress.bar.write(line)
                else:
                    print(line, flush=True)  # a Ray worker's log file, or a benchmark's output
                progress.update(force=True, val_ap=round(val["ap"], 4), best_ap=round(best_ap, 4),
                                img_s=round(metrics["images_per_s"]), mfu=f"{metrics['mfu']:.0%}")  # fmt: skip
            if session.world_size > 1 and dist.is_initialized():
                dist.barrier()  # rank 0's validation must not race the others into the next epoch's collectives
            session.report(metrics, checkpoint_dir)
    progress.close()
