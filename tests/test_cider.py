"""core.evaluation.cider: CIDEr-D equal to pycocoevalcap's Cider (the COCO evaluation's), and its document
frequencies."""
from collections import Counter

import numpy as np
import pytest
from pycocoevalcap.cider.cider import Cider

from core.evaluation.cider import CiderD, DocumentFrequency

HAND_MADE = {  # images with different numbers of references, repeated words, empty and short captions
    "one ref": (["a red circle left of a blue star"], "a red circle left of a star"),
    "repeats": (["a a a a red red", "red red circle", "two red circles and a red star"], "red red red red red"),
    "empty caption": (["a green square", "one green box"], ""),
    "empty reference": (["", "a blue star above a circle"], "a blue star"),
    "short": (["star", "a star", "big star"], "star"),
    "exact": (["three shapes in a row", "three shapes"], "three shapes in a row"),
    "no overlap": (["a purple triangle"], "two orange discs"),
}


def pycoco(gts, res):
    return Cider().compute_score(gts, res)


def test_hand_made_cases_equal_pycocoevalcap():
    gts = {name: refs for name, (refs, _) in HAND_MADE.items()}
    res = {name: [hyp] for name, (_, hyp) in HAND_MADE.items()}
    (mean, scores), (their_mean, theirs) = CiderD().compute_score(gts, res), pycoco(gts, res)
    np.testing.assert_allclose(scores, theirs, rtol=0, atol=1e-9)
    assert abs(mean - their_mean) < 1e-9 and scores[list(gts).index("exact")] > 1


@pytest.mark.parametrize("seed", range(6))
def test_random_caption_sets_equal_pycocoevalcap(seed):
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(rng.integers(3, 40))]

    def caption():
        return " ".join(rng.choice(words, rng.integers(0 if seed % 2 else 1, 14)))

    gts = {i: [caption() for _ in range(rng.integers(1, 7))] for i in range(rng.integers(1, 60))}
    res = {i: [caption()] for i in gts}
    np.testing.assert_allclose(CiderD().compute_score(gts, res)[1], pycoco(gts, res)[1], rtol=0, atol=1e-9)


def test_several_hypotheses_of_an_image_are_each_scored_as_alone():
    rng = np.random.default_rng(7)
    words = [f"w{i}" for i in range(12)]
    refs = [[list(rng.choice(words, rng.integers(2, 9))) for _ in range(4)] for _ in range(5)]
    hyps = [list(rng.choice(words, rng.integers(1, 9))) for _ in range(15)]
    image = np.repeat(np.arange(5), 3)
    df = DocumentFrequency(refs)
    batch = CiderD(document_frequency=df).score(hyps, image, refs)
    alone = [CiderD(document_frequency=df).score([h], [0], [refs[i]])[0] for h, i in zip(hyps, image)]
    np.testing.assert_allclose(batch, alone, rtol=0, atol=1e-12)
    corpus = CiderD().score(hyps[::3], np.arange(5), refs)  # the evaluated references' own frequencies
    np.testing.assert_allclose(batch[::3], corpus, rtol=0, atol=1e-12)


def test_train_document_frequencies_equal_a_direct_count():
    rng = np.random.default_rng(3)
    words = ["a", "red", "blue", "circle", "star", "left", "of"]
    references = [[list(rng.choice(words, rng.integers(0, 8))) for _ in range(rng.integers(1, 5))]
                  for _ in range(30)]
    df = DocumentFrequency(references)
    assert df.num_documents == 30
    for k in range(1, 5):
        direct = Counter(gram for refs in references for gram in
                         {tuple(c[i:i + k]) for c in refs for i in range(len(c) - k + 1)})
        assert df.counts(k) == dict(direct)


def test_fixed_frequencies_weight_the_scores():
    refs = [["a red circle".split()], ["a blue star".split()]]
    rare = DocumentFrequency(refs + [["two green boxes".split()]] * 8)  # "a" is now in 2 of 10 images, not 2 of 2
    same = CiderD(document_frequency=rare).score(["a red circle".split()], [0], refs)
    # Identical captions: the 1-, 2- and 3-gram cosines are 1, a 3-word caption has no 4-gram: (1+1+1+0)/4 x 10.
    assert same[0] == pytest.approx(7.5, abs=1e-12)
    near = [["a red star".split()], [0]]
    assert CiderD(document_frequency=rare).score(*near, refs)[0] != CiderD().score(*near, refs)[0]


def test_bad_input_raises():
    with pytest.raises(ValueError, match="same image ids"):
        CiderD().compute_score({1: ["a"]}, {2: ["a"]})
    with pytest.raises(ValueError, match="n=3"):
        CiderD(n=3)
