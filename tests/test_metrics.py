"""Caption metrics against pycocoevalcap's scorers called directly, and the metrics table."""
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge

from core.evaluation import metrics as metrics_module
from core.evaluation.metrics import compute_metrics, java_available, normalise_caption

# Raw captions as a caller may pass them (decoded with special tokens, mixed case, extra spaces) ...
PREDICTIONS = {
    1: "<START> a red circle left of a blue star <END>",
    2: "two small green squares above a yellow triangle",
    "img3": "A big purple star  below an orange disc <END> <NULL> <NULL>",
    4: "three shapes",
}
REFERENCES = {
    1: ["a red circle left of a blue star", "a small red disc to the left of a blue star"],
    2: ["two green squares above a yellow triangle", "two small green boxes above a triangle",
        "a yellow triangle under two small green squares"],
    "img3": ["a large purple star below an orange circle", "an orange disc above a big purple star"],
    4: ["three objects", "a red circle a blue square and a green star", "three shapes in a row"],
}
# ... and the same captions as the scorers must see them, written out by hand.
RES = {
    1: ["a red circle left of a blue star"],
    2: ["two small green squares above a yellow triangle"],
    "img3": ["a big purple star below an orange disc"],
    4: ["three shapes"],
}
GTS = dict(REFERENCES)


@pytest.fixture
def no_java(monkeypatch, tmp_path):
    """A PATH with no java on it: METEOR must be left out (and its JVM not started)."""
    monkeypatch.setenv("PATH", str(tmp_path))


def compute_without_java(predictions, references):
    with pytest.warns(RuntimeWarning, match="METEOR left out"):
        return compute_metrics(predictions, references)


def test_normalise_caption_strips_special_tokens_and_case():
    assert normalise_caption("<START> A Red  circle <END> <NULL>") == "a red circle"
    assert normalise_caption("<start> an <UNK> star <end>") == "an <unk> star"


def test_scores_equal_pycocoevalcap_scorers_called_directly(no_java):
    result = compute_without_java(PREDICTIONS, REFERENCES)
    bleu, _ = Bleu(4).compute_score(GTS, RES, verbose=0)
    expected = {f"BLEU-{n}": score for n, score in enumerate(bleu, start=1)}
    expected["ROUGE-L"] = Rouge().compute_score(GTS, RES)[0]
    expected["CIDEr"] = Cider().compute_score(GTS, RES)[0]
    assert result == pytest.approx(expected, rel=1e-12)
    assert 0.3 < result["BLEU-1"] < 1.0 and 0.0 < result["CIDEr"]  # a real, imperfect score


def test_identical_captions_score_one(no_java):
    references = {i: list(refs) for i, refs in REFERENCES.items() if len(refs[0].split()) >= 4}
    predictions = {i: refs[0] for i, refs in references.items()}
    result = compute_without_java(predictions, references)
    assert result["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
    assert result["BLEU-1"] == pytest.approx(1.0, abs=1e-6)
    assert result["ROUGE-L"] == pytest.approx(1.0)


def test_wrong_words_score_lower(no_java):
    good = compute_without_java(PREDICTIONS, REFERENCES)
    bad = compute_without_java({i: "a green square" for i in PREDICTIONS}, REFERENCES)
    assert all(bad[name] < good[name] for name in good)


def test_mismatched_or_malformed_inputs_raise(no_java):
    with pytest.raises(ValueError, match="same image ids"):
        compute_metrics({1: "a red circle"}, {2: ["a red circle"]})
    with pytest.raises(ValueError, match="empty"):
        compute_metrics({}, {})
    with pytest.raises(ValueError, match="non-empty list"):
        compute_metrics({1: "a red circle"}, {1: "a red circle"})
    with pytest.raises(ValueError, match="non-empty list"):
        compute_metrics({1: "a red circle"}, {1: []})
    with pytest.raises(ValueError, match="one caption string"):
        compute_metrics({1: ["a red circle"]}, {1: ["a red circle"]})


def test_meteor_is_left_out_without_java(no_java, monkeypatch):
    assert not java_available()

    def no_jvm():
        raise AssertionError("Meteor must not start without java")

    monkeypatch.setattr(metrics_module, "Meteor", no_jvm)
    result = compute_without_java(PREDICTIONS, REFERENCES)
    assert "METEOR" not in result and "BLEU-4" in result


@pytest.mark.skipif(not java_available(), reason="needs java on PATH for METEOR")
def test_meteor_equals_direct_scorer_and_its_process_is_ended(monkeypatch):
    """One JVM (it takes seconds to start): the scorer is also called directly on the hand-normalised
    captions from inside the instance compute_metrics starts."""
    started = []

    class RecordingMeteor(Meteor):
        def compute_score(self, gts, res):
            self.direct = super().compute_score(GTS, RES)[0]
            return super().compute_score(gts, res)

        def __init__(self):
            super().__init__()
            started.append(self)

    monkeypatch.setattr(metrics_module, "Meteor", RecordingMeteor)
    result = compute_metrics(PREDICTIONS, REFERENCES)
    assert len(started) == 1
    assert result["METEOR"] == pytest.approx(started[0].direct, rel=1e-12)
    assert 0.1 < result["METEOR"] < 1.0
    assert set(result) == set(metrics_module.METRIC_NAMES)
    process = started[0].meteor_p
    assert process.returncode is not None and process.stdin.closed and process.stdout.closed
