"""params.yaml -> typed, validated settings.

Each section of params.yaml is a frozen dataclass below. Loading is strict: an unknown key, a value of the wrong type
or a value out of range raises ``ParamsError`` at once, naming the key path (``data.synthetic.num_images``), the
value and what is allowed. Stages read only their own section (``load_params().data``), the way DVC's
example-get-started does, but the whole file is validated on every load so a typo anywhere is caught by the first
stage that runs.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

PARAMS_FILE = Path("params.yaml")
# Every number has an upper bound as well: a typo such as budget: 1000000000000000 would otherwise be accepted and
# fail (or run for days) far from the file. The bounds are generous: far above any real run, far below overflow.
MAX_SEED = 2**32 - 1  # numpy's and torch's seeds


class ParamsError(ValueError):
    """A params.yaml value that is unknown, of the wrong type or out of range."""


def _p(
    default: Any = dataclasses.MISSING,
    *,
    ge: float | None = None,
    le: float | None = None,
    gt: float | None = None,
    lt: float | None = None,
    length: int | None = None,
) -> Any:
    """A dataclass field with range / length constraints checked by ``_build``."""
    meta = {"ge": ge, "le": le, "gt": gt, "lt": lt, "length": length}
    if isinstance(default, (list, dict, tuple)) or dataclasses.is_dataclass(default):
        frozen = default
        return field(default_factory=lambda: copy.deepcopy(frozen), metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class SyntheticParams:
    """The embedded default data set (pipeline/data/synthetic.py); the seed is ``data.seed``."""

    num_images: int = _p(1000, ge=1, le=1_000_000)
    image_width: int = _p(256, ge=32, le=4096)
    image_height: int = _p(256, ge=32, le=4096)
    max_people: int = _p(3, ge=1, le=20)
    rare_pose: float = _p(0.1, ge=0, le=1)
    occluded: float = _p(0.15, ge=0, le=1)
    small: float = _p(0.1, ge=0, le=1)
    low_contrast: float = _p(0.1, ge=0, le=1)
    crowded: float = _p(0.05, ge=0, le=1)
    truncated: float = _p(0.1, ge=0, le=1)
    blur: float = _p(0.2, ge=0, le=1)
    noise: float = _p(0.3, ge=0, le=1)


@dataclass(frozen=True)
class CocoSourceParams:
    """A local COCO keypoint data set. Paths are relative to the project root or absolute."""

    annotations: str | None = None
    images: str | None = None
    # Optional second file (e.g. person_keypoints_val2017.json) from which val and test are drawn instead.
    val_annotations: str | None = None
    val_images: str | None = None
    category: str | None = None  # which category when several define keypoints


@dataclass(frozen=True)
class DeepLabCutSourceParams:
    project: str | None = None  # a DeepLabCut project folder (config.yaml + labeled-data/)


@dataclass(frozen=True)
class LightningPoseSourceParams:
    project: str | None = None  # a Lightning Pose project folder (CollectedData.csv, labeled-data/, videos/)


@dataclass(frozen=True)
class MpiiSourceParams:
    """MPII in the JSON layout MMPose and others publish: a list of {image, joints, joints_vis, center, scale}."""

    annotations: str | None = None
    images: str | None = None


@dataclass(frozen=True)
class SleapSourceParams:
    labels: str | None = None  # a SLEAP .slp labels file: user instances are labels, predicted ones the pool


@dataclass(frozen=True)
class LabelStudioSourceParams:
    """A Label Studio keypoint project's JSON export as the seed labels."""

    export: str | None = None
    images: str | None = None  # the folder the tasks' images are in (by the path after ?d=, else by file name)
    # The keypoint names in order (null: the KeyPointLabels names in the order they first appear in the export).
    keypoints: list[str] | None = None


@dataclass(frozen=True)
class FrameParams:
    """Which frames of each pool video are decoded (pipeline/data/unlabeled.py)."""

    rule: Literal["uniform", "kmeans"] = "uniform"  # uniform: an even stride; kmeans: DeepLabCut's visual clusters
    per_video: int = _p(20, ge=1, le=100_000)
    total: int = _p(1000, ge=1, le=10_000_000)  # the cap over all videos (each video gets an equal share)


