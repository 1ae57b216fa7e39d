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
around each keypoint whose teacher score passes ``semi_supervised.asla_min_score``): ASLA has no heatmap to regress to.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from models.heads import target_codec
from models.pose_model import PoseModel
from models.summary import count_flops
from pipeline import semi_supervised
from pipeline.codec import HeatmapCodec
from pipeline.config import Params
from pipeline.data.coco import read_coco
from pipeline.data.dataset import TopDownDataset, instances_from_coco
from pipeline.data.pool_predictions import is_stand_in
from pipeline.data.transforms import Augment, half_body_ids
from pipeline.evaluation import evaluate_keypoints
from pipeline.inference import predict, to_coco_results
from pipeline.keypoints import KeypointSchema
from pipeline.model_store import build_codec, model_from_params

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 2  # 2: two optimiser groups (no weight decay on norms and biases), separate teacher EMA
IMAGE_CACHE = 2048  # decoded images kept per data set and loader process (256x256 synthetic: 0.4 GB)


# --------------------------------------------------------------------------------------------------- checkpoint


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint directory (a Ray Train checkpoint, or a plain process's ``<dir>/latest``) and its three files:

        state.pt      the training state: model, EMA, optimiser, schedule, epoch, best AP, history
        best.pt       the best weights so far by val AP (a state dict): what the train stage ships
        history.json  one dict of metrics per epoch, readable without torch

    Loaded with ``weights_only=True``: a checkpoint folder is a file on disk like any other, and a full unpickle of a
    planted one would run its code; the state holds only tensors and plain values (history goes through JSON).
    """

    path: Path
    STATE: ClassVar[str] = "state.pt"
    BEST: ClassVar[str] = "best.pt"
    HISTORY: ClassVar[str] = "history.json"
    LATEST: ClassVar[str] = "latest"  # a plain process's checkpoint, inside its local_checkpoint_dir

    @classmethod
    def latest_in(cls, local_dir: Path | str) -> Checkpoint:
        return cls(Path(local_dir) / cls.LATEST)

    def exists(self) -> bool:
        return (self.path / self.STATE).is_file()

    def training_state(self, device: torch.device | str = "cpu") -> dict:
        return load_training_state(self.path / self.STATE, device)

    def best_weights(self) -> dict[str, torch.Tensor]:
        return torch.load(self.path / self.BEST, map_location="cpu", weights_only=True)

    def history(self) -> list[dict]:
        return json.loads((self.path / self.HISTORY).read_text())

    @classmethod
    def write(cls, path: Path, state: dict, best_weights: dict[str, torch.Tensor], history: list[dict]) -> Checkpoint:
        path.mkdir(parents=True, exist_ok=True)
        torch.save({**state, "history": json.loads(json.dumps(history))}, path / cls.STATE)
        torch.save(best_weights, path / cls.BEST)
        (path / cls.HISTORY).write_text(json.dumps(history))
        return cls(path)


def load_training_state(path: Path, device: torch.device | str = "cpu") -> dict:
    """A state.pt loaded with ``weights_only=True`` (see ``Checkpoint``)."""
    return torch.load(path, map_location=device, weights_only=True)


# --------------------------------------------------------------------------------------------------- session


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
    def latest_checkpoint(self) -> Iterator[Checkpoint | None]:
        if self.ray:
            import ray.train

            checkpoint = ray.train.get_checkpoint()
            if checkpoint is None:
                yield None
            else:
                with checkpoint.as_directory() as d:
                    yield Checkpoint(Path(d))
        else:
            latest = Checkpoint.latest_in(self.local_dir)
            yield latest if latest.exists() else None

    def report(self, metrics: dict, checkpoint: Checkpoint | None) -> None:
        if self.ray:
            import ray.train

            ray_checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint.path)) if checkpoint else None
            ray.train.report(metrics, checkpoint=ray_checkpoint)
        elif checkpoint is not None:  # swap the whole directory in: a kill leaves the old one or the new one
            latest = Checkpoint.latest_in(self.local_dir).path
            tmp = latest.with_name(latest.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(checkpoint.path, tmp)
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
    targets = target_codec(params.model.head, codec)  # what the head's loss reads from a sample
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
        return TopDownDataset(
            records,
            schema,
            targets,
            input_size=size,
            augment=augment if augmented else None,
            seed=seed + offset,
            padding=pad,
            cache_size=IMAGE_CACHE,
        )

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
        # the stand-in of an image where the finder found nobody (detection_score 0) is a whole image, no person
        people = [a for a in pool.annotations if not is_stand_in(a)]
        pool_records = instances_from_coco(pool.images, people, root, k, require_keypoints=False)
        unlabeled = dataset(pool_records, True, 1) if pool_records else None
    val = read_coco(paths["val"], sigmas=params.data.sigmas, flip_pairs=params.data.flip_pairs)
    val_records = instances_from_coco(val.images, val.annotations, root, k)
    return Data(
        schema, codec, dataset(labeled_records, True, 0), unlabeled, dataset(val_records, False, 2), val.to_dict()
    )


def _loader(dataset: TopDownDataset, batch_size: int, session: Session, seed: int, workers: int) -> DataLoader:
    """Shuffled loader; each Ray worker reads its own shard (DistributedSampler) of the data set."""
    if session.world_size > 1:
        sampler = DistributedSampler(dataset, num_replicas=session.world_size, rank=session.rank, seed=seed)
    else:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    # drop_last keeps BatchNorm away from batches of one when the set is not a multiple of the batch size
    drop_last = len(dataset) // session.world_size > batch_size
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=drop_last,
        persistent_workers=False,
    )


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


@dataclass(frozen=True)
class MixupInputs:
    """The dual-branch Mixup of one unlabeled batch (docs/DESIGN.md §5): image-level ``mixed`` =
    alpha x weak + (1 - alpha) x weak[permutation]; the feature-level branch mixes the stem features of ``weak``."""

    permutation: torch.Tensor  # (B,) int64
    alpha: float
    mixed: torch.Tensor  # (B, 3, H, W)
    weak: torch.Tensor  # (B, 3, H, W) the weak view itself, for the feature-level branch


@dataclass(frozen=True)
class SslInputs:
    """What one SSL step feeds the student, and the teacher's targets for it."""

    targets: torch.Tensor | dict  # heatmap head: teacher heatmaps (B, K, h, w); ASLA: a pseudo batch of keypoints
    strong: torch.Tensor  # (B, 3, H, W) the masked view the student must match the teacher on
    mixup: MixupInputs | None  # train.ssl.mode adaptive_mixup only


def ssl_step_inputs(
    raw: PoseModel,
    teacher: PoseModel,
    unlabeled: dict,
    params: Params,
    rng: np.random.Generator,
    generator: torch.Generator,
) -> SslInputs:
    """Teacher targets and the student's unlabeled inputs of one step (see the module docstring)."""
    cfg = params.train.ssl
    weak = unlabeled["image"]
    teacher.eval()
    with torch.no_grad():
        teacher_out = teacher(weak)
        teacher_pred = teacher.decode(teacher_out)
    teacher_kp = torch.from_numpy(teacher_pred.keypoints).to(weak.device)
    targets = raw.head.ssl_targets(teacher_out, unlabeled, cfg.asla_min_score)
    if cfg.mode == "cutout":
        strong = semi_supervised.joint_cutout(
            weak.cpu(), teacher_kp.cpu(), num_masks=cfg.max_masks, generator=generator
        )
    else:
        heat = raw.head.confidence_maps(teacher_out)
        strong, _ = semi_supervised.adaptive_keypoint_masking(
            weak.cpu(),
            heat.float().cpu(),
            teacher_kp.cpu(),
            max_masks=cfg.max_masks,
            tau=cfg.tau,
            floor=cfg.floor,
            generator=generator,
        )
    mixup = None
    if cfg.mode == "adaptive_mixup":
        permutation = torch.randperm(weak.shape[0], generator=generator).to(weak.device)
        alpha = semi_supervised.sample_mixup_alpha(rng)
        mixup = MixupInputs(
            permutation=permutation, alpha=alpha, mixed=semi_supervised.mix(weak, permutation, alpha), weak=weak
        )
    return SslInputs(targets=targets, strong=strong.to(weak.device), mixup=mixup)


def unsupervised_losses(raw: PoseModel, outputs: dict, sizes: list[int], ssl_in: SslInputs) -> dict:
    """L_u (student on the strong view against the teacher) and L_m (Mixup branches) from the joint forward, whose
    rows are [labeled, strong, (mixed, (weak for the feature branch))] of ``sizes``."""
    bounds = np.cumsum([0, *sizes])
    targets = ssl_in.targets
    losses = {"unsup": raw.head.ssl_loss(_slice(outputs, bounds[1], bounds[2]), targets)}
    if ssl_in.mixup is not None:
        perm, alpha = ssl_in.mixup.permutation, ssl_in.mixup.alpha
        branch_losses = [
            raw.head.ssl_mixup_loss(_slice(outputs, bounds[b], bounds[b + 1]), targets, perm, alpha)
            for b in range(2, len(sizes))
        ]
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

    def due(self) -> bool:
        """Whether an update now would be shown: a caller computes a costly field (a GPU sync) only then."""
        return (self.bar is not None or self.queue is not None) and time.perf_counter() - self.last >= self.every_s

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


def training_summary(history: list[dict]) -> dict:
    """metrics/train.json: the val metrics of the best epoch (the weights the stage keeps), and the run's speed."""
    best = max(history, key=lambda h: h.get("val_ap", -1.0))
    return {
        "best_epoch": best["epoch"],
        "epochs": len(history),
        **{k: v for k, v in best.items() if k.startswith("val_")},
        "images_per_s": round(after_warmup_mean(history, "images_per_s"), 1),
        "mfu": round(after_warmup_mean(history, "mfu"), 4),
        "amp": history[-1].get("amp", "off"),
        "train_seconds": round(sum(h["epoch_seconds"] for h in history), 1),
    }


def validate(model: PoseModel, data: Data, flip_test: bool) -> dict:
    predictions = predict(model, data.val, batch_size=64, flip_test=flip_test)
    results = to_coco_results(predictions, data.val.records, data.schema.category_id)
    metrics = evaluate_keypoints(data.val_gt, results, data.schema)
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


# --------------------------------------------------------------------------------------------------- the loop


@dataclass
class TrainRun:
    """Everything one worker's loop holds, built by ``setup``: read top to bottom, it is the training setup."""

    params: Params
    session: Session
    device: torch.device
    data: Data
    raw: PoseModel  # the network itself (what is saved, validated and EMA-tracked)
    model: torch.nn.Module  # what the step calls: ``raw``, or its DDP wrapper on several workers
    eval_ema: PoseModel | None  # train.ema: validated and shipped instead of ``raw``
    teacher_ema: PoseModel | None  # train.ssl.ema_teacher: the SSL teacher
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    autocast: object  # () -> context manager
    scaler: torch.amp.GradScaler | None
    amp_mode: str
    steps_per_epoch: int
    flops_per_image: float
    peak_flops: float
    labeled: Iterator[dict]
    unlabeled: Iterator[dict] | None
    rng: np.random.Generator
    generator: torch.Generator
    progress: Progress
    start_epoch: int = 0
    best_ap: float = -1.0
    best_weights: dict | None = None
    history: list = field(default_factory=list)

    @property
    def is_main(self) -> bool:
        return self.session.rank == 0


def epoch_steps(labeled: int, params: Params, world_size: int = 1) -> int:
    """Optimiser steps per epoch: one pass over this worker's share of the ``labeled`` crops, at least
    ``train.min_steps_per_epoch`` (a small labeled set would otherwise get a handful of steps per epoch)."""
    per_worker = math.ceil(labeled / world_size)
    return max(math.ceil(per_worker / params.train.batch_size), params.train.min_steps_per_epoch)


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on the weights of convolutions and linear layers only (tensors of 2 or more dims, nanoGPT's rule):
    decaying a norm's scale or a bias pulls it toward 0 and regularises nothing."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]


def setup(config: dict) -> TrainRun:
    """Seeds, device, data, model (warm start), EMAs, DDP, optimiser, schedule, AMP, resume, loaders, progress.
    ``config``: Ray Train's ``train_loop_config``: ``params`` (the validated ``Params``, pickled to the workers as it
    is), ``paths``, ``init_weights``, ``use_gpu``, ``progress`` and, without Ray, ``local_checkpoint_dir``."""
    params: Params = config["params"]
    cfg = params.train
    session = Session(config.get("local_checkpoint_dir"))
    torch.set_num_threads(cfg.threads_per_worker)
    torch.manual_seed(cfg.seed + session.rank)
    device = session.device(bool(config.get("use_gpu", False)))
    data = load_data(params, config["paths"])

    raw = model_from_params(params, data.codec, data.schema)
    if config.get("init_weights"):
        raw.load_state_dict(torch.load(config["init_weights"], map_location="cpu", weights_only=True))
    raw.to(device)
    if cfg.channels_last:
        raw.to(memory_format=torch.channels_last)
    eval_ema = copy.deepcopy(raw).eval() if cfg.ema else None
    teacher_ema = copy.deepcopy(raw).eval() if cfg.ssl.mode != "off" and cfg.ssl.ema_teacher else None
    model: torch.nn.Module = raw
    if session.world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            raw, device_ids=[device.index] if device.type == "cuda" else None
        )
    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(parameter_groups(raw, cfg.weight_decay), lr=cfg.lr)
    steps_per_epoch = epoch_steps(len(data.labeled), params, session.world_size)
    scheduler = build_schedule(optimizer, params, steps_per_epoch)
    amp_mode = resolve_amp(device, cfg.amp)
    autocast, scaler = autocast_for(device, amp_mode)
    is_main = session.rank == 0
    # MFU as nanoGPT reports it: model FLOPs of the step (forward x 3 for forward + backward; the SSL teacher's
    # forward x 1) over the machine's peak, measured on rank 0 only (the others would compete for the same cores)
    flops_per_image = count_flops(raw, tuple(params.codec.input_size)) * 1e9
    peak_flops = measured_peak_flops(device, amp_mode) if is_main else float("nan")

    start_epoch, best_ap, best_weights, history = _resume(
        session, device, raw, optimizer, scheduler, (eval_ema, teacher_ema), is_main
    )
    labeled = _cycle(
        _loader(data.labeled, cfg.batch_size, session, cfg.seed, cfg.loader_workers), data.labeled, start_epoch
    )
    unlabeled = None
    if data.unlabeled is not None:
        loader = _loader(data.unlabeled, cfg.ssl.unlabeled_batch_size, session, cfg.seed + 1, cfg.loader_workers)
        unlabeled = _cycle(loader, data.unlabeled, start_epoch)
    progress = Progress(
        config.get("progress", True) if is_main else False, cfg.epochs * steps_per_epoch, start_epoch * steps_per_epoch
    )
    if best_ap >= 0:
        progress.note(f"resumed from the checkpoint of epoch {start_epoch}/{cfg.epochs} (best val AP {best_ap:.4f})")
        progress.update(force=True, best_ap=round(best_ap, 4))
    return TrainRun(
        params=params,
        session=session,
        device=device,
        data=data,
        raw=raw,
        model=model,
        eval_ema=eval_ema,
        teacher_ema=teacher_ema,
        optimizer=optimizer,
        scheduler=scheduler,
        autocast=autocast,
        scaler=scaler,
        amp_mode=amp_mode,
        steps_per_epoch=steps_per_epoch,
        flops_per_image=flops_per_image,
        peak_flops=peak_flops,
        labeled=labeled,
        unlabeled=unlabeled,
        rng=np.random.default_rng([cfg.seed, session.rank, start_epoch]),
        generator=torch.Generator().manual_seed(cfg.seed * 1000 + session.rank * 100 + start_epoch),
        progress=progress,
        start_epoch=start_epoch,
        best_ap=best_ap,
        best_weights=best_weights,
        history=history,
    )


def _resume(
    session: Session,
    device: torch.device,
    raw: PoseModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    emas: tuple[PoseModel | None, PoseModel | None],
    is_main: bool,
) -> tuple[int, float, dict | None, list[dict]]:
    """Load the session's latest checkpoint into the model, optimiser, schedule and the (eval, teacher) EMAs;
    returns (start epoch, best val AP, best weights, history): (0, -1.0, None, []) when there is none."""
    eval_ema, teacher_ema = emas
    with session.latest_checkpoint() as checkpoint:
        if checkpoint is None:
            return 0, -1.0, None, []
        state = checkpoint.training_state(device)
        raw.load_state_dict(state["model"])
        if len(state["optimizer"]["param_groups"]) != len(optimizer.param_groups):
            raise ValueError(
                f"{checkpoint.path}: a checkpoint of an older training loop (format < "
                f"{CHECKPOINT_FORMAT}); remove it to train this round anew"
            )
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        # checkpoints before the teacher EMA had its own key kept the one EMA under "ema"
        for ema, key in ((eval_ema, "ema"), (teacher_ema, "teacher_ema" if "teacher_ema" in state else "ema")):
            if ema is not None and state.get(key) is not None:
                ema.load_state_dict(state[key])
        start_epoch, best_ap = state["epoch"] + 1, state["best_ap"]
        if is_main:
            log.info("resumed from %s at epoch %d (best val AP %.4f)", checkpoint.path, start_epoch, best_ap)
        return start_epoch, best_ap, checkpoint.best_weights(), state["history"]


@dataclass(frozen=True)
class StepResult:
    losses: dict[str, torch.Tensor]  # detached 0-dim tensors: "total", "supervised" and the head's / SSL's parts
    images: int  # images through the network (labeled + strong + mixed + weak)
    flops: float  # model FLOPs of the step (forward + backward, and the teacher's forward)


def train_step(run: TrainRun, epoch: int, step: int) -> StepResult:
    """One optimiser step: a labeled batch, with SSL an unlabeled one through the teacher, ONE forward of all images
    (DDP allows one pass per backward), L = L_s + ramp x (lambda_u L_u + lambda_m L_m), clip, step, EMA."""
    cfg = run.params.train
    batch = _to(next(run.labeled), run.device)
    parts, sizes, ssl_in, unlabeled, feature_mix = [batch["image"]], [batch["image"].shape[0]], None, None, None
    if run.unlabeled is not None:
        unlabeled = _to(next(run.unlabeled), run.device)
        teacher = run.teacher_ema if run.teacher_ema is not None else run.raw
        ssl_in = ssl_step_inputs(run.raw, teacher, unlabeled, run.params, run.rng, run.generator)
        parts.append(ssl_in.strong)
        if ssl_in.mixup is not None:
            parts.append(ssl_in.mixup.mixed)
            if cfg.ssl.feature_mixup:  # the rows after these are the weak view, mixed at the stem's features
                feature_mix = (sum(t.shape[0] for t in parts), ssl_in.mixup.permutation, ssl_in.mixup.alpha)
                parts.append(ssl_in.mixup.weak)
        sizes = [t.shape[0] for t in parts]
    images = torch.cat(parts)
    if cfg.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with run.autocast():
        outputs = run.model(images, feature_mix=feature_mix)
    outputs = {k: v.float() for k, v in outputs.items()}
    head_losses = run.raw.loss(_slice(outputs, 0, sizes[0]), batch)
    total = head_losses["loss"]
    losses = {("supervised" if k == "loss" else k): v for k, v in head_losses.items() if k != "num_pos"}
    if ssl_in is not None:
        weight = ramp_up(epoch + step / run.steps_per_epoch, cfg.ssl.rampup_epochs)
        extra = unsupervised_losses(run.raw, outputs, sizes, ssl_in)
        total = total + weight * cfg.ssl.lambda_u * extra["unsup"]
        if "mixup" in extra:
            total = total + weight * cfg.ssl.lambda_m * extra["mixup"]
        losses.update(extra)

    run.optimizer.zero_grad(set_to_none=True)
    if run.scaler is not None:
        run.scaler.scale(total).backward()
        run.scaler.unscale_(run.optimizer)
    else:
        total.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.raw.parameters(), cfg.grad_clip)
    if run.scaler is not None:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    run.scheduler.step()
    if run.eval_ema is not None:
        ema_update(run.eval_ema, run.raw, cfg.ema_decay)
    if run.teacher_ema is not None:
        ema_update(run.teacher_ema, run.raw, cfg.ssl.ema_decay)
    losses["total"] = total
    flops = run.flops_per_image * (3 * images.shape[0] + (unlabeled["image"].shape[0] if unlabeled else 0))
    return StepResult({k: v.detach() for k, v in losses.items()}, images.shape[0], flops)


