"""Load, check and save captioning data in the CS231n ``coco_captioning`` layout (``core.data.layout``).

The same layout holds COCO and the generated shapes world. Every file is checked on load, and against the
others it is used with; bad data raises ``UserError`` with one line naming the file and the fix.

Dimension legend: N captions in a split, T ids per caption (17), M images in a split, D feature width
(512 after PCA, F = 4096 for raw VGG16 fc7), V vocabulary size, R cells and C channels of a grid map.
"""
import json
from pathlib import Path

import h5py
import numpy as np

from core.data.grid import REBUILD_HINT, open_grid
from core.data.karpathy import assign_rows, karpathy_split, read_karpathy_json, sources_of
from core.data.layout import (
    CAPTIONS_FILE,
    COCO_ARCHIVE_TOP,
    END,
    END_IDX,
    EVALUATION_SPLITS,
    HELD_OUT_SPLIT,
    KARPATHY_FILE,
    NOVEL_SPLIT,
    NULL_IDX,
    PROTOCOLS,
    SHAPES_IMAGES_FILE,
    SPLITS,
    START,
    START_IDX,
    VOCAB_FILE,
    captions_key,
    default_data_dir,
    features_file,
    grid_file,
    image_idxs_key,
    image_names_file,
    urls_file,
)
from core.data.store import FEATURES_KEY, LazyFeatures
from core.data.vocab import check_vocab
from core.runtime.errors import UserError
from core.runtime.fileio import atomic_write, atomic_write_text

GET_DATASETS_HINT = "run `bash core/datasets/get_datasets.sh` or use the default shapes dataset"
_MISSING_SPLIT_HINTS = {
    HELD_OUT_SPLIT: "only data built with a held-out split has one (e.g. Karpathy's, through features_extraction.py "
                    "--captions); use --split val",
    NOVEL_SPLIT: "only the shapes world built with held-out pairs has one (python -m core.datasets.shapes_build "
                 "--num-novel 1000); use --split test",
}

COCO_DIR = default_data_dir(COCO_ARCHIVE_TOP)  # CS231n's default base_dir: the COCO captioning data's home


def _require_file(path):
    if not path.is_file():
        raise UserError(f"missing file {path}; {GET_DATASETS_HINT}")


def _open_h5(path):
    _require_file(path)
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise UserError(f"cannot read HDF5 file {path} ({err}); delete it and rebuild or re-download it") from err


def _h5_dataset(h5, key):
    if not isinstance(h5.get(key), h5py.Dataset):
        found = "a group" if key in h5 else "nothing"
        raise UserError(f"{h5.filename} has {found} where dataset {key!r} belongs; re-download or rebuild the dataset")
    return h5[key]


def _read_captions(base_dir, splits, vocab_size):
    """The caption ids and image indices of ``splits``, all read from one file open, checked before the cast to
    int32 (a cast first would let ids of 2**32 and more wrap into range)."""
    path = base_dir / CAPTIONS_FILE
    arrays = {}
    with _open_h5(path) as h5:
        for split in splits:
            if split not in SPLITS and captions_key(split) not in h5:
                raise UserError(f"{path} has no {split} split: {_MISSING_SPLIT_HINTS[split]}")
            captions = _h5_dataset(h5, captions_key(split))[()]
            idxs = _h5_dataset(h5, image_idxs_key(split))[()]
            problem = _captions_problem(captions, vocab_size) or _idxs_problem(idxs, captions.shape[:1])
            if problem:
                raise UserError(f"{path}: {split} {problem}; rebuild the dataset")
            arrays[f"{split}_captions"] = captions.astype(np.int32, copy=False)
            arrays[f"{split}_image_idxs"] = idxs.astype(np.int32, copy=False)
    return arrays


def has_split(base_dir, split):
    """Whether the dataset's captions file holds ``split``; False when the file is missing or unreadable (loading
    it says why)."""
    try:
        with h5py.File(Path(base_dir) / CAPTIONS_FILE, "r") as h5:
            return captions_key(split) in h5
    except OSError:
        return False


