"""Feature extraction for a dataset folder: VGG16 over image files, or a shapes dataset's features recomputed from
its stored images with its stored encoder.

``features_extraction.py`` is its CLI. It writes, into the output folder, the raw features, the PCA-projected
ones (the PCA fitted on train only), the grid features of the same pass (unless told not to), the PCA, the encoder
record and the image urls of each split (``core.features.extract.write_feature_files``). Building a whole dataset
from your own images and captions is ``core.datasets.own_data_engine``.
"""
import shutil
from dataclasses import dataclass
from pathlib import Path

import h5py

from core.data.layout import ENCODER_WEIGHTS_FILE, PCA_DIM, SHAPES_IMAGES_FILE, SPLITS, images_key
from core.features.encoders import ENCODER_NAMES, load_encoder, vgg16_encoder
from core.features.extract import BATCH_SIZE, resolve_device, write_feature_files
from core.features.preprocess import ImageFolder, list_images, read_image_list
from core.features.provenance import check_same_weights
from core.features.shapes_cnn import encoder_info
from core.features.vgg16 import VGG16
from core.runtime.distributed import process_group
from core.runtime.errors import UserError
from core.runtime.fileio import atomic_write, check_writable_dir


@dataclass(frozen=True)
class ExtractionSettings:
    """Every setting of a feature extraction; ``features_extraction.py``'s flags take their defaults from here."""
    encoder: str = "vgg16"  # vgg16: image files; shapes: a shapes dataset's stored images
    images_dir: Path | None = None  # vgg16: a folder with train2014/ and val2014/ subfolders of images
    train_list: Path | None = None  # vgg16: text files of image paths, one a line (instead of images_dir)
    val_list: Path | None = None
    vgg16_weights: Path | None = None  # None: the torch hub cache, downloaded there when missing
    data_dir: Path | None = None  # shapes: the dataset folder
    out: Path | None = None  # vgg16: required; shapes: None writes into data_dir
    pca_dim: int = PCA_DIM
    batch_size: int = BATCH_SIZE
    device: str = "auto"
    limit: int | None = None  # only the first N images of each split (smoke tests); None: all
    grid: bool = True  # also write the grid features, which attention decoders read
    progress: bool = True

    def __post_init__(self):
        if self.encoder not in ENCODER_NAMES:
            raise UserError(f"--encoder {self.encoder!r}: choose one of {', '.join(ENCODER_NAMES)}")


def run_extraction(settings):
    """Write the feature files ``settings`` ask for; returns the folder written on rank 0, None on the others.

    Under torchrun each rank encodes its share of the batches and rank 0 writes (``core.runtime.distributed``).
    """
    device = resolve_device(settings.device)  # a bad --device fails before any slow step
    with process_group(device.type) as group:
        device = group.place(device)
        extract = _extract_shapes if settings.encoder == "shapes" else _extract_image_files
        out = extract(settings, device, group)
    return out if group.is_main else None


def _extract_image_files(settings, device, group):
    """VGG16 features of the images under --images-dir or in --train-list/--val-list, into --out."""
    if settings.data_dir is not None:
        raise UserError("--data-dir is for --encoder shapes; vgg16 reads --images-dir or --train-list/--val-list")
    if settings.out is None:
        raise UserError("--encoder vgg16 needs --out, the folder receiving the feature files")
    check_writable_dir(settings.out, "--out")  # before the long extraction, not after it
    splits = image_file_splits(settings)
    check_pca_dim(settings.pca_dim, len(splits["train"][0]), VGG16.feature_dim)
    with group.main_first():  # weights downloaded once, not by every rank at the same time
        encoder, info = vgg16_encoder(settings.vgg16_weights, device)
    check_same_weights(settings.out, info)
    write_feature_files(settings.out, encoder, splits, info, settings.pca_dim, settings.batch_size, device,
                        progress=settings.progress, grid=settings.grid, group=group)
    return settings.out


