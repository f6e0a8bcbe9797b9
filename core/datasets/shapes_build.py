"""Building the generated shapes dataset in the CS231n coco_captioning layout (see the README's data layout).

Stages: sample scenes -> render images -> write captions and build the vocabulary -> pretrain the
shapes CNN on the train images -> extract its fc7 features (and, from the same passes, its final conv map as
grid features), fit PCA-512 on train -> measure what the features encode -> write the files. Everything is
written into a temporary folder beside the target and renamed into place at the end, so an interrupted build
leaves no partial dataset. The same config (seed included) gives the same files.

    python -m core.datasets.shapes_build --out DIR --num-train 10000 --num-val 2000 --seed 0
    python -m core.datasets.shapes_build --world hard     # the harder world, into core/datasets/shapes-hard

Both worlds write the same files (the manifest and the scene file name the world), so the same readers load both.

Dimension legend: M images of a split, S image side, N captions of a split (5 per image).
"""
if __name__ == "__main__":  # before the imports, which take seconds: Ctrl-C meanwhile is one line, code 130
    from core.runtime.interrupts import exit_on_interrupt

    exit_on_interrupt()
import json
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import torch

from core.data.layout import (
    CAPTION_LENGTH,
    CAPTIONS_FILE,
    FEATURES_KEY,
    HELD_OUT_PAIRS_KEY,
    MANIFEST_FILE,
    NOVEL_SPLIT,
    SHAPES_IMAGES_FILE,
    SHAPES_SCENES_FILE,
    SPLITS,
    VOCAB_FILE,
    captions_key,
    features_file,
    image_idxs_key,
    images_key,
)
from core.data.loader import save_captions_h5, save_vocab_json
from core.data.vocab import build_vocab, encode_captions
from core.datasets.resolve import SHAPES_DATASETS, dataset_home
from core.datasets.shapes_config import ShapesConfig, stream_rng
from core.datasets.shapes_flags import config_flags, parse_args
from core.features.extract import write_feature_files
from core.features.shapes_cnn import ShapesEncoderConfig, encoder_info, save_shapes_weights
from core.features.shapes_pretrain import HeadTrainingConfig, evaluate_encoder, linear_probe, pretrain_encoder
from core.runtime.errors import UserError
from core.runtime.fileio import build_folder
from core.shapes_world.composition import pair_words
from core.shapes_world.render import render_scenes, sample_scenes
from core.shapes_world.worlds import get_world

BUILDER_VERSION = 7  # 7: the world a dataset is built from (default or hard)


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
        rng = stream_rng(config, f"{split}_captions")  # one stream per split: wordings vary from scene to scene
        texts[split] = [caption for scene in scenes[split]
                        for caption in get_world(config.world).scene_captions(scene, rng, config.image_size)]
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
    held_out, sampler = frozenset(held_out), get_world(config.world).sample_scene
    return {split: sample_scenes(getattr(config, f"num_{split}"), stream_rng(config, f"{split}_scenes"),
                                 config.image_size, sampler=sampler,
                                 **({"required": held_out} if split == NOVEL_SPLIT else {"excluded": held_out}))
            for split in config.splits}


def _render(scenes, config, name, progress):
    """The images of ``scenes`` in the config's world, uint8 of shape (M, S, S, 3)."""
    return render_scenes(scenes, config.image_size, desc=f"render {name}", progress=progress,
                         renderer=get_world(config.world).render_scene)


def _world_files(out, scenes, images, config, held_out):
    """Write the rendered images (gzip h5) and the scene truth (JSON), with the held-out pairs."""
    with h5py.File(out / SHAPES_IMAGES_FILE, "w") as h5:
        for split in config.splits:
            h5.create_dataset(images_key(split), data=images[split], compression="gzip",
                              chunks=(min(256, len(images[split])), *images[split].shape[1:]))
    payload = {"world": config.world, "image_size": config.image_size,
               HELD_OUT_PAIRS_KEY: [list(pair) for pair in held_out],
               **{split: scenes[split] for split in config.splits}}
    (out / SHAPES_SCENES_FILE).write_text(json.dumps(payload) + "\n", encoding="utf-8")


