"""VGG16 (Simonyan & Zisserman, configuration D) as an image encoder giving 4096-d fc7 features, and conv5_3's
14x14x512 map as grid features.

The module tree mirrors torchvision's ``vgg16`` exactly (``features`` and ``classifier`` are
Sequentials with the same indices, ReLU/pool/dropout layers included), so the published ImageNet
weights ``vgg16-397923af.pth`` load by their own keys with ``strict=True``:
``features.{0,2,5,7,10,12,14,17,19,21,24,26,28}.{weight,bias}`` (13 convolutions) and
``classifier.{0,3,6}.{weight,bias}`` (fc6, fc7, fc8). torchvision itself is not used.

fc7 is the output of the ReLU at ``classifier.4`` (after the second Linear, ``classifier.3``):
non-negative, and what the CS231n captioning features were made from. fc8 (``classifier.6``, the
ImageNet class scores) is never computed; it is kept so the published file loads strictly. The grid features
are the output of the ReLU after conv5_3 (``features.29``), before the last max-pool: 14x14 cells of 32x32
pixels at 224x224 input, the map attention captioners (Show, Attend and Tell) attend over.

Dimension legend: B batch size, H/W input height/width, S = 224 network input size.
"""
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.data.download import download
from core.features.preprocess import center_crop, resize_shorter_side, to_rgb
from core.runtime.errors import UserError

VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
VGG16_FILE = "vgg16-397923af.pth"
# torchvision names its files <arch>-<first 8 hex digits of the file's SHA-256>.pth.
VGG16_SHA256_PREFIX = "397923af"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Output channels of each 3x3 convolution; "M" is a 2x2 max pool.
CONFIG_D = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
FC7_END = 5  # classifier[:5] = fc6, ReLU, Dropout, fc7, ReLU
CONV5_3_END = 30  # features[:30] ends with conv5_3's ReLU; features[30] is the last max-pool


def imagenet_stats():
    """ImageNet channel mean and std, each of shape (1, 3, 1, 1) to broadcast over (B, 3, H, W)."""
    return (torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),  # (3,) -> (1, 3, 1, 1)
            torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))  # (3,) -> (1, 3, 1, 1)


def conv_stack(config):
    """The ``features`` Sequential: conv3x3(pad 1) + ReLU per number, MaxPool(2) per "M"."""
    layers, channels = [], 3
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, item, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = item
    return nn.Sequential(*layers)


class VGG16(nn.Module):
    """VGG16 returning fc7 features; the encoder interface of ``core.features.extract``."""

    feature_dim = 4096
    input_size = 224
    resize_size = 256
    grid_shape = ((input_size // 16) ** 2, 512)  # (R, C): conv5_3 is 4 pools down, 14 x 14 cells

    def __init__(self):
        super().__init__()
        self.features = conv_stack(CONFIG_D)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(inplace=True), nn.Dropout(p=0.5),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(p=0.5),
            nn.Linear(4096, 1000),
        )
        mean, std = imagenet_stats()
        # Not persistent: the published state_dict has no such keys, and they are constants.
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)

    def preprocess(self, images):
        """ImageNet preprocessing on the module's device: resize shorter side 256, centre crop 224,
        scale to [0, 1], normalise by the ImageNet channel mean and std.

        Inputs:
        - images: uint8 array of shape (B, H, W, 3); (B, H, W), (B, H, W, 1) grayscale and
          (B, H, W, 4) RGBA are accepted too.

        Returns:
        - x: float32 tensor of shape (B, 3, 224, 224).
        """
        images = np.ascontiguousarray(to_rgb(images))
        # Resize on the network's device: the uint8 copy is 4x smaller than float, and GPUs resize fast.
        x = torch.from_numpy(images).to(self.pixel_mean.device)  # (B, H, W, 3) uint8
        x = x.permute(0, 3, 1, 2).float()  # (B, 3, H, W)
        x = center_crop(resize_shorter_side(x, self.resize_size), self.input_size)  # (B, 3, 224, 224)
        return (x / 255.0 - self.pixel_mean) / self.pixel_std

    def fc6_input(self, x):
        """The flattened pool5 activations, of shape (B, 25088), for x of shape (B, 3, H, W)."""
        x = self.avgpool(self.features(x))  # (B, 512, 7, 7)
        return torch.flatten(x, 1)  # (B, 512 * 7 * 7)

    def forward(self, x):
        """fc7 features (after ReLU) of shape (B, 4096) for x of shape (B, 3, 224, 224)."""
        return self.classifier[:FC7_END](self.fc6_input(x))

    def forward_with_grid(self, x):
        """fc7 (B, 4096) and conv5_3's map (B, 196, 512), cells row-major, from one pass over x (B, 3, 224, 224)."""
        conv5 = self.features[:CONV5_3_END](x)  # (B, 512, 14, 14), after ReLU
        pool5 = self.avgpool(self.features[CONV5_3_END:](conv5))  # (B, 512, 7, 7)
        fc7 = self.classifier[:FC7_END](torch.flatten(pool5, 1))
        return fc7, conv5.flatten(2).transpose(1, 2)  # (B, 512, 196) -> (B, 196, 512)


