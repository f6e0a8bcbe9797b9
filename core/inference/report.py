"""The evaluation report: a static page showing every evaluated image with its captions, opened from ``file://``
with no server and no network request.

A report folder holds ``index.html`` (the summary and, for readers without JavaScript, every caption: written by
``core.inference.report_html``), the data the page's script reads (``report-data.js``, which sets
``window.REPORT_DATA``, small pictures included as data URIs), the script and style (``report_assets``) and the
larger pictures (``images/<row>.jpg``).
The script renders the cards a page at a time, sorts and filters them, keeps its state in the URL's hash and
draws each word's attention over the picture.

A report shows one run or several side by side (``--compare``, the results study): each is a ``ReportRun``, and
every run of a report captions the same images. Everything shown comes from the evaluation's record
(``core.evaluation.loop.evaluate_split``): per-image CIDEr-D and BLEU-4, grounding findings, beam hypotheses and
the attention recorded while the captions were decoded.

Dimension legend: T words of a caption, R grid cells.
"""
import base64
import io
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from core.data.images import ImageSource
from core.data.layout import REPORT_DATA, REPORT_INDEX, REPORT_SCRIPT, REPORT_STYLE, report_image_file
from core.evaluation.loop import per_image_record
from core.inference.report_html import GENERATOR, caption_html, index_html
from core.runtime.errors import UserError
from core.runtime.fileio import build_folder, check_writable_dir

ASSETS = Path(__file__).resolve().parent / "report_assets"
DATA_PREFIX, DATA_SUFFIX = "window.REPORT_DATA = ", ";\n"
ATTENTION_TOTAL = 10000  # each word's weights are stored as integers summing to this: exactly 1 once divided
PAGE_SIZE = 50  # cards on a page
PICTURE_SIDE = 256  # larger pictures are scaled down to this many pixels a side
# Pictures up to this side travel in the page's data as data URIs (a shapes picture's JPEG is about 3 kB, and
# thousands of tiny files cost more to write than to encode); larger ones are files of the report.
INLINE_SIDE = 128
# JPEG at this quality without chroma subsampling keeps a shapes picture's edges and colours, at a third of a PNG's
# bytes and a tenth of its encoding time (the pictures' noise is what makes PNG large and slow).
JPEG_QUALITY = 90


@dataclass(frozen=True)
class ReportRun:
    """One run's captions in a report: its ``name``, ``details`` (label -> text: checkpoint, model, split,
    decoding...) and ``result``, an ``evaluate_split`` record (predictions, references, per_image, metrics,
    grounding, relation_probe, attention, and attention_weights where recorded)."""
    name: str
    details: dict
    result: dict


def check_report_dir(path, flag):
    """UserError naming ``flag`` unless a report can be written at ``path``: a new or empty folder, or an earlier
    report (replaced); creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file, not a folder; choose a folder for the report")
    if path.is_dir() and any(path.iterdir()) and not _is_report(path):
        raise UserError(f"{flag} {path} holds files that are not a report; choose a new or empty folder")
    check_writable_dir(path.parent, flag)  # the report is built beside it and renamed into place


def _is_report(folder):
    index = folder / REPORT_INDEX
    return index.is_file() and GENERATOR in index.read_text(encoding="utf-8", errors="replace")[:2000]


def write_report(out, runs, picture, title, progress=True):
    """Write the report of ``runs`` (ReportRun, the same images each) into the folder ``out`` in one rename,
    replacing an earlier report there; returns the path of its ``index.html``.

    ``picture(row)`` gives image row's picture, uint8 of shape (H, W, 3), or None where there is none.
    """
    rows = sorted(runs[0].result["predictions"])

    def write(folder):
        sources = _write_pictures(folder, rows, picture, progress)
        data = page_data(runs, rows, sources, title)
        (folder / REPORT_DATA).write_text(DATA_PREFIX + json.dumps(data, separators=(",", ":")) + DATA_SUFFIX,
                                          encoding="utf-8")
        (folder / REPORT_INDEX).write_text(index_html(data, runs), encoding="utf-8")
        for asset in (REPORT_SCRIPT, REPORT_STYLE):
            shutil.copyfile(ASSETS / asset, folder / asset)

    return build_folder(out, write) / REPORT_INDEX


def _write_pictures(folder, rows, picture, progress):
    """Each row's picture as a JPEG of at most PICTURE_SIDE a side: row -> a data URI (up to INLINE_SIDE a side) or
    the path of a file of the report, relative to it; None where there is no picture."""
    sources = {}
    for row in tqdm(rows, desc="report pictures", disable=not progress, leave=False):
        pixels = picture(row)
        if pixels is None:
            sources[row] = None
            continue
        image = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
        image.thumbnail((PICTURE_SIDE, PICTURE_SIDE))
        jpeg = io.BytesIO()
        image.save(jpeg, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
        if max(image.size) <= INLINE_SIDE:
            sources[row] = "data:image/jpeg;base64," + base64.b64encode(jpeg.getvalue()).decode("ascii")
        else:
            sources[row] = report_image_file(row)
            (folder / sources[row]).parent.mkdir(exist_ok=True)
            (folder / sources[row]).write_bytes(jpeg.getvalue())
    return sources


def page_data(runs, rows, sources, title):
    """What the page's script reads (``window.REPORT_DATA``): the runs, and per image row its picture, references
    and each run's caption (``c``), caption marked by its grounding findings (``h``, ``caption_html``), CIDEr-D,
    BLEU-4, whether it hallucinates (``halluc``), its number of marks, its beam hypotheses and, for attention
    models, each word's attention (``att``, ``encode_attention``)."""
    images = []
    for row in rows:
        images.append({"row": row, "src": sources[row], "refs": runs[0].result["references"][row],
                       "runs": [_image_run(run.result, row) for run in runs]})
    cells = [_cells(run.result) for run in runs]
    return {"title": title, "pageSize": PAGE_SIZE, "images": images,
            "runs": [{"name": run.name, "cells": count} for run, count in zip(runs, cells)]}