@dataclass(frozen=True)
class PoolParams:
    """A team's own unlabeled images and videos, with no boxes: the people in them are found by the instance finder
    (``find`` section). Paths and globs are relative to the project root or absolute; a folder is read recursively."""

    images: list[str] = _p([])  # folders, globs or files of images
    videos: list[str] = _p([])  # folders, globs or files of videos (.mp4, .avi, .mov, .mkv, .m4v)
    # What a pool image's identity is relative to (its file_name in the pool is "pool/<path under root>"), so a
    # correction keeps its person when the pool grows or is drawn again; null: the project root.
    root: str | None = None
    frames: FrameParams = _p(FrameParams())


@dataclass(frozen=True)
class DataParams:
    source: Literal["synthetic", "coco", "deeplabcut", "lightning_pose", "mpii", "sleap", "labelstudio"] = "synthetic"
    seed: int = _p(0, ge=0, le=MAX_SEED)
    # Seed labels: a fraction of the eligible instances when < 1, else a count of instances.
    labeled: float = _p(200, gt=0, le=10_000_000)
    # person: seed labels drawn person by person (a seed image may hold pool people); image: whole images, so each
    # seed image is fully labeled (what the instance finder learns from; a team labeling frames labels this way)
    split: Literal["person", "image"] = "person"
    val_images: int = _p(100, ge=1, le=1_000_000)
    test_images: int = _p(100, ge=0, le=1_000_000)
    # Per-keypoint OKS sigmas for schemas that are not COCO's (null: COCO's for COCO names, else 0.1 each).
    sigmas: list[float] | None = None
    # 0-based index pairs; null: derived from left_/right_ names.
    flip_pairs: list[list[int]] | None = None
    synthetic: SyntheticParams = _p(SyntheticParams())
    coco: CocoSourceParams = _p(CocoSourceParams())
    deeplabcut: DeepLabCutSourceParams = _p(DeepLabCutSourceParams())
    lightning_pose: LightningPoseSourceParams = _p(LightningPoseSourceParams())
    mpii: MpiiSourceParams = _p(MpiiSourceParams())
    sleap: SleapSourceParams = _p(SleapSourceParams())
    labelstudio: LabelStudioSourceParams = _p(LabelStudioSourceParams())
    pool: PoolParams = _p(PoolParams())


@dataclass(frozen=True)
class CodecParams:
    """Top-down input and heatmap geometry shared by training, evaluation and inference."""

    input_size: list[int] = _p([144, 192], length=2, ge=32, le=2048)  # (width, height) of the crop fed to the network
    heatmap_stride: int = _p(4, ge=1, le=8)
    sigma: float = _p(2.0, gt=0, le=10)  # Gaussian sigma in heatmap pixels at 48x64; scaled with resolution
    dark: bool = True
    box_padding: float = _p(1.25, ge=1.0, le=3.0)


@dataclass(frozen=True)
class HeatmapHeadParams:
    """``model.heatmap``: the Gaussian-heatmap head (models/heads.py, HeatmapPoseHead)."""

    sahr: bool = True  # scale-adaptive targets
    wahr: bool = True  # weight-adaptive loss; off: plain target-weighted MSE
    wahr_gamma: float = _p(0.01, gt=0, le=1)
    scale_reg_weight: float = _p(0.03, ge=0, le=100)


@dataclass(frozen=True)
class AslaHeadParams:
    """``model.asla``: keypoints as objects (models/heads.py, AslaPoseHead)."""

    k: int = _p(9, ge=1, le=100)  # positives per keypoint
    dynamic_k: bool = False
    reg: Literal["l1", "oks"] = "l1"
    top_n: int = _p(1, ge=1, le=50)  # 1: best cell; > 1: score-weighted mean of the top-n cells' vectors


@dataclass(frozen=True)
class ModelParams:
    """The network and its objective (models/): a backbone, and the head named by ``head`` with the settings of its
    own section (``model.heatmap`` or ``model.asla``; the other section is not read)."""

    backbone: Literal["tiny", "resnet", "hrnet"] = "tiny"
    variant: int | None = None  # tiny: width (32); resnet: depth (18, 34, 50, 101); hrnet: width (32, 48)
    head: Literal["heatmap", "asla"] = "heatmap"
    heatmap: HeatmapHeadParams = _p(HeatmapHeadParams())
    asla: AslaHeadParams = _p(AslaHeadParams())
    weights: str | None = None  # local state-dict file for the backbone (never downloaded)
    weights_prefix: str = ""  # sub-tree of the file to load, e.g. "backbone."


