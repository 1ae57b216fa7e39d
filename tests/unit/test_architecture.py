"""The layering the code promises (docs/ARCHITECTURE.md), checked on the source: no import circle, every module in
its layer and importing only the layers the table allows, stages that import only the library, and dvc.yaml deps
that are exactly the code each stage runs (a dep missing there means DVC would not re-run the stage when that code
changes; an extra one re-runs it for nothing)."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
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


# docs/ARCHITECTURE.md's table, as data: every module has a layer, and imports go to its own layer or to one the
# table's "may import" column lists. A module added without a row here fails test_every_module_keeps_to_its_layer.
ENTRY, SERVICES, LOOP, MODELS, DATA, BASE = "entry points", "services", "the loop", "models", "data", "base"
MAY_IMPORT = {
    ENTRY: {ENTRY, SERVICES, LOOP, MODELS, DATA, BASE},
    SERVICES: {SERVICES, LOOP, MODELS, DATA, BASE},
    LOOP: {LOOP, MODELS, DATA, BASE},
    MODELS: {MODELS, BASE},
    DATA: {DATA, BASE},
    BASE: {BASE},
}
LAYER_OF = {
    **dict.fromkeys(
        ("pipeline.__main__", "pipeline.status", "pipeline.demo", "pipeline.export_labels", "pipeline.data.validate"),
        ENTRY,
    ),
    **dict.fromkeys(
        (
            "pipeline.registry",
            "pipeline.tracking",
            "pipeline.labelstudio.client",
            "pipeline.labelstudio.server",
            "pipeline.labelstudio.oracle",
            "pipeline.ray_train",
            "pipeline.ray_cluster",
            "pipeline.pseudolabel",
            "pipeline.ray_find",
            "pipeline.loop",
            "pipeline.labelstudio",
        ),
        SERVICES,
    ),
    **dict.fromkeys(
        (
            "pipeline.training",
            "pipeline.inference",
            "pipeline.selection",
            "pipeline.merge",
            "pipeline.semi_supervised",
            "pipeline.evaluation",
            "pipeline.model_store",
            "pipeline.finding",
        ),
        LOOP,
    ),
    **dict.fromkeys(
        (
            "pipeline.data",
            "pipeline.corrections",
            "pipeline.config",
            "pipeline.viz",
        ),
        DATA,
    ),
    **dict.fromkeys(
        ("pipeline", "pipeline.keypoints", "pipeline.codec", "pipeline.files", "pipeline.checks", "pipeline.console"),
        BASE,
    ),
}


def _layer(module: str) -> str | None:
    if module.startswith(("stages", "bench")):
        return ENTRY
    if module.startswith("models"):
        return MODELS
    if module in LAYER_OF:
        return LAYER_OF[module]
    return DATA if module.startswith("pipeline.data.") else None


def test_every_module_keeps_to_its_layer():
    unplaced = sorted(m for m in GRAPH if _layer(m) is None)
    assert not unplaced, f"modules without a layer (add them to docs/ARCHITECTURE.md and LAYER_OF): {unplaced}"
    for name, imported in sorted(GRAPH.items()):
        wrong = sorted(f"{m} ({_layer(m)})" for m in imported if _layer(m) not in MAY_IMPORT[_layer(name)])
        assert not wrong, f"{name} ({_layer(name)}) imports {wrong}: docs/ARCHITECTURE.md's layers forbid it"


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
        # and nothing more: a code dep the stage never imports re-runs it for nothing (the most expensive when the
        # stage is train); a folder dep must hold at least one module the stage runs
        code_deps = [d for d in deps if d.startswith(("pipeline", "models", "stages")) and not d.endswith("python")]
        extra = sorted(d for d in code_deps if not any(f == d or f.startswith(d.rstrip("/") + "/") for f in code))
        assert not extra, f"dvc.yaml stage {stage} lists {extra} in deps but never imports them"


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


LONG_FUNCTION_LINES = 80
LONG_BECAUSE = "Long because"


def test_no_long_function_without_a_reason():
    """A function of pipeline/ or models/ over 80 lines says why at the top of its docstring ("Long because ...");
    otherwise it is split. A reader should be able to hold one function in view."""
    long = []
    for package in ("pipeline", "models"):
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > LONG_FUNCTION_LINES and LONG_BECAUSE not in (ast.get_docstring(node) or ""):
                        long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, (
        f"functions over {LONG_FUNCTION_LINES} lines without '{LONG_BECAUSE} ...' in their docstring: {long}"
    )
