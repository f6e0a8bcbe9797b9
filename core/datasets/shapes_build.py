"""Building the generated shapes dataset in the CS231n coco_captioning layout (see the README's data layout).

Stages: sample scenes -> render images -> write captions and build the vocabulary -> pretrain the
shapes CNN on the train images -> extract its fc7 features (and, from the same passes, its final conv map as
grid features), fit PCA-512 on train -> measure what the features encode -> write the files. Everything is
written into a temporary folder beside the target and renamed into place at the end, so an interrupted build
leaves no partial dataset. The same config (seed included) gives the same files.

    python -m core.datasets.shapes_build --out DIR --num-train 10000 --num-val 2000 --seed 0

Dimension legend: M images of a split, S image side, N captions of a split (5 per image).
"""
if __name__ == "__main__":  # before the imports, which take seconds: Ctrl-C meanwhile is one line, code 130
    from core.runtime.interrupts import exit_on_interrupt

    exit_on_interrupt()
import json
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import h5py
import numpy as np
import torch

from core.data.layout import (
    CAPTION_LENGTH,
    CAPTIONS_FILE,
    FEATURES_KEY,
    HELD_OUT_PAIRS_KEY,
    HELD_OUT_SPLIT,
    MANIFEST_FILE,
    NOVEL_SPLIT,
    PCA_DIM,
    SHAPES_IMAGES_FILE,
    SHAPES_SCENES_FILE,
    SPLITS,
    VOCAB_FILE,
    captions_key,
    default_data_dir,
    features_file,
    image_idxs_key,
    images_key,
)
from core.data.loader import save_captions_h5, save_vocab_json
from core.data.vocab import build_vocab, encode_captions
from core.features.extract import write_feature_files
from core.features.shapes_cnn import ShapesEncoderConfig, encoder_info, save_shapes_weights
from core.features.shapes_pretrain import HeadTrainingConfig, evaluate_encoder, linear_probe, pretrain_encoder
from core.runtime.errors import UserError
from core.runtime.fileio import build_folder
from core.shapes_world.captions import scene_captions
from core.shapes_world.composition import MAX_HELD_OUT, choose_held_out_pairs, pair_words
from core.shapes_world.render import render_scenes, sample_scenes

BUILDER_VERSION = 6  # 6: held-out attribute-shape pairs and the novel split
# Independent random streams per purpose, so that e.g. more val images leave the train split unchanged.
_STREAMS = {"train_scenes": 0, "val_scenes": 1, "train_captions": 2, "val_captions": 3, "extra_scenes": 4,
            "probe_shuffle": 5, "test_scenes": 6, "test_captions": 7, "novel_scenes": 8, "novel_captions": 9,
            "held_out_pairs": 10}