@dataclass(frozen=True)
class FindParams:
    """The instance finder of the find stage (pipeline/finding.py): used only when the pool has images without boxes
    (``data.pool``)."""

    one_per_frame: bool = False  # one animal per frame: the whole frame is its box, no finder is trained
    # (width, height): whole images, letterboxed; 192 finds small people 128 misses (docs/BENCHMARKS.md)
    input_size: list[int] = _p([192, 192], length=2, ge=32, le=4096)
    backbone: Literal["tiny", "resnet", "hrnet"] = "tiny"
    variant: int | None = None
    steps: int = _p(4000, ge=1, le=10_000_000)
    batch_size: int = _p(16, ge=1, le=4096)
    lr: float = _p(0.006, gt=0, le=1)
    min_score: float = _p(0.15, ge=0, le=1)  # a peak below this is not a person
    flip_test: bool = True  # average the maps of each image and its mirror (docs/BENCHMARKS.md, "Instance finder")
    max_instances: int = _p(20, ge=1, le=999)  # per image
    # the auxiliary task's share of the loss: every labeled person's visible keypoints as heatmaps (0: boxes only)
    keypoint_weight: float = _p(1.0, ge=0, le=100)
    threads: int = _p(2, ge=1, le=1024)
    seed: int = _p(0, ge=0, le=MAX_SEED)


@dataclass(frozen=True)
class AugmentParams:
    scale: list[float] = _p([0.75, 1.25], length=2, gt=0)
    rotation: float = _p(30.0, ge=0, le=180)  # degrees, applied with probability 0.6
    flip: float = _p(0.5, ge=0, le=1)  # probability of a horizontal flip (left/right keypoints swapped)
    half_body: float = _p(0.0, ge=0, le=1)


@dataclass(frozen=True)
class SslParams:
    """Semi-supervised learning on the pool (docs/DESIGN.md §5). Each part has its own switch for ablations."""

    # off: supervised only; cutout: fixed-count joint cutout; adaptive: adaptive keypoint masking;
    # adaptive_mixup: adaptive masking + dual-branch Mixup (image and feature level).
    mode: Literal["off", "cutout", "adaptive", "adaptive_mixup"] = "adaptive_mixup"
    lambda_u: float = _p(1.0, ge=0, le=1000)
    lambda_m: float = _p(1.0, ge=0, le=1000)
    rampup_epochs: int = _p(5, ge=0, le=100_000)  # sigmoid ramp-up of lambda_u and lambda_m
    tau: float = _p(0.5, ge=0, le=1)  # easy keypoint threshold on the normalised response
    max_masks: int = _p(5, ge=0, le=50)  # M
    floor: float = _p(0.1, ge=0, le=1)  # below this max response a sample gets at most one mask
    feature_mixup: bool = True  # the second Mixup branch (mix the backbone's stem features)
    ema_teacher: bool = False  # teacher = EMA of the student instead of the student itself
    ema_decay: float = _p(0.999, gt=0, lt=1)
    unlabeled_batch_size: int = _p(16, ge=1, le=4096)
    asla_min_score: float = _p(0.3, ge=0, le=1)  # ASLA pseudo keypoints below this teacher score are ignored


@dataclass(frozen=True)
class TrainParams:
    epochs: int = _p(10, ge=1, le=100_000)
    # An epoch is one pass over the labeled set, but at least this many steps (a 40-instance seed set would
    # otherwise make epochs of two steps).
    min_steps_per_epoch: int = _p(100, ge=1, le=10_000_000)
    batch_size: int = _p(32, ge=1, le=4096)  # per Ray worker
    optimizer: Literal["adam", "adamw"] = "adamw"
    lr: float = _p(1e-2, gt=0, le=1)
    weight_decay: float = _p(1e-4, ge=0, le=10)
    schedule: Literal["cosine", "step"] = "cosine"
    step_epochs: list[int] = _p([], ge=1, le=100_000)  # schedule: step -> lr x 0.1 at these epochs
    warmup_steps: int = _p(50, ge=0, le=10_000_000)
    grad_clip: float = _p(5.0, ge=0, le=1e6)  # 0: off
    # the target weight of an occluded keypoint (COCO v = 1) against 1 for a visible one; 0 measured best
    # (docs/BENCHMARKS.md, "Why hard people hurt"). The heatmap loss squares it, as MMPose's does (0.5 weighs 0.25).
    occluded_weight: float = _p(0.0, ge=0, le=1)
    ema: bool = False  # evaluate and export EMA weights
    ema_decay: float = _p(0.999, gt=0, lt=1)
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA and on CPUs with native bf16
    channels_last: bool = True
    flip_test: bool = False  # validation with flip test
    warm_start: Literal["scratch", "previous"] = "scratch"  # previous: start from artifacts/model if present
    pseudo_labels: bool = False  # also train on the last round's confident pseudo-labels (pseudolabel stage)
    seed: int = _p(0, ge=0, le=MAX_SEED)
    augment: AugmentParams = _p(AugmentParams())
    ssl: SslParams = _p(SslParams())
    # Ray Train (docs/DESIGN.md §9). RAY_ADDRESS set: the cluster; unset: a local Ray inside the stage.
    num_workers: int = _p(1, ge=1, le=4096)
    use_gpu: bool | Literal["auto"] = "auto"
    cpus_per_worker: float = _p(1.0, gt=0, le=1024)
    gpus_per_worker: float = _p(1.0, gt=0, le=64)
    threads_per_worker: int = _p(2, ge=1, le=1024)  # torch threads in each worker (two workers on two cores: 1 each)
    loader_workers: int = _p(0, ge=0, le=256)  # DataLoader processes per Ray worker
    max_failures: int = _p(2, ge=0, le=1000)  # a dead worker is replaced and training resumes from the last checkpoint


