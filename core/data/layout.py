"""The on-disk layout, in one place: every file name, split, dataset key and special token.

A dataset folder is in the CS231n ``coco_captioning`` layout (COCO and the generated shapes world alike):

    coco2014_captions.h5               {split}_captions (N, T) int, {split}_image_idxs (N,) int
    coco2014_vocab.json                idx_to_word (list), word_to_idx (dict)
    {split}2014_vgg16_fc7_pca.h5       features (M, 512) float32
    {split}2014_vgg16_fc7.h5           features (M, F) float32, read lazily
    {split}2014_grid.h5                grid (M, R, C) float16: the encoder's last conv map, R = side*side cells
                                       in row-major order (cell y*side + x, y from the top), read lazily
    {split}2014_urls.txt               one image URL per feature row
    pca.npz, encoder.json              written when this project computed the features; encoder.json names the
                                       encoder and the weights (file name, SHA-256) the features were made with
    dataset_coco.json                  Karpathy's splits (COCO only, optional): images [{filepath, filename, split,
                                       cocoid, sentences}], read by load_coco_data(..., protocol="karpathy")
    encoder.pt, shapes_images.h5,      shapes world only: the pretrained CNN, the images ({split}_images
    shapes_scenes.json, manifest.json  (M, S, S, 3) uint8), the scene truth (with the held-out pairs of the
                                       novel split), the build record

A training run's folder (``runs/<model>`` by default) holds ``best``/``last`` checkpoints, ``history.json``,
``config.json``, ``loss.png`` and the galleries ``gallery_<name>.png``.

Nothing else in the project spells these names: ask this module.
"""
from pathlib import Path

SPLITS = ("train", "val")
HELD_OUT_SPLIT = "test"  # written by datasets that have one (Karpathy's test images); no training reads it
# The shapes world's novel-composition split: scenes holding attribute-shape pairs that no train, val or test scene
# holds (the held-out pairs, listed in the scene file under HELD_OUT_PAIRS_KEY and in the manifest).
NOVEL_SPLIT = "novel"
EVALUATION_SPLITS = (*SPLITS, HELD_OUT_SPLIT, NOVEL_SPLIT)  # every split a dataset may have
HELD_OUT_PAIRS_KEY = "held_out_pairs"
# Which images make which split: cs231n, the layout's own train2014/val2014 rows; karpathy, Karpathy's splits of
# those rows (train + restval / val / test), the split of published COCO captioning scores.
PROTOCOLS = ("cs231n", "karpathy")
KARPATHY_FILE = "dataset_coco.json"  # Karpathy's splits of COCO 2014, beside the CS231n files
KARPATHY_ARCHIVE = "caption_datasets.zip"  # what holds it, with the Flickr8k and Flickr30k files
KARPATHY_SPLITS = ("train", "restval", "val", "test")  # the JSON's split values
KARPATHY_IMAGE_DIRS = ("train2014", "val2014")  # the JSON's filepath values

CAPTIONS_FILE = "coco2014_captions.h5"
VOCAB_FILE = "coco2014_vocab.json"
PCA_FILE = "pca.npz"
ENCODER_INFO_FILE = "encoder.json"
ENCODER_WEIGHTS_FILE = "encoder.pt"
# The encoder record's entries naming the weights its features were made with: the file's name and a SHA-256 (of the
# VGG16 file; of the shapes CNN's tensors, core.features.provenance).
WEIGHTS_NAME_KEY = "weights"
WEIGHTS_DIGEST_KEY = "weights_sha256"
SHAPES_IMAGES_FILE = "shapes_images.h5"
SHAPES_SCENES_FILE = "shapes_scenes.json"
MANIFEST_FILE = "manifest.json"
FEATURES_KEY = "features"
GRID_KEY = "grid"
COCO_ARCHIVE_TOP = "coco_captioning"  # the folder inside the CS231n archive, and the dataset's default home