@dataclass(frozen=True)
class ShapesConfig:
    """Everything that determines a shapes dataset; the manifest records it, and a mismatch rebuilds."""
    num_train: int = 10000
    num_val: int = 2000
    num_test: int = 2000           # the held-out split: no training or model selection reads it
    num_novel: int = 1000          # the novel-composition split: scenes holding a held-out pair
    novel_colour_pairs: int = 6    # colour-shape pairs held out of train, val and test (and encoder pretraining)
    novel_size_pairs: int = 2      # size-shape pairs held out likewise
    image_size: int = 64
    seed: int = 0
    extra_train_scenes: int = 0    # freshly rendered scenes used only to pretrain the encoder
    encoder_epochs: int = 4
    encoder_batch_size: int = 64
    encoder_lr: float = 3e-3
    encoder_widths: tuple = (32, 64, 64, 64)
    encoder_pools: tuple = (True, False, True, False)
    feature_dim: int = 1024
    pca_dim: int = PCA_DIM
    probe_epochs: int = 20
    threads: int = 2               # torch threads, fixed so that a build is reproducible

    def __post_init__(self):
        if not 64 <= self.image_size <= 96 or self.image_size % 8:
            raise UserError(f"image size {self.image_size} unsupported: use a multiple of 8 in 64..96")
        if self.num_test < 0 or self.extra_train_scenes < 0:
            raise UserError(f"--num-test {self.num_test} and --extra-train-scenes {self.extra_train_scenes}: give 0 "
                            "or more")
        if not 0 <= self.seed < 2 ** 32:
            raise UserError(f"--seed {self.seed}: give a seed in 0..{2 ** 32 - 1}")
        if self.num_novel < 0:
            raise UserError(f"--num-novel {self.num_novel}: give 0 (no novel split) or more")
        for kind, count in (("colour", self.novel_colour_pairs), ("size", self.novel_size_pairs)):
            if not 0 <= count <= MAX_HELD_OUT[kind]:
                raise UserError(f"--novel-{kind}-pairs {count}: give 0..{MAX_HELD_OUT[kind]}, so that every shape "
                                f"and {kind} is still seen in training with other partners")
        if self.num_novel and not self.novel_colour_pairs + self.novel_size_pairs:
            raise UserError(f"--num-novel {self.num_novel} needs held-out pairs: give --novel-colour-pairs or "
                            "--novel-size-pairs above 0, or --num-novel 0")
        if min(self.num_train, self.num_val) < 1 or self.num_train < self.pca_dim:
            raise UserError(f"need num_train >= pca_dim ({self.pca_dim}) and num_val >= 1, got "
                            f"{self.num_train} train / {self.num_val} val images")

    @property
    def splits(self):
        """The splits a build writes: train, val, the held-out test split unless num_test is 0 and the novel split
        unless num_novel is 0."""
        return (*SPLITS, *((HELD_OUT_SPLIT,) if self.num_test else ()), *((NOVEL_SPLIT,) if self.num_novel else ()))

    def held_out_pairs(self):
        """The attribute-shape pairs no train, val or test scene holds: seeded, a stream of their own."""
        return choose_held_out_pairs(_rng(self, "held_out_pairs"), self.novel_colour_pairs, self.novel_size_pairs)

    @classmethod
    def from_dict(cls, values):
        """Build from a dict (e.g. a manifest's config); UserError naming any unknown option."""
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise UserError(f"unknown shapes dataset options {sorted(unknown)}: valid ones are "
                            f"{[f.name for f in fields(cls)]}")
        values = dict(values)
        for key in ("encoder_widths", "encoder_pools"):
            values[key] = tuple(values.get(key, getattr(cls, key)))
        return cls(**values)

    def as_json(self):
        """The config as a JSON-ready dict (tuples become lists, as they read back from JSON)."""
        return json.loads(json.dumps(asdict(self)))


def _rng(config, stream):
    return np.random.default_rng([config.seed, _STREAMS[stream]])


@contextmanager
def _stage(seconds, name):
    """Time a build stage into ``seconds[name]``."""
    start = time.perf_counter()
    yield
    seconds[name] = round(time.perf_counter() - start, 2)


