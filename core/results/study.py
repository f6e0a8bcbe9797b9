"""The README's results table: every model trained with its defaults (the best checkpoint chosen on val),
evaluated on the held-out test split, plus two baselines.

Rows: each model decoded greedily and with beam search; each model fine-tuned by self-critical training from its
cross-entropy checkpoint (greedy); each model trained blind (shuffled features); nearest-neighbour retrieval
(plain and consensus). All numbers come from one run of ``results.py``.
"""
import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from core.data.grid import model_inputs
from core.data.images import ImageSource
from core.data.layout import (
    HELD_OUT_SPLIT,
    MAX_DECODE_LENGTH,
    RESULTS_JSON,
    RESULTS_REPORT_DIR,
    RESULTS_TABLE,
    SPLITS,
    checkpoint_file,
)
from core.data.loader import load_coco_data
from core.datasets.resolve import resolve_data_dir
from core.decoding import DecodeConfig
from core.evaluation.baselines import nearest_neighbour_captions
from core.evaluation.loop import caption_features, evaluate_split, score_predictions, split_images, summary_row
from core.inference.report import ReportRun, check_report_dir, describe_decoding, write_report
from core.model.registry import MODEL_TYPES, model_kind
from core.runtime.fileio import atomic_write_text
from core.training.engine import TrainSettings, run_training
from core.training.scst import SCSTConfig

COLUMNS = (("BLEU-4", 100), ("METEOR", 100), ("ROUGE-L", 100), ("CIDEr", 100), ("object_f1", 1),
           ("hallucination_rate", 1), ("relation_accuracy", 1), ("forced_relation_accuracy", 1),
           ("attention_correctness", 1))
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


@dataclass(frozen=True)
class ResultsSettings:
    """Every setting of the results run; ``results.py``'s flags take their defaults from here."""
    models: tuple = MODEL_TYPES
    out: str = "runs/results"
    beam_size: int = 3
    seed: int = 0
    blind: bool = True
    scst: bool = True  # a self-critical row under each model
    scst_baseline: str = SCSTConfig.baseline
    split: str = HELD_OUT_SPLIT  # what the table reports; the best checkpoint is chosen on val
    data_dir: str | None = None  # a shapes world other than the default one (tests use a tiny one)
    epochs: int | None = None  # None: every model kind's default
    max_length: int = MAX_DECODE_LENGTH
    readme: str | None = "README.md"
    progress: bool = True


def run_results(settings):
    """Train, evaluate and tabulate; writes ``<out>/results.json``, ``results.md`` and the comparison report of
    every model's captions (``<out>/report/index.html``), and updates the README.

    The dataset is read once and serves every training run, evaluation and baseline.
    """
    out = Path(settings.out)
    check_report_dir(out / RESULTS_REPORT_DIR, "--out")  # before hours of training, not after them
    data_dir = resolve_data_dir("shapes", settings.data_dir, progress=settings.progress)
    data = load_coco_data(data_dir, splits=(*SPLITS, settings.split), grid=True)
    rows, runs = [], []
    for model_type in settings.models:
        model_rows, model_runs = _model_rows(model_type, data, settings)
        rows, runs = rows + model_rows, runs + model_runs
        atomic_write_text(out / RESULTS_JSON, json.dumps(rows, indent=1))  # an interrupted run keeps its rows
    rows += _retrieval_rows(data, settings)
    table = format_table(rows, settings)
    atomic_write_text(out / RESULTS_JSON, json.dumps(rows, indent=1))
    atomic_write_text(out / RESULTS_TABLE, table)
    if runs:
        _write_report(out / RESULTS_REPORT_DIR, runs, data, settings)
    if settings.readme:
        _update_readme(Path(settings.readme), table)
    return rows


def _write_report(folder, runs, data, settings):
    """The comparison report: every evaluated model's captions of each image, one under the other."""
    urls = data[f"{settings.split}_urls"]
    title = f"Every model on the {settings.split} split ({len(runs[0].result['predictions'])} images)"
    with ImageSource(data["base_dir"]) as source:
        path = write_report(folder, runs, lambda row: source.get(settings.split, row, str(urls[row])), title,
                            settings.progress)
    print(f"report: {path}")


