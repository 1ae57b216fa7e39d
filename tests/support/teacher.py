"""A small synthetic project and a teacher trained on it in one plain process (no Ray), shared by the tests of the
stages downstream of training (pseudolabel, select, export, the loop)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import yaml

from pipeline.config import params_from_dict
from pipeline.data.coco import read_coco
from pipeline.data.prepare import prepare
from pipeline.model_store import save_model
from pipeline.ray_train import train_model

REPO = Path(__file__).resolve().parents[2]


def small_params(**train: object) -> dict:
    """params.yaml made CPU-test sized: 80 synthetic images (with the default share of hard cases), 96x128 crops."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"].update(labeled=0.3, val_images=6, test_images=2, seed=3)
    raw["data"]["synthetic"].update(num_images=80)
    raw["codec"]["input_size"] = [96, 128]
    raw["model"]["variant"] = 24
    raw["train"].update(
        {
            "epochs": 4,
            "min_steps_per_epoch": 45,
            "batch_size": 16,
            "lr": 0.003,
            "warmup_steps": 10,
            "num_workers": 1,
            "threads_per_worker": 2,
            **train,
        }
    )
    raw["train"]["ssl"]["mode"] = "off"
    raw["pseudolabel"] = {**raw.get("pseudolabel", {}), "batch_size": 32, "threads_per_actor": 2}
    return raw


def make_project(root: Path, raw: dict) -> Path:
    """Write params.yaml, prepare the data under ``root`` and run the find stage's library call (data/pool.json);
    returns root."""
    from pipeline.finding import find_pool

    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    params = params_from_dict(raw)
    prepare(params.data, root / "data" / "prepared")
    find_pool(params, root / "data" / "prepared", root / "data" / "pool.json", root / "artifacts" / "finder", False)
    return root


def train_teacher(project: Path, raw: dict, out: Path) -> Path:
    """Train on the seed labels in this process and save the kept weights as a model folder (the train step of the
    library's round, without Ray)."""
    prepared = project / "data" / "prepared"
    paths = {"labels": str(prepared / "labeled.json"), "val": str(prepared / "val.json"), "images_root": str(prepared)}
    return train_model(params_from_dict(raw), paths, out).model_dir


def untrained_teacher(project: Path, raw: dict, out: Path, head: str = "heatmap") -> Path:
    """A randomly initialised model folder (the baseline a trained teacher must beat)."""
    from pipeline.model_store import build_codec, model_from_params

    raw = {**raw, "model": {**raw["model"], "head": head}}
    params = params_from_dict(raw)
    schema = read_coco(project / "data" / "prepared" / "labeled.json").schema
    torch.manual_seed(0)
    model = model_from_params(params, build_codec(params), schema)
    return save_model(out, model.state_dict(), params, schema, {})


PROJECT_FILES = ("pipeline", "models", "stages", "dvc.yaml", "pyproject.toml", ".dvcignore", ".gitignore")


def copy_project(dest: Path) -> None:
    """The code and pipeline definition of this repository into ``dest`` (a fresh project for a real `dvc repro`)."""
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dest / name)
