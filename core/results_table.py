"""The README's results table: every model trained with its defaults, evaluated on val, plus two baselines.

Rows: each model decoded greedily and with beam search; each model trained blind (shuffled features);
nearest-neighbour retrieval (plain and consensus). All numbers come from one run of ``results.py``.
"""
import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from core.baselines import nearest_neighbour_captions
from core.data.layout import MAX_DECODE_LENGTH, RESULTS_JSON, RESULTS_TABLE
from core.data.loader import load_coco_data
from core.datasets.resolve import resolve_data_dir
from core.decoding import DecodeConfig
from core.fileio import atomic_write_text
from core.inference.evaluation import caption_features, evaluate_split, score_predictions, split_images, summary_row
from core.model.registry import MODEL_TYPES
from core.training.engine import TrainSettings, run_training

COLUMNS = (("BLEU-4", 100), ("METEOR", 100), ("ROUGE-L", 100), ("CIDEr", 100), ("object_f1", 1),
           ("hallucination_rate", 1))
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


@dataclass(frozen=True)
class ResultsSettings:
    """Every setting of the results run; ``results.py``'s flags take their defaults from here."""
    models: tuple = MODEL_TYPES
    out: str = "runs/results"
    beam_size: int = 3
    seed: int = 0
    blind: bool = True
    max_length: int = MAX_DECODE_LENGTH
    readme: str | None = "README.md"
    progress: bool = True


def run_results(settings):
    """Train, evaluate and tabulate; writes ``<out>/results.json`` and ``results.md`` and updates the README.

    The dataset is read once and serves every training run, evaluation and baseline.
    """
    data_dir = resolve_data_dir("shapes", progress=settings.progress)
    data = load_coco_data(data_dir)
    rows = []
    for model_type in settings.models:
        rows += _model_rows(model_type, data, settings)
    rows += _retrieval_rows(data, settings.progress)
    table = format_table(rows, settings)
    out = Path(settings.out)
    atomic_write_text(out / RESULTS_JSON, json.dumps(rows, indent=1))
    atomic_write_text(out / RESULTS_TABLE, table)
    if settings.readme:
        _update_readme(Path(settings.readme), table)
    return rows


def _model_rows(model_type, data, settings):
    rows = []
    variants = [("", False)] + ([(" blind", True)] if settings.blind else [])
    for label, blind in variants:
        summary = run_training(TrainSettings(model=model_type, seed=settings.seed, shuffle_features=blind,
                                             out=f"{settings.out}/{model_type}{label.replace(' ', '-')}",
                                             progress=settings.progress), data=data)
        model = summary["model"]  # in its best state
        decodings = {"greedy": DecodeConfig()}
        if not blind:
            decodings[f"beam {settings.beam_size}"] = DecodeConfig(beam_size=settings.beam_size)
        seconds = _decode_seconds(model, data, settings.max_length, decodings)
        for name, config in decodings.items():
            result = evaluate_split(model, data, "val", settings.max_length, config)
            rows.append({"name": f"{model_type}{label}", "decoding": name, "train_seconds": summary["seconds"],
                         "decode_seconds": seconds[name], "steps": summary["steps"], **summary_row(result)})
    return rows


def _decode_seconds(model, data, max_length, decodings, repeats=5):
    """Median seconds to caption every val image with each of ``decodings`` (name -> DecodeConfig), the
    decodings taking turns: a single timed run of a second or two is at the mercy of the machine."""
    features = data["val_features"][split_images(data, "val")[0]]  # (M, D)
    times = {name: [] for name in decodings}
    for _ in range(repeats):
        for name, config in decodings.items():
            start = time.perf_counter()
            caption_features(model, features, max_length, config)
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(values)) for name, values in times.items()}


def _retrieval_rows(data, progress):
    train_images, train_refs = split_images(data, "train")
    val_images, val_refs = split_images(data, "val")
    rows = []
    for name, k in (("nearest neighbour", 1), ("nearest neighbour (consensus, k=5)", 5)):
        start = time.perf_counter()
        captions = nearest_neighbour_captions(data["train_features"][train_images],
                                              [train_refs[i] for i in train_images.tolist()],
                                              data["val_features"][val_images], k=k, progress=progress)
        seconds = time.perf_counter() - start
        predictions = dict(zip(val_images.tolist(), captions))
        result = score_predictions(predictions, {i: val_refs[i] for i in predictions}, data["base_dir"], "val")
        rows.append({"name": name, "decoding": "retrieval", "train_seconds": 0.0, "decode_seconds": seconds,
                     **summary_row(result)})
    return rows


def format_table(rows, settings):
    """A markdown table: metrics x100 (BLEU-4, METEOR, ROUGE-L, CIDEr), grounding as fractions."""
    head = ["model", "decoding", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "object F1", "halluc.", "train min",
            "decode s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["name"], row["decoding"]]
        cells += [f"{row[key] * scale:.1f}" if scale == 100 and key in row else
                  f"{row[key]:.3f}" if key in row else "n/a" for key, scale in COLUMNS]
        cells += [f"{row['train_seconds'] / 60:.1f}", f"{row['decode_seconds']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    note = (f"\nShapes dataset, val split; metrics x100 (pycocoevalcap), object F1 and hallucination rate as "
            f"fractions. Measured by `make results` on {platform.processor() or platform.machine()}, "
            f"{_cpu_count()} CPU cores, seed {settings.seed}; settings: {asdict(settings)}.\n")
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