def _model_rows(model_type, data, settings):
    """The rows of one model kind: cross-entropy (greedy, beam), self-critical from it, blind; and each row's
    evaluation as a ReportRun."""
    base = f"{settings.out}/{model_type}"
    # The study's runs are its own outputs, retrained on every call: each replaces the one an earlier call left.
    runs = [(model_type, "XE", TrainSettings(model=model_type, seed=settings.seed, out=base, overwrite=True,
                                             epochs=settings.epochs, progress=settings.progress))]
    if settings.scst:
        runs.append((model_type, f"SCST ({settings.scst_baseline} baseline)", TrainSettings(
            model=model_type, seed=settings.seed, objective="scst", init_from=str(Path(base) / checkpoint_file(
                "best", model_kind(model_type).checkpoint_suffix)), scst_baseline=settings.scst_baseline,
            out=f"{base}-scst", overwrite=True, epochs=settings.epochs, progress=settings.progress)))
    if settings.blind:
        runs.append((f"{model_type} blind", "XE", TrainSettings(model=model_type, seed=settings.seed,
                                                                shuffle_features=True, out=f"{base}-blind",
                                                                overwrite=True, epochs=settings.epochs,
                                                                progress=settings.progress)))
    rows, evaluated = [], []
    for name, training, train_settings in runs:
        summary = run_training(train_settings, data=data)
        model = summary["model"]  # in its best state
        config = model_kind(model_type).model_class.Config(**model.config())
        inputs = model_inputs(data, config.reads_grid)
        decodings = {"greedy": DecodeConfig()}
        if training == "XE" and not train_settings.shuffle_features:
            decodings[f"beam {settings.beam_size}"] = DecodeConfig(beam_size=settings.beam_size)
        seconds = _decode_seconds(model, inputs, settings.split, settings.max_length, decodings)
        for decoding, decode_config in decodings.items():
            result = evaluate_split(model, inputs, settings.split, settings.max_length, decode_config,
                                    attention_cells=config.num_cells if config.reads_grid else None,
                                    keep_attention=True)
            rows.append({"name": name, "training": training, "decoding": decoding, "steps": summary["steps"],
                         "train_seconds": summary["seconds"], "decode_seconds": seconds[decoding],
                         **summary_row(result)})
            details = {"checkpoint": str(Path(train_settings.out) / checkpoint_file(
                "best", model_kind(model_type).checkpoint_suffix)), "model": model_type, "training": training,
                "split": settings.split, "decoding": describe_decoding({**asdict(decode_config),
                                                                        "max_length": settings.max_length})}
            evaluated.append(ReportRun(f"{name}, {training}, {decoding}", details, result))
    return rows, evaluated


def _decode_seconds(model, data, split, max_length, decodings, repeats=5):
    """Median seconds to caption every image of ``split`` with each of ``decodings`` (name -> DecodeConfig),
    the decodings taking turns: a single timed run of a second or two is at the mercy of the machine."""
    features = data[f"{split}_features"][split_images(data, split)[0]]  # (M, D)
    times = {name: [] for name in decodings}
    for _ in range(repeats):
        for name, config in decodings.items():
            start = time.perf_counter()
            caption_features(model, features, max_length, config)
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(values)) for name, values in times.items()}


def _retrieval_rows(data, settings):
    train_images, train_refs = split_images(data, "train")
    val_images, val_refs = split_images(data, settings.split)
    rows = []
    for name, k in (("nearest neighbour", 1), ("nearest neighbour (consensus, k=5)", 5)):
        start = time.perf_counter()
        captions = nearest_neighbour_captions(data["train_features"][train_images],
                                              [train_refs[i] for i in train_images.tolist()],
                                              data[f"{settings.split}_features"][val_images], k=k,
                                              progress=settings.progress)
        seconds = time.perf_counter() - start
        predictions = dict(zip(val_images.tolist(), captions))
        result = score_predictions(predictions, {i: val_refs[i] for i in predictions}, data["base_dir"],
                                   settings.split)
        rows.append({"name": name, "training": "-", "decoding": "retrieval", "train_seconds": 0.0,
                     "decode_seconds": seconds, **summary_row(result)})
    return rows


def format_table(rows, settings):
    """A markdown table: metrics x100 (BLEU-4, METEOR, ROUGE-L, CIDEr), grounding as fractions."""
    head = ["model", "training", "decoding", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "object F1", "halluc.",
            "relation acc.", "forced rel.", "att. corr.", "train min", "decode s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["name"], row["training"], row["decoding"]]
        cells += [f"{row[key] * scale:.1f}" if scale == 100 and key in row else
                  f"{row[key]:.3f}" if key in row else "n/a" for key, scale in COLUMNS]
        cells += [f"{row['train_seconds'] / 60:.1f}", f"{row['decode_seconds']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    note = (f"\nShapes dataset, {settings.split} split (best checkpoints chosen on val); metrics x100 "
            f"(pycocoevalcap), object F1, hallucination rate, relation accuracy (of the relations greedy captions "
            f"state; their number and 95% interval are in {RESULTS_JSON}), forced-relation accuracy (reference "
            f"captions fed up to their relation words, the model naming the second object) and attention "
            f"correctness (attention models: mass on the named object's cells; the uniform "
            f"baseline is in {RESULTS_JSON}) as fractions. Measured by `make results` on "
            f"{platform.processor() or platform.machine()}, {_cpu_count()} CPU cores, seed {settings.seed}; "
            f"settings: {asdict(settings)}.\n")
    return "\n".join(lines) + "\n" + note


def _cpu_count():
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _update_readme(path, table):
    text = path.read_text()
    if README_START not in text or README_END not in text:
        return
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    atomic_write_text(path, f"{head}{README_START}\n{table}{README_END}{tail}")