def vgg16_parameter_shapes():
    """{state_dict key: shape} that a VGG16 weights file must match, computed without allocating."""
    with torch.device("meta"):
        return {key: tuple(value.shape) for key, value in VGG16().state_dict().items()}


def read_state_dict(path, remedy):
    """A dict of tensors from a torch file, read with ``weights_only=True`` (no arbitrary pickles).

    Raises UserError naming the file, ending with ``remedy``, when it is missing, corrupt, or holds
    anything but a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: weights file not found; {remedy}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: not a readable PyTorch weights file ({reason}); {remedy}") from None
    if not isinstance(state, dict):
        raise UserError(f"{path}: holds a {type(state).__name__}, expected a state_dict; {remedy}")
    return state


def load_vgg16_weights(path):
    """Read a torchvision-format VGG16 state_dict safely (``weights_only=True``) and check it.

    Returns the state_dict (key -> float tensor). Raises UserError naming the file and, for a
    mismatch, the first offending key, when the file is missing, corrupt or not VGG16 weights.
    """
    state = read_state_dict(path, f"pass a torchvision {VGG16_FILE}, or omit it to download one")
    expected = vgg16_parameter_shapes()
    unexpected = [key for key in state if key not in expected]
    if unexpected:
        raise UserError(f"{path}: unexpected key '{unexpected[0]}'; this is not a torchvision VGG16 state_dict")
    missing = [key for key in expected if key not in state]
    if missing:
        raise UserError(f"{path}: key '{missing[0]}' missing; this is not a torchvision VGG16 state_dict")
    for key, shape in expected.items():
        if not torch.is_tensor(state[key]) or tuple(state[key].shape) != shape:
            found = tuple(state[key].shape) if torch.is_tensor(state[key]) else type(state[key]).__name__
            raise UserError(f"{path}: key '{key}' has shape {found}, expected {shape}; not VGG16 weights")
    return state


def vgg16_from_state_dict(state):
    """A VGG16 in eval mode holding the tensors of ``state`` (built on the meta device: no random init)."""
    with torch.device("meta"):
        model = VGG16()
    model.load_state_dict({key: value.float() for key, value in state.items()}, strict=True, assign=True)
    # Non-persistent buffers are not in the state_dict, so they are materialised off the meta device here.
    model.pixel_mean, model.pixel_std = imagenet_stats()
    return model.eval()


def default_weights_path():
    """Where the ImageNet weights are cached: torch's hub checkpoint folder, shared with torchvision."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE


def fetch_vgg16_weights(cache_path=None):
    """Path of verified ImageNet VGG16 weights: the cached file, else downloaded into the cache.

    The download is checked against the SHA-256 prefix in torchvision's file name (a failing file is
    deleted and reported); a cached file is trusted, as only verified downloads are renamed into place.
    """
    path = Path(cache_path) if cache_path is not None else default_weights_path()
    if not path.is_file():
        download(VGG16_URL, path, desc=VGG16_FILE, sha256_prefix=VGG16_SHA256_PREFIX)
    return path
