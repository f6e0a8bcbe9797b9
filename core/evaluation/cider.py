"""CIDEr-D (Vedantam et al. 2015) as the COCO evaluation computes it, vectorised in numpy.

The COCO code (pycocoevalcap's ``Cider``) scores each caption against its image's references with TF-IDF weighted
1- to 4-gram vectors: weight = count x (log(number of documents) - log(max(1, document frequency))), per n-gram order
the cosine with the hypothesis' weights clipped to the reference's (sum of min(w_h, w_r) * w_r over the norms), a
Gaussian penalty exp(-delta^2 / (2 sigma^2)) on the length difference (sigma 6), the four orders and the references
averaged, x 10. Document frequencies come from the
evaluated references ("corpus", what the COCO evaluation does) or from a fixed set of images, e.g. the training
references ("train", what self-critical training uses): ``DocumentFrequency``.

A batch is scored without a loop over n-grams: words become integer ids, every k-gram of every caption an integer
code (its word ids as digits), and counts, weights, norms and the clipped dot products of every (hypothesis,
reference of its image) pair are sorts, searches and bincounts over those codes.

Dimension legend: H hypotheses, R references, I images, P k-gram occurrences, S reference slots (most references
an image has), U distinct k-grams.
"""
import numpy as np

ORDERS = 4
# One base for every code, so a DocumentFrequency's codes serve every batch: the largest whose 4-gram codes fit int64.
BASE = int((2 ** 63 - 1) ** (1 / ORDERS))


class DocumentFrequency:
    """For a fixed set of images: in how many images' references each 1- to 4-gram occurs."""

    def __init__(self, references):
        """``references``: per image, its reference captions as sequences of words (strings or ints)."""
        flat, lengths = _flatten(caption for refs in references for caption in refs)
        self.vocabulary = np.unique(flat)  # sorted: a word's id is its position
        if len(self.vocabulary) >= BASE:
            raise ValueError(f"{len(self.vocabulary)} distinct words: more than CIDEr-D's k-gram codes hold")
        ids = np.searchsorted(self.vocabulary, flat) if len(flat) else np.zeros(0, np.int64)
        image = np.repeat(np.arange(len(references)), [len(refs) for refs in references])
        self.num_documents = len(references)
        self.tables = []  # per order k: sorted k-gram codes (U,), in how many images each occurs (U,)
        for k in range(1, ORDERS + 1):
            owner, codes = _kgrams(ids, lengths, k)
            first = _groups(image[owner], codes)[1]  # each (k-gram, image) pair once
            self.tables.append(np.unique(codes[first], return_counts=True))

    def arrays(self):
        """The frequencies as named arrays, for ``np.savez`` (no pickles): ``from_arrays`` reads them back."""
        arrays = {"vocabulary": self.vocabulary, "num_documents": np.array(self.num_documents)}
        for k, (codes, counts) in enumerate(self.tables, start=1):
            arrays[f"codes_{k}"], arrays[f"counts_{k}"] = codes, counts
        return arrays

    @classmethod
    def from_arrays(cls, arrays):
        """The DocumentFrequency ``arrays()`` returned (e.g. an ``np.load``-ed archive); KeyError if incomplete."""
        df = cls.__new__(cls)
        df.vocabulary, df.num_documents = np.asarray(arrays["vocabulary"]), int(arrays["num_documents"])
        df.tables = [(np.asarray(arrays[f"codes_{k}"]), np.asarray(arrays[f"counts_{k}"]))
                     for k in range(1, ORDERS + 1)]
        return df

    def counts(self, order):
        """{k-gram as a tuple of words: number of images} for one order; for checks, not for scoring."""
        codes, counts = self.tables[order - 1]
        return {tuple(self.vocabulary[gram].tolist()): int(c) for gram, c in zip(_decode(codes, order), counts)}


