"""Your own data: images plus COCO, Karpathy or CSV caption files -> a dataset folder in the CS231n layout.

    captions files -> records (core.datasets.caption_sources) -> splits, tokens, vocabulary (train only)
                   -> images resolved and checked -> features + PCA (core.features.extract) -> the folder

The folder is built in a staging folder beside the target and appears by one rename, so an interrupted build
leaves the previous folder (or nothing). ``features_extraction.py --captions`` is the command.

Dimension legend: N captions of a split, M images of a split, T ids per caption row.
"""
import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from core.data.layout import (
    CAPTION_LENGTH,
    CAPTIONS_FILE,
    HELD_OUT_SPLIT,
    MANIFEST_FILE,
    PCA_DIM,
    SPLITS,
    VOCAB_FILE,
    captions_key,
    image_idxs_key,
)
from core.data.loader import save_captions_h5, save_vocab_json
from core.data.vocab import build_vocab, encode_captions
from core.datasets.caption_sources import read_caption_file, tokenize_caption
from core.features.extract import BATCH_SIZE, write_feature_files
from core.features.preprocess import ImageFolder
from core.runtime.errors import UserError
from core.runtime.fileio import build_folder

BUILDER = "own_data"
MAX_WORDS = CAPTION_LENGTH - 2  # what a caption row holds between <START> and <END>
SHOWN_MISSING = 5  # missing images named in the error; the rest are counted


@dataclass(frozen=True)
class OwnDataConfig:
    """How captions and images become a dataset; ``features_extraction.py``'s flags default to these."""
    min_word_count: int = 5  # words seen fewer times in the training captions become <UNK>
    restval: str = "train"  # Karpathy's restval split: "train" trains on it, "skip" leaves it out
    val_fraction: float = 0.1  # share of the images drawn for val (by seed, at least one) when no split is named
    seed: int = 0
    skip_missing: bool = False  # leave out images that are missing or unreadable instead of refusing
    pca_dim: int = PCA_DIM
    batch_size: int = BATCH_SIZE
    grid: bool = True  # also write the grid features (VGG16 conv5_3), which attention decoders read

    def __post_init__(self):
        if self.min_word_count < 1:
            raise UserError(f"--min-word-count {self.min_word_count}: give 1 or more")
        if self.restval not in ("train", "skip"):
            raise UserError(f"--restval {self.restval!r}: use train or skip")
        if not 0 < self.val_fraction < 1:
            raise UserError(f"--val-fraction {self.val_fraction}: give a fraction strictly between 0 and 1")


LEFT_OUT = "-"  # the split of images the build leaves out (Karpathy's restval with --restval skip)


def split_captions(sources, config):
    """{split: [(image, words)]} from ``sources`` (a list of (path, split or None)), and the preprocessing counts.

    Karpathy's restval joins train (or is left out), images without a split are drawn for val by seed, captions
    empty after cleaning are dropped, and captions over MAX_WORDS words are cut (both counted).
    """
    records = [record for path, split in sources for record in read_caption_file(path, split)[1]]
    image_split = _image_splits(records, config)
    captions = {split: [] for split in (*SPLITS, HELD_OUT_SPLIT)}
    counts = Counter()
    for record in records:
        split = image_split[record.image]
        words = list(record.tokens) if record.tokens is not None else tokenize_caption(record.caption)
        if split == LEFT_OUT or not words:
            counts["left_out" if split == LEFT_OUT else "empty_after_cleaning"] += 1
            continue
        counts["truncated"] += len(words) > MAX_WORDS
        captions[split].append((record.image, words[:MAX_WORDS]))
    for split in SPLITS:
        if not captions[split]:
            raise UserError(f"the caption files give the {split} split no images: name some {split} images in them, "
                            "or leave the splits out to draw them by --seed")
    return {split: pairs for split, pairs in captions.items() if pairs}, dict(counts)


def _image_splits(records, config):
    """image -> its split, refusing an image the files put in two splits; unnamed splits drawn by seed."""
    named = {}
    for record in records:
        split = record.split
        if split == "restval":
            split = "train" if config.restval == "train" else LEFT_OUT
        if named.get(record.image, split) != split:
            raise UserError(f"image {record.image} is in split {named[record.image]} and in {split}: give each image "
                            "one split in the caption files")
        named[record.image] = split
    unsplit = sorted(image for image, split in named.items() if split is None)
    # A fixed count, not a coin per image: a small folder still gets a val image and keeps a train one.
    num_val = min(max(1, round(config.val_fraction * len(unsplit))), len(unsplit) - 1) if len(unsplit) > 1 else 0
    val = set(np.random.default_rng(config.seed).permutation(len(unsplit))[:num_val].tolist())
    named.update({image: "val" if i in val else "train" for i, image in enumerate(unsplit)})
    return named


def resolve_images(captions, images_dir, skip_missing):
    """({split: [(image, words)]} keeping the images found (``find_images``) and readable as images, the list of
    those that are not, {image: its file}). Without ``skip_missing`` any such image is a UserError, before any feature
    is computed, naming the first few."""
    from PIL import Image

    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise UserError(f"--images-dir {images_dir}: folder not found")
    files = find_images({image for pairs in captions.values() for image, _ in pairs}, images_dir)
    bad = []
    for image, path in sorted(files.items(), key=lambda item: item[0]):
        try:
            with Image.open(path):  # reads the header only: a cheap check of every file before the long work
                pass
        except (OSError, ValueError, SyntaxError):
            bad.append(image)
    if bad and not skip_missing:
        shown = ", ".join(bad[:SHOWN_MISSING]) + (f" and {len(bad) - SHOWN_MISSING} more" if len(bad) > SHOWN_MISSING
                                                   else "")
        raise UserError(f"{len(bad)} image(s) missing or unreadable under {images_dir} (looked for by their path, then "
                        f"by file name there and in its folders): {shown}; add them, or pass --skip-missing to leave "
                        "them out")
    missing = set(bad)
    kept = {split: [(image, words) for image, words in pairs if image not in missing]
            for split, pairs in captions.items()}
    for split in SPLITS:
        if not kept[split]:
            raise UserError(f"no {split} image is left under {images_dir} once the missing ones are skipped")
    return kept, bad, files


