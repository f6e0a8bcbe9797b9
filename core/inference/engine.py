"""Captioning with a trained checkpoint: printed samples, galleries, evaluation, your own images.

``inference.py`` is its CLI; everything a run needs comes from the checkpoint (model type, config, vocabulary,
the dataset it was trained on) unless a flag says otherwise. Only the splits a run captions are read from disk.
"""
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.data.grid import model_inputs
from core.data.images import ImageSource
from core.data.layout import (
    HELD_OUT_SPLIT,
    MAX_DECODE_LENGTH,
    NOVEL_SPLIT,
    PROTOCOLS,
    SPLITS,
    attention_map_file,
    checkpoint_file,
    default_run_dir,
    gallery_file,
    urls_file,
)
from core.data.loader import has_split, load_coco_data
from core.datasets.resolve import DATASETS, dataset_home, resolve_data_dir
from core.decoding import DecodeConfig, check_max_length
from core.evaluation.attention import greedy_with_attention
from core.evaluation.loop import caption_features, coco_results, evaluate_split, split_images
from core.inference.attention_maps import save_attention_map
from core.inference.report import check_report_dir, compare_run, evaluated_run, evaluation_report
from core.model.registry import input_shape, load_model, model_kind
from core.runtime.cli import seed_everything
from core.runtime.distributed import process_group
from core.runtime.errors import UserError
from core.runtime.fileio import atomic_write_text, writable_dir, writable_file
from core.runtime.outputs import check_outputs, files_under
from core.runtime.plotting import save_gallery


@dataclass(frozen=True)
class InferenceSettings:
    """Every setting of an inference run; ``inference.py``'s flags take their defaults from here."""
    model: str
    checkpoint: str | None = None  # None: runs/<model>/best<suffix>
    split: str | None = None  # None: both splits for galleries, val for evaluation
    num_samples: int | None = None  # images shown (None: 8) or evaluated (None: all)
    dataset: str | None = None  # None: the dataset the checkpoint was trained on
    data_dir: str | None = None
    protocol: str | None = None  # "cs231n" or "karpathy"; None: the protocol the checkpoint was trained with
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    max_length: int = MAX_DECODE_LENGTH  # most words per caption, <END> included
    evaluate: bool = False
    out: str | None = None  # galleries; None: the checkpoint's directory
    output: str | None = None  # JSON of predictions, references, metrics
    coco_results: str | None = None  # the evaluated captions in the COCO results format
    report: str | None = None  # folder of the evaluation's static report page
    compare: str | None = None  # an earlier --output JSON shown beside this evaluation in the report
    images: tuple = ()  # the user's own image files
    vgg16_weights: str | None = None  # --image on VGG16 features: their weights; None: the torch hub cache's file
    images_dir: str | None = None
    fetch_urls: bool = True
    attention_maps: int = 4  # attention models: maps saved of the first shown images of each split; 0: none
    device: str = "auto"
    seed: int = 0
    progress: bool = True


SHOWN_IMAGES = 8  # per split, when --num_samples is not given


def run_inference(settings):
    """Run as ``settings`` say; returns the JSON-able record also written to ``settings.output``.

    Under torchrun (``core.runtime.distributed``), ``--evaluate`` shards the images over the ranks: rank 0 scores,
    writes and returns the record, the other ranks return None.
    """
    device = model_kind(settings.model).device(settings.device)
    with process_group(getattr(device, "type", device)) as group:
        if group.distributed and not settings.evaluate:
            raise group.error("only --evaluate runs on several processes: show galleries or caption --image with "
                              "plain python")
        return _run_inference(settings, group)


@dataclass(frozen=True)
class _Run:
    """What every mode works with: the settings, the model loaded from ``checkpoint`` with its config and record
    (``meta``), the device, the decoding generator and the process group."""
    settings: InferenceSettings
    model: object
    config: object
    meta: dict
    checkpoint: Path
    device: object
    rng: np.random.Generator
    group: object


