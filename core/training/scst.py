"""Self-critical sequence training (SCST, Rennie et al. 2017): CIDEr-D of sampled captions as the reward.

For each image the model samples K captions; a caption's reward is its CIDEr-D against the image's references
with document frequencies from the training references; its advantage is the reward minus a baseline, either the
mean reward of the image's other K - 1 samples (``mean``) or the reward of the image's greedy caption
(``greedy``, the paper's). An update descends the surrogate

    -sum_{n,k} advantage[n, k] * log p(sample[n, k] | image n) / (N K)

whose gradient is the policy gradient with that baseline. The numpy models take it through their hand-written
backward passes (the loss's per-caption weights), the Transformer through autograd: the same surrogate either way.

``<END>`` is a word of every caption and reference in the reward, as in the reference implementation: without it
a caption cut off mid-phrase ("a red circle left of a") scores as well as the finished one, and the policy learns
to stop early, since shorter samples lose fewer n-grams to the clipping than they gain in precision.

Dimension legend: N images, K samples per image, S reference slots (the most references an image has),
T caption length with <START>, L most words decoded.
"""
import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.data.layout import MAX_DECODE_LENGTH, NULL, TRAIN_DF_FILE
from core.decoding import greedy_decode, sample_decode
from core.evaluation.cider import CiderD, DocumentFrequency
from core.runtime.errors import UserError
from core.runtime.fileio import atomic_write
from core.training.solver import Metric

BASELINES = ("mean", "greedy")
REWARD = Metric("CIDEr-D", sign=-1.0)  # the solver minimises -reward; it shows and plots the reward


# Every sample of a minibatch's images is decoded at once: beyond this many per image (published runs use 5 to
# 16) a minibatch's samples outgrow memory long before they help.
MAX_SAMPLES = 256


@dataclass(frozen=True)
class SCSTConfig:
    """How self-critical training samples and rewards; ``training.py``'s --scst-* flags."""
    samples: int = 5  # captions sampled per image
    baseline: str = "mean"  # "mean" of the image's other samples' rewards, or "greedy" (its greedy caption's)
    max_length: int = MAX_DECODE_LENGTH  # the most words a sample has, <END> included
    temperature: float = 1.0  # of the sampling softmax; 1 samples the model's own distribution

    def __post_init__(self):
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {', '.join(BASELINES)}, got {self.baseline!r}")
        if isinstance(self.samples, bool) or not isinstance(self.samples, (int, np.integer)) \
                or not 1 <= self.samples <= MAX_SAMPLES:
            raise ValueError(f"samples must be an integer in 1..{MAX_SAMPLES}, got {self.samples!r}")
        if self.baseline == "mean" and self.samples < 2:
            raise ValueError(f"the mean baseline averages an image's other samples: it needs 2 or more samples, "
                             f"got {self.samples}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature!r}")


def reference_sets(captions, image_idxs, null_idx):
    """Every image's captions side by side: the rows SCST iterates over.

    Inputs: captions of shape (C, T), one caption a row; image_idxs of shape (C,), each caption's image.
    Returns: images of shape (M,), the distinct images in order; refs of shape (M, S, T), image m's captions in
    slots 0.., the rest all <NULL>.
    """
    order = np.argsort(image_idxs, kind="stable")
    images, first, counts = np.unique(image_idxs[order], return_index=True, return_counts=True)
    refs = np.full((len(images), counts.max(initial=0), captions.shape[1]), null_idx, dtype=captions.dtype)
    slot = np.arange(len(order)) - np.repeat(first, counts)  # each caption's place among its image's
    refs[np.repeat(np.arange(len(images)), counts), slot] = captions[order]
    return images, refs


def image_rows(data):
    """``data`` (``load_coco_data``'s dict) with one row per image instead of per caption: ``<split>_captions``
    becomes the image's references (M, S, T) and ``<split>_image_idxs`` the images (M,), so the one training
    loop iterates over images."""
    null_idx = data["word_to_idx"][NULL]
    rows = dict(data)
    for split in ("train", "val"):
        images, refs = reference_sets(data[f"{split}_captions"], data[f"{split}_image_idxs"], null_idx)
        rows[f"{split}_captions"], rows[f"{split}_image_idxs"] = refs, images
    return rows


def caption_words(rows, start_idx, null_idx):
    """The words of each caption row as CIDEr-D scores them: <START> and <NULL> dropped, <END> kept.

    Inputs: rows of shape (C, T) word indices. Returns: a list of C int arrays.
    """
    keep = (rows != start_idx) & (rows != null_idx)
    return [row[k] for row, k in zip(rows, keep)]


