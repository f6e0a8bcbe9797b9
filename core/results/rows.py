"""The rows of one seed of the results study: every model kind trained (cross-entropy, self-critical from it, blind)
and evaluated, and the nearest-neighbour baselines.

Each trained model is evaluated from one load of the data, in as few decoding passes as the rows need: greedy on the
reported split (its attention correctness and forced-relation accuracy serve the beam row too), beam search there
for the cross-entropy model, and greedy on the novel split where the data has one, whose composition figures are
set beside the seen pairs of the reported split's greedy captions, already decoded.
"""
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from core.data.grid import model_inputs
from core.data.layout import NOVEL_SPLIT, checkpoint_file
from core.decoding import DecodeConfig
from core.evaluation.baselines import nearest_neighbour_captions
from core.evaluation.loop import (
    caption_features,
    evaluate_split,
    load_held_out_pairs,
    load_scenes,
    load_world,
    novel_composition,
    score_predictions,
    split_images,
    summary_row,
)
from core.inference.report import ReportRun, describe_decoding
from core.model.registry import model_kind
from core.training.engine import TrainSettings, run_training

RETRIEVALS = (("nearest neighbour", 1), ("nearest neighbour (consensus, k=5)", 5))


@dataclass(frozen=True)
class Variant:
    """One training run of a model kind in the study: its row name, training label and settings."""
    name: str
    training: str
    settings: TrainSettings
    beam: bool  # a beam-search row beside the greedy one
    headline: bool  # among the README's headline rows


def variants(model_type, seed, out, settings):
    """The study's training runs of ``model_type`` with ``seed`` into folder ``out``: cross-entropy, self-critical
    from its best checkpoint, and blind for the first of the study's models, as ``settings`` (ResultsSettings) ask.
    One blind model is the baseline: what the captions' language alone earns, whatever decoder learns it."""
    common = dict(model=model_type, seed=seed, overwrite=True, epochs=settings.epochs, patience=settings.patience,
                  progress=settings.progress)
    # The study's runs are its own outputs, retrained on every call: each replaces the one an earlier call left.
    base = f"{out}/{model_type}"
    runs = [Variant(model_type, "XE", TrainSettings(out=base, **common), beam=True, headline=True)]
    if settings.scst:
        best = Path(base) / checkpoint_file("best", model_kind(model_type).checkpoint_suffix)
        runs.append(Variant(model_type, f"SCST ({settings.scst_baseline} baseline)", TrainSettings(
            objective="scst", init_from=str(best), scst_baseline=settings.scst_baseline, out=f"{base}-scst",
            min_improvement=settings.scst_min_improvement, **common), beam=False, headline=True))
    if settings.blind and model_type == settings.models[0]:
        runs.append(Variant(f"{model_type} blind", "XE", TrainSettings(shuffle_features=True, out=f"{base}-blind",
                                                                       **common), beam=False, headline=False))
    return runs


def model_rows(model_type, seed, out, data, settings):
    """The rows of one model kind with one seed, and each row's evaluation as a ReportRun."""
    rows, runs = [], []
    for variant in variants(model_type, seed, out, settings):
        summary = run_training(variant.settings, data=data)
        trained = {"steps": summary["steps"], "epochs": summary["epochs"], "train_seconds": summary["seconds"]}
        for decoding, result in evaluate_model(summary["model"], model_type, data, variant.beam, settings).items():
            row = {"name": variant.name, "training": variant.training, "decoding": decoding, "seed": seed,
                   "headline": variant.headline and decoding == "greedy", **trained,
                   "decode_seconds": result["decode_seconds"], **summary_row(result)}
            rows.append(row)
            details = {"checkpoint": summary["best"], "model": model_type, "training": variant.training,
                       "split": settings.split, "seed": str(seed), "decoding": describe_decoding(
                           {**asdict(result["decode_config"]), "max_length": settings.max_length})}
            runs.append(ReportRun(f"{variant.name}, {variant.training}, {decoding}", details, result))
    return rows, runs


def evaluate_model(model, model_type, data, beam, settings):
    """Decoding name -> ``evaluate_split`` result (with its ``decode_config``) of ``model``, of kind
    ``model_type`` in its best state, on the reported split: greedy, with the novel split's composition figures
    where the data has them, and beam search if ``beam`` (composition figures are the greedy row's alone)."""
    config = model_kind(model_type).model_class.Config(**model.config())
    inputs = model_inputs(data, config.reads_grid)
    cells = config.num_cells if config.reads_grid else None

    def evaluate(decode_config, greedy=None):
        result = evaluate_split(model, inputs, settings.split, settings.max_length, decode_config,
                                attention_cells=cells, keep_attention=True, greedy=greedy)
        return dict(result, decode_config=decode_config, novel_composition=None)

    greedy = evaluate(DecodeConfig())
    greedy["novel_composition"] = composition(data, greedy["predictions"], settings.split, lambda images: (
        caption_features(model, inputs[f"{NOVEL_SPLIT}_features"][images], settings.max_length)))
    results = {"greedy": greedy}
    if beam:
        results[f"beam {settings.beam_size}"] = evaluate(DecodeConfig(beam_size=settings.beam_size), greedy=greedy)
    return results


def composition(data, predictions, split, caption):
    """The novel split's composition figures (``core.evaluation.loop.novel_composition``) of the captions
    ``caption(images)`` gives its images, with the seen pairs of ``predictions`` (row -> caption) of ``split`` for
    comparison; None where the data has no novel split or no held-out pairs."""
    held_out = load_held_out_pairs(data["base_dir"])
    if f"{NOVEL_SPLIT}_features" not in data or not held_out:
        return None
    images, references = split_images(data, NOVEL_SPLIT)
    novel = dict(zip(images.tolist(), caption(images)))
    return novel_composition(novel, references, load_scenes(data["base_dir"], NOVEL_SPLIT), held_out,
                             load_world(data["base_dir"]), test=(predictions, load_scenes(data["base_dir"], split)))


def retrieval_rows(data, settings):
    """The nearest-neighbour baselines' rows: training captions retrieved for each image of the reported split (and
    of the novel split, for its composition figures)."""
    train_images, train_refs = split_images(data, "train")
    images, references = split_images(data, settings.split)

    def retrieve(query_images, split, k):
        return nearest_neighbour_captions(data["train_features"][train_images],
                                          [train_refs[i] for i in train_images.tolist()],
                                          data[f"{split}_features"][query_images], k=k, progress=settings.progress)

    rows = []
    for name, k in RETRIEVALS:
        start = time.perf_counter()
        predictions = dict(zip(images.tolist(), retrieve(images, settings.split, k)))
        seconds = time.perf_counter() - start
        result = score_predictions(predictions, {i: references[i] for i in predictions}, data["base_dir"],
                                   settings.split)
        result["novel_composition"] = composition(data, predictions, settings.split,
                                                  lambda novel, k=k: retrieve(novel, NOVEL_SPLIT, k))
        rows.append({"name": name, "training": "-", "decoding": "retrieval", "headline": False,
                     "decode_seconds": seconds, **summary_row(result)})
    return rows