def end_of_epoch(
    run: TrainRun, epoch: int, loss_sums: dict[str, torch.Tensor], images: int, flops: float, seconds: float
) -> None:
    """Epoch metrics, validation and the checkpoint on rank 0, then every rank reports (the checkpoint with it)."""
    cfg = run.params.train
    metrics: dict = {f"loss_{k}": float(v) / run.steps_per_epoch for k, v in loss_sums.items()}  # the epoch's sync
    metrics.update(
        epoch=epoch,
        lr=run.scheduler.get_last_lr()[0],
        epoch_seconds=seconds,
        images_per_s=images * run.session.world_size / seconds,
        mfu=flops / seconds / run.peak_flops,
        gflops_per_image=run.flops_per_image / 1e9,
        peak_tflops=run.peak_flops / 1e12,
        amp=run.amp_mode,
    )
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if run.is_main:
            evaluated = run.eval_ema if run.eval_ema is not None else run.raw
            val = validate(evaluated, run.data, cfg.flip_test)
            metrics.update({f"val_{k}": v for k, v in val.items()})
            if val["ap"] > run.best_ap or run.best_weights is None:
                run.best_ap = val["ap"]
                run.best_weights = {k: v.detach().cpu().clone() for k, v in evaluated.state_dict().items()}
            metrics["best_val_ap"] = run.best_ap
            run.history.append(metrics)
            state = {
                "model": run.raw.state_dict(),
                "optimizer": run.optimizer.state_dict(),
                "scheduler": run.scheduler.state_dict(),
                "epoch": epoch,
                "best_ap": float(run.best_ap),
                "ema": run.eval_ema.state_dict() if run.eval_ema is not None else None,
                "teacher_ema": run.teacher_ema.state_dict() if run.teacher_ema is not None else None,
            }
            checkpoint = Checkpoint.write(Path(tmp), state, run.best_weights, run.history)
            line = (
                f"epoch {epoch + 1}/{cfg.epochs}: loss {metrics['loss_total']:.4f} val AP {val['ap']:.4f} "
                f"(best {run.best_ap:.4f}) {metrics['images_per_s']:.0f} img/s, MFU {metrics['mfu']:.1%}"
            )
            if run.progress.bar is not None:
                run.progress.bar.write(line)
            else:
                print(line, flush=True)  # a Ray worker's log file, or a benchmark's output
            run.progress.update(
                force=True,
                step=(epoch + 1) * run.steps_per_epoch,
                val_ap=round(val["ap"], 4),
                best_ap=round(run.best_ap, 4),
                img_s=round(metrics["images_per_s"]),
                mfu=f"{metrics['mfu']:.0%}",
            )
        if run.session.world_size > 1 and dist.is_initialized():
            dist.barrier()  # rank 0's validation must not race the others into the next epoch's collectives
        run.session.report(metrics, checkpoint)