def _captions_problem(captions, vocab_size):
    """Why an array cannot be a split's caption rows of (N, T) ids, or None."""
    if captions.ndim != 2 or not np.issubdtype(captions.dtype, np.integer):
        return f"captions must be a 2-D integer array, got shape {captions.shape} {captions.dtype}"
    if captions.shape[0] == 0:
        return "captions: the split has none"
    if captions.shape[1] < 2:
        return f"captions have {captions.shape[1]} id(s) per row; a row needs at least {START} and {END}"
    if captions.min() < 0 or captions.max() >= vocab_size:
        return f"captions hold ids outside the {vocab_size}-word vocabulary of {VOCAB_FILE}"
    not_started = np.flatnonzero(captions[:, 0] != START_IDX)
    if not_started.size:
        return f"caption row {not_started[0]} does not start with {START} ({not_started.size} such rows)"
    wordless = np.flatnonzero(np.isin(captions[:, 1], (END_IDX, NULL_IDX)))
    if wordless.size:
        return f"caption row {wordless[0]} holds no word ({wordless.size} such rows)"
    return None


def _idxs_problem(idxs, shape):
    if idxs.shape != shape or not np.issubdtype(idxs.dtype, np.integer):
        return f"image_idxs must be integers of shape {shape}, got {idxs.shape} {idxs.dtype}"
    if idxs.size and (idxs.min() < 0 or idxs.max() >= 2 ** 31):
        return "image_idxs has entries outside 0 .. 2**31 - 1"
    return None


