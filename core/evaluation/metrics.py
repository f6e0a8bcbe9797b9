"""COCO caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D) from the reference pycocoevalcap scorers.

Captions are compared as our data stores them: lower-case words separated by spaces, with the
special tokens ``<START>``, ``<END>`` and ``<NULL>`` removed. ``<UNK>`` stays a word, so an unknown
word in a prediction only matches an unknown word in a reference. No PTB tokenizer is run (our
vocabulary was built from already tokenised captions). Scores are on pycocoevalcap's 0-1 scale.

METEOR runs pycocoevalcap's ``meteor-1.5.jar`` in a Java subprocess; it is left out, with a
warning, where ``java`` is not on PATH.
"""
import shutil
import warnings
from contextlib import contextmanager

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge

from core.data.layout import END, NULL, START

METRIC_NAMES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
# Lower-cased, as captions are before scoring; <UNK> stays: it is a word the model wrote.
STRUCTURAL_TOKENS = frozenset(token.lower() for token in (NULL, START, END))


def java_available():
    """Whether a ``java`` executable is on PATH (METEOR needs one)."""
    return shutil.which("java") is not None


def normalise_caption(text):
    """A caption as the scorers see it: lower-case words joined by single spaces, special tokens removed."""
    return " ".join(word for word in text.lower().split() if word not in STRUCTURAL_TOKENS)


def compute_metrics(predictions, references):
    """Corpus caption metrics of one predicted caption per image against all its references.

    Inputs:
    - predictions: dict image id -> caption string.
    - references: dict image id -> non-empty list of reference caption strings (all of them).
      Both dicts must hold the same image ids.

    Returns:
    - dict with keys "BLEU-1".."BLEU-4", "ROUGE-L", "CIDEr" (pycocoevalcap's Cider, i.e. CIDEr-D) and
      "METEOR" when java is available, each a float on the 0-1 scale as pycocoevalcap computes it:
      BLEU and METEOR over the corpus, ROUGE-L and CIDEr as the mean of per-image scores (CIDEr's
      document frequencies come from these references).
    """
    return caption_scores(predictions, references)[0]


def caption_scores(predictions, references):
    """``compute_metrics``'s corpus metrics, and from the same scorer runs each image's own CIDEr-D and BLEU-4
    (``per_image_scores``): (metrics, {image id: {"CIDEr": float, "BLEU-4": float}})."""
    gts, res = _scorer_inputs(predictions, references)
    metrics, per_image = _bleu_and_cider(gts, res)
    if java_available():
        with _meteor_scorer() as meteor:
            metrics["METEOR"] = float(meteor.compute_score(gts, res)[0])
    else:
        warnings.warn("METEOR left out: no `java` on PATH; install a Java runtime to get it", RuntimeWarning,
                      stacklevel=2)
    metrics["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    return {name: metrics[name] for name in METRIC_NAMES if name in metrics}, per_image


def per_image_scores(predictions, references):
    """Each image's CIDEr-D and BLEU-4, {image id: {"CIDEr": float, "BLEU-4": float}}, as ``compute_metrics``
    scores the corpus. An image's BLEU-4 is pycocoevalcap's sentence score (its brevity penalty per caption), so
    the corpus BLEU-4 is not their mean; the corpus CIDEr-D is."""
    return _bleu_and_cider(*_scorer_inputs(predictions, references))[1]


def _bleu_and_cider(gts, res):
    """BLEU-1..4 and CIDEr-D of pycocoevalcap's inputs: (corpus metrics, per-image CIDEr-D and BLEU-4)."""
    bleu, bleu_per_image = Bleu(4).compute_score(gts, res, verbose=0)
    metrics = {f"BLEU-{n}": float(score) for n, score in enumerate(bleu, start=1)}
    cider, cider_per_image = Cider().compute_score(gts, res)
    metrics["CIDEr"] = float(cider)
    # Both scorers walk the images in gts' order.
    per_image = {image_id: {"CIDEr": float(c), "BLEU-4": float(b)}
                 for image_id, c, b in zip(gts, cider_per_image, bleu_per_image[3])}
    return metrics, per_image


def _scorer_inputs(predictions, references):
    """Check the two dicts and turn them into pycocoevalcap's (gts, res): id -> list of normalised strings."""
    if set(predictions) != set(references):
        missing = len(set(predictions) - set(references))
        extra = len(set(references) - set(predictions))
        raise ValueError(f"predictions and references must cover the same image ids: {missing} predicted "
                         f"image(s) lack references, {extra} referenced image(s) lack a prediction")
    if not predictions:
        raise ValueError("no captions to score: predictions and references are empty")
    gts, res = {}, {}
    for image_id, caption in predictions.items():
        refs = references[image_id]
        if not isinstance(caption, str):
            raise ValueError(f"image {image_id!r}: the prediction should be one caption string, "
                             f"got {type(caption).__name__}")
        if isinstance(refs, str) or not refs or not all(isinstance(ref, str) for ref in refs):
            raise ValueError(f"image {image_id!r}: references should be a non-empty list of strings")
        res[image_id] = [normalise_caption(caption)]
        gts[image_id] = [normalise_caption(ref) for ref in refs]
    return gts, res


@contextmanager
def _meteor_scorer():
    """pycocoevalcap's Meteor, whose Java subprocess is ended on exit rather than left to ``__del__``.

    Meteor only stops its process in ``__del__``, which may run late or never (reference cycles,
    interpreter exit); here the pipes are closed and the process reaped as soon as scoring ends,
    also on error. The later ``__del__`` then finds nothing left to stop.
    """
    scorer = Meteor()
    try:
        yield scorer
    finally:
        process = scorer.meteor_p
        with scorer.lock:
            process.stdin.close()
            process.kill()
            process.wait()
            process.stdout.close()
            process.stderr.close()
