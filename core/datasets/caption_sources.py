"""Caption files as people have them, read into one list of records; the format is told by the content alone.

- COCO caption annotations (``captions_train2014.json``): "images" [{"id", "file_name"}] and "annotations"
  [{"image_id", "caption"}]; one record per annotation.
- Karpathy split files (``dataset_coco.json``, ``dataset_flickr8k.json``, ``dataset_flickr30k.json``): "images"
  [{"filepath" (optional), "filename", "split", "sentences": [{"tokens", "raw"}]}]; one record per sentence.
- CSV or TSV with a header naming the columns ``image`` and ``caption``, optionally ``split``; one record per row.

Every problem is a UserError: one line naming the file, the entry at fault and the fix.
"""
import codecs
import csv
import io
import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from core.runtime.errors import UserError

SPLIT_NAMES = ("train", "val", "test")  # what a SPLIT=FILE argument or a CSV split cell may say
KARPATHY_SPLITS = ("train", "restval", "val", "test")
CSV_DELIMITERS = (",", "\t")
JSON_TYPE_NAMES = {int: "integer", str: "string", list: "list"}


@dataclass(frozen=True)
class CaptionRecord:
    """One caption of one image.

    - image: the image's path relative to the images folder, as the file gives it.
    - split: "train", "val", "test", "restval", or None when the file does not say.
    - caption: the raw caption text.
    - tokens: the Karpathy file's pre-tokenised words (a tuple of strings) when it has them, else None.
    """
    image: str
    split: str | None
    caption: str
    tokens: tuple | None


def tokenize_caption(text):
    """The words of a caption, by the classic captioning preprocessing.

    Inputs:
    - text: a caption string.

    Returns:
    - list of words: the text lower-cased, every character that is not a letter, digit or whitespace removed
      ("don't" -> "dont"), split on whitespace; [] when nothing is left.
    """
    # NFC, so that a letter typed as base + combining accent (the "é" of "café") stays one letter instead of
    # losing its accent, which is not a letter, and becoming a different word.
    text = unicodedata.normalize("NFC", text.lower())
    return "".join(ch for ch in text if ch.isalpha() or ch.isdigit() or ch.isspace()).split()


def read_caption_file(path, split=None):
    """Read a caption file in any of the three formats, recognised by its content (never by its name).

    Inputs:
    - path: the caption file.
    - split: None, or "train", "val" or "test" (from a SPLIT=FILE argument): the split of every record. Only for
      COCO files and CSV files without a split column; a Karpathy file names its own splits.

    Returns:
    - (format, records): format is "coco", "karpathy" or "csv"; records a list of CaptionRecord in file order.

    Raises UserError, one line naming the file and the fix, on any problem with the file or the split.
    """
    path = Path(path)
    if split is not None and split not in SPLIT_NAMES:
        raise UserError(f"{split}={path}: unknown split {split!r}; use one of {', '.join(SPLIT_NAMES)}")
    text = _read_text(path)
    if text.lstrip().startswith(("{", "[")):
        return _read_json(path, text, split)
    return "csv", _csv_records(path, text, split)


