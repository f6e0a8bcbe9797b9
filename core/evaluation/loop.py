"""Captions for a split's images, and their scores: COCO caption metrics, plus grounding where scenes are known.

Dimension legend: M images, D feature width, L max caption length.
"""
import json
import re
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from core.data.layout import HELD_OUT_PAIRS_KEY, HELD_OUT_SPLIT, NOVEL_SPLIT, SHAPES_SCENES_FILE
from core.data.vocab import decode_captions
from core.decoding import DecodeConfig
from core.evaluation.attention import correctness_of, decode_recorded
from core.evaluation.composition import pair_metrics
from core.evaluation.grounding import caption_findings, grounding_metrics
from core.evaluation.metrics import caption_scores, per_image_scores
from core.evaluation.relation_probe import forced_relation_accuracy, wilson_interval
from core.runtime.distributed import SINGLE
from core.runtime.errors import UserError
from core.shapes_world.spec import DEFAULT_WORLD
from core.shapes_world.worlds import WORLDS


def caption_features(model, features, max_length, decode_config=None, batch_size=500, rng=None):
    """Captions (strings) for image features of shape (M, D), decoded ``batch_size`` images at a time.

    ``decode_config`` is a ``core.decoding.DecodeConfig`` (default greedy); ``max_length`` counts <END>.
    """
    return [record["caption"] for record in decode_records(model, features, max_length, decode_config, batch_size,
                                                           rng)]


def decode_records(model, features, max_length, decode_config=None, batch_size=500, rng=None, attention_cells=None):
    """What decoding shows of each image of ``features`` (M, D), ``batch_size`` images at a time: a dict per image
    with its ``caption``; with ``attention_cells`` (R, for a model attending over cells) the ``attention`` of each
    of its words and of its <END>, float32 of shape (T, R), recorded in the same pass; with beam search its
    ``beams``, every hypothesis as [caption, ranking score], best first."""
    records = []
    for start in range(0, len(features), batch_size):
        batch = np.asarray(features[start:start + batch_size], dtype=np.float32)  # (B, D)
        ids, weights, beams = decode_recorded(model, batch, max_length, decode_config, rng, attention_cells)
        for n, text in enumerate(decode_captions(ids, model.idx_to_word)):  # ids: (B, max_length)
            record = {"caption": text}
            if weights is not None:
                record["attention"] = weights[n][_spoken(ids[n], model)]  # (T, R)
            if beams is not None:
                texts = decode_captions(beams.captions[n], model.idx_to_word)  # (B, L) -> B captions
                record["beams"] = [[t, float(score)] for t, score in zip(texts, beams.scores[n]) if np.isfinite(score)]
            records.append(record)
    return records


def _spoken(ids, model):
    """Positions of a decoded row's words as its caption text keeps them, and of its <END>: up to the first
    <END>, <NULL> and <START> left out as ``decode_captions`` leaves them."""
    ends = np.flatnonzero(ids == model.end_idx)
    row = ids[:ends[0] + 1] if len(ends) else ids
    return np.flatnonzero((row != model.null_idx) & (row != model.start_idx))


def caption_shards(group, model, features, images, max_length, decode_config=None, rng=None):
    """Captions of ``images`` (rows of ``features``), each rank of ``group`` decoding its shard: the list, in the
    images' order, on rank 0; None on the other ranks. Sampling (a temperature) draws per rank."""
    records = record_shards(group, model, features, images, max_length, decode_config, rng)
    return None if records is None else [record["caption"] for record in records]


def record_shards(group, model, features, images, max_length, decode_config=None, rng=None, attention_cells=None):
    """``decode_records`` of ``images`` (rows of ``features``), each rank of ``group`` decoding its shard: the
    list, in the images' order, on rank 0; None on the other ranks. Sampling (a temperature) draws per rank."""
    mine = group.shard(images)
    records = decode_records(model, features[mine], max_length, decode_config, rng=rng,
                             attention_cells=attention_cells) if len(mine) else []
    gathered = group.gather(records)
    return None if gathered is None else [record for part in gathered for record in part]