@dataclass(frozen=True)
class PseudolabelParams:
    """The teacher over the pool on Ray Data (pipeline/pseudolabel.py, stages/pseudolabel.py)."""

    teacher: Literal["latest", "champion"] = "latest"  # latest: this round's model; champion: the registry alias
    batch_size: int = _p(64, ge=1, le=4096)  # instances per predictor call
    actors: int = _p(1, ge=1, le=4096)  # predictor actors (each loads the model once)
    cpus_per_actor: float = _p(0.5, gt=0, le=1024)  # Ray reservation: room for the crop tasks (docs/DESIGN.md §11)
    gpus_per_actor: float = _p(1.0, ge=0, le=64)  # used when use_gpu
    use_gpu: bool | Literal["auto"] = "auto"
    threads_per_actor: int = _p(2, ge=1, le=1024)  # torch threads in each actor
    flip_test: bool = True  # also gives flip_disagreement
    tau: float = _p(0.5, ge=0, le=1)  # easy-keypoint threshold of the adaptive-mask difficulty
    pseudo_min_score: float = _p(0.6, ge=0, le=1)  # confident pseudo-label: every counted keypoint's score >= this
    pseudo_min_keypoints: int = _p(8, ge=1, le=1000)  # ... with at least this many keypoints above pseudo_min_score
    pseudo_max_flip: float = _p(0.05, ge=0, le=100)  # ... and flip disagreement <= this (box units; not without flip)


@dataclass(frozen=True)
class SelectWeights:
    """Weights of the rank-normalised scores in the combined uncertainty (missing scores are left out)."""

    response: float = _p(1.0, ge=0, le=1000)  # low mean heatmap peak = uncertain
    min_response: float = _p(0.0, ge=0, le=1000)  # low weakest keypoint = uncertain
    sahr_sigma: float = _p(0.0, ge=0, le=1000)  # small effective SAHR sigma (large scale s) = uncertain (measured)
    difficulty: float = _p(0.0, ge=0, le=1000)  # adaptive-mask difficulty (share of hard keypoints)
    flip_disagreement: float = _p(1.0, ge=0, le=1000)  # plain and flipped predictions disagree
    detection_score: float = _p(0.0, ge=0, le=1000)  # low instance-finder score (found people only) = uncertain
    keypoint_jump: float = _p(0.0, ge=0, le=1000)  # pose far from the nearest person of neighbouring video frames


