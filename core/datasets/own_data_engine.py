"""A dataset folder from your own images and caption files, as ``features_extraction.py --captions`` asks: the
settings of a build, the build on one process with the VGG16 encoder, and the summary of what it made.

The build itself (splits, vocabulary, features, the folder) is ``core.datasets.own_data``.
"""
from dataclasses import dataclass, field
from pathlib import Path

from core.data.layout import UNK
from core.datasets.own_data import MAX_WORDS, OwnDataConfig, build_own_dataset, parse_source
from core.features.encoders import vgg16_encoder
from core.features.extract import resolve_device
from core.runtime.distributed import process_group
from core.runtime.fileio import check_writable_dir


@dataclass(frozen=True)
class OwnDataSettings:
    """Every setting of a build from your own data; ``features_extraction.py --captions`` makes one."""
    captions: tuple  # "[SPLIT=]FILE" caption files, as --captions gives them
    images_dir: Path  # the folder the caption files' image paths are relative to
    out: Path  # the dataset folder to build
    config: OwnDataConfig = field(default_factory=OwnDataConfig)
    vgg16_weights: Path | None = None  # None: the torch hub cache, downloaded there when missing
    device: str = "auto"
    progress: bool = True


def run_own_data(settings):
    """Build the dataset folder ``settings.out``; returns its manifest. One process only: under torchrun it refuses."""
    device = resolve_device(settings.device)  # a bad --device fails before any slow step
    with process_group(device.type) as group:
        if group.distributed:
            raise group.error("--captions builds a dataset on one process: run it with plain python")
        check_writable_dir(settings.out, "--out")
        sources = [parse_source(text) for text in settings.captions]
        return build_own_dataset(settings.out, sources, settings.images_dir,
                                 lambda: vgg16_encoder(settings.vgg16_weights, device), settings.config,
                                 device=device, progress=settings.progress)


def build_summary(manifest):
    """Two lines on a build: split sizes, vocabulary and cleaning counts; the training caption lengths."""
    sizes = ", ".join(f"{split} {size['images']} images / {size['captions']} captions"
                      for split, size in manifest["sizes"].items())
    lengths = ", ".join(f"{n}: {c}" for n, c in manifest["train_caption_length_histogram"].items())
    return (f"{sizes}; vocabulary {manifest['vocab_size']} words, {100 * manifest['train_unk_share']:.2f}% of "
            f"training tokens {UNK}; {manifest.get('truncated', 0)} captions cut to {MAX_WORDS} words, "
            f"{manifest.get('empty_after_cleaning', 0)} empty ones dropped, {len(manifest['skipped_images'])} images "
            f"skipped\ntraining caption lengths (words: captions): {lengths}")