def train_worker(config: dict) -> None:
    """Ray Train's per-worker function. config: ``params`` (params.yaml as a dict), ``paths`` (see load_data),
    ``init_weights`` (a model.pt to warm-start from, or None), ``local_checkpoint_dir`` (plain process only),
    ``use_gpu``, ``progress`` (bool, or the driver's queue)."""
    run = setup(config)
    for epoch in range(run.start_epoch, run.params.train.epochs):
        run.model.train()
        loss_sums: dict[str, torch.Tensor] = {}  # summed as tensors: a float() per step would sync a GPU each step
        images, flops, started = 0, 0.0, time.perf_counter()
        for step in range(run.steps_per_epoch):
            result = train_step(run, epoch, step)
            for key, value in result.losses.items():
                loss_sums[key] = loss_sums[key] + value if key in loss_sums else value.clone()
            images, flops = result.images, flops + result.flops
            if run.progress.due():  # the one sync per logging interval
                run.progress.update(
                    step=epoch * run.steps_per_epoch + step + 1,
                    epoch=epoch + 1,
                    loss=round(float(loss_sums["total"]) / (step + 1), 5),
                )
        end_of_epoch(run, epoch, loss_sums, images * run.steps_per_epoch, flops, time.perf_counter() - started)
    run.progress.close()


def train_in_process(
    params: Params,
    paths: dict[str, str],
    checkpoint_dir: Path,
    *,
    init_weights: Path | str | None = None,
    progress: bool = False,
) -> Checkpoint:
    """The loop in this process, without Ray (benchmarks, tests): returns the last checkpoint, whose ``history`` and
    ``best_weights`` are what the train stage reads from Ray's. A ``checkpoint_dir`` holding a checkpoint resumes."""
    train_worker(
        {
            "params": params,
            "paths": paths,
            "local_checkpoint_dir": str(checkpoint_dir),
            "init_weights": str(init_weights) if init_weights else None,
            "progress": progress,
            "use_gpu": torch.cuda.is_available(),
        }
    )
    return Checkpoint.latest_in(checkpoint_dir)