def _run_inference(settings, group):
    """Check the outputs, load the checkpoint, run the mode the settings ask for, write ``--output``."""
    seed_everything(settings.seed)
    kind = model_kind(settings.model)
    default = default_run_dir(settings.model) / checkpoint_file("best", kind.checkpoint_suffix)
    checkpoint = Path(settings.checkpoint or default)
    if not checkpoint.is_file():
        raise UserError(f"checkpoint {checkpoint} not found: train one with `python training.py --model "
                        f"{settings.model}` or pass --checkpoint")
    for path, flag in ((settings.output, "--output"), (settings.coco_results, "--coco-results")):
        if path:
            writable_file(path, flag)  # before any work, not after it
    if settings.report:
        check_report_dir(settings.report, "--report")
    device = group.place(kind.device(settings.device))
    model, meta = load_model(checkpoint, device=device, expect_type=settings.model)
    _check_outputs(settings, checkpoint, meta)
    config = kind.model_class.Config(**meta["model_config"])
    check_max_length(model, settings.max_length)
    run = _Run(settings, model, config, meta, checkpoint, device, np.random.default_rng(settings.seed), group)
    mode = _own_images if settings.images else _evaluation if settings.evaluate else _galleries
    record = mode(run)
    if record is None:
        return None  # under torchrun, rank 0 reports for the group
    record["checkpoint"], record["model"], record["decoding"] = str(checkpoint), settings.model, _decoding(settings)
    if settings.output:
        atomic_write_text(settings.output, json.dumps(record, indent=1))
    return record


def _check_outputs(settings, checkpoint, meta):
    """UserError when --output or --coco-results would replace the checkpoint, a file of the dataset, an image
    the run captions, or each other."""
    folders = {settings.data_dir, meta.get("data", {}).get("dir"), *(dataset_home(name) for name in DATASETS)}
    reads = [(checkpoint, "the checkpoint"), *((image, "an image") for image in settings.images),
             *((path, "the VGG16 weights") for path in (settings.vgg16_weights,) if path),
             *((path, "a dataset file") for folder in folders if folder for path in files_under(folder))]
    check_outputs([(settings.output, "--output"), (settings.coco_results, "--coco-results")], reads)


def _decoding(settings):
    """The decoding settings a record keeps."""
    return {"beam_size": settings.decode.beam_size, "length_penalty": settings.decode.length_penalty,
            "temperature": settings.decode.temperature, "max_length": settings.max_length}


def _dataset(run):
    """The dataset folder the settings or the checkpoint name, and the protocol its splits follow."""
    trained = run.meta.get("settings", {})
    # "splits": the field's name in checkpoints written before it was called protocol
    protocol = run.settings.protocol or trained.get("protocol", trained.get("splits", PROTOCOLS[0]))
    return _data_dir(run.settings, run.meta, protocol), protocol


def _split_data(run, data_dir, protocol, splits):
    """The splits' data as the model reads them, checked against the checkpoint."""
    data = model_inputs(load_coco_data(data_dir, splits=splits, grid=run.config.reads_grid, protocol=protocol),
                        run.config.reads_grid)
    _check_compatible(run.meta, run.config, data, run.checkpoint)
    return data


def _evaluation(run):
    """--evaluate: caption every image of one split (val by default), score them and, with --report, show them;
    None on ranks other than 0. With the novel split the test split is read too where there is one (its seen pairs'
    recall, for comparison)."""
    settings = run.settings
    split = settings.split or "val"
    data_dir, protocol = _dataset(run)
    splits = (split, HELD_OUT_SPLIT) if split == NOVEL_SPLIT and has_split(data_dir, HELD_OUT_SPLIT) else (split,)
    data = _split_data(run, data_dir, protocol, splits)
    other = None
    if settings.compare:
        images, references = split_images(data, split)
        other = compare_run(settings.compare, split, images[:settings.num_samples], references, data_dir)
    record = _evaluate(run.model, run.config, data, split, settings, run.rng, run.group)
    if record is None:
        return None
    if settings.report:
        runs = [evaluated_run(settings.model, run.checkpoint, _decoding(settings), record)] + ([other] if other else [])
        evaluation_report(settings.report, runs, data, split, settings.images_dir, settings.progress)
    record.pop("attention_weights", None)  # shown in the report; too heavy for --output
    return dict(record, protocol=protocol)


