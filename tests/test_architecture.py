"""The layering the code promises (docs/ARCHITECTURE.md), checked on the source: no import circle, models/ free of the
training and serving code, stages that import only the library, and dvc.yaml deps that cover the code each stage
runs (a dep missing there means DVC would not re-run the stage when that code changes)."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "models", "stages", "bench")
# the base layer both models/ and pipeline/ build on: standard library, numpy and torch only
LOW_LEVEL = {"pipeline.codec", "pipeline.keypoints", "pipeline.files"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for package in PACKAGES for p in (REPO / package).rglob("*.py")}


def _imports(path: Path) -> set[str]:
    """Project modules ``path`` imports, at module level or inside a function (a lazy import is still a dependency)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def _reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(GRAPH[name])
    return seen


def test_no_import_circle():
    circles = sorted(sorted(m for m in _reachable(name) if name in _reachable(m)) for name in GRAPH)
    circles = [c for c in dict.fromkeys(map(tuple, circles)) if len(c) > 1]
    assert circles == [], f"import circles: {circles}"


def test_models_use_only_the_low_level_pieces_of_pipeline():
    for name in (m for m in GRAPH if m.startswith("models")):
        outside = {m for m in _reachable(name) if not m.startswith("models")} - LOW_LEVEL - {"pipeline"}
        assert not outside, f"{name} reaches {sorted(outside)}: models/ must not depend on training or serving"
    for name in LOW_LEVEL:
        assert GRAPH[name] <= LOW_LEVEL, f"{name} imports {sorted(GRAPH[name] - LOW_LEVEL)}: it is the base layer"


def test_stages_import_the_library_only():
    for name in (m for m in GRAPH if m.startswith("stages.")):
        assert not {m for m in GRAPH[name] if m.startswith(("stages", "bench"))}, f"{name} imports another stage"


def test_every_stage_declares_the_code_it_runs_as_deps():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for stage, spec in stages.items():
        module = spec["cmd"].split(" -m ", 1)[1].split()[0]
        assert module == f"stages.{stage}", f"{stage}: cmd runs {module}"
        deps = [d if isinstance(d, str) else next(iter(d)) for d in spec["deps"]]
        code = {
            str(MODULES[m].relative_to(REPO))
            for m in _reachable(module)
            if MODULES[m].read_text().strip() or MODULES[m].name != "__init__.py"
        }
        missing = sorted(f for f in code if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps))
        assert not missing, f"dvc.yaml stage {stage} runs {missing} but does not list them in deps"


def test_stage_paths_are_spelled_in_dvc_yaml():
    """Every path a stage reads or writes is an argument of its cmd, so dvc.yaml alone says where things are."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for stage, spec in stages.items():
        source = (REPO / "stages" / f"{stage}.py").read_text()
        for node in ast.walk(ast.parse(source)):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", "") == "add_argument"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and any(k.arg == "type" and getattr(k.value, "id", "") == "Path" for k in node.keywords)
            ):
                flag = node.args[0].value
                if flag != "--params":  # params.yaml is DVC's own default
                    assert f"{flag} " in spec["cmd"] + " ", f"dvc.yaml stage {stage}: cmd does not pass {flag}"