def _read_vocab(base_dir):
    path = base_dir / VOCAB_FILE
    _require_file(path)
    try:
        vocab = json.loads(path.read_text(encoding="utf-8"))
        word_to_idx, idx_to_word = vocab["word_to_idx"], vocab["idx_to_word"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise UserError(f"cannot read vocabulary {path} ({err!r}); re-download or rebuild the dataset") from err
    try:
        check_vocab(word_to_idx, idx_to_word)
    except (ValueError, TypeError, AttributeError) as err:
        raise UserError(f"{path}: {err}; re-download or rebuild the dataset") from err
    return word_to_idx, idx_to_word


def _read_features(base_dir, split, pca_features):
    """A split's features: an in-memory (M, 512) float32 array, or a LazyFeatures of shape (M, F)."""
    path = base_dir / features_file(split, pca_features)
    with _open_h5(path) as h5:
        data = _h5_dataset(h5, FEATURES_KEY)
        if data.ndim != 2 or not np.issubdtype(data.dtype, np.floating) or 0 in data.shape:
            raise UserError(f"{path}: features must be a 2-D float array of at least one row and column, got shape "
                            f"{data.shape} {data.dtype}; rebuild the dataset")
        if pca_features:
            features = data[()].astype(np.float32, copy=False)
            if not np.isfinite(features).all():
                raise UserError(f"{path}: features hold NaN or infinite values; extract them again")
            return features
    return LazyFeatures(path)


def _read_urls(base_dir, split):
    path = base_dir / urls_file(split)
    _require_file(path)
    try:
        return np.array(path.read_text(encoding="utf-8").splitlines(), dtype=str)
    except UnicodeDecodeError as err:
        raise UserError(f"cannot read URL list {path} ({err}); re-download or rebuild the dataset") from err


def _row_image_names(base_dir, split):
    """Each row's image file name, and the file it came from: ``{split}2014_images.txt`` where the data has one
    (a list of COCO file names, one a row), else the URL list, whose lines end in the names when they are COCO's
    own URLs (a list of Flickr URLs matches nothing, and the Karpathy mapping says so)."""
    path = base_dir / image_names_file(split)
    if not path.is_file():
        return _read_urls(base_dir, split), base_dir / urls_file(split)
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    urls = _read_urls(base_dir, split)
    if len(lines) != len(urls):
        raise UserError(f"{path} has {len(lines)} lines but {base_dir / urls_file(split)} has {len(urls)}: one image "
                        "file name a row is needed; delete it or re-download the dataset")
    return np.array(lines, dtype=str), path


def _check_split(data, base_dir, split, pca_features):
    """Cross-file consistency of one split: image indices, feature rows and URL lines agree."""
    features_path = base_dir / features_file(split, pca_features)
    rows = len(data[f"{split}_features"])
    idxs = data[f"{split}_image_idxs"]
    if idxs.size and idxs.max() >= rows:
        raise UserError(f"{features_path} has {rows} rows but {CAPTIONS_FILE} refers to image {idxs.max()}; "
                        "the files come from different datasets: re-download or rebuild")
    if len(data[f"{split}_urls"]) != rows:
        raise UserError(f"{base_dir / urls_file(split)} has {len(data[f'{split}_urls'])} lines but "
                        f"{features_path} has {rows} rows; re-download or rebuild the dataset")


def _read_grids(data, base_dir, splits):
    """Each split's ``LazyGrid``, one row per feature row, all of the same (R, C)."""
    for split in splits:
        data[f"{split}_grid"] = open_grid(base_dir / grid_file(split), rows=len(data[f"{split}_features"]))
    maps = {split: data[f"{split}_grid"].shape[1:] for split in splits}
    if len(set(maps.values())) > 1:
        files = " and ".join(f"{base_dir / grid_file(s)} ({r} cells x {c} channels)" for s, (r, c) in maps.items())
        raise UserError(f"{files} differ: the splits were extracted apart; {REBUILD_HINT}")


def _subsample_train(data, max_train, seed):
    num_train = data["train_captions"].shape[0]
    if isinstance(max_train, bool) or not isinstance(max_train, (int, np.integer)) or not 0 < max_train <= num_train:
        raise UserError(f"max_train (--num_samples) must be an integer in 1..{num_train}, the number of "
                        f"training captions, got {max_train!r}")
    keep = np.sort(np.random.default_rng(seed).choice(num_train, max_train, replace=False))
    data["train_captions"] = data["train_captions"][keep]
    data["train_image_idxs"] = data["train_image_idxs"][keep]


def load_coco_data(base_dir=COCO_DIR, max_train=None, pca_features=True, seed=0,
                   splits=SPLITS, grid=False, protocol=PROTOCOLS[0]):
    """Load a dataset directory in the CS231n layout, checking every file.

    Inputs:
    - base_dir: the dataset directory; by default COCO's, where ``core/datasets/get_datasets.sh`` puts it.
    - max_train: if given, keep this many training captions, drawn without replacement by ``seed``
      (kept in file order); image indices stay aligned and features/URLs stay whole.
    - pca_features: True for the (M, 512) PCA features in memory; False for the raw (M, F) features
      as a ``LazyFeatures`` that reads only the rows a minibatch asks for.
    - seed: seed of the ``max_train`` subsample.
    - splits: the splits to read (default both); e.g. ("val",) for an evaluation, which needs no train rows; "test"
      and "novel" (the shapes world's novel-composition split) where the data has them.
    - grid: also open each split's grid features (``{split}2014_grid.h5``), for attention over image regions.
    - protocol: which images make which split. "cs231n": the layout's own files of each split. "karpathy" (COCO):
      Karpathy's splits (``dataset_coco.json`` beside the data, ``core.data.karpathy``) of the train2014 and
      val2014 rows, by image file name: train = Karpathy train + restval, val = Karpathy val, test = Karpathy
      test; rows of images the JSON does not list are left out. Raw features and grids are then ``RowView``s.

    Returns a dict with, for each split read:
    - train_captions, val_captions: int32 arrays of shape (N, T).
    - train_image_idxs, val_image_idxs: int32 arrays of shape (N,), rows into the split's features/URLs.
    - train_features, val_features: float32 of shape (M, 512), or LazyFeatures of shape (M, F).
    - train_urls, val_urls: str arrays of shape (M,).
    - with ``grid``: train_grid, val_grid: ``core.data.grid.LazyGrid`` of shape (M, R, C), read as float32 per
      minibatch; row m is the map of feature row m (index it by image_idxs, as the features).
    and word_to_idx: dict word -> id; idx_to_word: list of V words; base_dir: the directory as a Path; protocol;
    with "karpathy", protocol_notes: {"json": its path, "images_left_out": rows in none of its splits,
    "images": {split: M}}.
    """
    base_dir = Path(base_dir)
    if not base_dir.is_dir():
        raise UserError(f"dataset directory {base_dir} not found; {GET_DATASETS_HINT}")
    unknown = set(splits) - set(EVALUATION_SPLITS)
    if unknown:
        raise ValueError(f"splits must be among {EVALUATION_SPLITS}, got {sorted(unknown)}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if protocol == "karpathy":
        if NOVEL_SPLIT in splits:
            raise UserError(f"Karpathy's splits have no {NOVEL_SPLIT} split (it is the shapes world's): drop "
                            "--protocol karpathy")
        data = _karpathy_data(base_dir, splits, pca_features, grid)
    else:
        data = _layout_data(base_dir, splits, pca_features, grid)
    if max_train is not None:
        _subsample_train(data, max_train, seed)
    data["base_dir"], data["protocol"] = base_dir, protocol
    return data


def _layout_data(base_dir, splits, pca_features, grid):
    """The layout's own ``splits``, every file checked, and the vocabulary."""
    word_to_idx, idx_to_word = _read_vocab(base_dir)
    data = _read_captions(base_dir, splits, len(idx_to_word))
    data["word_to_idx"], data["idx_to_word"] = word_to_idx, idx_to_word
    for split in splits:
        data[f"{split}_features"] = _read_features(base_dir, split, pca_features)
        data[f"{split}_urls"] = _read_urls(base_dir, split)
        _check_split(data, base_dir, split, pca_features)
    widths = {split: data[f"{split}_features"].shape[1] for split in splits}
    if len(set(widths.values())) > 1:
        files = " and ".join(f"{base_dir / features_file(s, pca_features)} ({w}-d)" for s, w in widths.items())
        raise UserError(f"{files} have different widths: the splits were extracted apart; extract them again")
    if grid:
        _read_grids(data, base_dir, splits)
    return data


def _karpathy_data(base_dir, splits, pca_features, grid):
    """Karpathy's ``splits`` made of the layout's train2014 and val2014 rows; only the files they take are read."""
    if (base_dir / SHAPES_IMAGES_FILE).is_file():
        raise UserError(f"{base_dir} is the shapes world, which has its own held-out {HELD_OUT_SPLIT} split: drop "
                        "--protocol karpathy (Karpathy's splits are COCO's)")
    json_path = base_dir / KARPATHY_FILE
    split_of = read_karpathy_json(json_path)
    names, names_paths = {}, {}
    for split in SPLITS:
        names[split], names_paths[split] = _row_image_names(base_dir, split)
    assignment, left_out = assign_rows(split_of, names, json_path, names_paths)
    source = _layout_data(base_dir, sources_of(assignment, splits), pca_features, grid)
    data = {"word_to_idx": source["word_to_idx"], "idx_to_word": source["idx_to_word"]}
    for split in splits:
        data.update(karpathy_split(source, assignment[split], split, json_path))
    data["protocol_notes"] = {"json": str(json_path), "images_left_out": left_out,
                              "images": {split: len(data[f"{split}_urls"]) for split in splits}}
    if left_out:
        print(f"--protocol karpathy: {left_out} images of the CS231n URL lists are in none of the splits of "
              f"{json_path}; left out")
    return data


def save_captions_h5(path, arrays):
    """Write ``arrays`` (dict name -> array, e.g. train_captions of shape (N, T)) to an HDF5 file atomically."""
    def write(tmp):
        with h5py.File(tmp, "w") as h5:
            for name, array in arrays.items():
                h5.create_dataset(name, data=np.asarray(array))

    atomic_write(path, write)


def save_vocab_json(path, word_to_idx, idx_to_word):
    """Write the vocabulary JSON of the layout atomically, after checking the two mappings agree."""
    check_vocab(word_to_idx, idx_to_word)
    atomic_write_text(path, json.dumps({"idx_to_word": list(idx_to_word), "word_to_idx": dict(word_to_idx)}))