@dataclass(frozen=True)
class SelectParams:
    """Which pool instances go to the annotators (pipeline/selection.py, stages/select.py)."""

    policy: Literal[
        "uncertainty",
        "random",
        "cold_start",
        "typiclust",
        "cluster_uncertainty",
        "skip_hopeless",
        "effort",
        "response",
        "min_response",
        "sahr_sigma",
        "difficulty",
        "flip_disagreement",
        "detection_score",
        "keypoint_jump",
    ] = "uncertainty"  # with skip_top_share 0.5: the measured winner (docs/BENCHMARKS.md, "Issue #26 at a glance")
    budget: int = _p(20, ge=1, le=1_000_000)  # instances per round
    weights: SelectWeights = _p(SelectWeights())
    per_image: int = _p(0, ge=0, le=10_000)  # at most this many instances of one image (0: no cap)
    diversity: bool = False  # k-center greedy on the embedding (``embedding``) among the most uncertain candidates
    # what cold_start, typiclust, cluster_uncertainty and diversity measure likeness in: the predicted pose relative
    # to its box, or the teacher's pooled backbone features (the pool predictions' embedding column)
    embedding: Literal["pose", "features"] = "pose"
    # top: the policy's best; power: drawn without replacement with p ~ rank-normalised score ^ power_beta
    # (stochastic acquisition, Kirsch et al. 2023): the tail is still favoured, never taken whole
    sampling: Literal["top", "power"] = "top"
    power_beta: float = _p(1.0, gt=0, le=1000)
    diversity_candidates: float = _p(4.0, ge=1, le=1000)  # ... candidates = this x budget
    random_share: float = _p(
        0.0, ge=0, le=1
    )  # share of the budget drawn at random from what the policy left (and skip)
    skip_top_share: float = _p(0.5, ge=0, lt=1)  # share of the eligible people the policy ranks first, left out
    seed: int = _p(0, ge=0, le=MAX_SEED)  # the random policy's, random_share's, power sampling's and k-means' seed
    cold_start_labels: int = _p(400, ge=1, le=10_000_000)  # cold_start: labels at which picks are by uncertainty alone
    hopeless_min_keypoints: int = _p(3, ge=1, le=1000)  # hopeless: fewer keypoints than this found by the teacher ...
    hopeless_min_score: float = _p(0.3, ge=0, le=1)  # ... with at least this score
    review_budget: int = _p(2, ge=0, le=1_000_000)  # hopeless instances sent for review per round (queue "review")
    # images where the instance finder found nobody, sent per round (drawn at random, queue "nobody_found") for a
    # person to draw whoever it missed there or say there is nobody; not part of the budget
    nobody_found_budget: int = _p(5, ge=0, le=1_000_000)


@dataclass(frozen=True)
class ExportParams:
    """The Label Studio hand-off (stages/export.py, stages/pull.py). URL and API key come only from the environment
    (LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY): never from here."""

    project_title: str = "poseloop"  # the project is created or reused by this title
    document_root: str = "data"  # the server's LOCAL_FILES_DOCUMENT_ROOT (project-relative); images lie below it
    batch_size: int = _p(500, ge=1, le=100_000)  # tasks per import call
    min_score: float = _p(0.0, ge=0, le=1)  # keypoints scoring below this are not pre-placed for the annotator


@dataclass(frozen=True)
class RegisterParams:
    """The MLflow model registry (pipeline/registry.py, stages/register.py)."""

    model_name: str = "poseloop-pose"  # the registered model every round adds a version to
    auto_promote: bool = False  # move `champion` without review when the AP gain exceeds promote_margin
    promote_margin: float = _p(0.01, ge=0, le=1)  # val AP gain over the champion needed for automatic promotion
    review_examples: int = _p(8, ge=0, le=64)  # worst val instances drawn in the review report


@dataclass(frozen=True)
class Params:
    data: DataParams = _p(DataParams())
    codec: CodecParams = _p(CodecParams())
    model: ModelParams = _p(ModelParams())
    train: TrainParams = _p(TrainParams())
    find: FindParams = _p(FindParams())
    pseudolabel: PseudolabelParams = _p(PseudolabelParams())
    select: SelectParams = _p(SelectParams())
    export: ExportParams = _p(ExportParams())
    register: RegisterParams = _p(RegisterParams())


# --------------------------------------------------------------------------------------------------- loading


