"""Tests of the CS231n-layout loader and the caption vocabulary, on tiny datasets written here with h5py/json."""
import json
import pickle

import h5py
import numpy as np
import pytest

from core.coco_utils import (
    LazyFeatures,
    build_vocab,
    decode_captions,
    encode_captions,
    load_coco_data,
    sample_coco_minibatch,
    save_captions_h5,
    save_vocab_json,
)
from core.runtime.errors import UserError

WORDS = ["<NULL>", "<START>", "<END>", "<UNK>", "a", "red", "blue", "circle", "star", "left", "of"]
NUM_IMAGES = {"train": 6, "val": 4}
NUM_CAPTIONS = {"train": 12, "val": 8}
RAW_DIM, PCA_DIM, T = 10, 5, 17


def make_split(rng, split):
    """Caption rows that are all distinct (their 2nd and 3rd ids encode the row number) and image indices."""
    n, m = NUM_CAPTIONS[split], NUM_IMAGES[split]
    captions = np.zeros((n, T), dtype=np.int32)
    captions[:, 0] = 1
    captions[:, 1] = 4 + np.arange(n) % 7
    captions[:, 2] = 4 + np.arange(n) // 7
    captions[:, 3] = 2
    idxs = np.concatenate([np.arange(m), rng.integers(0, m, n - m)]).astype(np.int32)
    return captions, idxs


def write_dataset(base, raw_dim=RAW_DIM):
    """Write a complete tiny dataset in the CS231n layout; return what was written."""
    rng = np.random.default_rng(123)
    base.mkdir(parents=True, exist_ok=True)
    written = {}
    with h5py.File(base / "coco2014_captions.h5", "w") as h5:
        for split in ("train", "val"):
            captions, idxs = make_split(rng, split)
            h5[f"{split}_captions"], h5[f"{split}_image_idxs"] = captions, idxs
            written[f"{split}_captions"], written[f"{split}_image_idxs"] = captions, idxs
    vocab = {"idx_to_word": WORDS, "word_to_idx": {w: i for i, w in enumerate(WORDS)}}
    (base / "coco2014_vocab.json").write_text(json.dumps(vocab))
    for split, m in NUM_IMAGES.items():
        for suffix, dim in (("_pca", PCA_DIM), ("", raw_dim)):
            features = rng.standard_normal((m, dim)).astype(np.float32)
            with h5py.File(base / f"{split}2014_vgg16_fc7{suffix}.h5", "w") as h5:
                h5["features"] = features
            written[f"{split}_features{suffix}"] = features
        urls = [f"shapes://{split}/{i}" for i in range(m)]
        (base / f"{split}2014_urls.txt").write_text("\n".join(urls) + "\n")
        written[f"{split}_urls"] = urls
    return written


@pytest.fixture
def dataset(tmp_path):
    base = tmp_path / "data"
    return base, write_dataset(base)


def test_keys_shapes_dtypes(dataset):
    base, written = dataset
    data = load_coco_data(base)
    assert data["base_dir"] == base
    assert data["idx_to_word"] == WORDS and data["word_to_idx"]["star"] == WORDS.index("star")
    for split in ("train", "val"):
        n, m = NUM_CAPTIONS[split], NUM_IMAGES[split]
        assert data[f"{split}_captions"].shape == (n, T) and data[f"{split}_captions"].dtype == np.int32
        assert data[f"{split}_image_idxs"].shape == (n,) and data[f"{split}_image_idxs"].dtype == np.int32
        assert data[f"{split}_features"].shape == (m, PCA_DIM) and data[f"{split}_features"].dtype == np.float32
        np.testing.assert_array_equal(data[f"{split}_features"], written[f"{split}_features_pca"])
        np.testing.assert_array_equal(data[f"{split}_captions"], written[f"{split}_captions"])
        assert data[f"{split}_urls"].shape == (m,) and data[f"{split}_urls"].dtype.kind == "U"
        assert list(data[f"{split}_urls"]) == written[f"{split}_urls"]


def test_max_train_deterministic_without_replacement_and_aligned(dataset):
    base, written = dataset
    first = load_coco_data(base, max_train=7, seed=3)
    again = load_coco_data(base, max_train=7, seed=3)
    other = load_coco_data(base, max_train=7, seed=4)
    np.testing.assert_array_equal(first["train_captions"], again["train_captions"])
    assert not np.array_equal(first["train_captions"], other["train_captions"])
    assert len(np.unique(first["train_captions"], axis=0)) == 7  # rows are distinct in the file
    pairs = {(tuple(c), int(i)) for c, i in zip(written["train_captions"], written["train_image_idxs"])}
    for caption, idx in zip(first["train_captions"], first["train_image_idxs"]):
        assert (tuple(caption), int(idx)) in pairs
    keep = np.sort(np.random.default_rng(3).choice(NUM_CAPTIONS["train"], 7, replace=False))
    np.testing.assert_array_equal(first["train_image_idxs"], written["train_image_idxs"][keep])
    np.testing.assert_array_equal(first["val_captions"], written["val_captions"])
    assert first["train_features"].shape[0] == NUM_IMAGES["train"]