def _extract_shapes(settings, device, group):
    """The shapes dataset's features recomputed from its stored images, into --out (default: --data-dir)."""
    if settings.data_dir is None:
        raise UserError("--encoder shapes needs --data-dir, the shapes dataset folder")
    if settings.images_dir or settings.train_list or settings.val_list or settings.vgg16_weights:
        raise UserError("--images-dir/--train-list/--val-list/--vgg16-weights are for --encoder vgg16")
    images_path = settings.data_dir / SHAPES_IMAGES_FILE
    if not images_path.is_file():
        raise UserError(f"--data-dir {settings.data_dir}: no {SHAPES_IMAGES_FILE}; build the shapes dataset first")
    out = settings.out or settings.data_dir
    check_writable_dir(out, "--out")
    encoder = load_encoder("shapes", base_dir=settings.data_dir, device=device)
    info = encoder_info(encoder)  # as recorded, with the digest of its weights where an older record has none
    check_same_weights(out, info)
    try:
        images_file = h5py.File(images_path, "r")
    except OSError as exc:
        raise UserError(f"{images_path}: not a readable HDF5 file ({exc}); rebuild the shapes dataset") from None
    with images_file:
        splits = shapes_splits(images_file, settings.limit)
        check_pca_dim(settings.pca_dim, len(splits["train"][0]), encoder.feature_dim)
        write_feature_files(out, encoder, splits, info, settings.pca_dim, settings.batch_size, device,
                            progress=settings.progress, grid=settings.grid, group=group)
    if out.resolve() != settings.data_dir.resolve() and group.is_main:
        # encoder.json names the shapes encoder: keep its weights beside it so new images can be encoded.
        weights = settings.data_dir / ENCODER_WEIGHTS_FILE
        atomic_write(out / ENCODER_WEIGHTS_FILE, lambda tmp: shutil.copyfile(weights, tmp))
    return out


def image_file_splits(settings):
    """{split: (ImageFolder, paths as url strings)} from --images-dir or --train-list/--val-list."""
    if settings.images_dir is not None and (settings.train_list or settings.val_list):
        raise UserError("--images-dir and --train-list/--val-list are alternatives: pass one of them")
    if settings.images_dir is not None:
        if not settings.images_dir.is_dir():
            raise UserError(f"--images-dir {settings.images_dir}: folder not found")
        paths = {split: list_images(settings.images_dir / f"{split}2014") for split in SPLITS}
    elif settings.train_list is not None and settings.val_list is not None:
        paths = {"train": read_image_list(settings.train_list), "val": read_image_list(settings.val_list)}
    else:
        raise UserError("--encoder vgg16 needs --images-dir, or both --train-list and --val-list")
    paths = {split: split_paths[:settings.limit] for split, split_paths in paths.items()}
    return {split: (ImageFolder(split_paths), [str(p) for p in split_paths]) for split, split_paths in paths.items()}


def shapes_splits(images_file, limit):
    """{split: (uint8 images (M, S, S, 3), "shapes://split/i" urls)} of an open shapes_images.h5.

    Without a limit the images stay a lazy h5py dataset; with one, the first rows are read.
    """
    splits = {}
    for split in SPLITS:
        images = images_file.get(images_key(split))
        if not isinstance(images, h5py.Dataset) or images.ndim != 4 or images.dtype != "uint8":
            raise UserError(f"{images_file.filename}: no uint8 image dataset '{images_key(split)}'; rebuild the "
                            "dataset")
        if limit is not None:
            images = images[:limit]
        splits[split] = (images, [f"shapes://{split}/{i}" for i in range(len(images))])
    return splits


def check_pca_dim(pca_dim, num_train, feature_dim):
    """Fail before the long extraction when the PCA cannot be fitted."""
    if pca_dim > feature_dim:
        raise UserError(f"--pca-dim {pca_dim} exceeds the encoder's feature width {feature_dim}; lower it")
    if num_train <= pca_dim:
        raise UserError(f"--pca-dim {pca_dim} needs more than {pca_dim} train images, got {num_train}: "
                        "lower --pca-dim or use more images")