def _cells(result):
    """R, the cells a run's attention is over; 0 for a run without recorded attention."""
    weights = result.get("attention_weights")
    return int(next(iter(weights.values())).shape[1]) if weights else 0


def _image_run(result, row):
    """One run's entry of one image in the page's data."""
    caption, per = result["predictions"][row], result["per_image"][row]
    findings = per.get("findings")
    entry = {"c": caption, "h": caption_html(caption, findings), "cider": per["CIDEr"], "bleu4": per["BLEU-4"],
             "halluc": bool(findings and findings["hallucinated"]), "marks": len(findings["marks"]) if findings else 0}
    if "beams" in per:
        entry["beams"] = per["beams"]
    weights = (result.get("attention_weights") or {}).get(row)
    if weights is not None:
        entry["att"] = encode_attention(weights[:len(caption.split())])  # the words' rows, <END>'s left out
    return entry


def encode_attention(weights):
    """Each word's attention over the cells, (T, R), as T base64 strings of R little-endian uint16 that sum to
    ATTENTION_TOTAL: the weights renormalised over the cells and rounded by largest remainders."""
    weights = np.asarray(weights, dtype=np.float64)
    mass = weights.sum(axis=1, keepdims=True)  # (T, 1)
    shares = np.where(mass > 0, weights / np.where(mass > 0, mass, 1), 1.0 / weights.shape[1])  # (T, R)
    scaled = shares * ATTENTION_TOTAL
    counts = np.floor(scaled).astype(np.int64)  # (T, R)
    short = ATTENTION_TOTAL - counts.sum(axis=1, keepdims=True)  # (T, 1): units still to hand out
    rank = np.argsort(np.argsort(counts - scaled, axis=1, kind="stable"), axis=1)  # 0: largest remainder
    counts += rank < short
    return [base64.b64encode(row.astype("<u2").tobytes()).decode("ascii") for row in counts]


def decode_attention(encoded):
    """The weights ``encode_attention`` wrote, float of shape (T, R), each row summing to 1."""
    counts = np.stack([np.frombuffer(base64.b64decode(text), dtype="<u2") for text in encoded])  # (T, R)
    return counts / ATTENTION_TOTAL


def read_report_data(folder):
    """The data a report's page reads (what ``page_data`` returned), from the report folder."""
    text = (Path(folder) / REPORT_DATA).read_text(encoding="utf-8")
    return json.loads(text[len(DATA_PREFIX):-len(DATA_SUFFIX)])


def evaluated_run(model, checkpoint, decoding, result):
    """This evaluation as a ReportRun: ``model`` (its kind), the ``checkpoint`` path, the ``decoding`` settings
    (the record's) and ``evaluate_split``'s result."""
    details = {"checkpoint": str(checkpoint), "model": model, "split": result["split"],
               "images": str(result["num_images"]), "decoding": describe_decoding(decoding)}
    return ReportRun(f"{model}, {describe_decoding(decoding, False)}", details, result)


