"""The results study (``results.py``): every model kind trained with its defaults (the best checkpoint chosen on val,
a run stopped once validation stops improving), evaluated on the held-out test split beside two baselines, over
one or more seeds, and written as tables that carry their provenance.

Rows (``core.results.rows``): each model decoded greedily and with beam search; each model fine-tuned by
self-critical training from its cross-entropy checkpoint; the first model trained blind (shuffled features);
nearest-neighbour retrieval (plain and consensus). Greedy rows carry the novel split's composition figures where the
world has them. Over several seeds a row shows the mean ± standard deviation (``core.results.tables``).

Outputs: ``<out>/results.json`` (the rows, each seed's rows, the provenance), ``<out>/results.md`` (the full
table), ``<out>/report/`` (every model's captions of the first seed); the full table into the world's docs page
and, on the default world, the headline rows into the README, each between the markers of its generated block.
"""
import json
from dataclasses import dataclass
from pathlib import Path

from core.data.images import ImageSource
from core.data.layout import (
    HELD_OUT_SPLIT,
    MAX_DECODE_LENGTH,
    NOVEL_SPLIT,
    README_FILE,
    RESULTS_DOC,
    RESULTS_HARD_DOC,
    RESULTS_HARD_RUN_DIR,
    RESULTS_JSON,
    RESULTS_REPORT_DIR,
    RESULTS_RUN_DIR,
    RESULTS_SEED_DIR,
    RESULTS_TABLE,
    SPLITS,
)
from core.data.loader import has_split, load_coco_data
from core.datasets.resolve import resolve_data_dir
from core.inference.report import check_report_dir, write_report
from core.model.registry import MODEL_TYPES
from core.results.rows import model_rows, retrieval_rows
from core.results.tables import FULL_COLUMNS, HEADLINE_COLUMNS, aggregate, block, provenance, write_block
from core.runtime.errors import UserError
from core.runtime.fileio import atomic_write_text
from core.training.scst import SCSTConfig


@dataclass(frozen=True)
class World:
    """A world the study runs on: its dataset (``core.datasets.resolve``'s name), default output folder, the docs
    page of its full table, and whether the README shows its headline rows."""
    dataset: str
    out: str
    doc: str
    readme: bool


WORLDS = {"default": World("shapes", RESULTS_RUN_DIR, RESULTS_DOC, readme=True),
          "hard": World("shapes-hard", RESULTS_HARD_RUN_DIR, RESULTS_HARD_DOC, readme=False)}


@dataclass(frozen=True)
class ResultsSettings:
    """Every setting of the results run; ``results.py``'s flags take their defaults from here."""
    models: tuple = MODEL_TYPES
    world: str = "default"  # a key of WORLDS
    out: str | None = None  # None: the world's folder
    seeds: int = 1  # every row over seeds seed .. seed + seeds - 1
    seed: int = 0
    beam_size: int = 3
    # A run stops once this many epochs in a row have not improved its validation loss (reward, for SCST); its best
    # checkpoint is kept, so a stop costs only what epochs after a flat one would have gained.
    patience: int = 1
    # A self-critical run's validation reward creeps up by a fraction of a percent an epoch once it has converged:
    # an epoch counts as an improvement only when it gains more than this share.
    scst_min_improvement: float = 0.005
    blind: bool = True  # the blind baseline (shuffled features), trained for the first of ``models``
    scst: bool = True  # a self-critical row under each model
    scst_baseline: str = SCSTConfig.baseline
    split: str = HELD_OUT_SPLIT  # what the table reports; the best checkpoint is chosen on val
    data_dir: str | None = None  # a dataset folder other than the world's (tests use a tiny one)
    epochs: int | None = None  # None: every model kind's default
    max_length: int = MAX_DECODE_LENGTH
    docs: bool = True  # rewrite the generated blocks of the README and the world's docs page
    root: str = "."  # the folder holding the README and docs/
    progress: bool = True


def world_of(settings):
    """The World of ``settings``; UserError for settings no run can take, before anything is written."""
    if settings.world not in WORLDS:
        raise UserError(f"--world {settings.world!r}: use one of {', '.join(WORLDS)}")
    if settings.seeds < 1:
        raise UserError(f"--seeds {settings.seeds}: a table needs at least one seed; pass 1 or more")
    return WORLDS[settings.world]


