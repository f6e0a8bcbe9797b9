"""Captioning with a trained checkpoint: printed samples, galleries, evaluation, your own images.

``inference.py`` is its CLI; everything a run needs comes from the checkpoint (model type, config,
vocabulary, the dataset it was trained on) unless a flag says otherwise.
"""
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.captioning import caption_features, check_compatible, encode_image_files, split_images
from core.fileio import atomic_write_text
from core.cli import seed_everything
from core.coco_utils import SPLITS, load_coco_data
from core.datasets.resolve import resolve_data_dir
from core.decoding import DecodeConfig
from core.devices import pick_device
from core.errors import UserError
from core.evaluation import evaluate_split
from core.features.preprocess import read_image
from core.data.images import ImageSource
from core.model.registry import checkpoint_suffix, is_torch_model, load_model
from core.plotting import save_gallery


@dataclass
class InferenceSettings:
    model: str
    checkpoint: str | None = None  # default runs/<model>/best<suffix>
    split: str | None = None  # None: both splits for galleries, val for --evaluate
    num_samples: int | None = None  # images shown (default 8) or evaluated (default all)
    dataset: str | None = None  # None: the dataset the checkpoint was trained on
    data_dir: str | None = None
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    max_length: int = 16
    evaluate: bool = False
    out: str | None = None  # galleries; default the checkpoint's directory
    output: str | None = None  # JSON of predictions, references, metrics
    images: list = field(default_factory=list)  # the user's own image files
    images_dir: str | None = None
    fetch_urls: bool = True
    device: str = "auto"
    seed: int = 0


def run_inference(settings):
    """Run as ``settings`` say; returns the JSON-able record also written to ``settings.output``."""
    seed_everything(settings.seed)
    checkpoint = Path(settings.checkpoint or f"runs/{settings.model}/best{checkpoint_suffix(settings.model)}")
    if not checkpoint.is_file():
        raise UserError(f"checkpoint {checkpoint} not found: train one with `python training.py --model "
                        f"{settings.model}` or pass --checkpoint")
    device = pick_device(settings.device) if is_torch_model(settings.model) else None
    model, meta = load_model(checkpoint, device=device, expect_type=settings.model)
    out_dir = Path(settings.out) if settings.out else checkpoint.parent
    rng = np.random.default_rng(settings.seed)
    if settings.images:
        record = _caption_own_images(model, meta, settings, out_dir, device, rng)
    else:
        data_dir = _data_dir(settings, meta)
        data = load_coco_data(data_dir)
        check_compatible(meta, data, checkpoint)
        source = ImageSource(data_dir, images_dir=settings.images_dir, fetch_urls=settings.fetch_urls)
        if settings.evaluate:
            record = _evaluate(model, data, settings, out_dir, source, rng)
        else:
            record = {split: _show_split(model, data, split, settings, out_dir, source, rng)
                      for split in ([settings.split] if settings.split else SPLITS)}
    record["checkpoint"] = str(checkpoint)
    record["decoding"] = {"beam_size": settings.decode.beam_size, "length_penalty": settings.decode.length_penalty,
                          "temperature": settings.decode.temperature, "max_length": settings.max_length}
    if settings.output:
        atomic_write_text(settings.output, json.dumps(record, indent=1))
    return record


def _data_dir(settings, meta):
    if settings.data_dir or settings.dataset:
        return resolve_data_dir(settings.dataset or "shapes", settings.data_dir)
    trained_on = Path(meta["data"]["dir"])
    if trained_on.is_dir():
        return trained_on
    if meta["data"].get("dataset") in ("shapes", "coco"):
        return resolve_data_dir(meta["data"]["dataset"])
    raise UserError(f"the dataset this checkpoint was trained on ({trained_on}) is gone: pass --data-dir")


def _show_split(model, data, split, settings, out_dir, source, rng):
    """Caption a few random images of ``split``, print them next to the truth and save a gallery."""
    images, references = split_images(data, split)
    count = min(settings.num_samples or 8, len(images))
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
    path = out_dir / f"gallery_{split}.png"
    save_gallery(path, items, title=f"{model_name(model)}: {split} images")
    print(f"gallery: {path}")
    return {"gallery": str(path), "predictions": {idx: item["generated"] for idx, item in zip(chosen.tolist(), items)},
            "references": {idx: references[idx] for idx in chosen.tolist()}}


def _evaluate(model, data, settings, out_dir, source, rng):
    split = settings.split or "val"
    result = evaluate_split(model, data, split, settings.max_length, settings.decode, limit=settings.num_samples,
                            rng=rng)
    print(f"{split}: {result['num_images']} images decoded in {result['decode_seconds']:.1f} s")
    for key, value in result["metrics"].items():
        print(f"  {key:<20} {100 * value:6.2f}  (x100)")
    for key, value in (result["grounding"] or {}).items():
        print(f"  {key:<20} {value:.4f}" if isinstance(value, float) else f"  {key:<20} {value}")
    return result


def _caption_own_images(model, meta, settings, out_dir, device, rng):
    data_dir = _data_dir(settings, meta)
    features = encode_image_files(settings.images, data_dir, device=device)  # (M, 512)
    captions = caption_features(model, features, settings.max_length, settings.decode, rng=rng)
    items = []
    for path, caption in zip(settings.images, captions):
        print(f"{path}: {caption}")
        items.append({"image": read_image(Path(path), 256), "generated": caption, "references": [],
                      "label": Path(path).name})
    gallery = out_dir / "gallery_images.png"
    save_gallery(gallery, items, title=f"{model_name(model)}: your images")
    print(f"gallery: {gallery}")
    return {"predictions": dict(zip(map(str, settings.images), captions)), "gallery": str(gallery)}


def model_name(model):
    return getattr(model, "cell_type", None) or "transformer"
