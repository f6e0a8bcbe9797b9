"""The arrangement of the code, checked: imports never climb the floors, one module spells the on-disk layout,
nothing outside the registry branches on a model kind, and the scripts' flags default to their dataclasses."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("training", "inference", "features_extraction", "results")
# Floors, lowest first: a module may import from its own floor or below, never above.
FLOORS = [
    ("core", "core.errors", "core.fileio", "core.devices", "core.distributed", "core.cli", "core.checkpoint",
     "core.plotting"),
    ("core.data", "core.shapes_world", "core.coco_utils"),
    ("core.packing", "core.dropout", "core.rnn_layers", "core.att_layers", "core.att_lstm_layers",
     "core.transformer_layers", "core.optim", "core.decoding", "core.features"),
    ("core.model", "core.model.rnn_model", "core.model.transformer", "core.datasets", "core.training.updaters",
     "core.metrics", "core.cider", "core.grounding", "core.relation_probe", "core.attention_correctness",
     "core.attention_maps", "core.baselines"),
    ("core.model.registry",),
    ("core.training", "core.inference"),
    ("core.results_table",),
    SCRIPTS + ("benchmarks",),
]
LAYOUT_NAMES = ("coco2014_", "_vgg16_fc7", "2014_urls", "pca.npz", "encoder.json", "encoder.pt", "shapes_images",
                "shapes_scenes", "manifest.json", "history.json", "config.json", "loss.png", "gallery_", "results.json",
                "results.md", "2014_grid",
                "<NULL>", "<START>", "<END>", "<UNK>")
KIND_NAMES = ("rnn", "lstm", "transformer")


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


@pytest.mark.parametrize("script, settings_class, argv", [
    ("training", "core.training.engine.TrainSettings", ["--model", "lstm"]),
    ("inference", "core.inference.engine.InferenceSettings", ["--model", "lstm"]),
    ("results", "core.results_table.ResultsSettings", []),
])
def test_flag_defaults_are_the_settings_defaults(script, settings_class, argv):
    import importlib

    module = importlib.import_module(script)
    module_path, _, name = settings_class.rpartition(".")
    cls = getattr(importlib.import_module(module_path), name)
    parsed = module.settings_from_args(module.parse_args(argv))
    expected = cls(**{key: value for key, value in zip(("model",), argv[1:2])})
    assert parsed == expected