def run_results(settings, command=None):
    """Train, evaluate and tabulate as ``settings`` say; ``command`` is what the provenance names as the command
    (default: this call). Returns the rows, each aggregated over the seeds. The dataset is read once and serves
    every training run, evaluation and baseline of every seed."""
    world = world_of(settings)
    out = Path(settings.out or world.out)
    check_report_dir(out / RESULTS_REPORT_DIR, "--out")  # before hours of training, not after them
    source = provenance(command or f"run_results({settings!r})", settings.root)
    data_dir = resolve_data_dir(world.dataset, settings.data_dir, progress=settings.progress)
    novel = (NOVEL_SPLIT,) if settings.split != NOVEL_SPLIT and has_split(data_dir, NOVEL_SPLIT) else ()
    data = load_coco_data(data_dir, splits=(*SPLITS, settings.split, *novel), grid=True)
    per_seed, runs = [], []
    for seed in range(settings.seed, settings.seed + settings.seeds):
        folder = out if seed == settings.seed else out / RESULTS_SEED_DIR.format(seed=seed)
        for model_type in settings.models:
            rows, model_runs = model_rows(model_type, seed, folder, data, settings)
            per_seed += rows
            runs += model_runs if seed == settings.seed else []
            _save(out, aggregate(per_seed), per_seed, source)  # an interrupted run keeps its rows
    per_seed += retrieval_rows(data, settings)  # deterministic: once, whatever the seeds
    rows = aggregate(per_seed)
    _save(out, rows, per_seed, source)
    full = block(rows, FULL_COLUMNS, _note(settings, data_dir), source)
    atomic_write_text(out / RESULTS_TABLE, full)
    if runs:
        _write_report(out / RESULTS_REPORT_DIR, runs, data, settings)
    if settings.docs:
        root = Path(settings.root)
        write_block(root / world.doc, full)
        if world.readme:
            headline = [row for row in rows if row["headline"]]
            write_block(root / README_FILE, block(headline, HEADLINE_COLUMNS, _headline_note(settings), source))
    return rows


def _save(out, rows, per_seed, source):
    atomic_write_text(out / RESULTS_JSON, json.dumps({"provenance": source, "rows": rows, "per_seed": per_seed},
                                                     indent=1))


def _write_report(folder, runs, data, settings):
    """The comparison report: every evaluated model's captions of each image, one under the other."""
    urls = data[f"{settings.split}_urls"]
    title = f"Every model on the {settings.split} split ({len(runs[0].result['predictions'])} images)"
    with ImageSource(data["base_dir"]) as source:
        path = write_report(folder, runs, lambda row: source.get(settings.split, row, str(urls[row])), title,
                            settings.progress)
    print(f"report: {path}")


def _seeds_text(settings):
    if settings.seeds == 1:
        return f"seed {settings.seed}"
    return (f"mean ± standard deviation over seeds {settings.seed}..{settings.seed + settings.seeds - 1} "
            "(retrieval rows are deterministic: one run)")


def _patience_text(settings):
    if not settings.patience:
        return "every run trains its kind's epochs"
    epochs = "an epoch has" if settings.patience == 1 else f"{settings.patience} epochs in a row have"
    return (f"a run stops once {epochs} not improved its validation loss, or its reward for SCST by more than "
            f"{settings.scst_min_improvement:.1%}")


def _note(settings, data_dir):
    return (f"Dataset {Path(data_dir).name} ({settings.world} world), {settings.split} split (best checkpoints "
            f"chosen on val; {_patience_text(settings)}), {_seeds_text(settings)}. Metrics x100 (pycocoevalcap); "
            "object F1, hallucination rate, relation accuracy (of the relations greedy captions state; their "
            f"number and 95% interval are in {RESULTS_JSON}), forced-relation accuracy (reference captions fed up to "
            "their relation words, the model naming the second object), attention correctness (attention models: "
            f"mass on the named object's cells; the uniform baseline is in {RESULTS_JSON}) as fractions. Novel-pair "
            f"recall: greedy captions of the {NOVEL_SPLIT} split stating the attribute-shape pairs held out of "
            f"training; seen-pair recall: the pairs seen in training, on the {settings.split} split (intervals in "
            f"{RESULTS_JSON}). Epochs: those run (fewer than the kind's when validation stopped improving); train "
            "min and decode s: wall time of training and of one decoding pass over the split.")


def _headline_note(settings):
    return (f"Each model kind on the {settings.split} split of the shapes world, greedy decoding, cross-entropy (XE) "
            f"and self-critical (SCST) training, {_seeds_text(settings)}. CIDEr x100; object F1, hallucination rate, "
            "novel-pair and seen-pair recall as fractions. Every row, the baselines and the definitions: "
            f"[{RESULTS_DOC}]({RESULTS_DOC}).")
