"""Nearest-neighbour caption retrieval and its consensus re-ranking."""
import h5py
import numpy as np
import pytest

from core.evaluation.baselines import (
    caption_similarity_matrix,
    consensus_index,
    nearest_neighbour_captions,
    nearest_neighbours,
)


def random_world(rng, M=300, Q=70, D=16, captions_per_image=3):
    train = rng.standard_normal((M, D)).astype(np.float32)
    query = rng.standard_normal((Q, D)).astype(np.float32)
    captions = [[f"image {i} caption {c} words" for c in range(captions_per_image)] for i in range(M)]
    return train, captions, query


def test_a_query_equal_to_a_training_feature_returns_that_image_caption():
    rng = np.random.default_rng(0)
    train, captions, _ = random_world(rng, captions_per_image=1)
    picked = np.array([5, 17, 299, 0, 17])
    query = 3.0 * train[picked]  # cosine similarity ignores scale
    assert nearest_neighbour_captions(train, captions, query) == [captions[i][0] for i in picked]
    index, similarity = nearest_neighbours(train, query, k=1)
    np.testing.assert_array_equal(index[:, 0], picked)
    np.testing.assert_allclose(similarity[:, 0], 1.0, atol=1e-5)


def test_plain_nearest_neighbour_picks_the_most_typical_of_the_image_captions():
    train = np.eye(3, dtype=np.float32)
    captions = [["a red circle"], ["two stars", "a cat on a mat", "two blue stars", "two small stars"],
                ["a square"]]
    query = np.array([[0.1, 1.0, 0.2]], dtype=np.float32)
    assert nearest_neighbour_captions(train, captions, query) == ["two stars"]


def test_neighbours_match_brute_force_cosine_similarity():
    rng = np.random.default_rng(1)
    train, _, query = random_world(rng)
    train[:, 0] += 5.0  # far from zero-mean, so cosine and dot-product rankings differ
    index, similarity = nearest_neighbours(train, query, k=7)
    unit_train = train / np.linalg.norm(train, axis=1, keepdims=True)
    unit_query = query / np.linalg.norm(query, axis=1, keepdims=True)
    brute = unit_query.astype(np.float64) @ unit_train.T.astype(np.float64)
    np.testing.assert_array_equal(index, np.argsort(-brute, axis=1)[:, :7])
    np.testing.assert_allclose(similarity, np.take_along_axis(brute, index, axis=1), atol=1e-5)


def test_equal_similarities_go_to_the_lower_index():
    train = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    index, _ = nearest_neighbours(train, np.array([[1.0, 0.1]], dtype=np.float32), k=2)
    np.testing.assert_array_equal(index, [[0, 2]])


def test_batching_does_not_change_results():
    rng = np.random.default_rng(2)
    train, captions, query = random_world(rng)
    for k in (1, 4):
        expected_index, expected_similarity = nearest_neighbours(train, query, k, batch_size=len(query))
        expected_captions = nearest_neighbour_captions(train, captions, query, k, batch_size=len(query))
        for batch_size in (1, 7, 64):
            index, similarity = nearest_neighbours(train, query, k, batch_size=batch_size)
            np.testing.assert_array_equal(index, expected_index)
            np.testing.assert_allclose(similarity, expected_similarity, rtol=1e-6)
            assert nearest_neighbour_captions(train, captions, query, k, batch_size) == expected_captions


def test_features_may_be_h5py_datasets(tmp_path):
    rng = np.random.default_rng(4)
    train, captions, query = random_world(rng)
    path = tmp_path / "features.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("train", data=train)
        f.create_dataset("query", data=query)
    expected = nearest_neighbour_captions(train, captions, query, k=2, batch_size=16)
    with h5py.File(path, "r") as f:
        assert nearest_neighbour_captions(f["train"], captions, f["query"], k=2, batch_size=16) == expected


def test_consensus_picks_the_central_caption():
    pool = [
        "two yellow triangles",
        "a red circle above a green star",
        "a red circle above a blue star",
        "a red circle above a blue square",
        "a big purple box",
    ]
    assert consensus_index(pool) == 2  # shares the most n-grams with the other two circle captions


def test_consensus_pools_the_captions_of_k_neighbours():
    train = np.array([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.0, 1.0]], dtype=np.float32)
    captions = [["a red circle above a green star"], ["a red circle above a blue star"],
                ["a red circle above a blue square"], ["a blue star"]]
    query = np.array([[1.0, 0.0]], dtype=np.float32)
    assert nearest_neighbour_captions(train, captions, query, k=1) == ["a red circle above a green star"]
    assert nearest_neighbour_captions(train, captions, query, k=3) == ["a red circle above a blue star"]


def test_caption_similarity_matrix_values():
    captions = ["a red circle", "a red circle", "a blue circle", "stars", "a big red circle", "a big red circle"]
    similarity = caption_similarity_matrix(captions)
    np.testing.assert_allclose(similarity, similarity.T)
    assert similarity[4, 5] == pytest.approx(1.0)  # identical, with n-grams of every order
    assert similarity[0, 1] == pytest.approx(0.75)  # identical, but three words have no 4-gram
    assert similarity[0, 3] == 0.0  # nothing shared
    # "a red circle" vs "a blue circle": unigram cosine 2/3; no shared bigram or trigram.
    assert similarity[0, 2] == pytest.approx((2 / 3) / 4)


def test_bad_arguments_raise():
    rng = np.random.default_rng(3)
    train, captions, query = random_world(rng, M=10, Q=3)
    with pytest.raises(ValueError, match="should be"):
        nearest_neighbours(train, query[:, :5])
    with pytest.raises(ValueError, match="k must be"):
        nearest_neighbours(train, query, k=11)
    with pytest.raises(ValueError, match="caption lists"):
        nearest_neighbour_captions(train, captions[:9], query)


TIED_POOLS = [  # two captions of each pool are equally central: which one wins must not depend on the process
    ["a purple square and a blue circle", "a scene with a purple box and a blue disc",
     "one purple box and one blue circle", "a large purple square to the left of a small blue circle",
     "a small blue circle to the right of a large purple square"],
    ["a green triangle", "an image of a green triangle", "one green triangle", "a big green triangle on its own",
     "a large green triangle on its own"],
]


def test_consensus_ties_do_not_depend_on_the_string_hash_seed():
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import json, sys; from core.evaluation.baselines import consensus_index; "
            "print(json.dumps([consensus_index(p) for p in json.loads(sys.argv[1])]))")
    picks = set()
    for seed in range(1, 9):
        env = dict(os.environ, PYTHONHASHSEED=str(seed))
        result = subprocess.run([sys.executable, "-c", code, json.dumps(TIED_POOLS)], capture_output=True, text=True,
                                env=env, cwd=Path(__file__).resolve().parents[1], check=True)
        picks.add(result.stdout.strip())
    assert len(picks) == 1, picks
