"""The command line of ``python -m core.datasets.shapes_build``: one flag per ShapesConfig option it exposes, each
unset flag falling back to the chosen --world's default (``core.datasets.shapes_config.WORLD_DEFAULTS``)."""
from pathlib import Path

from core.datasets.shapes_config import WORLD_DEFAULTS, ShapesConfig
from core.runtime.cli import ArgumentParser, add_no_progress, non_negative_int, positive_int, seed
from core.shapes_world.worlds import WORLDS


def _world_default(name):
    """The help text of a default that differs between worlds: "default: N; hard world: M"."""
    default = getattr(ShapesConfig(), name)
    return "; ".join([f"default: {default}"] + [f"{world} world: {values[name]}" for world, values in
                                                 WORLD_DEFAULTS.items() if name in values])


def config_flags():
    """Flag name -> (type, what it sets): each sets the ShapesConfig field of its name; unset, the --world's
    default."""
    return {
        "num_train": (positive_int, "train images"),
        "num_val": (positive_int, "val images"),
        "num_test": (non_negative_int, "images of the held-out test split (0: none)"),
        "num_novel": (non_negative_int, "images of the novel-composition split, each holding a held-out pair "
                                        "(0: none)"),
        "novel_colour_pairs": (non_negative_int, "colour-shape pairs held out of train/val/test"),
        "novel_size_pairs": (non_negative_int, "size-shape pairs held out of train/val/test"),
        "seed": (seed, "seed of every random choice"),
        "image_size": (positive_int, "image side in pixels, a multiple of 8 in 64..96 (hard world: 96..128)"),
        "encoder_epochs": (positive_int, "epochs of encoder pretraining"),
        "encoder_dense_epochs": (non_negative_int, "epochs training the encoder's trunk on its per-cell heads "
                                                   "alone first (0: none)"),
        "extra_train_scenes": (non_negative_int, "extra freshly rendered scenes for encoder pretraining only"),
        "pca_dim": (positive_int, "width of the *_pca.h5 features, at most --num-train"),
        "threads": (positive_int, "torch CPU threads"),
    }


def parse_args(argv=None):
    """The builder's arguments: --world, --out, one per ``config_flags`` entry (None where unset), --overwrite and
    --no-progress."""
    defaults = ShapesConfig()
    parser = ArgumentParser(description="Build the generated shapes captioning dataset (CS231n layout).")
    parser.add_argument("--world", choices=tuple(WORLDS), default=defaults.world,
                        help=f"the generated world: default (up to 3 separate objects) or hard (2-6 overlapping "
                             f"objects, 8 shapes, 12 colours, textures; default: {defaults.world})")
    parser.add_argument("--out", type=Path, default=None,
                        help="dataset folder to write (default: core/datasets/shapes, or core/datasets/shapes-hard "
                             "for --world hard)")
    for name, (kind, what) in config_flags().items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None,
                            help=f"{what} ({_world_default(name)})")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a shapes dataset of another config in --out (default: refused)")
    add_no_progress(parser)
    return parser.parse_args(argv)
