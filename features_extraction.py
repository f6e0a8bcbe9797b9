"""Extract image features for a captioning dataset in the CS231n coco_captioning layout.

Writes, into --out: {train,val}2014_vgg16_fc7.h5 (raw encoder features), {train,val}2014_vgg16_fc7_pca.h5
(projected by a PCA fitted on train only), {train,val}2014_grid.h5 (the encoder's last conv map, from the same
pass; not with --no-grid), pca.npz, encoder.json and {train,val}2014_urls.txt.

With --captions, it builds a whole dataset folder from your own images and caption files (COCO annotations,
Karpathy split files, or CSV/TSV with image,caption[,split] columns): captions, vocabulary, features, PCA.

Examples:
    python features_extraction.py --captions dataset_flickr8k.json --images-dir Flicker8k_Dataset --out flickr8k
    python features_extraction.py --captions train=captions_train2014.json --captions val=captions_val2014.json \
        --images-dir coco_images --out my_coco
    python features_extraction.py --encoder vgg16 --images-dir coco_images --out core/datasets/coco_captioning
    python features_extraction.py --encoder vgg16 --train-list train.txt --val-list val.txt --out my_features
    python features_extraction.py --encoder shapes --data-dir core/datasets/shapes
    torchrun --nproc_per_node 2 features_extraction.py --encoder vgg16 --images-dir coco_images --out my_coco
"""
if __name__ == "__main__":  # before the imports, which take seconds: Ctrl-C meanwhile is one line, code 130
    from core.runtime.interrupts import exit_on_interrupt

    exit_on_interrupt()
import shutil
from pathlib import Path

import h5py

from core.runtime.cli import ArgumentParser, add_no_progress, add_seed, defaults_of, positive_int, run
from core.data.layout import ENCODER_WEIGHTS_FILE, PCA_DIM, SHAPES_IMAGES_FILE, SPLITS, UNK, images_key
from core.runtime.distributed import process_group
from core.datasets.own_data import MAX_WORDS, OwnDataConfig, build_own_dataset, parse_source
from core.runtime.errors import UserError
from core.features.encoders import ENCODER_NAMES, load_encoder, read_encoder_info
from core.features.extract import BATCH_SIZE, resolve_device, write_feature_files
from core.features.preprocess import ImageFolder, list_images, read_image_list
from core.features.vgg16 import VGG16, VGG16_FILE
from core.runtime.fileio import atomic_write, check_writable_dir


def build_parser():
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", choices=ENCODER_NAMES, default="vgg16",
                        help="vgg16: ImageNet VGG16 fc7 (4096-d) over image files; shapes: re-extract a shapes "
                             "dataset's features from its stored images with its stored encoder")
    parser.add_argument("--images-dir", type=Path,
                        help="vgg16: folder with train2014/ and val2014/ subfolders of .jpg/.png images")
    parser.add_argument("--train-list", type=Path,
                        help="vgg16: text file of train image paths, one per line (relative to the file's folder)")
    parser.add_argument("--val-list", type=Path, help="vgg16: text file of val image paths, like --train-list")
    parser.add_argument("--vgg16-weights", type=Path,
                        help=f"vgg16: torchvision state_dict {VGG16_FILE}; default: the torch hub cache, "
                             "downloaded there (SHA-256 checked) when missing")
    parser.add_argument("--data-dir", type=Path, help=f"shapes: the dataset folder ({SHAPES_IMAGES_FILE}, {ENCODER_WEIGHTS_FILE})")
    parser.add_argument("--out", type=Path,
                        help="folder receiving the feature files (required for vgg16; shapes: default --data-dir, "
                             f"and {ENCODER_WEIGHTS_FILE} is copied there when it differs)")
    parser.add_argument("--pca-dim", type=positive_int, default=PCA_DIM,
                        help="width of the *_pca.h5 features (needs more train images than this)")
    parser.add_argument("--batch-size", type=positive_int, default=BATCH_SIZE,
                        help=f"images per forward pass (default {BATCH_SIZE})")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    parser.add_argument("--limit", type=positive_int, help="use only the first N images of each split (smoke tests)")
    parser.add_argument("--no-grid", dest="grid", action="store_false", default=defaults_of(OwnDataConfig)["grid"],
                        help="write no grid features (vgg16: conv5_3 after ReLU, 14x14x512 an image; shapes: the "
                             "CNN's last conv map), which attention decoders read; default: write them")
    add_captions_flags(parser)
    add_no_progress(parser)
    return parser


