"""Karpathy's splits of COCO 2014 over the CS231n layout's rows, matched by image file name.

Published captioning scores are on Karpathy's test split (5,000 images of val2014), but the CS231n layout has only
its train2014 and val2014 rows. ``dataset_coco.json`` names each image's split; a CS231n row is the image whose
file name ends its URL line, and goes to

    train = Karpathy train + restval,   val = Karpathy val,   test = Karpathy test

taking its captions, features and URL with it. Rows the JSON does not list are left out, and counted. Pure
functions over the JSON and the arrays ``core.data.loader`` reads; the loader calls them.

Dimension legend: M_s rows of CS231n split s, M rows of a Karpathy split, N captions.
"""
import json
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import numpy as np

from core.data.layout import HELD_OUT_SPLIT, KARPATHY_IMAGE_DIRS, KARPATHY_SPLITS, SPLITS
from core.data.row_view import RowView
from core.runtime.errors import UserError

FETCH_HINT = "fetch it with bash core/datasets/get_datasets.sh --karpathy"
# Which of the JSON's splits make each split this project trains, selects and reports on.
TARGETS = {"train": ("train", "restval"), "val": ("val",), HELD_OUT_SPLIT: ("test",)}
# Below this share of the CS231n rows found in the JSON, the two describe different data: refuse, not drop.
MIN_MATCHED_SHARE = 0.5
IMAGE_KEYS = ("filepath", "filename", "split", "cocoid", "sentences")


def read_karpathy_json(path):
    """{image file name: Karpathy split} of a ``dataset_coco.json``, checked; one-line UserError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"missing {path}, Karpathy's splits (--protocol karpathy); {FETCH_HINT}")
    try:
        with open(path, "rb") as f:
            content = json.load(f)
    except (OSError, ValueError) as err:  # ValueError: bad JSON or bad UTF-8
        raise UserError(f"cannot read {path} ({err}); delete it and {FETCH_HINT}") from None
    return split_of_images(content, path)


def split_of_images(content, path):
    """{file name: split} of the parsed JSON ``content`` read from ``path``, after checking its structure."""
    images = content.get("images") if isinstance(content, dict) else None
    if not isinstance(images, list) or not images:
        raise UserError(f"{path} has no list of 'images': it is not Karpathy's dataset_coco.json; delete it and "
                        f"{FETCH_HINT}")
    split_of = {}
    for i, image in enumerate(images):
        problem = _image_problem(image)
        if problem:
            raise UserError(f"{path}: images[{i}] {problem}, not Karpathy's COCO structure; delete it and {FETCH_HINT}")
        name = image["filename"]
        if name in split_of:
            raise UserError(f"{path} lists image {name} twice (images[{i}]); delete it and {FETCH_HINT}")
        split_of[name] = image["split"]
    return split_of


def _image_problem(image):
    """Why one entry of the JSON's ``images`` is not Karpathy's COCO image record, or None."""
    if not isinstance(image, dict):
        return "is not an object"
    missing = [key for key in IMAGE_KEYS if key not in image]
    if missing:
        return f"lacks {', '.join(missing)}"
    if image["filepath"] not in KARPATHY_IMAGE_DIRS:
        return f"has filepath {image['filepath']!r} (expected one of {', '.join(KARPATHY_IMAGE_DIRS)})"
    name = image["filename"]
    if not isinstance(name, str) or not name or "/" in name:
        return f"has filename {name!r}, not an image file name"
    if image["split"] not in KARPATHY_SPLITS:
        return f"has an unknown split {image['split']!r} (expected one of {', '.join(KARPATHY_SPLITS)})"
    if isinstance(image["cocoid"], bool) or not isinstance(image["cocoid"], int):
        return f"has cocoid {image['cocoid']!r}, not an integer"
    if not isinstance(image["sentences"], list):
        return "has 'sentences' that are not a list"
    return None


def image_name(url):
    """The file name an image URL (or path) ends in: what the JSON's ``filename`` holds."""
    return PurePosixPath(urlparse(str(url)).path).name