def split_images(data, split):
    """The image rows of ``split`` that have captions, and their reference captions (lists of strings)."""
    image_idxs = np.asarray(data[f"{split}_image_idxs"])
    texts = decode_captions(data[f"{split}_captions"], data["idx_to_word"])
    references = {}
    for idx, text in zip(image_idxs.tolist(), texts):
        references.setdefault(idx, []).append(text)
    images = np.array(sorted(references), dtype=np.int64)
    return images, references


def _read_world(data_dir, split, read):
    """``read(world)`` of a shapes dataset's scene file, None for other datasets; a UserError naming ``split`` if
    the file cannot be read."""
    path = Path(data_dir) / SHAPES_SCENES_FILE
    if not path.is_file():
        return None
    try:
        return read(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"cannot read the {split} scenes of {path} ({err}); rebuild the shapes dataset") from None


def load_scenes(data_dir, split, with_image_size=False):
    """The scene truth of ``split`` (image row -> scene) for a shapes dataset; None for other datasets.
    ``with_image_size``: (scenes, the images' side in pixels), (None, None) for other datasets."""
    world = _read_world(data_dir, split, lambda world: (dict(enumerate(world[split])), int(world["image_size"])))
    if world is None:
        return (None, None) if with_image_size else None
    return world if with_image_size else world[0]


def load_world(data_dir):
    """The World (``core.shapes_world.worlds``) a shapes dataset was built from, whose words its captions use (its
    scene file names the world; one written before worlds had names is the default world's); None for other
    datasets."""
    name = _read_world(data_dir, "recorded", lambda world: world.get("world", DEFAULT_WORLD.name))
    if name is not None and name not in WORLDS:
        raise UserError(f"{Path(data_dir) / SHAPES_SCENES_FILE} names an unknown world {name!r}: rebuild the shapes "
                        "dataset")
    return None if name is None else WORLDS[name]


def load_held_out_pairs(data_dir):
    """The attribute-shape pairs a shapes world held out of training, as a sorted tuple of (attribute, shape);
    () for other datasets and worlds without any."""
    pairs = _read_world(data_dir, NOVEL_SPLIT, lambda world: world.get(HELD_OUT_PAIRS_KEY, []))
    return tuple(sorted(tuple(pair) for pair in pairs or ()))


def novel_composition(predictions, references, scenes, held_out, world, test=None):
    """``core.evaluation.composition``'s figures of the captions ``predictions`` (image row -> caption) for the
    held-out and the seen pairs, those of each image's first reference caption (``reference_*``: what the
    references themselves state) and, with ``test`` = (predictions, scenes) of the test split, the seen pairs there
    (``test_seen_*``: recall on the images the model was meant for, for comparison); captions in the words of
    ``world`` (a World)."""
    firsts = {row: captions[0] for row, captions in references.items()}
    spec = world.spec
    figures = {}
    for novel in (True, False):
        figures.update(pair_metrics(predictions, scenes, held_out, novel, spec))
        figures.update({f"reference_{key}": value for key, value in
                        pair_metrics(firsts, scenes, held_out, novel, spec).items()})
    if test is not None:
        figures.update({f"test_{key}": value for key, value in
                        pair_metrics(*test, held_out, novel=False, world=spec).items()})
    return figures


