"""The shapes world's image encoder: a small CNN whose penultimate layer plays the part of VGG16's fc7.

It is pretrained once per dataset build on the generated scenes (``core.features.shapes_pretrain``),
with one classification head per attribute the captions talk about, and saved beside the dataset as
``encoder.pt`` (state_dict) and ``encoder.json`` (its config). Extraction uses only ``forward``: the
heads exist for pretraining and for measuring what the features encode.

Dimension legend: B batch, S image side, C channels, F feature width (fc7), K classes of a head,
J slots of a head (objects left to right, or object pairs).
"""
import itertools
import json
import pickle
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.data.layout import ENCODER_INFO_FILE, ENCODER_WEIGHTS_FILE, WEIGHTS_DIGEST_KEY, WEIGHTS_NAME_KEY
from core.features.provenance import tensors_digest
from core.runtime.errors import UserError
from core.shapes_world.worlds import world_spec


def object_pairs_of(spec):
    """The slot pairs of the "vertical" head: every pair (a, b), a < b, of a world's object slots."""
    return tuple(itertools.combinations(range(spec.max_objects), 2))


def heads(spec):
    """The slot heads of a world's encoder (a WorldSpec): name -> (slots J, classes K). Object slots are the objects
    in left-to-right order; "vertical" has one slot per pair of slots (``object_pairs_of``): neither / above /
    below, as captions say them."""
    slots = spec.max_objects
    return {"count": (1, slots), "present": (slots, 2), "shape": (slots, len(spec.shapes)),
            "colour": (slots, len(spec.colours)), "size": (slots, len(spec.sizes)), "row": (slots, 3),
            "vertical": (len(object_pairs_of(spec)), 3)}


def dense_heads(spec):
    """Dense heads, used only in pretraining: name -> classes K. For each cell of the trunk's final map, the shape /
    colour / size of the object covering it, class 0 meaning none. They hand the trunk a direct, local signal of
    what each shape looks like, which the slot heads alone give only after sorting objects left to right."""
    return {"cell_shape": len(spec.shapes) + 1, "cell_colour": len(spec.colours) + 1, "cell_size": len(spec.sizes) + 1}


