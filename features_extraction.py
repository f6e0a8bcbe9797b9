"""Extract image features for a captioning dataset in the CS231n coco_captioning layout.

Writes, into --out: {train,val}2014_vgg16_fc7.h5 (raw encoder features), {train,val}2014_vgg16_fc7_pca.h5
(projected by a PCA fitted on train only), {train,val}2014_grid.h5 (the encoder's last conv map, from the same
pass; not with --no-grid), pca.npz, encoder.json and {train,val}2014_urls.txt.

With --captions, it builds a whole dataset folder from your own images and caption files (COCO annotations,
Karpathy split files, or CSV/TSV with image,caption[,split] columns): captions, vocabulary, features, PCA.

Examples:
    python features_extraction.py --captions dataset_flickr8k.json --images-dir Flicker8k_Dataset --out flickr8k
    python features_extraction.py --captions train=captions_train2014.json --captions val=captions_val2014.json \\
        --images-dir coco_images --out my_coco   # coco_images/train2014/*.jpg, coco_images/val2014/*.jpg
    python features_extraction.py --encoder vgg16 --images-dir coco_images --out core/datasets/coco_captioning
    python features_extraction.py --encoder vgg16 --train-list train.txt --val-list val.txt --out my_features
    python features_extraction.py --encoder shapes --data-dir core/datasets/shapes
    torchrun --nproc_per_node 2 features_extraction.py --encoder vgg16 --images-dir coco_images --out my_coco
"""
if __name__ == "__main__":  # before the imports, which take seconds: Ctrl-C meanwhile is one line, code 130
    from core.runtime.interrupts import exit_on_interrupt

    exit_on_interrupt()
import argparse
from pathlib import Path

from core.data.layout import ENCODER_WEIGHTS_FILE, SHAPES_IMAGES_FILE, UNK
from core.datasets.own_data import OwnDataConfig
from core.datasets.own_data_engine import OwnDataSettings, build_summary, run_own_data
from core.features.encoders import ENCODER_NAMES
from core.features.engine import ExtractionSettings, run_extraction
from core.features.vgg16 import VGG16_FILE
from core.runtime import cli

DEFAULTS = cli.defaults_of(ExtractionSettings)
OWN = cli.defaults_of(OwnDataConfig)


def build_parser():
    p = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", choices=ENCODER_NAMES, default=DEFAULTS["encoder"],
                   help="vgg16: ImageNet VGG16 fc7 (4096-d) over image files; shapes: re-extract a shapes dataset's "
                        f"features from its stored images with its stored encoder (default {DEFAULTS['encoder']})")
    p.add_argument("--images-dir", type=Path, default=DEFAULTS["images_dir"],
                   help="vgg16: folder with train2014/ and val2014/ subfolders of .jpg/.png images; with --captions: "
                        "the images' root, where each is found by its path in the caption file, else by file name in "
                        "the root or its folders (COCO's train2014/, val2014/) (default: none)")
    p.add_argument("--train-list", type=Path, default=DEFAULTS["train_list"],
                   help="vgg16: text file of train image paths, one per line (relative to the file's folder)")
    p.add_argument("--val-list", type=Path, default=DEFAULTS["val_list"],
                   help="vgg16: text file of val image paths, like --train-list")
    p.add_argument("--vgg16-weights", type=Path, default=DEFAULTS["vgg16_weights"],
                   help=f"vgg16: torchvision state_dict {VGG16_FILE}; default: the torch hub cache, downloaded there "
                        "(SHA-256 checked) when missing")
    p.add_argument("--data-dir", type=Path, default=DEFAULTS["data_dir"],
                   help=f"shapes: the dataset folder ({SHAPES_IMAGES_FILE}, {ENCODER_WEIGHTS_FILE})")
    p.add_argument("--out", type=Path, default=DEFAULTS["out"],
                   help="folder receiving the feature files (required for vgg16; shapes: default --data-dir, "
                        f"and {ENCODER_WEIGHTS_FILE} is copied there when it differs)")
    p.add_argument("--pca-dim", type=cli.positive_int, default=DEFAULTS["pca_dim"],
                   help=f"width of the *_pca.h5 features (needs more train images than this) (default "
                        f"{DEFAULTS['pca_dim']})")
    p.add_argument("--batch-size", type=cli.positive_int, default=DEFAULTS["batch_size"],
                   help=f"images per forward pass (default {DEFAULTS['batch_size']})")
    p.add_argument("--device", default=DEFAULTS["device"],
                   help=f"auto (CUDA when available), cpu, cuda or cuda:N (default {DEFAULTS['device']})")
    p.add_argument("--limit", type=cli.positive_int, default=DEFAULTS["limit"],
                   help="use only the first N images of each split (smoke tests) (default: all)")
    p.add_argument("--no-grid", dest="grid", action="store_false", default=DEFAULTS["grid"],
                   help="write no grid features (vgg16: conv5_3 after ReLU, 14x14x512 an image; shapes: the CNN's "
                        "last conv map), which attention decoders read; default: write them")
    add_captions_flags(p)
    cli.add_no_progress(p)
    return p


def add_captions_flags(p):
    group = p.add_argument_group("your own data (--captions)")
    group.add_argument("--captions", action="append", metavar="[SPLIT=]FILE",
                       help="build a dataset folder from this caption file (repeat for several; SPLIT= train, val or "
                            "test puts a COCO or CSV file's images in that split); --images-dir is the images' root "
                            "(default: none, extract features only)")
    group.add_argument("--min-word-count", type=cli.positive_int, default=OWN["min_word_count"],
                       help=f"words seen fewer times in the training captions become {UNK} (default "
                            f"{OWN['min_word_count']})")
    group.add_argument("--restval", choices=("train", "skip"), default=OWN["restval"],
                       help=f"Karpathy's restval images: train on them or leave them out (default {OWN['restval']})")
    group.add_argument("--val-fraction", type=float, default=OWN["val_fraction"],
                       help=f"share of the images drawn for val when the caption files name no splits (default "
                            f"{OWN['val_fraction']})")
    group.add_argument("--skip-missing", action="store_true", default=OWN["skip_missing"],
                       help="leave out images that are missing or unreadable (default: refuse, listing them)")
    cli.add_seed(p, OWN["seed"], "seed of the train/val draw when the caption files name no splits")


def parse_args(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    if args.captions and (args.encoder != "vgg16" or args.data_dir or args.train_list or args.val_list):
        p.error("--captions builds from image files with --encoder vgg16; --data-dir, --train-list and --val-list "
                "do not go with it")
    if args.captions and (args.images_dir is None or args.out is None):
        p.error("--captions needs --images-dir (the folder its image paths are relative to) and --out")
    return args


def settings_from_args(args):
    """The OwnDataSettings of a --captions build, else the ExtractionSettings, that the parsed flags ask for."""
    if args.captions:
        config = cli.settings_from_args(OwnDataConfig, args)
        return cli.settings_from_args(OwnDataSettings, args, captions=tuple(args.captions), config=config,
                                      progress=not args.no_progress)
    return cli.settings_from_args(ExtractionSettings, args, progress=not args.no_progress)


def main(argv=None):
    settings = settings_from_args(parse_args(argv))
    if isinstance(settings, OwnDataSettings):
        print(build_summary(run_own_data(settings)))
        written = settings.out
    else:
        written = run_extraction(settings)  # None on the ranks other than 0 under torchrun
    if written is not None:
        print(f"wrote features to {written}")


if __name__ == "__main__":
    cli.run(main)