class RowSpy:
    """Stands in for an h5py dataset and records every index it is asked for."""

    def __init__(self, dataset):
        self.dataset, self.requests = dataset, []
        self.shape, self.dtype = dataset.shape, dataset.dtype

    def __getitem__(self, index):
        self.requests.append(np.array(index))
        return self.dataset[index]


def test_lazy_raw_features_read_only_requested_rows(tmp_path):
    base = tmp_path / "data"
    written = write_dataset(base, raw_dim=64)
    data = load_coco_data(base, pca_features=False)
    lazy = data["train_features"]
    assert isinstance(lazy, LazyFeatures)
    assert lazy.shape == (NUM_IMAGES["train"], 64) and lazy.dtype == np.float32 and len(lazy) == NUM_IMAGES["train"]
    assert not any(isinstance(value, np.ndarray) for value in vars(lazy).values())
    spy = RowSpy(lazy._data)
    lazy._data = spy
    index = np.array([4, 1, 4, 0, 1, 5])
    np.testing.assert_array_equal(lazy[index], written["train_features"][index])
    assert len(spy.requests) == 1
    np.testing.assert_array_equal(spy.requests[0], [0, 1, 4, 5])
    np.testing.assert_array_equal(lazy[np.array([[2, -1], [2, 0]])], written["train_features"][[[2, -1], [2, 0]]])
    np.testing.assert_array_equal(lazy[3], written["train_features"][3])
    with pytest.raises(IndexError):
        lazy[np.array([0, NUM_IMAGES["train"]])]
    restored = pickle.loads(pickle.dumps(lazy))
    np.testing.assert_array_equal(restored[index], written["train_features"][index])
    restored.close()


def test_build_vocab_order():
    word_to_idx, idx_to_word = build_vocab(["b a c", "a b", "a d", "C"])
    # a:3, b:2, c:2 (the upper-case one lower-cased), d:1; b and c tie and go alphabetically
    assert idx_to_word == ["<NULL>", "<START>", "<END>", "<UNK>", "a", "b", "c", "d"]
    assert all(word_to_idx[w] == i for i, w in enumerate(idx_to_word)) and len(word_to_idx) == 8
    assert build_vocab(["a b", "a d", "b a c", "C"]) == (word_to_idx, idx_to_word)
    assert build_vocab(["a b", "a"], min_count=2)[1] == ["<NULL>", "<START>", "<END>", "<UNK>", "a"]


def test_encode_decode_round_trip():
    texts = ["a red circle left of a blue star", "a star", "a " * 14 + "star"]
    word_to_idx, idx_to_word = build_vocab(texts)
    captions = encode_captions(texts, word_to_idx)
    assert captions.shape == (3, 17) and captions.dtype == np.int32
    np.testing.assert_array_equal(captions[1, :4], [1, word_to_idx["a"], word_to_idx["star"], 2])
    assert (captions[1, 4:] == 0).all() and captions[2, 16] == 2
    assert decode_captions(captions, idx_to_word) == [t.strip() for t in texts]
    assert decode_captions(captions[0], idx_to_word) == texts[0]
    generated = np.array([word_to_idx["a"], word_to_idx["star"], 2, word_to_idx["red"], 0])
    assert decode_captions(generated, idx_to_word) == "a star"  # stops at <END>, no <START> needed
    assert decode_captions(encode_captions(["a zebra"], word_to_idx), idx_to_word) == ["a <UNK>"]
    with pytest.raises(ValueError, match="16 words"):
        encode_captions(["a " * 16], word_to_idx)
    with pytest.raises(ValueError):
        decode_captions(np.array([len(idx_to_word)]), idx_to_word)