def find_images(images, images_dir):
    """{image: its file} for every image a caption file names: ``images_dir / image`` when that is a file, else the
    file of the same name in ``images_dir`` or in one of its folders (COCO's annotations name an image by file name
    alone, and COCO ships them in train2014/ and val2014/ under one root). An image found nowhere maps to the path
    it was looked for at; one whose name is in two of the folders is a UserError."""
    found, by_name = {}, None
    for image in sorted(images):
        path = images_dir / image
        if not path.is_file():
            by_name = _files_by_name(images_dir) if by_name is None else by_name  # listed once, when first needed
            places = by_name.get(Path(image).name, [path])
            if len(places) > 1:
                raise UserError(f"image {image} is in two folders of --images-dir {images_dir}: {places[0].parent} "
                                f"and {places[1].parent}; name it by its path in the caption file, or keep one")
            path = places[0]
        found[image] = path
    return found


def _files_by_name(images_dir):
    """{file name: [its files]} of the files in ``images_dir`` and its folders, one level down."""
    by_name = {}
    folders = [images_dir, *sorted(p for p in images_dir.iterdir() if p.is_dir())]
    for path in (p for folder in folders for p in sorted(folder.iterdir()) if p.is_file()):
        by_name.setdefault(path.name, []).append(path)
    return by_name


def encode_splits(captions, min_word_count):
    """The captions file's arrays, the vocabulary (from train only) and its figures.

    Returns (arrays {captions_key: (N, T) int32, image_idxs_key: (N,) int32}, images {split: [image]},
    word_to_idx, idx_to_word, figures).
    """
    word_to_idx, idx_to_word = build_vocab([" ".join(words) for _, words in captions["train"]], min_word_count)
    arrays, images = {}, {}
    for split, pairs in captions.items():
        images[split] = sorted({image for image, _ in pairs})
        row = {image: i for i, image in enumerate(images[split])}
        arrays[captions_key(split)] = encode_captions([" ".join(words) for _, words in pairs], word_to_idx)
        arrays[image_idxs_key(split)] = np.array([row[image] for image, _ in pairs], dtype=np.int32)
    train_words = [word for _, words in captions["train"] for word in words]
    lengths = Counter(len(words) for _, words in captions["train"])
    figures = {"vocab_size": len(idx_to_word),
               "train_unk_share": sum(word not in word_to_idx for word in train_words) / max(1, len(train_words)),
               "train_caption_length_histogram": {int(n): lengths[n] for n in sorted(lengths)},
               "sizes": {split: {"images": len(images[split]), "captions": len(pairs)}
                         for split, pairs in captions.items()}}
    return arrays, images, word_to_idx, idx_to_word, figures


def parse_source(text):
    """(path, split or None) of a ``--captions [SPLIT=]FILE`` argument."""
    split, sep, path = text.partition("=")
    if sep and split in (*SPLITS, HELD_OUT_SPLIT):
        return Path(path), split
    return Path(text), None


def build_own_dataset(out_dir, sources, images_dir, make_encoder, config, device=None, progress=True):
    """Build the dataset folder ``out_dir`` from caption files and images; returns its manifest.

    Inputs:
    - sources: list of (caption file path, split or None), as ``--captions [SPLIT=]FILE`` gives them.
    - images_dir: the folder the caption files' image paths are relative to.
    - make_encoder: () -> (encoder, its record for ``encoder.json``), called once every check has passed (it may
      load or download weights).
    - config: an OwnDataConfig.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and _builder(out) != BUILDER)):
        raise UserError(f"--out {out} exists and is not a dataset this command built: choose a new or empty folder")
    captions, counts = split_captions(sources, config)
    captions, skipped, files = resolve_images(captions, images_dir, config.skip_missing)
    if len({image for image, _ in captions["train"]}) <= config.pca_dim:
        raise UserError(f"--pca-dim {config.pca_dim} needs more train images than that, got "
                        f"{len({image for image, _ in captions['train']})}: lower --pca-dim or add images")
    arrays, images, word_to_idx, idx_to_word, figures = encode_splits(captions, config.min_word_count)
    encoder, encoder_info = make_encoder()
    manifest = {"builder": BUILDER, "config": asdict(config), "sources": [[str(p), s] for p, s in sources],
                "images_dir": str(Path(images_dir).resolve()), "encoder": encoder_info, "skipped_images": skipped,
                **counts, **figures}
    splits = {split: (ImageFolder([files[image] for image in names]), names)
              for split, names in images.items()}

    def write(folder):
        save_captions_h5(folder / CAPTIONS_FILE, arrays)
        save_vocab_json(folder / VOCAB_FILE, word_to_idx, idx_to_word)
        write_feature_files(folder, encoder, splits, encoder_info, config.pca_dim, config.batch_size, device,
                            progress=progress, grid=config.grid)
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")

    build_folder(out, write)
    return manifest


def _builder(folder):
    try:
        return json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8")).get("builder")
    except (OSError, ValueError, AttributeError):
        return None