def evaluate_split(model, data, split, max_length, decode_config=None, limit=None, rng=None, attention_cells=None,
                   group=SINGLE, keep_attention=False, greedy=None):
    """Caption every image of ``split`` (the first ``limit`` if given) and score the captions.

    ``attention_cells``: R, for a model that attends over R grid cells: each caption's attention is recorded as it
    is decoded and, on the shapes world, greedy captions' attention correctness is measured
    (``core.evaluation.attention``); ``keep_attention`` returns the recorded attention too.

    ``group`` (a ``core.runtime.distributed.Group``): each rank captions its shard of the images, and rank 0 alone
    scores all of them; the other ranks return None.

    Returns a dict: predictions (image row -> caption), references (image row -> captions), metrics, per_image
    (``score_predictions``'s, with each image's beam-search hypotheses as ``beams`` when decoding by beam search),
    grounding (None off the shapes world), novel_composition (``novel_composition``'s figures on a shapes world with
    held-out pairs, else None; on the novel split with the test split in ``data``, its images are captioned too, for
    the seen pairs' recall there), relation_probe (``core.evaluation.relation_probe``'s forced-relation accuracy and
    the greedy relation accuracy's 95% interval; None off the shapes world), attention (attention correctness, on
    a shapes world, or None), decode_seconds and num_images; with ``keep_attention``, attention_weights
    (image row -> (T, R), each word's and <END>'s attention, or None for a model that attends over no cells).

    ``greedy``: this function's result for the same model, split and images decoded greedily, whose attention
    correctness and forced-relation accuracy (neither depends on the decoding) are taken instead of measured again.
    """
    images, references = split_images(data, split)
    if limit is not None:
        images = images[:limit]
    start = time.perf_counter()
    records = record_shards(group, model, data[f"{split}_features"], images, max_length, decode_config, rng,
                            attention_cells)
    seconds = time.perf_counter() - start
    test = _test_captions(group, model, data, limit, max_length, decode_config, rng) if split == NOVEL_SPLIT else None
    if records is None:
        return None  # this rank's captions went to rank 0
    records = dict(zip(images.tolist(), records))
    predictions = {row: record["caption"] for row, record in records.items()}
    result = score_predictions(predictions, {i: references[i] for i in predictions}, data["base_dir"], split)
    for row, record in records.items():
        if "beams" in record:
            result["per_image"][row]["beams"] = record["beams"]
    result["novel_composition"] = _composition(data["base_dir"], split, predictions, result["references"], test)
    attention = probe = None
    scenes, image_size = load_scenes(data["base_dir"], split, with_image_size=True)
    world = load_world(data["base_dir"])
    if scenes is not None:
        probe = dict(greedy["relation_probe"]) if greedy is not None else forced_relation_accuracy(
            model, data[f"{split}_features"], {i: references[i] for i in predictions}, scenes, max_length,
            world=world.spec)
        grounding = result["grounding"]
        n = grounding["n_relation_claims"]
        probe["greedy_relation_low"], probe["greedy_relation_high"] = wilson_interval(
            round(grounding["relation_accuracy"] * n) if n else 0, n)
    if attention_cells and scenes is not None and greedy is not None:
        attention = greedy["attention"]
    elif attention_cells and scenes is not None:
        greedy_records = records if decode_config is None or decode_config == DecodeConfig() else dict(zip(
            images.tolist(), decode_records(model, data[f"{split}_features"][images], max_length,
                                            attention_cells=attention_cells)))
        attention = correctness_of({row: r["caption"] for row, r in greedy_records.items()},
                                   {row: r["attention"] for row, r in greedy_records.items()}, scenes, image_size,
                                   world)
    if keep_attention:
        result["attention_weights"] = {row: r["attention"] for row, r in records.items()} if attention_cells else None
    return dict(result, attention=attention, relation_probe=probe, num_images=len(images), decode_seconds=seconds)


def _test_captions(group, model, data, limit, max_length, decode_config, rng):
    """Captions of the test split's images (the first ``limit``), image row -> caption, when ``data`` holds the
    split; None where it does not (and on ranks other than 0)."""
    if f"{HELD_OUT_SPLIT}_features" not in data:
        return None
    images = split_images(data, HELD_OUT_SPLIT)[0][:limit]
    captions = caption_shards(group, model, data[f"{HELD_OUT_SPLIT}_features"], images, max_length, decode_config,
                              rng)
    return None if captions is None else dict(zip(images.tolist(), captions))


def _composition(data_dir, split, predictions, references, test_predictions):
    """``novel_composition`` of a split's captions on a shapes world with held-out pairs; None elsewhere."""
    held_out = load_held_out_pairs(data_dir)
    if not held_out:
        return None
    test = None
    if test_predictions is not None:
        test = (test_predictions, load_scenes(data_dir, HELD_OUT_SPLIT))
    return novel_composition(predictions, references, load_scenes(data_dir, split), held_out, load_world(data_dir),
                             test)