def compare_run(path, split, images, references, data_dir):
    """The run an earlier ``--output`` file holds, as a ReportRun beside this evaluation: checked to be of the same
    split and images, with each image scored as this one is (``per_image_record``).

    ``images``: the rows this evaluation captions; ``references``: image row -> reference captions.
    """
    record = _read_output(path)
    if record["split"] != split:
        raise UserError(f"--compare {path} holds captions of the {record['split']} split, this evaluation the "
                        f"{split} split; pass --split {record['split']} or compare an output of the {split} split")
    predictions = {int(row): caption for row, caption in record["predictions"].items()}
    rows = set(np.asarray(images).tolist())
    if set(predictions) != rows:
        extra = sorted(set(predictions) ^ rows)[0]
        raise UserError(f"--compare {path} captions {len(predictions)} images and this evaluation {len(rows)}, not "
                        f"the same ones (image row {extra} is in one only); evaluate the same images (--num-samples) "
                        "or compare an output of these")
    theirs = {int(row): refs for row, refs in (record.get("references") or {}).items()}
    if any(theirs.get(row, references[row]) != references[row] for row in rows):
        raise UserError(f"--compare {path} has other reference captions for the same images: it comes from another "
                        "dataset; pass the --data-dir it was evaluated on")
    result = dict(record, predictions=predictions, references={row: references[row] for row in rows},
                  per_image=per_image_record(predictions, {row: references[row] for row in rows}, data_dir, split))
    result.pop("attention_weights", None)
    details = {"file": str(path), "checkpoint": record.get("checkpoint", "?"), "model": record.get("model", "?"),
               "split": split, "images": str(len(rows)), "decoding": describe_decoding(record.get("decoding"))}
    name = f"{Path(path).name}: {record.get('model', 'run')}, {describe_decoding(record.get('decoding'), False)}"
    return ReportRun(name, details, result)


def _read_output(path):
    """An ``inference.py --evaluate --output`` record read from ``path``; UserError naming --compare otherwise."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise UserError(f"--compare {path} cannot be read ({err.strerror}); give the JSON file an earlier "
                        "`inference.py --evaluate --output FILE` wrote") from None
    except ValueError:
        raise UserError(f"--compare {path} is not JSON; give the file an earlier `inference.py --evaluate --output "
                        "FILE` wrote") from None
    if not isinstance(record, dict) or not isinstance(record.get("predictions"), dict) or "split" not in record:
        raise UserError(f"--compare {path} is not the output of an evaluation (no split and predictions); give the "
                        "file an earlier `inference.py --evaluate --output FILE` wrote")
    return record


def describe_decoding(decoding, with_length=True):
    """A run's decoding settings (the record's ``decoding``) in words: ``greedy``, ``beam 3``, ``beam 3, length
    penalty 0.6``, ``sampled at temperature 0.8``; ``with_length``: and the most words, where given."""
    if not decoding:
        return "?"
    if decoding.get("temperature") is not None:
        text = f"sampled at temperature {decoding['temperature']}"
    elif decoding.get("beam_size", 1) > 1:
        penalty = decoding.get("length_penalty") or 0.0
        text = f"beam {decoding['beam_size']}" + (f", length penalty {penalty}" if penalty else "")
    else:
        text = "greedy"
    return f"{text}, at most {decoding['max_length']} words" if with_length and "max_length" in decoding else text


def evaluation_report(out, runs, data, split, images_dir=None, progress=True):
    """Write ``inference.py --report``'s page of ``runs`` (this evaluation's first) over a split of ``data``
    (``load_coco_data``'s dict), with the pictures the dataset holds or ``images_dir`` has (nothing is fetched)."""
    urls = data[f"{split}_urls"]
    count = len(runs[0].result["predictions"])
    title = " vs ".join(run.name for run in runs) + f": {split} split, {count} images"
    start = time.perf_counter()
    with ImageSource(data["base_dir"], images_dir=images_dir, fetch_urls=False) as source:
        path = write_report(out, runs, lambda row: source.get(split, row, str(urls[row])), title, progress)
    print(f"report: {path} (written in {time.perf_counter() - start:.1f} s)")
    return path
