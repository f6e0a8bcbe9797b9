"""Nearest-neighbour caption retrieval, the baseline every captioning model should beat.

Each query image borrows captions from the training images nearest to it in feature space (cosine
similarity of L2-normalised features). With k neighbours, their captions are pooled and the
consensus caption is returned (Devlin et al. 2015, "Exploring nearest neighbor approaches for image
captioning"): the pooled caption with the highest mean similarity to the other pooled captions.
Similarity between two captions is the mean over n = 1..4 of the cosine similarity of their n-gram
count vectors: CIDEr's sentence similarity without its IDF weights and length penalty, cheap enough
to run on every pair in the pool. k = 1 is plain nearest neighbour; the consensus then only chooses
among that image's own captions (the most typical of them).

Dimension legend: M training images, Q query images, D feature width, k neighbours, P pooled captions.
"""
import math
from collections import Counter

import numpy as np
from tqdm import tqdm

from core.decoding import top_k_indices

MAX_NGRAM = 4


def nearest_neighbours(train_features, query_features, k=1, batch_size=256, progress=True):
    """The k training images most similar to each query (cosine similarity), computed batch by batch.

    Inputs:
    - train_features: array of shape (M, D), held in memory once normalised (use the 512-d PCA
      features for COCO; an h5py dataset is read whole).
    - query_features: array of shape (Q, D), read batch_size rows at a time.
    - k: neighbours per query, 1 <= k <= M.
    - batch_size: queries per (batch_size, D) @ (D, M) similarity matmul.

    Returns:
    - index: int64 array of shape (Q, k), most similar first (equal similarities: lower index first).
    - similarity: float32 array of shape (Q, k), the matching cosine similarities.
    """
    train = _unit_rows(train_features)
    M, D = train.shape
    Q = query_features.shape[0]
    if query_features.ndim != 2 or query_features.shape[1] != D:
        raise ValueError(f"query features of shape {tuple(query_features.shape)} should be (Q, {D}) "
                         f"to match the training features")
    if not 1 <= k <= M:
        raise ValueError(f"k must be between 1 and the number of training images {M}, got {k}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    index = np.empty((Q, k), dtype=np.int64)
    similarity = np.empty((Q, k), dtype=np.float32)
    for start in tqdm(range(0, Q, batch_size), desc="nearest neighbours", unit="batch", leave=False,
                      disable=not progress):
        stop = min(start + batch_size, Q)
        sims = _unit_rows(query_features[start:stop]) @ train.T  # (b, D) @ (D, M) -> (b, M)
        index[start:stop] = top_k_indices(sims, k)
        similarity[start:stop] = np.take_along_axis(sims, index[start:stop], axis=1)
    return index, similarity


def nearest_neighbour_captions(train_features, train_captions, query_features, k=1, batch_size=256, progress=True):
    """One retrieved caption per query image: the consensus caption of its k nearest training images.

    Inputs:
    - train_features: array of shape (M, D).
    - train_captions: list of M non-empty lists of caption strings, one list per training image.
    - query_features: array of shape (Q, D).
    - k: neighbours pooled per query; 1 is plain nearest neighbour.
    - batch_size: queries per similarity matmul (results do not depend on it, up to float rounding
      of near-equal similarities).

    Returns:
    - captions: list of Q caption strings, each one of the training captions.
    """
    if len(train_captions) != train_features.shape[0]:
        raise ValueError(f"{len(train_captions)} caption lists for {train_features.shape[0]} training images")
    index, _ = nearest_neighbours(train_features, query_features, k, batch_size, progress)
    captions = []
    for neighbours in tqdm(index, desc="consensus captions", unit="image", leave=False,
                          disable=not progress):
        pool = [caption for j in neighbours for caption in train_captions[j]]
        if not pool:
            raise ValueError(f"training images {neighbours.tolist()} have no captions")
        captions.append(pool[consensus_index(pool)])
    return captions


def consensus_index(captions):
    """Index of the caption with the highest mean similarity to the others (the first on ties).

    Inputs:
    - captions: list of P caption strings (words separated by spaces).

    Returns:
    - int in [0, P).
    """
    P = len(captions)
    if P <= 2:  # with two captions both are equally central
        return 0
    similarity = caption_similarity_matrix(captions)  # (P, P)
    mean_to_others = (similarity.sum(axis=1) - np.diag(similarity)) / (P - 1)
    return int(np.argmax(mean_to_others))


def caption_similarity_matrix(captions):
    """Mean over n = 1..4 of the cosine similarity of n-gram count vectors, for every pair of captions.

    Inputs:
    - captions: list of P caption strings.

    Returns:
    - similarity: float64 array of shape (P, P), symmetric, entries in [0, 1]; a pair where a caption
      has no n-grams of some order (fewer than n words) gets 0 for that order.
    """
    weights = [_ngram_weights(caption) for caption in captions]
    # Sorted, not a set's order: that follows the per-process string hash, and the order of the sum in the
    # matmul below with it, which broke ties between equally central captions differently from run to run.
    columns = {gram: column for column, gram in enumerate(sorted(set().union(*weights)))}
    vectors = np.zeros((len(captions), len(columns)))  # (P, G): weighted n-gram counts of each caption
    for row, caption_weights in enumerate(weights):
        vectors[row, [columns[gram] for gram in caption_weights]] = list(caption_weights.values())
    return vectors @ vectors.T  # (P, G) @ (G, P) -> (P, P)


def _ngram_weights(caption):
    """A caption's n-grams (n = 1..4, as word tuples) -> count / (its order's count-vector norm * sqrt(4)).

    Grams of different orders never share a key, so the dot product of two such vectors is the sum of
    the per-order cosine similarities divided by 4: their mean.
    """
    words = caption.split()
    weights = {}
    for n in range(1, MAX_NGRAM + 1):
        counts = Counter(zip(*(words[i:] for i in range(n))))
        norm = math.sqrt(MAX_NGRAM * sum(count * count for count in counts.values()))
        weights.update((gram, count / norm) for gram, count in counts.items())
    return weights


def _unit_rows(features):
    """Rows of ``features`` (R, D) scaled to unit L2 norm, float32; all-zero rows stay zero."""
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"features of shape {features.shape} should be 2-d, (rows, D)")
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, np.finfo(np.float32).tiny)
