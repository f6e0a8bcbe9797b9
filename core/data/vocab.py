"""Caption vocabulary: build it from texts, encode texts into fixed-length id rows, decode rows back.

The special tokens come first and have fixed ids, the same in COCO and the shapes world:
``<NULL>``=0 (padding), ``<START>``=1, ``<END>``=2, ``<UNK>``=3 (a word outside the vocabulary).
A caption row is ``<START> w1 .. wk <END>`` followed by ``<NULL>`` padding, so a row of length L
holds at most L - 2 words.

Dimension legend: N captions, T (or ``length``) ids per caption row, V vocabulary size.
"""
from collections import Counter

import numpy as np

from core.data.layout import CAPTION_LENGTH, END, NULL, SPECIAL_TOKENS, START, UNK


def tokenize(text):
    """The words of a caption: lower-cased, split on whitespace (captions carry no punctuation)."""
    return text.lower().split()


def build_vocab(texts, min_count=1):
    """Build a vocabulary from caption texts.

    Order: the special tokens, then the words by descending frequency, ties broken alphabetically,
    so the same texts always give the same ids whatever their order.

    Inputs:
    - texts: iterable of caption strings.
    - min_count: words seen fewer times than this are left out (they encode as ``<UNK>``).

    Returns:
    - word_to_idx: dict mapping each word to its id.
    - idx_to_word: list of length V, the word of each id.
    """
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    counts = Counter(word for text in texts for word in tokenize(text))
    for token in SPECIAL_TOKENS:
        counts.pop(token, None)
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    idx_to_word = list(SPECIAL_TOKENS) + words
    word_to_idx = {word: i for i, word in enumerate(idx_to_word)}
    return word_to_idx, idx_to_word


def index_to_word(word_to_idx):
    """The list idx_to_word of a model's vocabulary ``word_to_idx`` (dict word -> id).

    ValueError unless ``<NULL>``, ``<START>`` and ``<END>`` are present and the ids are exactly 0..V-1.
    """
    missing = [token for token in (NULL, START, END) if token not in word_to_idx]
    if missing:
        raise ValueError(f"word_to_idx lacks the special token(s) {', '.join(missing)}")
    idx_to_word = [None] * len(word_to_idx)
    for word, idx in word_to_idx.items():
        if not 0 <= idx < len(idx_to_word) or idx_to_word[idx] is not None:
            raise ValueError(f"word_to_idx must map its {len(idx_to_word)} words to distinct indices 0..V-1; "
                             f"{word!r} -> {idx}")
        idx_to_word[idx] = word
    return idx_to_word


def check_special_tokens(word_to_idx):
    """Raise ValueError unless ``word_to_idx`` gives each special token its fixed id."""
    for i, token in enumerate(SPECIAL_TOKENS):
        if word_to_idx.get(token) != i:
            raise ValueError(f"vocabulary must map {token} to {i}, got {word_to_idx.get(token)}")


def idx_to_word_problem(idx_to_word):
    """Why ``idx_to_word`` is not a vocabulary (a list of distinct words, the special tokens first), or None."""
    if not isinstance(idx_to_word, list) or not all(isinstance(word, str) for word in idx_to_word):
        return "its vocabulary idx_to_word is not a list of words"
    if tuple(idx_to_word[:len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
        return f"its vocabulary does not start with the special tokens {', '.join(SPECIAL_TOKENS)}"
    if len(set(idx_to_word)) != len(idx_to_word):
        return "its vocabulary holds a word twice"
    return None


def check_vocab(word_to_idx, idx_to_word):
    """Raise ValueError unless the special tokens hold their ids, the ids are integers and the two mappings are
    inverses."""
    if not isinstance(word_to_idx, dict) or not isinstance(idx_to_word, list):
        raise ValueError("word_to_idx must be a mapping and idx_to_word a list")
    if not all(type(idx) is int for idx in word_to_idx.values()):
        raise ValueError("word_to_idx must map words to integer ids")
    check_special_tokens(word_to_idx)
    if len(word_to_idx) != len(idx_to_word) or any(word_to_idx.get(w) != i for i, w in enumerate(idx_to_word)):
        raise ValueError("idx_to_word and word_to_idx disagree")


def encode_captions(texts, word_to_idx, length=CAPTION_LENGTH):
    """Encode caption texts as fixed-length rows of word ids.

    Inputs:
    - texts: sequence of N caption strings.
    - word_to_idx: dict word -> id holding the special tokens at their fixed ids.
    - length: T, the ids per row (``<START>`` and ``<END>`` included).

    Returns:
    - captions: int32 array of shape (N, T): ``<START>`` words ``<END>`` then ``<NULL>`` padding;
      a word missing from the vocabulary becomes ``<UNK>``.

    Raises ValueError when a caption has more than T - 2 words.
    """
    check_special_tokens(word_to_idx)
    texts = list(texts)
    captions = np.zeros((len(texts), length), dtype=np.int32)
    unk = word_to_idx[UNK]
    for row, text in enumerate(texts):
        words = tokenize(text)
        if len(words) > length - 2:
            raise ValueError(f"caption {row} has {len(words)} words, more than {length - 2}: {text!r}")
        ids = [word_to_idx[START]] + [word_to_idx.get(w, unk) for w in words] + [word_to_idx[END]]
        captions[row, : len(ids)] = ids
    return captions


def decode_captions(captions, idx_to_word):
    """Turn rows of word ids back into text.

    Each row stops at its first ``<END>``; ``<NULL>`` and ``<START>`` are skipped, so both
    ground-truth rows and generated rows (which lack ``<START>``) decode cleanly.

    Inputs:
    - captions: integer array-like of shape (T,) or (N, T).
    - idx_to_word: sequence of length V, the word of each id.

    Returns:
    - a string for input of shape (T,); a list of N strings for input of shape (N, T).
    """
    ids = np.asarray(captions)
    if ids.ndim not in (1, 2) or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
        raise ValueError(f"captions must be a 1-D or 2-D integer array, got shape {ids.shape} {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= len(idx_to_word)):
        raise ValueError(f"caption ids must lie in [0, {len(idx_to_word)}), got {ids.min()}..{ids.max()}")
    rows = np.atleast_2d(ids)  # (N, T); a single caption of shape (T,) becomes one row
    decoded = []
    for row in rows:
        words = []
        for idx in row:
            word = idx_to_word[idx]
            if word == END:
                break
            if word not in (NULL, START):
                words.append(word)
        decoded.append(" ".join(words))
    return decoded[0] if ids.ndim == 1 else decoded