def assign_rows(split_of, urls, json_path, urls_paths):
    """Each split's rows of each CS231n split: ({split: {CS231n split: sorted rows}}, number of rows left out).

    Inputs:
    - split_of: {file name: Karpathy split}, from ``read_karpathy_json(json_path)``.
    - urls: {CS231n split: (M_s,) str array}, its URL lines, read from ``urls_paths[split]``.
    Refuses (UserError) a file name on two URL lines, and URL lists too few of whose images the JSON lists.
    """
    names = {split: np.array([image_name(url) for url in lines], dtype=str) for split, lines in urls.items()}
    _check_distinct(names, urls_paths)
    karpathy = {split: np.array([split_of.get(name, "") for name in row_names], dtype=object)
                for split, row_names in names.items()}  # "" for a row the JSON does not list
    total = sum(len(row_names) for row_names in names.values())
    matched = sum(int(np.count_nonzero(values != "")) for values in karpathy.values())
    if matched < MIN_MATCHED_SHARE * total:
        example = next((n[0] for n in names.values() if len(n)), "")
        files = " and ".join(str(urls_paths[split]) for split in urls)
        raise UserError(f"only {matched} of the {total} images of {files} are in {json_path} (URL file names like "
                        f"{example!r}, the JSON's like {next(iter(split_of))!r}): they describe different data; "
                        f"use the URL lists of the CS231n COCO archive, or {FETCH_HINT}")
    assignment = {target: {split: np.flatnonzero(np.isin(values, members))
                           for split, values in karpathy.items()}
                  for target, members in TARGETS.items()}
    return assignment, total - matched


def _check_distinct(names, urls_paths):
    """A file name on two URL lines would put one image in the data twice."""
    everything = np.concatenate([names[split] for split in names])
    unique, counts = np.unique(everything, return_counts=True)
    if (counts > 1).any():
        name = unique[np.argmax(counts > 1)]
        where = [f"{urls_paths[split]} line {row + 1}" for split in names
                 for row in np.flatnonzero(names[split] == name)[:2]]
        raise UserError(f"{' and '.join(where[:2])} name the same image {name}; each CS231n row must be a distinct "
                        "image: re-download the dataset")


def karpathy_split(source, parts, target, json_path):
    """One Karpathy split from the CS231n splits' arrays in ``source`` (a ``load_coco_data`` dict of the cs231n
    protocol) and its ``parts`` ({CS231n split: rows}, from ``assign_rows``): a dict of its captions, image_idxs,
    features, urls (and grid), named ``{target}_...``, images numbered in the order of ``parts``."""
    parts = {split: rows for split, rows in parts.items() if len(rows)}
    if not parts:
        raise UserError(f"{json_path}: none of the CS231n images is in Karpathy's {target} split "
                        f"({' + '.join(TARGETS[target])}); {FETCH_HINT}")
    captions, idxs, offset = [], [], 0
    for split, rows in parts.items():
        renumbered = np.full(len(source[f"{split}_urls"]), -1, np.int64)  # (M_s,): -1 for rows of other splits
        renumbered[rows] = offset + np.arange(len(rows))
        new_idxs = renumbered[source[f"{split}_image_idxs"]]  # (N_s,)
        kept = new_idxs >= 0
        captions.append(source[f"{split}_captions"][kept])
        idxs.append(new_idxs[kept].astype(np.int32))
        offset += len(rows)
    data = {f"{target}_captions": np.concatenate(captions), f"{target}_image_idxs": np.concatenate(idxs),
            f"{target}_urls": np.concatenate([source[f"{split}_urls"][rows] for split, rows in parts.items()])}
    for kind in ("features", "grid"):
        if all(f"{split}_{kind}" in source for split in parts):
            data[f"{target}_{kind}"] = _take_rows([(source[f"{split}_{kind}"], rows) for split, rows in parts.items()])
    if not len(data[f"{target}_captions"]):
        raise UserError(f"{json_path}: Karpathy's {target} split has images but none of their captions is in the "
                        "CS231n captions file; re-download the dataset")
    return data


def _take_rows(parts):
    """In-memory arrays (the PCA features) are copied into one; lazy files stay files, behind a view."""
    if all(isinstance(array, np.ndarray) for array, _ in parts):
        return np.concatenate([array[rows] for array, rows in parts])
    return RowView(parts)


def sources_of(assignment, targets):
    """The CS231n splits whose rows the Karpathy splits ``targets`` take, in the layout's order."""
    return tuple(split for split in SPLITS if any(len(assignment[target][split]) for target in targets))