def test_save_helpers_are_atomic(tmp_path):
    word_to_idx, idx_to_word = build_vocab(["a red star"])
    save_vocab_json(tmp_path / "vocab.json", word_to_idx, idx_to_word)
    assert json.loads((tmp_path / "vocab.json").read_text())["idx_to_word"] == idx_to_word
    captions = encode_captions(["a red star"], word_to_idx)
    save_captions_h5(tmp_path / "caps.h5", {"train_captions": captions})
    with pytest.raises(TypeError):
        save_captions_h5(tmp_path / "caps.h5", {"train_captions": np.array([object()])})
    with h5py.File(tmp_path / "caps.h5", "r") as h5:  # the failed write left the old file whole
        np.testing.assert_array_equal(h5["train_captions"][()], captions)
    with pytest.raises(ValueError):
        save_vocab_json(tmp_path / "vocab.json", word_to_idx, idx_to_word[:-1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["caps.h5", "vocab.json"]


def rewrite_h5(path, key, value):
    with h5py.File(path, "a") as h5:
        del h5[key]
        h5[key] = value


def drop_key(path, key):
    with h5py.File(path, "a") as h5:
        del h5[key]


def rewrite_vocab(base, change):
    vocab = json.loads((base / "coco2014_vocab.json").read_text())
    change(vocab)
    (base / "coco2014_vocab.json").write_text(json.dumps(vocab))


CAPS, FEATS = "coco2014_captions.h5", "train2014_vgg16_fc7_pca.h5"
BAD_INPUTS = {
    "missing captions file": (lambda b: (b / CAPS).unlink(), CAPS),
    "missing vocab file": (lambda b: (b / "coco2014_vocab.json").unlink(), "coco2014_vocab.json"),
    "missing features file": (lambda b: (b / FEATS).unlink(), FEATS),
    "missing urls file": (lambda b: (b / "val2014_urls.txt").unlink(), "val2014_urls.txt"),
    "missing captions key": (lambda b: drop_key(b / CAPS, "val_image_idxs"), CAPS),
    "missing features key": (lambda b: drop_key(b / FEATS, "features"), FEATS),
    "1-D captions": (lambda b: rewrite_h5(b / CAPS, "train_captions", np.zeros(12, np.int32)), CAPS),
    "float captions": (lambda b: rewrite_h5(b / CAPS, "val_captions", np.zeros((8, T))), CAPS),
    "idxs length": (lambda b: rewrite_h5(b / CAPS, "train_image_idxs", np.zeros(5, np.int32)), CAPS),
    "1-D features": (lambda b: rewrite_h5(b / FEATS, "features", np.zeros(6, np.float32)), FEATS),
    "integer features": (lambda b: rewrite_h5(b / FEATS, "features", np.zeros((6, 5), np.int32)), FEATS),
    "too few feature rows": (lambda b: rewrite_h5(b / FEATS, "features", np.zeros((3, 5), np.float32)), FEATS),
    "url line count": (lambda b: (b / "train2014_urls.txt").write_text("x\n" * 7), "train2014_urls.txt"),
    "missing special token": (lambda b: rewrite_vocab(b, lambda v: v["word_to_idx"].pop("<UNK>")),
                              "coco2014_vocab.json"),
    "vocab disagree": (lambda b: rewrite_vocab(b, lambda v: v["idx_to_word"].reverse()), "coco2014_vocab.json"),
    "caption id beyond vocab": (lambda b: rewrite_h5(b / CAPS, "val_captions", np.full((8, T), 11, np.int32)),
                                CAPS),
    "corrupt hdf5": (lambda b: (b / CAPS).write_bytes(b"not an hdf5 file at all"), CAPS),
    "corrupt json": (lambda b: (b / "coco2014_vocab.json").write_text('{"idx_to_word": ['), "coco2014_vocab.json"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_raises_user_error_naming_the_file(dataset, name):
    base, _ = dataset
    corrupt, filename = BAD_INPUTS[name]
    corrupt(base)
    with pytest.raises(UserError) as info:
        load_coco_data(base)
    message = str(info.value)
    assert filename in message and "\n" not in message


def test_bad_base_dir_and_max_train(dataset, tmp_path):
    base, _ = dataset
    with pytest.raises(UserError, match="get_datasets.sh"):
        load_coco_data(tmp_path / "nowhere")
    for bad in (0, -1, NUM_CAPTIONS["train"] + 1, 2.5):
        with pytest.raises(UserError, match="max_train"):
            load_coco_data(base, max_train=bad)
    assert load_coco_data(base, max_train=NUM_CAPTIONS["train"])["train_captions"].shape[0] == NUM_CAPTIONS["train"]


@pytest.mark.parametrize("pca_features", [True, False])
def test_sample_coco_minibatch_draws_rows_with_their_images(dataset, pca_features):
    base, written = dataset
    data = load_coco_data(base, pca_features=pca_features)
    captions, features, urls = sample_coco_minibatch(data, batch_size=50, split="val", rng=np.random.default_rng(0))
    assert captions.shape == (50, T) and features.shape[0] == 50 and urls.shape == (50,)
    rows = captions[:, 1] - 4 + 7 * (captions[:, 2] - 4)  # make_split writes each row's number into it
    assert len(np.unique(rows)) < 50 <= len(rows)  # 50 draws of 8 rows: with replacement
    images = written["val_image_idxs"][rows]
    np.testing.assert_array_equal(features, written["val_features" + ("_pca" if pca_features else "")][images])
    assert list(urls) == [written["val_urls"][i] for i in images]


def test_sample_coco_minibatch_draws_from_numpys_global_generator_by_default(dataset):
    data = load_coco_data(dataset[0])
    np.random.seed(231)
    first = sample_coco_minibatch(data, batch_size=4)
    np.random.seed(231)
    np.testing.assert_array_equal(sample_coco_minibatch(data, batch_size=4)[0], first[0])
    assert first[0].shape == (4, T) and sample_coco_minibatch(data)[0].shape == (100, T)
    with pytest.raises(ValueError, match="split must be one of"):
        sample_coco_minibatch(data, split="dev")
    with pytest.raises(ValueError, match="no test split"):
        sample_coco_minibatch(data, split="test")