def add_captions_flags(parser):
    own = defaults_of(OwnDataConfig)
    group = parser.add_argument_group("your own data (--captions)")
    group.add_argument("--captions", action="append", metavar="[SPLIT=]FILE",
                       help="build a dataset folder from this caption file (repeat for several; SPLIT= train, val or "
                            "test puts a COCO or CSV file's images in that split); --images-dir is the folder its "
                            "image paths are relative to")
    group.add_argument("--min-word-count", type=positive_int, default=own["min_word_count"],
                       help=f"words seen fewer times in the training captions become {UNK} (default "
                            f"{own['min_word_count']})")
    group.add_argument("--restval", choices=("train", "skip"), default=own["restval"],
                       help="Karpathy's restval images: train on them (default) or leave them out")
    group.add_argument("--val-fraction", type=float, default=own["val_fraction"],
                       help=f"share of the images drawn for val when the caption files name no splits (default "
                            f"{own['val_fraction']})")
    group.add_argument("--skip-missing", action="store_true",
                       help="leave out images that are missing or unreadable (default: refuse, listing them)")
    add_seed(parser, own["seed"], "seed of the train/val draw when the caption files name no splits")


def image_file_splits(args):
    """{split: (ImageFolder, paths as url strings)} from --images-dir or --train-list/--val-list."""
    if args.images_dir is not None and (args.train_list or args.val_list):
        raise UserError("--images-dir and --train-list/--val-list are alternatives: pass one of them")
    if args.images_dir is not None:
        if not args.images_dir.is_dir():
            raise UserError(f"--images-dir {args.images_dir}: folder not found")
        paths = {split: list_images(args.images_dir / f"{split}2014") for split in SPLITS}
    elif args.train_list is not None and args.val_list is not None:
        paths = {"train": read_image_list(args.train_list), "val": read_image_list(args.val_list)}
    else:
        raise UserError("--encoder vgg16 needs --images-dir, or both --train-list and --val-list")
    paths = {split: split_paths[:args.limit] for split, split_paths in paths.items()}
    return {split: (ImageFolder(split_paths), [str(p) for p in split_paths]) for split, split_paths in paths.items()}