def score_predictions(predictions, references, data_dir, split):
    """Metrics (and grounding, on the shapes world) of captions for images of ``split``, keyed by image row; and
    ``per_image``, each image's CIDEr-D and BLEU-4 and, on the shapes world, its grounding ``findings``
    (``per_image_record``)."""
    scenes, world = load_scenes(data_dir, split), load_world(data_dir)
    metrics, per_image = caption_scores(predictions, references)
    grounding = None
    if scenes is not None:
        grounding = grounding_metrics(predictions, {i: scenes[i] for i in predictions}, world.spec)
    return {"split": split, "predictions": predictions, "references": references, "metrics": metrics,
            "per_image": _with_findings(per_image, predictions, scenes, world), "grounding": grounding}


def per_image_record(predictions, references, data_dir, split):
    """Each image's CIDEr-D and BLEU-4 (``core.evaluation.metrics.per_image_scores``) and, on the shapes world, its
    ``findings`` (``core.evaluation.grounding.caption_findings``): image row -> dict; what ``score_predictions``
    gives as ``per_image``, without the corpus metrics."""
    return _with_findings(per_image_scores(predictions, references), predictions, load_scenes(data_dir, split),
                          load_world(data_dir))


def _with_findings(per_image, predictions, scenes, world):
    """``per_image`` with each caption's grounding findings added where ``scenes`` (image row -> scene) are known,
    captions in the words of ``world`` (a World)."""
    if scenes is not None:
        for row, caption in predictions.items():
            per_image[row]["findings"] = caption_findings(caption, scenes[row]["objects"], world.spec)
    return per_image


def coco_results(predictions, urls, urls_path):
    """The COCO results format of ``predictions`` (image row -> caption): ``[{"image_id", "caption"}]``, what the
    official evaluation tools and the COCO server read. An image's id is the number its file name ends in
    (``COCO_val2014_000000391895.jpg`` -> 391895), from ``urls`` (the split's URL list, read from ``urls_path``)."""
    results, seen = [], {}
    for row, caption in predictions.items():
        stem = Path(urlparse(str(urls[row])).path).stem
        digits = re.search(r"(\d+)$", stem)
        if digits is None:
            raise UserError(f"{urls_path} line {row + 1} ({urls[row]}) has no image id at the end of its file "
                            "name, which the COCO results format needs; drop --coco-results")
        image_id = int(digits.group(1))
        if image_id in seen:
            raise UserError(f"{urls_path} lines {seen[image_id] + 1} and {row + 1} give the same image id "
                            f"{image_id}; the COCO results format needs distinct ones")
        seen[image_id] = row
        results.append({"image_id": image_id, "caption": caption})
    return results


# The composition figures a results table shows: recall of held-out and seen pairs, precision and substitution of
# held-out pairs, each with its interval, and the references' own recall of held-out pairs (the ceiling).
SUMMARY_COMPOSITION = tuple(f"{name}{end}" for name in (
    "novel_pair_recall", "novel_colour_pair_recall", "novel_size_pair_recall", "novel_pair_precision",
    "novel_substitution_rate", "seen_pair_recall", "test_seen_pair_recall") for end in ("", "_low", "_high")) + (
    "reference_novel_pair_recall", "reference_novel_size_pair_recall")


def summary_row(result):
    """The headline numbers of an ``evaluate_split`` result, for tables: metrics and grounding merged."""
    row = dict(result["metrics"])
    grounding = result["grounding"] or {}
    for key in ("object_f1", "hallucination_rate", "count_accuracy", "relation_accuracy"):
        if key in grounding:
            row[key] = grounding[key]
    extra = {**(result.get("attention") or {}), **(result.get("relation_probe") or {}),
             **(result.get("novel_composition") or {})}
    for key in ("attention_correctness", "uniform_baseline", "forced_relation_accuracy", "n_forced_relation_claims",
                "greedy_relation_low", "greedy_relation_high", *SUMMARY_COMPOSITION):
        if key in extra:
            row[key] = extra[key]
    return {key: float(value) for key, value in row.items() if np.isfinite(value)}