@contextmanager
def _torch_threads(threads):
    """Run with ``threads`` torch threads, restoring the caller's setting afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _caption_files(out, scenes, config):
    """Write the captions h5 and vocabulary; returns (vocabulary size, train caption-length histogram)."""
    texts = {}
    for split in config.splits:
        rng = _rng(config, f"{split}_captions")  # one stream per split: wordings vary from scene to scene
        texts[split] = [caption for scene in scenes[split] for caption in scene_captions(scene, rng, config.image_size)]
    word_to_idx, idx_to_word = build_vocab(texts["train"])
    arrays = {}
    for split in config.splits:
        arrays[captions_key(split)] = encode_captions(texts[split], word_to_idx, CAPTION_LENGTH)
        per_image = len(texts[split]) // len(scenes[split])
        arrays[image_idxs_key(split)] = np.repeat(np.arange(len(scenes[split]), dtype=np.int32), per_image)
    save_captions_h5(out / CAPTIONS_FILE, arrays)
    save_vocab_json(out / VOCAB_FILE, word_to_idx, idx_to_word)
    lengths = np.bincount([len(text.split()) for text in texts["train"]])
    return len(idx_to_word), {int(n): int(c) for n, c in enumerate(lengths) if c}


def _split_scenes(config, held_out):
    """Each split's scenes from a stream of its own: no held-out pair in train, val and test; at least one in each
    novel scene."""
    held_out = frozenset(held_out)
    return {split: sample_scenes(getattr(config, f"num_{split}"), _rng(config, f"{split}_scenes"), config.image_size,
                                 **({"required": held_out} if split == NOVEL_SPLIT else {"excluded": held_out}))
            for split in config.splits}


def _world_files(out, scenes, images, config, held_out):
    """Write the rendered images (gzip h5) and the scene truth (JSON), with the held-out pairs."""
    with h5py.File(out / SHAPES_IMAGES_FILE, "w") as h5:
        for split in config.splits:
            h5.create_dataset(images_key(split), data=images[split], compression="gzip",
                              chunks=(min(256, len(images[split])), *images[split].shape[1:]))
    payload = {"image_size": config.image_size, HELD_OUT_PAIRS_KEY: [list(pair) for pair in held_out],
               **{split: scenes[split] for split in config.splits}}
    (out / SHAPES_SCENES_FILE).write_text(json.dumps(payload) + "\n", encoding="utf-8")


def _pretrain(scenes, images, config, seconds, progress, held_out):
    """Render the extra scenes (if any, without held-out pairs) and pretrain the encoder on them plus the train
    split."""
    extra = sample_scenes(config.extra_train_scenes, _rng(config, "extra_scenes"), config.image_size,
                          excluded=frozenset(held_out))
    with _stage(seconds, "render_extra"):
        extra_images = render_scenes(extra, config.image_size, desc="render extra", progress=progress)
    encoder_config = ShapesEncoderConfig(config.image_size, config.encoder_widths, config.encoder_pools,
                                         config.feature_dim)
    training = HeadTrainingConfig(epochs=config.encoder_epochs, batch_size=config.encoder_batch_size,
                                  lr=config.encoder_lr, seed=config.seed, progress=progress)
    with _stage(seconds, "encoder_pretraining"):
        return pretrain_encoder(np.concatenate([images["train"], extra_images]), scenes["train"] + extra,
                                encoder_config, training)


def _measure(out, encoder, scenes, images, config, progress):
    """Encoder head accuracy on val, and linear probes from the PCA features (true and shuffled rows)."""
    features = {}
    for split in SPLITS:
        with h5py.File(out / features_file(split, True), "r") as h5:
            features[split] = h5[FEATURES_KEY][()]
    probe = HeadTrainingConfig(epochs=config.probe_epochs, batch_size=256, lr=1e-2, seed=config.seed,
                               progress=progress)
    args = (features["train"], scenes["train"], features["val"], scenes["val"], config.image_size, probe)
    return {"encoder_val_accuracy": evaluate_encoder(encoder, images["val"], scenes["val"]),
            "probe_val_accuracy": linear_probe(*args),
            "probe_shuffled_val_accuracy": linear_probe(*args, rng=_rng(config, "probe_shuffle"))}


def _build_into(out, config, progress):
    """Run every stage, writing into the (empty, temporary) folder ``out``; returns the manifest."""
    seconds = {}
    held_out = config.held_out_pairs()
    with _stage(seconds, "scenes"):
        scenes = _split_scenes(config, held_out)
    with _stage(seconds, "render"):
        images = {split: render_scenes(scenes[split], config.image_size, desc=f"render {split}", progress=progress)
                  for split in config.splits}
    with _stage(seconds, "captions"):
        vocab_size, histogram = _caption_files(out, scenes, config)
    encoder = _pretrain(scenes, images, config, seconds, progress, held_out)
    with _stage(seconds, "features_pca"):
        save_shapes_weights(out, encoder)
        urls = {split: [f"shapes://{split}/{i}" for i in range(len(scenes[split]))] for split in config.splits}
        write_feature_files(out, encoder, {split: (images[split], urls[split]) for split in config.splits},
                            encoder_info(encoder), pca_dim=config.pca_dim, batch_size=256, device="cpu",
                            progress=progress, grid=True)
    with _stage(seconds, "measure"):
        measured = _measure(out, encoder, scenes, images, config, progress)
    with _stage(seconds, "write_world"):
        _world_files(out, scenes, images, config, held_out)
    return {"builder_version": BUILDER_VERSION, "config": config.as_json(), "seconds": seconds,
            "total_seconds": round(sum(seconds.values()), 2), "vocab_size": vocab_size,
            "train_caption_length_histogram": histogram, HELD_OUT_PAIRS_KEY: [pair_words(pair) for pair in held_out],
            "sizes": {split: {"images": len(scenes[split]), "captions": 5 * len(scenes[split])}
                      for split in config.splits},
            **measured}


def build_shapes_dataset(out_dir, config=None, progress=True):
    """Build the shapes dataset into ``out_dir`` (replacing an older shapes dataset there) and return it.

    A folder that exists and is neither empty nor a shapes dataset is refused with a UserError.
    """
    config = config or ShapesConfig()
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and "builder_version" not in
                                              (read_manifest(out) or {}))):
        raise UserError(f"--out {out} exists and is not a shapes dataset: choose a new or empty folder")

    def write(folder):
        with _torch_threads(config.threads):
            manifest = _build_into(folder, config, progress)
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

    return build_folder(out, write)


def read_manifest(base_dir):
    """The manifest dict of a built dataset, or None when missing or unreadable."""
    try:
        return json.loads((Path(base_dir) / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def ensure_shapes_dataset(base_dir=None, config=None, progress=True):
    """The shapes dataset folder, built first if missing or made by another config or builder version.

    Inputs:
    - base_dir: the dataset folder; None uses ``default_data_dir("shapes")``.
    - config: ShapesConfig; None uses the defaults.
    - progress: print a line before building, and show the stages' progress bars.
    """
    base_dir = Path(base_dir) if base_dir is not None else default_data_dir("shapes")
    config = config or ShapesConfig()
    manifest = read_manifest(base_dir)
    if (manifest and manifest.get("builder_version") == BUILDER_VERSION
            and manifest.get("config") == config.as_json()):
        return base_dir
    if progress:
        print(f"building the shapes dataset in {base_dir} (once; a few minutes on a CPU)", flush=True)
    return build_shapes_dataset(base_dir, config, progress)


def _parse_args(argv=None):
    from core.runtime.cli import ArgumentParser, non_negative_int, positive_int, seed
    defaults = ShapesConfig()
    parser = ArgumentParser(description="Build the generated shapes captioning dataset (CS231n layout).")
    parser.add_argument("--out", type=Path, default=default_data_dir("shapes"),
                        help="dataset folder to write (default: core/datasets/shapes)")
    parser.add_argument("--num-train", type=positive_int, default=defaults.num_train, help="train images")
    parser.add_argument("--num-val", type=positive_int, default=defaults.num_val, help="val images")
    parser.add_argument("--num-test", type=non_negative_int, default=defaults.num_test,
                        help=f"images of the held-out test split (0: none; default {defaults.num_test})")
    parser.add_argument("--num-novel", type=non_negative_int, default=defaults.num_novel,
                        help=f"images of the novel-composition split, each holding a held-out pair (0: none; default "
                             f"{defaults.num_novel})")
    parser.add_argument("--novel-colour-pairs", type=non_negative_int, default=defaults.novel_colour_pairs,
                        help=f"colour-shape pairs held out of train/val/test (default {defaults.novel_colour_pairs})")
    parser.add_argument("--novel-size-pairs", type=non_negative_int, default=defaults.novel_size_pairs,
                        help=f"size-shape pairs held out of train/val/test (default {defaults.novel_size_pairs})")
    parser.add_argument("--seed", type=seed, default=defaults.seed,
                        help=f"seed of every random choice (default {defaults.seed})")
    parser.add_argument("--image-size", type=positive_int, default=defaults.image_size,
                        help="image side in pixels, a multiple of 8 in 64..96")
    parser.add_argument("--encoder-epochs", type=positive_int, default=defaults.encoder_epochs,
                        help="epochs of encoder pretraining")
    parser.add_argument("--extra-train-scenes", type=non_negative_int, default=defaults.extra_train_scenes,
                        help="extra freshly rendered scenes for encoder pretraining only")
    parser.add_argument("--pca-dim", type=positive_int, default=defaults.pca_dim,
                        help="width of the *_pca.h5 features (at most --num-train)")
    parser.add_argument("--threads", type=positive_int, default=defaults.threads, help="torch CPU threads")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a shapes dataset of another config in --out (default: refused)")
    return parser.parse_args(argv)


def main(argv=None):
    args = _parse_args(argv)
    config = ShapesConfig(num_train=args.num_train, num_val=args.num_val, num_test=args.num_test,
                          num_novel=args.num_novel, novel_colour_pairs=args.novel_colour_pairs,
                          novel_size_pairs=args.novel_size_pairs, image_size=args.image_size,
                          seed=args.seed, extra_train_scenes=args.extra_train_scenes,
                          encoder_epochs=args.encoder_epochs, pca_dim=args.pca_dim, threads=args.threads)
    built = read_manifest(args.out) or {}
    if "builder_version" in built and built.get("config") != config.as_json() and not args.overwrite:
        raise UserError(f"--out {args.out} holds a shapes dataset of another config: pass --overwrite to replace it, "
                        "or another --out")
    out = build_shapes_dataset(args.out, config)
    manifest = read_manifest(out)
    print(json.dumps({key: manifest[key] for key in ("seconds", "total_seconds", "vocab_size",
                                                     "encoder_val_accuracy", "probe_val_accuracy",
                                                     "probe_shuffled_val_accuracy")}, indent=2))


if __name__ == "__main__":
    from core.runtime.cli import run
    run(main)