def shapes_splits(images_file, limit):
    """{split: (uint8 images (M, S, S, 3), "shapes://split/i" urls)} of an open shapes_images.h5.

    Without --limit the images stay a lazy h5py dataset; with it, the first rows are read.
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


def extract_image_files(args, group):
    if args.data_dir is not None:
        raise UserError("--data-dir is for --encoder shapes; vgg16 reads --images-dir or --train-list/--val-list")
    if args.out is None:
        raise UserError("--encoder vgg16 needs --out, the folder receiving the feature files")
    check_writable_dir(args.out, "--out")  # before the long extraction, not after it
    splits = image_file_splits(args)
    check_pca_dim(args.pca_dim, len(splits["train"][0]), VGG16.feature_dim)
    with group.main_first():  # weights downloaded once, not by every rank at the same time
        encoder, info = vgg16_encoder(args)
    write_feature_files(args.out, encoder, splits, info, args.pca_dim, args.batch_size, args.device,
                        progress=not args.no_progress, grid=args.grid, group=group)


def vgg16_encoder(args):
    """The VGG16 encoder and its ``encoder.json`` record."""
    encoder = load_encoder("vgg16", weights=args.vgg16_weights, device=args.device)
    weights = Path(args.vgg16_weights).name if args.vgg16_weights else VGG16_FILE
    return encoder, {"name": "vgg16", "weights": weights, "layer": "fc7 (after ReLU)",
                     "feature_dim": encoder.feature_dim,
                     "preprocess": "resize shorter side 256, centre crop 224, ImageNet mean/std"}


def build_from_captions(args):
    """--captions: a dataset folder from the user's images and caption files."""
    if args.encoder != "vgg16" or args.data_dir or args.train_list or args.val_list:
        raise UserError("--captions builds from image files with --encoder vgg16; --data-dir, --train-list and "
                        "--val-list do not go with it")
    if args.images_dir is None or args.out is None:
        raise UserError("--captions needs --images-dir (the folder its image paths are relative to) and --out")
    check_writable_dir(args.out, "--out")
    config = OwnDataConfig(min_word_count=args.min_word_count, restval=args.restval, val_fraction=args.val_fraction,
                           seed=args.seed, skip_missing=args.skip_missing, pca_dim=args.pca_dim,
                           batch_size=args.batch_size, grid=args.grid)
    sources = [parse_source(text) for text in args.captions]
    manifest = build_own_dataset(args.out, sources, args.images_dir, lambda: vgg16_encoder(args), config,
                                 device=args.device, progress=not args.no_progress)
    sizes = ", ".join(f"{split} {size['images']} images / {size['captions']} captions"
                      for split, size in manifest["sizes"].items())
    print(f"{sizes}; vocabulary {manifest['vocab_size']} words, {100 * manifest['train_unk_share']:.2f}% of training "
          f"tokens {UNK}; {manifest.get('truncated', 0)} captions cut to {MAX_WORDS} words, "
          f"{manifest.get('empty_after_cleaning', 0)} empty ones dropped, {len(manifest['skipped_images'])} images "
          "skipped")
    print("training caption lengths (words: captions): " + ", ".join(
        f"{n}: {c}" for n, c in manifest["train_caption_length_histogram"].items()))


def extract_shapes(args, group):
    if args.data_dir is None:
        raise UserError("--encoder shapes needs --data-dir, the shapes dataset folder")
    if args.images_dir or args.train_list or args.val_list or args.vgg16_weights:
        raise UserError("--images-dir/--train-list/--val-list/--vgg16-weights are for --encoder vgg16")
    images_path = args.data_dir / SHAPES_IMAGES_FILE
    if not images_path.is_file():
        raise UserError(f"--data-dir {args.data_dir}: no {SHAPES_IMAGES_FILE}; build the shapes dataset first")
    out = args.out or args.data_dir
    check_writable_dir(out, "--out")
    info = read_encoder_info(args.data_dir)
    encoder = load_encoder("shapes", base_dir=args.data_dir, device=args.device)
    try:
        images_file = h5py.File(images_path, "r")
    except OSError as exc:
        raise UserError(f"{images_path}: not a readable HDF5 file ({exc}); rebuild the shapes dataset") from None
    with images_file:
        splits = shapes_splits(images_file, args.limit)
        check_pca_dim(args.pca_dim, len(splits["train"][0]), encoder.feature_dim)
        write_feature_files(out, encoder, splits, info, args.pca_dim, args.batch_size, args.device,
                            progress=not args.no_progress, grid=args.grid, group=group)
    if out.resolve() != args.data_dir.resolve() and group.is_main:
        # encoder.json names the shapes encoder: keep its weights beside it so new images can be encoded.
        weights = args.data_dir / ENCODER_WEIGHTS_FILE
        atomic_write(out / ENCODER_WEIGHTS_FILE, lambda tmp: shutil.copyfile(weights, tmp))


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.device = resolve_device(args.device)  # a bad --device fails before any slow step
    # Under torchrun, each rank encodes its share of the batches and rank 0 writes (core.runtime.distributed).
    with process_group(args.device.type) as group:
        args.device = group.place(args.device)
        if args.captions:
            if group.distributed:
                raise group.error("--captions builds a dataset on one process: run it with plain python")
            build_from_captions(args)
        elif args.encoder == "vgg16":
            extract_image_files(args, group)
        else:
            extract_shapes(args, group)
    if group.is_main:
        print(f"wrote features to {args.out or args.data_dir}")


if __name__ == "__main__":
    run(main)