def image_references(refs, start_idx, null_idx):
    """Per image, its references' words (a list of lists of int arrays), from refs of shape (M, S, T)."""
    return [[words for words in caption_words(slots, start_idx, null_idx) if len(words)] for slots in refs]


def training_document_frequency(data_dir, refs, start_idx, null_idx):
    """CIDEr-D's document frequencies over the training images' references, refs of shape (M, S, T).

    Cached in ``data_dir`` (``TRAIN_DF_FILE``) with a fingerprint of ``refs``: a run on other training captions
    (a --num_samples subset, a rebuilt dataset) recounts and replaces it; a folder it cannot write to is
    recounted on every run.
    """
    fingerprint = hashlib.sha256(np.ascontiguousarray(refs).tobytes()).hexdigest()
    path = Path(data_dir) / TRAIN_DF_FILE
    try:
        with np.load(path, allow_pickle=False) as archive:
            if str(archive["fingerprint"]) == fingerprint:
                return DocumentFrequency.from_arrays(archive)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        pass  # no cache, or a broken one: count again
    df = DocumentFrequency(image_references(refs, start_idx, null_idx))

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, fingerprint=np.array(fingerprint), **df.arrays())

    try:
        atomic_write(path, write)
    except UserError:
        pass  # a read-only dataset: the counts serve this run only
    return df


def advantages(rewards, greedy_rewards=None):
    """Each sample's reward minus its baseline.

    Inputs: rewards of shape (N, K); greedy_rewards of shape (N,) for the greedy baseline, None for the mean of
    the image's other K - 1 samples.
    Returns: advantages of shape (N, K).
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    if greedy_rewards is not None:
        return rewards - np.asarray(greedy_rewards, dtype=np.float64)[:, None]
    K = rewards.shape[1]
    others = (rewards.sum(axis=1, keepdims=True) - rewards) / (K - 1)  # (N, K): mean over the other samples
    return rewards - others


class SCSTUpdater:
    """Takes self-critical steps of ``base``'s model (a NumpyUpdater or TorchUpdater), with its optimizer.

    The solver hands it minibatches of images: features of shape (N, D) and refs of shape (N, S, T). Its
    "loss" is minus the mean reward (of the samples in training, of greedy captions in validation), so the best
    checkpoint is the one whose greedy captions score the highest validation CIDEr-D.
    """

    metric = REWARD

    def __init__(self, base, config, document_frequency):
        self.base, self.config = base, config
        self.optim_config = base.optim_config  # the solver's learning-rate schedule
        self.model = base.model
        self.cider = CiderD(document_frequency=document_frequency)
        self.start_idx, self.null_idx = self.model.start_idx, self.model.null_idx
        base.dropout = False  # samples are drawn without dropout: the loss must see the same distribution

    def rewards(self, captions, caption_image, references):
        """CIDEr-D of decoded captions (C, L) against ``references[caption_image[c]]``; shape (C,)."""
        return self.cider.score(caption_words(captions, self.start_idx, self.null_idx), caption_image, references)

    def loss_units(self, refs):
        return len(refs)  # the surrogate and the reward are means over images

    def train_step(self, features, refs, lr, rng, share=1.0):
        N, K = len(features), self.config.samples
        references = image_references(refs, self.start_idx, self.null_idx)
        repeated = np.repeat(np.asarray(features), K, axis=0)  # (N*K, D): each image once per sample
        decoder = self.base.decoder()
        samples = sample_decode(decoder, repeated, self.config.max_length, self.config.temperature, rng=rng)
        rewards = self.rewards(samples, np.repeat(np.arange(N), K), references).reshape(N, K)
        greedy = None
        if self.config.baseline == "greedy":
            greedy = self.rewards(greedy_decode(decoder, features, self.config.max_length), np.arange(N), references)
        weights = advantages(rewards, greedy).reshape(N * K)  # (N*K,)
        captions = np.concatenate([np.full((N * K, 1), self.start_idx), samples], axis=1)  # (N*K, 1 + L)
        loss = self.base.train_step(repeated, captions, lr, weights=weights, share=share)
        return loss if not np.isfinite(loss) else -self.base.group.sum(float(rewards.mean()) * share)

    def eval_loss(self, features, refs):
        captions = greedy_decode(self.base.decoder(), features, self.config.max_length)
        references = image_references(refs, self.start_idx, self.null_idx)
        return -float(self.rewards(captions, np.arange(len(features)), references).mean())

    def snapshot(self):
        return self.base.snapshot()

    def state(self):
        return self.base.state()

    def load_state(self, state):
        self.base.load_state(state)
