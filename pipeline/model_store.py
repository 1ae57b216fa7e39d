"""A trained model on disk: ``model.pt`` (state dict) + ``model.json`` (everything needed to rebuild it).

We store the state dict and our own description instead of ``mlflow.pytorch.log_model``: MLflow 3.17 would freeze a
torch.export graph at one batch size (docs/DESIGN.md §11), and a plain state dict loads with ``weights_only=True``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from models.pose_model import PoseModel, build_model
from pipeline.codec import HeatmapCodec
from pipeline.config import Params, params_from_dict, to_dict, upgrade_model_section
from pipeline.files import file_md5, write_json
from pipeline.keypoints import KeypointSchema

WEIGHTS_FILE = "model.pt"
DESCRIPTION_FILE = "model.json"


def build_codec(params: Params) -> HeatmapCodec:
    """The heatmap codec of params.yaml's ``codec`` section: input (w, h), heatmap = input / stride."""
    w, h = params.codec.input_size
    stride = params.codec.heatmap_stride
    return HeatmapCodec(
        (w, h),
        (w // stride, h // stride),
        sigma=params.codec.sigma,
        dark=params.codec.dark,
        occluded_weight=params.train.occluded_weight,
    )


def model_from_params(params: Params, codec: HeatmapCodec, schema: KeypointSchema) -> PoseModel:
    """The network of params.yaml's ``model`` section: the one place a PoseModel is built from params."""
    m = params.model
    return build_model(
        backbone=m.backbone,
        variant=m.variant,
        head=m.head,
        head_settings=dataclasses.asdict(getattr(m, m.head)),  # the section named after the head
        codec=codec,
        schema=schema,
        weights=m.weights,
        weights_prefix=m.weights_prefix,
    )


def save_model(
    out_dir: Path,
    weights: dict[str, torch.Tensor],
    params: Params,
    schema: KeypointSchema,
    metrics: dict,
    extra: dict | None = None,
) -> Path:
    """Write model.pt and model.json (schema, input size, backbone, head, the params it was trained with, metrics)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    codec = build_codec(params)
    torch.save(weights, out_dir / WEIGHTS_FILE)
    description = {
        "schema": schema.to_json(),
        "input_size": list(codec.input_size),
        "heatmap_size": list(codec.heatmap_size),
        "sigma": codec.sigma,
        "backbone": params.model.backbone,
        "variant": params.model.variant,
        "head": params.model.head,
        "params": {k: to_dict(getattr(params, k)) for k in ("codec", "model", "train")},
        "metrics": metrics,
        **(extra or {}),
    }
    write_json(out_dir / DESCRIPTION_FILE, description)
    return out_dir


def load_model(model_dir: Path, device: str | torch.device = "cpu") -> PoseModel:
    """Rebuild the network from model.json and load model.pt (eval mode)."""
    model_dir = Path(model_dir)
    description_path = model_dir / DESCRIPTION_FILE
    if not description_path.is_file():
        raise FileNotFoundError(f"{description_path}: no model description (train a model first)")
    description = json.loads(description_path.read_text())
    params_raw = dict(description["params"])
    # the trained weights replace any init weights; a model of an earlier loop has its head keys flat
    params_raw["model"] = {**upgrade_model_section(params_raw["model"]), "weights": None}
    params = params_from_dict(params_raw)
    schema = KeypointSchema.from_json(description["schema"])
    model = model_from_params(params, build_codec(params), schema)
    state = torch.load(model_dir / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval()


def model_version(model_dir: Path, registry_file: Path | None = None) -> str:
    """The string that names a model in Label Studio and in pseudo-labels: the MLflow ``name/version`` from the
    register stage's ``registry_file`` when it describes these weights, else ``local/<md5 of model.pt, 8 hex>``."""

    digest = file_md5(Path(model_dir) / WEIGHTS_FILE)
    if registry_file is not None and Path(registry_file).is_file():
        registry = json.loads(Path(registry_file).read_text())
        if registry.get("weights_md5") == digest and registry.get("model_version"):
            return str(registry["model_version"])
    return f"local/{digest[:8]}"