class CiderD:
    """Drop-in for ``pycocoevalcap.cider.cider.Cider``: ``compute_score(gts, res) -> (mean, per-image scores)``.

    ``document_frequency``: None computes it from the evaluated references (the COCO evaluation); a
    ``DocumentFrequency`` fixes it (self-critical training's rewards).
    """

    def __init__(self, n=ORDERS, sigma=6.0, document_frequency=None):
        if n != ORDERS:
            raise ValueError(f"CIDEr-D uses 1- to {ORDERS}-grams, got n={n}")
        self.sigma, self.document_frequency = sigma, document_frequency

    def compute_score(self, gts, res):
        """gts: image id -> list of reference strings; res: image id -> [one caption]; words split on spaces."""
        if gts.keys() != res.keys() or any(len(res[i]) != 1 or not gts[i] for i in gts):
            raise ValueError("gts and res must have the same image ids, res one caption and gts one or more each")
        images = list(gts)
        scores = self.score([res[i][0].split() for i in images], np.arange(len(images)),
                            [[ref.split() for ref in gts[i]] for i in images])
        return float(scores.mean()) if len(scores) else 0.0, scores

    def score(self, hyps, hyp_image, references):
        """CIDEr-D of each hypothesis (a sequence of words) against ``references[hyp_image[h]]``; shape (H,).

        Several hypotheses may share an image (self-critical training's samples): each is scored on its own.
        """
        df = self.document_frequency or DocumentFrequency(references)
        hyp_words, hyp_lengths = _flatten(hyps)
        ref_words, ref_lengths = _flatten(caption for refs in references for caption in refs)
        hyp_ids, ref_ids = _word_ids(np.concatenate([hyp_words, ref_words]), df.vocabulary, len(hyp_words))
        ref_image = np.repeat(np.arange(len(references)), [len(refs) for refs in references])
        return _cider((hyp_ids, hyp_lengths), np.asarray(hyp_image, dtype=np.int64), (ref_ids, ref_lengths),
                      ref_image, df.tables, np.log(float(df.num_documents)), self.sigma)


def _flatten(captions):
    """All words of ``captions`` in one array (P,), and each caption's length (C,)."""
    captions = [list(c) for c in captions]
    lengths = np.array([len(c) for c in captions], dtype=np.int64)
    flat = np.array([word for c in captions for word in c])
    return flat, lengths


def _word_ids(words, vocabulary, split):
    """Ids of ``words`` (P,): a vocabulary word's position, other words ids after it (distinct words, distinct
    ids); returned as the first ``split`` ids and the rest."""
    at = np.minimum(np.searchsorted(vocabulary, words), max(len(vocabulary) - 1, 0)) if len(words) else \
        np.zeros(0, np.int64)
    known = vocabulary[at] == words if len(vocabulary) else np.zeros(len(words), dtype=bool)
    ids = at.astype(np.int64)
    new, inverse = np.unique(words[~known], return_inverse=True)
    ids[~known] = len(vocabulary) + inverse.ravel()
    if len(vocabulary) + len(new) >= BASE:
        raise ValueError(f"more than {BASE - 1} distinct words: more than CIDEr-D's k-gram codes hold")
    return ids[:split], ids[split:]


def _groups(small, codes):
    """Equal pairs of ``small`` (ints below a few million: captions, images) and ``codes`` (any int64), grouped.

    Returns (group id of every element, one element of each group, the sorted distinct codes, each element's
    code's rank among them). Codes are ranked first so that a pair fits one int64 key: one sort of ints is several
    times faster than a two-key lexsort, and the distinct codes come sorted, which searches into the document
    frequencies want.
    """
    if not len(codes):
        empty = np.zeros(0, np.int64)
        return empty, empty, empty, empty
    unique_codes, rank = np.unique(codes, return_inverse=True)
    rank = rank.ravel()
    _, first, group = np.unique(small.astype(np.int64) * len(unique_codes) + rank, return_index=True,
                                return_inverse=True)
    return group.ravel(), first, unique_codes, rank


def _kgrams(flat, lengths, k):
    """(owner (P,), code (P,)) of every k-gram occurrence of the captions laid out as ``flat`` word ids."""
    owner = np.repeat(np.arange(len(lengths)), lengths)
    position = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    start = np.flatnonzero(position + k <= lengths[owner])  # the k-grams that end inside their caption
    codes = np.zeros(len(start), dtype=np.int64)
    for j in range(k):  # a k-gram's code: its word ids as digits in BASE
        codes = codes * BASE + flat[start + j]
    return owner[start], codes


def _decode(codes, k):
    """Word ids (U, k) of k-gram codes (U,)."""
    digits = np.empty((len(codes), k), dtype=np.int64)
    for j in range(k - 1, -1, -1):
        codes, digits[:, j] = np.divmod(codes, BASE)
    return digits


