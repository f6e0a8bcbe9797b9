"""The forced-relation probe: prefixes, the prefixed decoding it runs, its scoring against scenes, intervals."""
import math

import numpy as np
import pytest

from core.decoding import greedy_decode, prefixed_greedy_decode
from core.evaluation.relation_probe import forced_relation_accuracy, relation_prefix, wilson_interval

WORDS = ["<NULL>", "<START>", "<END>", "a", "red", "blue", "circle", "star", "left", "of", "above", "and"]
W = {w: i for i, w in enumerate(WORDS)}


class ScriptedModel:
    """Decodes by script: the next word is ``script[last word]`` (<END> for a word not in the script)."""
    null_idx, start_idx, end_idx = 0, 1, 2
    word_to_idx, idx_to_word = W, WORDS

    def __init__(self, script):
        self.next = np.full(len(WORDS), W["<END>"])
        for word, after in script.items():
            self.next[W[word]] = W[after]

    def init_decode(self, features):
        return None

    def decode_step(self, tokens, state):
        log_probs = np.full((len(tokens), len(WORDS)), -10.0)
        log_probs[np.arange(len(tokens)), self.next[tokens]] = 0.0
        return log_probs, state

    def reorder_state(self, state, index):
        return state


REPLY = {"of": "a", "a": "blue", "blue": "star"}  # "... of" -> "a blue star"


def test_relation_prefix_stops_after_the_first_relations_words():
    assert relation_prefix("a red circle left of a blue star") == ["a", "red", "circle", "left", "of"]
    assert relation_prefix("a red circle to the left of a star") == "a red circle to the left of".split()
    assert relation_prefix("a red circle above a star left of a circle") == ["a", "red", "circle", "above"]
    assert relation_prefix("a red circle and a blue star") is None
    assert relation_prefix("left of a star") is None  # no object before the relation


def test_prefixed_decoding_feeds_the_prefix_then_continues_greedily():
    model = ScriptedModel(REPLY)
    prefix = np.array([[W[w] for w in "a red circle left of".split()]] * 2)
    ids = prefixed_greedy_decode(model, np.zeros((2, 3)), prefix, 10)
    np.testing.assert_array_equal(ids[:, :5], prefix)
    assert [WORDS[i] for i in ids[0, 5:9]] == ["a", "blue", "star", "<END>"]
    np.testing.assert_array_equal(prefixed_greedy_decode(model, np.zeros((2, 3)), prefix[:, :0], 10),
                                  greedy_decode(model, np.zeros((2, 3)), 10))
    with pytest.raises(ValueError):
        prefixed_greedy_decode(model, np.zeros((2, 3)), np.array([[W["a"], 2]] * 2), 10)


def scene(*objects):
    return {"objects": [{"colour": c, "shape": s, "size": "small", "x": x, "y": y, "r": 4}
                        for c, s, x, y in objects]}


def test_forced_accuracy_scores_the_completed_relation_against_the_scene():
    scenes = {0: scene(("red", "circle", 10, 30), ("blue", "star", 40, 30)),   # red circle left of blue star
              1: scene(("red", "circle", 50, 30), ("blue", "star", 20, 30))}   # ... right of it
    references = {0: ["a red circle left of a blue star", "a red circle and a blue star"],
                  1: ["a red circle left of a blue star"]}
    result = forced_relation_accuracy(ScriptedModel(REPLY), np.zeros((2, 3)), references, scenes, 10)
    assert result["n_forced_relation_claims"] == 2  # the reference without a relation is not a probe
    assert result["forced_relation_accuracy"] == 0.5 and result["forced_left_accuracy"] == 0.5
    # A completion naming no object makes no claim: wrong.
    silent = forced_relation_accuracy(ScriptedModel({}), np.zeros((2, 3)), references, scenes, 10)
    assert silent["forced_relation_accuracy"] == 0.0


def test_wilson_interval():
    low, high = wilson_interval(90, 100)
    assert low == pytest.approx(0.8256, abs=1e-4) and high == pytest.approx(0.9448, abs=1e-4)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