@dataclass(frozen=True)
class ShapesEncoderConfig:
    """Architecture of the shapes CNN.

    ``widths`` are the output channels of the convs, the first being the stride-2 stem; ``pools`` says
    after which convs a 2x2 max-pool halves the map; ``feature_dim`` is the width of fc7; ``world`` names the
    generated world (``core.shapes_world.worlds``) whose shapes, colours, sizes and counts the heads predict.
    """
    image_size: int = 64
    widths: tuple = (32, 64, 64, 64)
    pools: tuple = (True, False, True, False)
    feature_dim: int = 1024
    chroma: bool = True
    world: str = "default"

    def __post_init__(self):
        if len(self.pools) != len(self.widths):
            raise ValueError(f"pools {self.pools} needs one entry per conv of widths {self.widths}")

    @property
    def spec(self):
        """The WorldSpec of the world the heads are for."""
        return world_spec(self.world)

    @property
    def grid(self):
        """Side of the trunk's final map: the stem and each pool halve the image."""
        return self.image_size // 2 ** (1 + sum(self.pools))

    @classmethod
    def from_dict(cls, values):
        """Build from a dict (e.g. encoder.json), rejecting unknown keys with a ValueError."""
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown ShapesEncoderConfig options: {sorted(unknown)}")
        values = dict(values)
        for key in ("widths", "pools"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


class MultiHead(nn.Module):
    """Linear classification heads over one feature vector: one logit table per entry of ``heads`` (name ->
    (slots J, classes K), as ``heads(spec)`` gives)."""

    def __init__(self, in_dim, heads):
        super().__init__()
        self.shapes = dict(heads)
        self.linears = nn.ModuleDict({name: nn.Linear(in_dim, slots * classes)
                                      for name, (slots, classes) in heads.items()})

    def forward(self, features):
        """
        Inputs:
        - features: float tensor of shape (B, D).

        Returns:
        - logits: dict name -> float tensor of shape (B, J, K) for that head's (J, K).
        """
        return {name: linear(features).view(-1, *self.shapes[name])   # (B, J*K) -> (B, J, K)
                for name, linear in self.linears.items()}


def _conv_block(in_channels, out_channels, pool):
    """3x3 conv, BatchNorm, ReLU, then a 2x2 max-pool that halves the map when ``pool``."""
    layers = [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
              nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return layers


def _stem(in_channels, out_channels):
    """A 4x4 stride-2 conv: halves the map at once (the full-resolution map is the costliest to
    process on a CPU) while its overlapping windows still see every pixel of a small object."""
    return [nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


class ShapesEncoder(nn.Module):
    """Conv trunk -> flatten (keeping where things are) -> fc7 (ReLU) -> attribute heads.

    The flatten keeps the spatial layout (an 8x8 map at 64 px), which the left-to-right object slots
    need. The stem halves the image at once; max-pools halve it further (see ShapesEncoderConfig).
    """

    def __init__(self, config=None):
        super().__init__()
        self.config = config or ShapesEncoderConfig()
        widths = self.config.widths
        pools = self.config.pools
        layers = _stem(4 if self.config.chroma else 3, widths[0]) + ([nn.MaxPool2d(2)] if pools[0] else [])
        for i in range(1, len(widths)):
            layers += _conv_block(widths[i - 1], widths[i], pools[i])
        self.trunk = nn.Sequential(*layers)
        side = self.config.grid
        self.fc7 = nn.Sequential(nn.Flatten(), nn.Linear(widths[-1] * side * side, self.config.feature_dim),
                                 nn.ReLU(inplace=True))
        self.heads = MultiHead(self.config.feature_dim, heads(self.config.spec))
        self.dense_classes = dense_heads(self.config.spec)
        self.dense = nn.Conv2d(widths[-1], sum(self.dense_classes.values()), 1)
        self.register_buffer("pixel_mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1))

    @property
    def feature_dim(self):
        return self.config.feature_dim

    @property
    def image_size(self):
        """The side S of the square images this encoder reads (new images are resized to it)."""
        return self.config.image_size

    def preprocess(self, images):
        """Pixels to network input.

        Inputs:
        - images: uint8 array of shape (B, S, S, 3), S the encoder's image size.

        Returns:
        - x: float32 tensor of shape (B, 3, S, S), normalised, on the encoder's device.
        """
        images = np.asarray(images)
        size = self.config.image_size
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
            raise UserError(f"shapes encoder expects uint8 images of shape (B, {size}, {size}, 3), got "
                            f"{images.dtype} {images.shape}: use images of the dataset it was trained on")
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.pixel_mean.device)
        x = x.permute(0, 3, 1, 2).float() / 255.0                 # (B, S, S, 3) -> (B, 3, S, S)
        return ((x - self.pixel_mean) / self.pixel_std).contiguous(memory_format=torch.channels_last)

    @property
    def grid_shape(self):
        """(R, C) of the grid features: the trunk's final s x s map of C channels."""
        return self.config.grid ** 2, self.config.widths[-1]

    def forward(self, x):
        """
        Inputs:
        - x: float tensor of shape (B, 3, S, S) from ``preprocess``.

        Returns:
        - features: float tensor of shape (B, F), the fc7 activations (after ReLU).
        """
        return self.fc7(self.trunk(self._inputs(x)))               # (B, C, s, s) -> (B, C*s*s) -> (B, F)

    def forward_with_grid(self, x):
        """fc7 (B, F) and the map it is computed from, (B, s*s, C) with cells row-major, from one pass."""
        cells = self.trunk(self._inputs(x))                        # (B, C, s, s), after ReLU
        return self.fc7(cells), cells.flatten(2).transpose(1, 2)   # (B, C, s*s) -> (B, s*s, C)

    def _inputs(self, x):
        """x of shape (B, 3, S, S), plus a chroma channel (B, 1, S, S) when configured: max - min of RGB.

        Chroma separates the saturated objects from the pale background whatever their hue, so the
        convs see clean silhouettes from the first step and learn shapes much sooner.
        """
        if not self.config.chroma:
            return x
        rgb = x * self.pixel_std + self.pixel_mean                 # (B, 3, S, S) back in [0, 1]
        chroma = rgb.amax(dim=1, keepdim=True) - rgb.amin(dim=1, keepdim=True)   # (B, 1, S, S)
        return torch.cat([x, (chroma - 0.25) / 0.25], dim=1)       # (B, 4, S, S)

    def predict(self, x):
        """Logits of every head for x of shape (B, 3, S, S).

        Returns:
        - logits: dict name -> float tensor of shape (B, J, K): the world's slot heads (``heads``) and, with
          J = s*s cells of the final map in row-major order, its dense heads (``dense_heads``).
        """
        cells = self.trunk(self._inputs(x))                        # (B, C, s, s)
        return {**self.heads(self.fc7(cells)), **self._dense_logits(cells)}

    def predict_dense(self, x):
        """Logits of the dense heads alone for x of shape (B, 3, S, S): dict name -> (B, s*s, K), as ``predict``."""
        return self._dense_logits(self.trunk(self._inputs(x)))

    def _dense_logits(self, cells):
        dense = self.dense(cells).flatten(2).transpose(1, 2)       # (B, K_all, s, s) -> (B, s*s, K_all)
        return dict(zip(self.dense_classes, dense.split(list(self.dense_classes.values()), dim=2)))


def encoder_info(encoder):
    """The ``encoder.json`` record of an encoder: {"name": "shapes", ...its ShapesEncoderConfig, its weights file's name
    and the SHA-256 of its tensors}."""
    return {"name": "shapes", **json.loads(json.dumps(asdict(encoder.config))), WEIGHTS_NAME_KEY: ENCODER_WEIGHTS_FILE,
            WEIGHTS_DIGEST_KEY: tensors_digest(encoder.state_dict())}


def save_shapes_weights(directory, encoder):
    """Write ``encoder.pt`` (the state_dict) into ``directory``; ``encoder.json`` comes with the features."""
    torch.save(encoder.state_dict(), Path(directory) / ENCODER_WEIGHTS_FILE)


def save_shapes_encoder(directory, encoder):
    """Write ``encoder.pt`` (the state_dict) and ``encoder.json`` (``encoder_info``) into ``directory``."""
    save_shapes_weights(directory, encoder)
    info = json.dumps(encoder_info(encoder), indent=2) + "\n"
    (Path(directory) / ENCODER_INFO_FILE).write_text(info, encoding="utf-8")


def load_shapes_encoder(directory, device=None):
    """Load the encoder saved by ``save_shapes_encoder``, in eval mode; UserError if missing or corrupt."""
    directory = Path(directory)
    weights, info_path = directory / ENCODER_WEIGHTS_FILE, directory / ENCODER_INFO_FILE
    for path in (weights, info_path):
        if not path.is_file():
            raise UserError(f"{path} not found: rebuild the shapes dataset "
                            f"(python -m core.datasets.shapes_build --out {directory})")
    try:
        info = json.loads(info_path.read_text())
        names = {f.name for f in fields(ShapesEncoderConfig)}
        encoder = ShapesEncoder(ShapesEncoderConfig.from_dict({k: v for k, v in info.items() if k in names}))
        encoder.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except (ValueError, TypeError, KeyError, RuntimeError, OSError, EOFError,
            pickle.UnpicklingError) as error:
        raise UserError(f"{weights} or {info_path} is corrupt ({type(error).__name__}): rebuild the "
                        f"shapes dataset (python -m core.datasets.shapes_build --out {directory})") from error
    return encoder.to(device or "cpu").eval()