def _galleries(run):
    """Caption a few images of each split (or of --split), print them and save galleries and attention maps."""
    settings = run.settings
    out_dir = writable_dir(settings.out or run.checkpoint.parent, "--out")
    splits = (settings.split,) if settings.split else SPLITS
    data_dir, protocol = _dataset(run)
    data = _split_data(run, data_dir, protocol, splits)
    source = ImageSource(data_dir, images_dir=settings.images_dir, fetch_urls=settings.fetch_urls)
    record = {split: _show_split(run.model, run.config, data, split, settings, out_dir, source, run.rng)
              for split in splits}
    return dict(record, protocol=protocol)


def _data_dir(settings, meta, protocol=PROTOCOLS[0]):
    if settings.data_dir or settings.dataset:
        return resolve_data_dir(settings.dataset or "shapes", settings.data_dir, progress=settings.progress,
                                protocol=protocol)
    trained_on = Path(meta["data"]["dir"])
    if trained_on.is_dir():
        return trained_on
    if meta["data"].get("dataset") in DATASETS:
        return resolve_data_dir(meta["data"]["dataset"], progress=settings.progress)
    raise UserError(f"the dataset this checkpoint was trained on ({trained_on}) is gone: pass --data-dir")


def _check_compatible(meta, config, data, checkpoint):
    """The checkpoint's vocabulary and feature shape must be the dataset's."""
    if list(meta["idx_to_word"]) != list(data["idx_to_word"]):
        raise UserError(f"checkpoint {checkpoint} was trained with another vocabulary ({len(meta['idx_to_word'])} "
                        f"words) than {data['base_dir']} ({len(data['idx_to_word'])} words): pass the --data-dir "
                        "it was trained on")
    split = next(key for key in data if key.endswith("_features"))
    shape, expected = tuple(data[split].shape[1:]), input_shape(config)
    if shape != expected:
        raise UserError(f"checkpoint {checkpoint} expects features of shape {expected} but {data['base_dir']} has "
                        f"{shape}: pass the --data-dir it was trained on")


def _show_split(model, config, data, split, settings, out_dir, source, rng):
    """Caption a few random images of ``split``, print them next to the truth and save a gallery (and, for
    attention models, attention maps of the first ``settings.attention_maps`` of them)."""
    images, references = split_images(data, split)
    count = min(settings.num_samples or SHOWN_IMAGES, len(images))
    chosen = np.sort(rng.choice(images, count, replace=False))
    captions = caption_features(model, data[f"{split}_features"][chosen], settings.max_length, settings.decode,
                                rng=rng)
    items = []
    print(f"--- {split} ---")
    for idx, caption in zip(chosen.tolist(), captions):
        print(f"[{split} {idx}] generated: {caption}\n{'':>{len(split) + len(str(idx)) + 3}} truth:     "
              f"{references[idx][0]}")
        image = source.get(split, idx, str(data[f"{split}_urls"][idx]))
        items.append({"image": image, "generated": caption, "references": references[idx], "label": f"{split} {idx}"})
    path = out_dir / gallery_file(split)
    save_gallery(path, items, title=f"{settings.model}: {split} images")
    print(f"gallery: {path}")
    maps = _attention_maps(model, config, data[f"{split}_features"][chosen], [item["image"] for item in items],
                           [f"{split}_{idx}" for idx in chosen.tolist()], settings, out_dir)
    return {"gallery": str(path), "predictions": {idx: item["generated"] for idx, item in zip(chosen.tolist(), items)},
            "references": {idx: references[idx] for idx in chosen.tolist()}, "attention_maps": maps}