def _describe(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (int -> float where a float is asked)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own, more precise message
            return _convert(value, options[0], key)
        for arg in options:
            try:
                return _convert(value, arg, key)
            except ParamsError:
                continue
        raise ParamsError(f"params.yaml: {key} = {value!r}: expected {_describe(tp)}")
    if origin is Literal:
        if value not in args:
            raise ParamsError(f"params.yaml: {key} = {value!r}: allowed values are {', '.join(map(repr, args))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ParamsError(f"params.yaml: {key} = {value!r}: expected a list of {_describe(args[0])}")
        return [_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"params.yaml: {key} = {value!r}: expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"params.yaml: {key} = {value!r}: expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ParamsError(f"params.yaml: {key} = {value!r}: expected a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"params.yaml: {key} = {value!r}: expected a string")
        return value
    raise TypeError(f"unsupported params type {tp} at {key}")  # a bug in this module, not in params.yaml


def _check_range(value: Any, meta: typing.Mapping[str, Any], key: str) -> None:
    if value is None:
        return
    length = meta.get("length")
    if length is not None and len(value) != length:
        raise ParamsError(f"params.yaml: {key} = {value!r}: expected exactly {length} values")
    items = value if isinstance(value, list) else [value]
    for v in items:
        if not isinstance(v, (int, float)):
            continue
        for bound, ok, word in (
            ("ge", lambda a, b: a >= b, ">="),
            ("gt", lambda a, b: a > b, ">"),
            ("le", lambda a, b: a <= b, "<="),
            ("lt", lambda a, b: a < b, "<"),
        ):
            limit = meta.get(bound)
            if limit is not None and not ok(v, limit):
                raise ParamsError(f"params.yaml: {key} = {value!r}: must be {word} {limit}")


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"params.yaml: {prefix or 'top level'} = {raw!r}: expected a mapping of settings")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        where = f"section '{prefix}'" if prefix else "the top level"
        key = f"{prefix + '.' if prefix else ''}{unknown[0]}"
        moved = f" (moved to {MOVED_KEYS[key]})" if key in MOVED_KEYS else ""
        raise ParamsError(
            f"params.yaml: unknown key {key}{moved} in {where}; allowed keys: {', '.join(sorted(fields))}"
        )
    values = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in raw:
            value = _convert(raw[name], hints[name], key)
        elif dataclasses.is_dataclass(hints[name]):
            value = _build(hints[name], {}, key)
        else:
            continue
        _check_range(value, f.metadata, key)
        values[name] = value
    return cls(**values)


# Keys that an earlier version of the loop had at another place: the error names the new one, and a model.json
# written before the move is read through ``upgrade_model_section``.
MOVED_KEYS = {
    "model.sahr": "model.heatmap.sahr",
    "model.wahr": "model.heatmap.wahr",
    "model.wahr_gamma": "model.heatmap.wahr_gamma",
    "model.scale_reg_weight": "model.heatmap.scale_reg_weight",
    "model.asla_k": "model.asla.k",
    "model.asla_dynamic_k": "model.asla.dynamic_k",
    "model.asla_reg": "model.asla.reg",
    "model.asla_top_n": "model.asla.top_n",
}


def upgrade_model_section(model: dict) -> dict:
    """A ``model`` mapping of an earlier loop (flat head keys, ``MOVED_KEYS``) in today's layout; others as they are."""
    out = {k: v for k, v in model.items() if f"model.{k}" not in MOVED_KEYS}
    for key, value in model.items():
        if f"model.{key}" in MOVED_KEYS:
            _, head, name = MOVED_KEYS[f"model.{key}"].split(".")
            out.setdefault(head, {})[name] = value
    return out


def params_from_dict(raw: dict) -> Params:
    """Validate a params mapping (as read from YAML) into ``Params``."""
    return _build(Params, raw, "")


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise ParamsError(f"{self.name}: line {line}: a key must be a name, got {type(key).__name__}")
            if key in seen:
                raise ParamsError(
                    f"{self.name}: line {line}: duplicate key {key!r} (first on line {seen[key]}); "
                    "YAML would silently keep the last value"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    """Read and validate params.yaml; raises ``ParamsError`` naming the offending key."""
    path = Path(path)
    try:
        text = path.read_text()
        loader = _StrictLoader(text)
        loader.name = str(path)
        try:
            raw = loader.get_single_data()
        finally:
            loader.dispose()
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found (run from the project root)") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    return params_from_dict(raw or {})


def to_dict(obj: Any) -> dict:
    """Settings back to plain data (for MLflow params, model.json and run names)."""
    return dataclasses.asdict(obj)


def with_overrides(params: Params, overrides: dict[str, Any]) -> Params:
    """``params`` with dotted keys replaced (``{"train.epochs": 3, "data.synthetic.num_images": 200}``), validated
    again as params.yaml is: what benchmarks and tests use instead of editing YAML dicts. An unknown key raises
    ``ParamsError`` naming it."""
    raw = to_dict(params)
    for dotted, value in overrides.items():
        *path, last = dotted.split(".")
        node = raw
        for part in path:
            if not isinstance(node.get(part), dict):
                raise ParamsError(f"override {dotted!r}: {part!r} is not a section of params.yaml")
            node = node[part]
        if last not in node:
            moved = f" (moved to {MOVED_KEYS[dotted]})" if dotted in MOVED_KEYS else ""
            raise ParamsError(f"override {dotted!r}: no setting {last!r} in {'.'.join(path) or 'params.yaml'}{moved}")
        node[last] = value
    return params_from_dict(raw)
