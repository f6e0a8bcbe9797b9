"""What determines a shapes dataset: ``ShapesConfig`` (recorded in its manifest; a mismatch rebuilds), with the
defaults of each generated world, and the build's independent random streams."""
import json
from dataclasses import asdict, dataclass, fields

import numpy as np

from core.data.layout import HELD_OUT_SPLIT, NOVEL_SPLIT, PCA_DIM, SPLITS
from core.runtime.errors import UserError
from core.shapes_world.composition import choose_held_out_pairs, max_held_out
from core.shapes_world.worlds import get_world

# Independent random streams per purpose, so that e.g. more val images leave the train split unchanged.
_STREAMS = {"train_scenes": 0, "val_scenes": 1, "train_captions": 2, "val_captions": 3, "extra_scenes": 4,
            "probe_shuffle": 5, "test_scenes": 6, "test_captions": 7, "novel_scenes": 8, "novel_captions": 9,
            "held_out_pairs": 10}


# What a world's build changes of the defaults below: the harder world's canvas is at least 96 px (2.25 times the
# pixels of the default 64), so it has fewer images, to keep a build's work near the default world's; its crowded
# scenes need the encoder's trunk trained on its per-cell heads first (``pretrain_encoder``'s ``dense_first``).
WORLD_DEFAULTS = {"default": {}, "hard": {"image_size": 96, "num_train": 8000, "num_val": 1000, "num_test": 1000,
                                           "encoder_dense_epochs": 4}}


@dataclass(frozen=True)
class ShapesConfig:
    """Everything that determines a shapes dataset; the manifest records it, and a mismatch rebuilds. The defaults
    are the default world's; ``for_world`` starts from another world's (``WORLD_DEFAULTS``)."""
    world: str = "default"         # the generated world (core.shapes_world.worlds)
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
    encoder_dense_epochs: int = 0  # epochs training the trunk on its per-cell heads alone, before encoder_epochs
    encoder_dense_lr: float = 1e-2
    encoder_batch_size: int = 64
    encoder_lr: float = 3e-3
    encoder_widths: tuple = (32, 64, 64, 64)
    encoder_pools: tuple = (True, False, True, False)
    feature_dim: int = 1024
    pca_dim: int = PCA_DIM
    probe_epochs: int = 20
    threads: int = 2               # torch threads, fixed so that a build is reproducible

    def __post_init__(self):
        get_world(self.world).check_canvas(self.image_size)
        if self.num_test < 0 or self.extra_train_scenes < 0:
            raise UserError(f"--num-test {self.num_test} and --extra-train-scenes {self.extra_train_scenes}: give 0 "
                            "or more")
        if not 0 <= self.seed < 2 ** 32:
            raise UserError(f"--seed {self.seed}: give a seed in 0..{2 ** 32 - 1}")
        if self.num_novel < 0:
            raise UserError(f"--num-novel {self.num_novel}: give 0 (no novel split) or more")
        limit = max_held_out(self.spec)
        for kind, count in (("colour", self.novel_colour_pairs), ("size", self.novel_size_pairs)):
            if not 0 <= count <= limit[kind]:
                raise UserError(f"--novel-{kind}-pairs {count}: give 0..{limit[kind]}, so that every shape "
                                f"and {kind} is still seen in training with other partners")
        if self.num_novel and not self.novel_colour_pairs + self.novel_size_pairs:
            raise UserError(f"--num-novel {self.num_novel} needs held-out pairs: give --novel-colour-pairs or "
                            "--novel-size-pairs above 0, or --num-novel 0")
        if min(self.num_train, self.num_val) < 1 or self.num_train < self.pca_dim:
            raise UserError(f"need num_train >= pca_dim ({self.pca_dim}) and num_val >= 1, got "
                            f"{self.num_train} train / {self.num_val} val images")

    @classmethod
    def for_world(cls, world="default", **values):
        """The config of ``world`` with its defaults (``WORLD_DEFAULTS``), ``values`` taking precedence."""
        get_world(world)
        return cls(world=world, **{**WORLD_DEFAULTS.get(world, {}), **values})

    @property
    def spec(self):
        """The WorldSpec of the config's world: its shapes, colours, sizes and words."""
        return get_world(self.world).spec

    @property
    def splits(self):
        """The splits a build writes: train, val, the held-out test split unless num_test is 0 and the novel split
        unless num_novel is 0."""
        return (*SPLITS, *((HELD_OUT_SPLIT,) if self.num_test else ()), *((NOVEL_SPLIT,) if self.num_novel else ()))

    def held_out_pairs(self):
        """The attribute-shape pairs no train, val or test scene holds: seeded, a stream of their own."""
        return choose_held_out_pairs(stream_rng(self, "held_out_pairs"), self.novel_colour_pairs,
                                     self.novel_size_pairs, self.spec)

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


def stream_rng(config, stream):
    """The random stream ``stream`` (one of ``_STREAMS``) of a build with ``config``."""
    return np.random.default_rng([config.seed, _STREAMS[stream]])