def _pretrain(scenes, images, config, seconds, progress, held_out):
    """Render the extra scenes (if any, without held-out pairs) and pretrain the encoder on them plus the train
    split."""
    extra = sample_scenes(config.extra_train_scenes, stream_rng(config, "extra_scenes"), config.image_size,
                          excluded=frozenset(held_out), sampler=get_world(config.world).sample_scene)
    with _stage(seconds, "render_extra"):
        extra_images = _render(extra, config, "extra", progress)
    encoder_config = ShapesEncoderConfig(config.image_size, config.encoder_widths, config.encoder_pools,
                                         config.feature_dim, world=config.world)
    training = HeadTrainingConfig(epochs=config.encoder_epochs, batch_size=config.encoder_batch_size,
                                  lr=config.encoder_lr, seed=config.seed, progress=progress)
    dense_first = (replace(training, epochs=config.encoder_dense_epochs, lr=config.encoder_dense_lr)
                   if config.encoder_dense_epochs else None)
    with _stage(seconds, "encoder_pretraining"):
        return pretrain_encoder(np.concatenate([images["train"], extra_images]), scenes["train"] + extra,
                                encoder_config, training, dense_first)


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
            "probe_val_accuracy": linear_probe(*args, spec=config.spec),
            "probe_shuffled_val_accuracy": linear_probe(*args, rng=stream_rng(config, "probe_shuffle"),
                                                        spec=config.spec)}


def _build_into(out, config, progress):
    """Run every stage, writing into the (empty, temporary) folder ``out``; returns the manifest."""
    seconds = {}
    held_out = config.held_out_pairs()
    with _stage(seconds, "scenes"):
        scenes = _split_scenes(config, held_out)
    with _stage(seconds, "render"):
        images = {split: _render(scenes[split], config, split, progress) for split in config.splits}
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
    return {"builder_version": BUILDER_VERSION, "world": config.world, "config": config.as_json(), "seconds": seconds,
            "total_seconds": round(sum(seconds.values()), 2), "vocab_size": vocab_size,
            "train_caption_length_histogram": histogram,
            HELD_OUT_PAIRS_KEY: [pair_words(pair, config.spec) for pair in held_out],
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


def world_home(world):
    """The default folder of a world's dataset: that of its name in ``SHAPES_DATASETS``."""
    return dataset_home(next(name for name, of in SHAPES_DATASETS.items() if of == world))


def ensure_shapes_dataset(base_dir=None, config=None, progress=True):
    """The shapes dataset folder, built first if missing or made by another config or builder version.

    Inputs:
    - base_dir: the dataset folder; None uses the config's world's home (``world_home``).
    - config: ShapesConfig; None uses the default world's defaults.
    - progress: print a line before building, and show the stages' progress bars.
    """
    config = config or ShapesConfig()
    base_dir = Path(base_dir) if base_dir is not None else world_home(config.world)
    manifest = read_manifest(base_dir)
    if (manifest and manifest.get("builder_version") == BUILDER_VERSION
            and _built_with(manifest, config)):
        return base_dir
    if progress:
        print(f"building the {config.world} shapes world's dataset in {base_dir} (once; a few minutes on a CPU)",
              flush=True)
    return build_shapes_dataset(base_dir, config, progress)


def _built_with(manifest, config):
    """Whether a manifest records ``config``: options it lacks (added since it was written) at their defaults."""
    recorded = manifest.get("config")
    try:
        return isinstance(recorded, dict) and ShapesConfig.from_dict(recorded) == config
    except (UserError, TypeError, ValueError):
        return False


def main(argv=None):
    args = parse_args(argv)
    config = ShapesConfig.for_world(args.world, **{name: getattr(args, name) for name in config_flags()
                                                   if getattr(args, name) is not None})
    out = args.out if args.out is not None else world_home(config.world)
    built = read_manifest(out) or {}
    if "builder_version" in built and not _built_with(built, config) and not args.overwrite:
        raise UserError(f"--out {out} holds a shapes dataset of another config: pass --overwrite to replace it, "
                        "or another --out")
    out = build_shapes_dataset(out, config, progress=not args.no_progress)
    manifest = read_manifest(out)
    print(json.dumps({key: manifest[key] for key in ("world", "sizes", "seconds", "total_seconds", "vocab_size",
                                                     "encoder_val_accuracy", "probe_val_accuracy",
                                                     "probe_shuffled_val_accuracy")}, indent=2))


if __name__ == "__main__":
    from core.runtime.cli import run
    run(main)