# Caption rows: <START> w1 .. wk <END> <NULL>...; special tokens come first, with these fixed ids.
NULL, START, END, UNK = "<NULL>", "<START>", "<END>", "<UNK>"
SPECIAL_TOKENS = (NULL, START, END, UNK)
NULL_IDX, START_IDX, END_IDX, UNK_IDX = range(len(SPECIAL_TOKENS))
CAPTION_LENGTH = 17  # ids per caption row: at most 15 words between <START> and <END>
MAX_DECODE_LENGTH = CAPTION_LENGTH - 1  # what a generated caption may hold: a row's words and its <END>
PCA_DIM = 512  # width of the *_pca.h5 features

# A training run's folder.
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"
LOSS_PLOT = "loss.png"
DRY_RUN_DIR = "dry-run"  # where --dry-run writes when the run folder holds a trained run
# The results run's folder.
RESULTS_JSON = "results.json"
RESULTS_TABLE = "results.md"
RESULTS_REPORT_DIR = "report"  # its comparison report of every model
RESULTS_RUN_DIR = "runs/results"  # the results run's default folder; on the harder world, the next one
RESULTS_HARD_RUN_DIR = "runs/results-hard"
RESULTS_SEED_DIR = "seed-{seed}"  # where a results run puts the models of its seeds after the first
# The pages whose generated blocks the results run rewrites: the README's headline rows, each world's full table.
README_FILE = "README.md"
RESULTS_DOC = "docs/results.md"
RESULTS_HARD_DOC = "docs/results-hard.md"
# An evaluation report's folder (inference.py --report, the results run's comparison): a static page, its script and
# style, the data the script reads, and the pictures.
REPORT_INDEX = "index.html"
REPORT_DATA = "report-data.js"
REPORT_SCRIPT = "report.js"
REPORT_STYLE = "report.css"
REPORT_IMAGES_DIR = "images"


def features_file(split, pca_features):
    """The file name of a split's image features: PCA-reduced (``pca_features``) or the encoder's raw ones."""
    return f"{split}2014_vgg16_fc7{'_pca' if pca_features else ''}.h5"


def grid_file(split):
    """The file name of a split's grid (region) features, one (R, C) map per feature row."""
    return f"{split}2014_grid.h5"


def urls_file(split):
    """The file name of a split's image URL list."""
    return f"{split}2014_urls.txt"


def image_names_file(split):
    """The file name of a split's list of image file names, one a row (the CS231n archive's, where present)."""
    return f"{split}2014_images.txt"


def captions_key(split):
    """The captions file's dataset of a split's caption rows."""
    return f"{split}_captions"


def image_idxs_key(split):
    """The captions file's dataset of each caption's image row."""
    return f"{split}_image_idxs"


def images_key(split):
    """The shapes image file's dataset of a split's images."""
    return f"{split}_images"


def checkpoint_file(name, suffix):
    """A run folder's checkpoint: ``name`` is "best" or "last", ``suffix`` the format's (".npz", ".pt")."""
    return f"{name}{suffix}"


def gallery_file(name):
    """A gallery PNG of a run folder, e.g. ``gallery_val.png``."""
    return f"gallery_{name}.png"


def attention_map_file(name):
    """An attention-map PNG of a run folder, e.g. ``attention_val_17.png`` (split and image row)."""
    return f"attention_{name}.png"


def report_image_file(row):
    """A picture of an evaluation report, relative to its folder: ``images/17.jpg`` for image row 17."""
    return f"{REPORT_IMAGES_DIR}/{row}.jpg"


def default_data_dir(name):
    """Where a named dataset lives by default: ``core/datasets/<name>`` (git-ignored), as in CS231n."""
    return Path(__file__).resolve().parent.parent / "datasets" / name


def default_run_dir(model, objective="xe"):
    """Where a model's training run goes unless ``--out`` says otherwise: ``runs/<model>`` for cross-entropy,
    ``runs/<model>-scst`` for self-critical training, so that it never replaces the checkpoint it starts from."""
    return Path("runs") / (model if objective == "xe" else f"{model}-{objective}")


# Self-critical training's document frequencies of the training references, cached beside the dataset.
TRAIN_DF_FILE = "cider_df_train.npz"