def _read_text(path):
    """The text of ``path`` decoded as UTF-8 (a leading byte-order mark dropped); UserError when unreadable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise UserError(f"{path}: no such file; check the path") from err
    except OSError as err:
        raise UserError(f"{path}: cannot be read ({err.strerror}); give a readable caption file") from err
    # Spreadsheets save CSV with a byte-order mark, which would otherwise stick to the first column's name.
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise UserError(f"{path}: not valid UTF-8 at line {line}; save the file as UTF-8") from err


def _read_json(path, text, split):
    """(format, records) of a JSON caption file: COCO annotations or a Karpathy split file."""
    try:
        content = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: malformed or truncated JSON at line {err.lineno} column {err.colno} ({err.msg}); "
                        "fix the file or fetch it again") from err
    if isinstance(content, dict) and "annotations" in content and "images" in content:
        return "coco", _coco_records(path, content, split)
    images = content.get("images") if isinstance(content, dict) else None
    if isinstance(images, list) and images and isinstance(images[0], dict) and "sentences" in images[0]:
        if split is not None:
            raise UserError(f"{split}={path}: a Karpathy split file names each image's split itself; "
                            f"give it without {split}=")
        return "karpathy", _karpathy_records(path, images)
    raise UserError(f"{path}: JSON that is neither COCO caption annotations (\"images\" and \"annotations\") nor a "
                    "Karpathy split file (\"images\" with \"sentences\"); give a file in one of those formats")


def _field(entry, key, kinds, where):
    """``entry[key]`` when ``entry`` is a JSON object and that value is of one of the types ``kinds``.

    ``where`` names the entry (file included) in the UserError raised otherwise.
    """
    if not isinstance(entry, dict):
        raise UserError(f"{where} is not a JSON object; fix or remove that entry")
    value = entry.get(key)
    # JSON true/false load as bool, a subclass of int, and are no image id.
    if isinstance(value, bool) or not isinstance(value, kinds):
        expected = " or ".join(JSON_TYPE_NAMES[kind] for kind in kinds)
        raise UserError(f"{where} lacks {key!r} or it is not a {expected}; fix or remove that entry")
    return value


def _text(entry, key, where):
    """``entry[key]`` when it is a string that is not blank; UserError naming ``where`` otherwise."""
    value = _field(entry, key, (str,), where)
    if not value.strip():
        raise UserError(f"{where} has an empty {key!r}; fill it in or remove that entry")
    return value


def _coco_records(path, content, split):
    """One record per annotation of a COCO caption file, each of split ``split``."""
    file_names = {}
    for i, image in enumerate(_field(content, "images", (list,), path)):
        where = f"{path}: images[{i}]"
        image_id = _field(image, "id", (int, str), where)
        if image_id in file_names:
            raise UserError(f"{where}: image id {image_id!r} appears twice in \"images\"; remove the duplicate")
        file_names[image_id] = _text(image, "file_name", where)
    records = []
    for i, annotation in enumerate(_field(content, "annotations", (list,), path)):
        where = f"{path}: annotation {i}"
        image_id = _field(annotation, "image_id", (int, str), where)
        if image_id not in file_names:
            raise UserError(f"{where} names image id {image_id!r}, which \"images\" lacks; "
                            "add the image or remove the annotation")
        records.append(CaptionRecord(file_names[image_id], split, _text(annotation, "caption", where), None))
    return records


def _karpathy_records(path, images):
    """One record per sentence of a Karpathy split file's ``images`` entries."""
    seen = set()
    records = []
    for i, entry in enumerate(images):
        where = f"{path}: images[{i}]"
        filename = _text(entry, "filename", where)
        filepath = entry.get("filepath", "")
        if not isinstance(filepath, str):
            raise UserError(f"{where}: 'filepath' is not a string; fix or remove it")
        image = f"{filepath}/{filename}" if filepath else filename
        if image in seen:
            raise UserError(f"{where}: image {image} appears twice; merge or remove the duplicate entry")
        seen.add(image)
        split = entry.get("split")
        if split not in KARPATHY_SPLITS:
            raise UserError(f"{where} ({image}) has split {split!r}; use one of {', '.join(KARPATHY_SPLITS)}")
        for j, sentence in enumerate(_field(entry, "sentences", (list,), where)):
            records.append(_karpathy_record(image, split, sentence, f"{where} ({image}) sentence {j}"))
    return records


def _karpathy_record(image, split, sentence, where):
    """The record of one Karpathy sentence object, its "tokens" (optional) checked to be a list of strings."""
    raw = _text(sentence, "raw", where)
    tokens = sentence.get("tokens")
    if tokens is not None and not (isinstance(tokens, list) and all(isinstance(t, str) for t in tokens)):
        raise UserError(f"{where}: 'tokens' is not a list of strings; fix or remove it")
    return CaptionRecord(image, split, raw, None if tokens is None else tuple(tokens))


def _csv_records(path, text, split):
    """One record per row of a CSV/TSV caption file; ``split`` applies when the file has no split column."""
    try:
        reader, columns, width = _csv_header(path, text)
        if "split" in columns and split is not None:
            raise UserError(f"{split}={path}: the file has a split column, which already says each row's split; "
                            f"give it without {split}= or drop the column")
        records = []
        for row in reader:
            if row:  # blank lines hold no caption
                records.append(_csv_record(row, columns, width, split, f"{path}: line {reader.line_num}"))
        return records
    except csv.Error as err:
        raise UserError(f"{path}: unreadable as CSV/TSV ({err}); fix the file") from err


def _csv_header(path, text):
    """(reader positioned after the header, {column name: index}, number of columns) of a CSV/TSV text.

    The delimiter is the one whose header names both an image and a caption column: csv.Sniffer guesses from
    character counts and is misled by commas inside a TSV's captions, while the header settles it.
    """
    for delimiter in CSV_DELIMITERS:
        # newline="": lines may end in \n, \r\n or a lone \r (old Mac exports), which csv then reads as rows.
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        names = [name.strip().lower() for name in next((row for row in reader if row), [])]
        if "image" in names and "caption" in names:
            for name in ("image", "caption", "split"):
                if names.count(name) > 1:
                    raise UserError(f"{path}: the header names the column {name!r} twice; rename or drop one")
            columns = {name: names.index(name) for name in ("image", "caption", "split") if name in names}
            return reader, columns, len(names)
    raise UserError(f"{path}: matches none of the three formats: COCO annotations, Karpathy split file, "
                    "CSV/TSV with image,caption columns; give a file in one of them")


def _csv_record(row, columns, width, split, where):
    """The record of one CSV/TSV row of ``width`` cells; ``where`` names the row in the UserError of a bad one."""
    if len(row) != width:
        raise UserError(f"{where} has {len(row)} cells but the header names {width} columns; "
                        "quote cells that hold the delimiter")
    image, caption = row[columns["image"]].strip(), row[columns["caption"]]
    if not image:
        raise UserError(f"{where}: the image cell is empty; fill it in or remove the row")
    if not caption.strip():
        raise UserError(f"{where}: the caption cell is empty; write the caption or remove the row")
    if "split" in columns:
        split = row[columns["split"]].strip()
        if split not in SPLIT_NAMES:
            raise UserError(f"{where}: split {split!r} is not one of {', '.join(SPLIT_NAMES)}; fix the cell")
    return CaptionRecord(image, split, caption, None)