def _weights(captions, k, table, log_documents):
    """The TF-IDF entries (owner, code, weight) of each caption's distinct k-grams, and each caption's norm (C,)."""
    flat, lengths = captions
    owner, codes = _kgrams(flat, lengths, k)
    group, first, unique_codes, rank = _groups(owner, codes)
    tf = np.bincount(group, minlength=len(first))
    df = _lookup(table, unique_codes)[rank[first]]
    owner, codes = owner[first], codes[first]
    weight = tf * (log_documents - np.log(np.maximum(1.0, df)))
    norm = np.sqrt(np.bincount(owner, weights=weight ** 2, minlength=len(lengths)))
    return owner, codes, weight, norm


def _lookup(table, codes):
    """Document frequencies (U,) of sorted ``codes`` (U,) in ``table`` (sorted codes, counts); 0 where absent."""
    df_codes, df_counts = table
    if not len(df_codes):
        return np.zeros(len(codes))
    at = np.minimum(np.searchsorted(df_codes, codes), len(df_codes) - 1)
    return np.where(df_codes[at] == codes, df_counts[at], 0)


def _cider(hyps, hyp_image, refs, ref_image, tables, log_documents, sigma):
    num_refs = len(refs[1])
    order = np.argsort(ref_image, kind="stable")
    slot = np.empty(num_refs, dtype=np.int64)  # each reference's index among its image's
    slot[order] = np.arange(num_refs) - np.searchsorted(ref_image[order], ref_image[order])
    num_images = int(max(hyp_image.max(initial=-1), ref_image.max(initial=-1))) + 1
    refs_of = np.bincount(ref_image, minlength=num_images)
    shape = (len(hyps[1]), max(int(refs_of.max(initial=1)), 1))  # (H, S)

    def per_slot(values):  # a per-reference value as (H, S): row h holds those of its image's references
        table = np.zeros((num_images, shape[1]))
        table[ref_image, slot] = values
        return table[hyp_image]

    total = np.zeros(shape)
    for k in range(1, ORDERS + 1):
        h_owner, h_code, h_weight, h_norm = _weights(hyps, k, tables[k - 1], log_documents)
        r_owner, r_code, r_weight, r_norm = _weights(refs, k, tables[k - 1], log_documents)
        pairs = _shared(hyp_image[h_owner], h_code, ref_image[r_owner], r_code)
        h, r = pairs
        contribution = np.minimum(h_weight[h], r_weight[r]) * r_weight[r]
        dot = np.bincount(h_owner[h] * shape[1] + slot[r_owner[r]], weights=contribution,
                          minlength=shape[0] * shape[1]).reshape(shape).astype(np.float64)
        norms = h_norm[:, None] * per_slot(r_norm)
        total += np.divide(dot, norms, out=dot, where=norms != 0)
    # The COCO code's "length" is a caption's bigram count: the same differences as word counts whenever both
    # captions have a word, and when one has none every dot product, so the score, is 0 anyway.
    delta = hyps[1][:, None] - per_slot(refs[1])
    present = np.arange(shape[1])[None, :] < refs_of[hyp_image][:, None]
    penalised = total * np.exp(-(delta ** 2) / (2 * sigma ** 2)) * present
    return 10.0 * penalised.sum(axis=1) / ORDERS / np.maximum(refs_of[hyp_image], 1)


def _shared(h_image, h_code, r_image, r_code):
    """Index pairs (hypothesis entry, reference entry) with the same image and k-gram code, every such pair."""
    group, first = _groups(np.concatenate([h_image, r_image]), np.concatenate([h_code, r_code]))[:2]
    h_group, r_group = group[:len(h_code)], group[len(h_code):]
    by_group = np.argsort(h_group, kind="stable")
    h_count = np.bincount(h_group, minlength=len(first))
    h_start = np.cumsum(h_count) - h_count
    per_ref = h_count[r_group]  # how many hypotheses of its image share each reference entry's k-gram
    r_index = np.repeat(np.arange(len(r_code)), per_ref)
    offset = np.arange(len(r_index)) - np.repeat(np.cumsum(per_ref) - per_ref, per_ref)
    return by_group[h_start[r_group][r_index] + offset], r_index
