"""The forced-relation probe: can a model name what stands left of, right of, above or below an object?

Greedy captions state a relation in few captions (about one in twenty on the shapes world), so their relation
accuracy rests on a hundred-odd claims and says little. The probe asks for a relation every time: each
reference caption that states one is fed to the model up to and including its relation words ("a red circle
left of"), the model completes it greedily, and the relation the completed caption states is checked against
the scene (``core.evaluation.relations.relation_holds``). A completion that names no second object counts as wrong.

Dimension legend: P probed prefixes, k prefix length in words, L most words decoded.
"""
import math
from collections import Counter, defaultdict

import numpy as np

from core.data.vocab import decode_captions
from core.decoding import prefixed_greedy_decode
from core.evaluation.grounding import parse_caption
from core.evaluation.relations import relation_holds
from core.shapes_world.spec import DEFAULT_WORLD


def relation_prefix(caption, world=DEFAULT_WORLD):
    """The words of ``caption`` up to and including its first relation's words (after a noun), or None; ``world``
    is the WorldSpec whose words it uses."""
    words = caption.split()
    for end in range(1, len(words) + 1):
        for sequence, _ in world.relation_sequences:
            start = end - len(sequence)
            if start > 0 and tuple(words[start:end]) == sequence and any(w in world.noun_shapes for w in words[:start]):
                return words[:end]
    return None


def wilson_interval(correct, total, z=1.96):
    """The 95% Wilson score interval (low, high) of a proportion ``correct / total``; (nan, nan) for none."""
    if not total:
        return math.nan, math.nan
    p, n = correct / total, total
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def _probes(references, word_to_idx, world):
    """(image row, prefix words) of every reference stating a relation whose words are all in the vocabulary."""
    probes = []
    for row, captions in references.items():
        for caption in captions:
            prefix = relation_prefix(caption, world)
            if prefix is not None and all(word in word_to_idx for word in prefix):
                probes.append((row, prefix))
    return probes


def forced_relation_accuracy(model, features, references, scenes, max_length, batch_size=500, world=DEFAULT_WORLD):
    """Run the probe over ``references`` (image row -> reference captions) of images whose ``features`` (rows
    indexed by image row) and ``scenes`` (image row -> scene) are given, captions in ``world``'s words.

    Returns a dict: forced_relation_accuracy with its 95% interval (low, high), the number of probes and the
    accuracy per relation (left, right, above, below).
    """
    by_length = defaultdict(list)
    for row, prefix in _probes(references, model.word_to_idx, world):
        by_length[len(prefix)].append((row, prefix))
    tally, per_relation = Counter(), defaultdict(Counter)
    for length, probes in sorted(by_length.items()):
        for start in range(0, len(probes), batch_size):
            batch = probes[start:start + batch_size]
            rows = np.array([row for row, _ in batch])
            prefix = np.array([[model.word_to_idx[w] for w in words] for _, words in batch])  # (P, k)
            ids = prefixed_greedy_decode(model, np.asarray(features[rows], dtype=np.float32), prefix,
                                         max(max_length, length + 1))
            for row, caption in zip(rows.tolist(), decode_captions(ids, model.idx_to_word)):
                relations = parse_caption(caption, world).relations
                right = bool(relations) and relation_holds(relations[0], scenes[row]["objects"])
                tally.update(n=1, correct=int(right))
                if relations:
                    per_relation[relations[0].relation].update(n=1, correct=int(right))
    low, high = wilson_interval(tally["correct"], tally["n"])
    result = {"forced_relation_accuracy": tally["correct"] / tally["n"] if tally["n"] else math.nan,
              "forced_relation_low": low, "forced_relation_high": high, "n_forced_relation_claims": tally["n"]}
    for relation, counts in sorted(per_relation.items()):
        result[f"forced_{relation}_accuracy"] = counts["correct"] / counts["n"]
    return result