def _attention_maps(model, config, features, images, names, settings, out_dir):
    """Attention maps (PNG paths) of the greedy captions of the first ``settings.attention_maps`` images, for
    models that attend over cells; features of shape (M, R, C), images their pictures (None when missing)."""
    count = min(settings.attention_maps, len(images)) if config.reads_grid else 0
    if not count:
        return []
    max_length = settings.max_length
    ids, weights = greedy_with_attention(model, features[:count], max_length, config.num_cells)
    paths = []
    for name, image, row_ids, row_weights in zip(names, images, ids, weights):
        if image is None:
            continue
        path = out_dir / attention_map_file(name)
        paths.append(str(save_attention_map(image, row_ids, row_weights, model, path,
                                            f"{settings.model}, greedy caption: {name}")))
    if paths:
        print(f"attention maps: {', '.join(paths)}")
    return paths


def _evaluate(model, config, data, split, settings, rng, group):
    result = evaluate_split(model, data, split, settings.max_length, settings.decode, limit=settings.num_samples,
                            rng=rng, attention_cells=config.num_cells if config.reads_grid else None, group=group,
                            keep_attention=bool(settings.report))
    if result is None:
        return None
    print(f"{split}: {result['num_images']} images decoded in {result['decode_seconds']:.1f} s")
    if settings.coco_results:
        urls_path = Path(data["base_dir"]) / urls_file(split)
        results = coco_results(result["predictions"], data[f"{split}_urls"], urls_path)
        atomic_write_text(settings.coco_results, json.dumps(results))
        print(f"COCO results ({len(results)} captions): {settings.coco_results}")
    for key, value in result["metrics"].items():
        print(f"  {key:<20} {100 * value:6.2f}  (x100)")
    for key, value in {**(result["grounding"] or {}), **(result["relation_probe"] or {}),
                       **(result["attention"] or {}), **(result["novel_composition"] or {})}.items():
        print(f"  {key:<20} {value:.4f}" if isinstance(value, float) else f"  {key:<20} {value}")
    return result


def _own_images(run):
    """--image: encode the user's image files with the dataset's encoder, caption them, save a gallery."""
    from core.features.encoders import dataset_encoder, encode_image_files
    from core.features.preprocess import read_image

    model, config, meta, settings, device, rng = run.model, run.config, run.meta, run.settings, run.device, run.rng
    data_dir = _data_dir(settings, meta)
    encoder, pca = dataset_encoder(data_dir, settings.vgg16_weights, device=device)  # before any image is read
    out_dir = writable_dir(settings.out or run.checkpoint.parent, "--out")
    encoded = encode_image_files(settings.images, encoder, pca, device=device, progress=settings.progress,
                                 grid=config.reads_grid)
    features = encoded[1] if config.reads_grid else encoded  # (M, R, C) cells or (M, K) pooled
    if tuple(features.shape[1:]) != input_shape(config):
        raise UserError(f"the encoder of {data_dir} gives features of shape {tuple(features.shape[1:])} but the "
                        f"checkpoint expects {input_shape(config)}: pass the --data-dir it was trained on")
    captions = caption_features(model, features, settings.max_length, settings.decode, rng=rng)
    items = []
    for path, caption in zip(settings.images, captions):
        print(f"{path}: {caption}")
        items.append({"image": read_image(Path(path), 256), "generated": caption, "references": [],
                      "label": Path(path).name})
    gallery = out_dir / gallery_file("images")
    save_gallery(gallery, items, title=f"{settings.model}: your images")
    print(f"gallery: {gallery}")
    maps = _attention_maps(model, config, features, [item["image"] for item in items],
                           [f"image_{k}" for k in range(len(items))], settings, out_dir)
    return {"predictions": dict(zip(map(str, settings.images), captions)), "gallery": str(gallery),
            "attention_maps": maps}
