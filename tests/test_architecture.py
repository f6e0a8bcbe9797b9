"""The arrangement of the code, checked: imports never climb the floors and packages form no cycle, every package
says what it holds, core's top level holds only the classic modules, ``decoding`` and packages, one module spells
the on-disk layout, nothing outside the registry branches on a model kind, and the scripts' flags default to their
dataclasses."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("training", "inference", "features_extraction", "results")
# Floors, lowest first: a module may import from its own floor or below, never above.
FLOORS = [
    ("core", "core.runtime"),
    ("core.data", "core.shapes_world", "core.coco_utils"),
    ("core.layers", "core.rnn_layers", "core.transformer_layers", "core.decoding", "core.features", "core.image_utils"),
    ("core.model", "core.datasets", "core.evaluation"),
    ("core.training", "core.optim", "core.captioning_solver", "core.captioning_solver_transformer"),
    ("core.inference",),
    ("core.results",),
    SCRIPTS + ("benchmarks",),
]
# core's top level: the classic import paths (the seed's layout and CS231n assignment 3) and the decoding module.
CLASSIC_MODULES = {"rnn_layers", "transformer_layers", "coco_utils", "optim", "image_utils", "captioning_solver",
                   "captioning_solver_transformer"}
LAYOUT_NAMES = ("coco2014_", "_vgg16_fc7", "2014_urls", "pca.npz", "encoder.json", "encoder.pt", "shapes_images",
                "shapes_scenes", "manifest.json", "history.json", "config.json", "loss.png", "gallery_", "results.json",
                "results.md", "2014_grid",
                "<NULL>", "<START>", "<END>", "<UNK>")
KIND_NAMES = ("rnn", "lstm", "att_lstm", "transformer")


def floor_of(module):
    """The floor of a module name: its longest matching prefix in FLOORS."""
    best = None
    for level, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            if module == prefix or (module.startswith(prefix + ".") and prefix != "core"):
                if best is None or len(prefix) > best[1]:
                    best = (level, len(prefix))
    return None if best is None else best[0]


def module_name(path):
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def project_files():
    files = sorted((ROOT / "core").rglob("*.py")) + sorted((ROOT / "benchmarks").rglob("*.py"))
    return files + [ROOT / f"{name}.py" for name in SCRIPTS]


def imported_modules(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
            for alias in node.names:  # `from core import optim` imports core.optim
                yield f"{node.module}.{alias.name}", node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno


def test_imports_never_climb_the_floors():
    upward = []
    for path in project_files():
        own = floor_of(module_name(path))
        assert own is not None, f"{module_name(path)} has no floor in FLOORS"
        for target, line in imported_modules(ast.parse(path.read_text())):
            level = floor_of(target)
            if target.startswith(("core", "benchmarks")) and level is not None and level > own:
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert upward == []


def package_of(module):
    """The unit the cycle check works on: a sub-package or top-level module of core, a script, or benchmarks."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "core" and len(parts) > 1 else parts[0]


def package_graph():
    """Edges package -> the packages its modules import (project modules only, self-edges left out)."""
    known = {module_name(path) for path in project_files()}
    graph = {}
    for path in project_files():
        source = package_of(module_name(path))
        for target, _ in imported_modules(ast.parse(path.read_text())):
            if target in known and package_of(target) != source:
                graph.setdefault(source, set()).add(package_of(target))
    return graph


def cycles_of(graph):
    """Every package from which an import path leads back to itself, with one such path."""
    found = []
    for start in sorted(graph):
        seen, stack = set(), [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph.get(node, ())):
                if nxt == start:
                    found.append(" -> ".join(path + [start]))
                    stack.clear()
                    break
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
    return found


def test_no_package_imports_one_that_imports_it():
    assert cycles_of(package_graph()) == []


def test_the_cycle_check_finds_a_planted_cycle():
    graph = package_graph()
    graph.setdefault("core.runtime", set()).add("core.training")  # runtime -> training -> ... -> runtime
    assert any(cycle.startswith("core.runtime -> core.training") for cycle in cycles_of(graph))


def test_every_package_says_what_it_holds():
    silent = [str(init.relative_to(ROOT)) for init in sorted((ROOT / "core").rglob("__init__.py"))
              if ast.get_docstring(ast.parse(init.read_text())) is None]
    assert silent == []


def test_core_top_level_holds_only_classic_modules_decoding_and_packages():
    loose = {path.stem for path in (ROOT / "core").glob("*.py")} - CLASSIC_MODULES - {"__init__", "decoding"}
    assert loose == set()


def code_strings(tree):
    """The string constants of a module that are not docstrings."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.value, node.lineno


def test_only_the_layout_module_spells_the_layout():
    spelled = []
    for path in project_files():
        if path == ROOT / "core" / "data" / "layout.py":
            continue
        for text, line in code_strings(ast.parse(path.read_text())):
            spelled += [f"{path.relative_to(ROOT)}:{line} {name!r}" for name in LAYOUT_NAMES if name in text]
    assert spelled == []


def test_nothing_outside_the_registry_branches_on_a_model_kind():
    branches = []
    for path in project_files():
        if path.parent.name == "model" or path.parent.name == "benchmarks":
            continue  # a model's own cell choice, and the benchmarks' contenders, are not kind dispatch
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                if any(isinstance(o, ast.Constant) and o.value in KIND_NAMES for o in operands):
                    branches.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert branches == []


@pytest.mark.parametrize("script, settings_class, argv, required", [
    ("training", "core.training.engine.TrainSettings", ["--model", "lstm"], {"model": "lstm"}),
    ("inference", "core.inference.engine.InferenceSettings", ["--model", "lstm"], {"model": "lstm"}),
    ("results", "core.results.study.ResultsSettings", [], {}),
    ("features_extraction", "core.features.engine.ExtractionSettings", [], {}),
    ("features_extraction", "core.datasets.own_data_engine.OwnDataSettings",
     ["--captions", "c.csv", "--images-dir", "images", "--out", "data"],
     {"captions": ("c.csv",), "images_dir": Path("images"), "out": Path("data")}),
])
def test_flag_defaults_are_the_settings_defaults(script, settings_class, argv, required):
    """The settings of the flags ``argv`` (those without a default) are the class's defaults plus ``required``."""
    import importlib

    module = importlib.import_module(script)
    module_path, _, name = settings_class.rpartition(".")
    cls = getattr(importlib.import_module(module_path), name)
    parsed = module.settings_from_args(module.parse_args(argv))
    assert parsed == cls(**required)
