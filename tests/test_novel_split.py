"""The novel-composition split of the shapes world: held-out attribute-shape pairs chosen by seed, kept out of
train/val/test and put in every novel scene, and the recall/precision of pairs measured from scene truth."""
import json
import math
from dataclasses import replace

import h5py
import numpy as np
import pytest

import inference
import training
from core.data.layout import MANIFEST_FILE
from core.data.loader import load_coco_data
from core.data.vocab import decode_captions
from core.datasets.shapes_build import ShapesConfig, build_shapes_dataset
from core.evaluation.composition import pair_metrics, stated_pairs
from core.evaluation.loop import load_held_out_pairs, load_scenes
from core.runtime import cli
from core.runtime.errors import UserError
from core.shapes_world.composition import choose_held_out_pairs, object_pairs, pair_kind
from core.shapes_world.spec import COLOURS, SHAPES, SIZES

TINY = ShapesConfig(num_train=64, num_val=16, num_test=8, num_novel=12, encoder_epochs=1, pca_dim=16,
                    probe_epochs=1, threads=1)
HELD_OUT = {("red", "star"), ("small", "circle")}


def obj(colour, shape, size="large", x=10.0, y=10.0):
    return {"colour": colour, "shape": shape, "size": size, "x": x, "y": y, "r": 5.0}


def test_stated_pairs_read_synonyms_plurals_and_counts():
    assert stated_pairs("a little blue disc left of a big red star") == {
        ("small", "circle"), ("blue", "circle"), ("large", "star"), ("red", "star")}
    assert stated_pairs("two red stars and three shapes") == {("red", "star")}
    assert stated_pairs("a red thing and a circle") == set()


def test_recall_precision_and_substitution_on_hand_made_scenes():
    scenes = {0: {"objects": [obj("red", "star"), obj("blue", "circle", "small")]},
              1: {"objects": [obj("red", "star"), obj("red", "star"), obj("green", "square")]},
              2: {"objects": [obj("red", "star", "small")]},
              3: {"objects": [obj("green", "circle")]}}
    captions = {0: "a big red star left of a little blue disc",   # both held-out occurrences, by synonyms
                1: "two red stars and one green box",               # one plural phrase recalls both red stars
                2: "a red circle",                                  # a seen pair instead of the red star
                3: "a red star"}                                    # a held-out pair that is not there
    novel = pair_metrics(captions, scenes, HELD_OUT, novel=True)
    # Occurrences: scene 0 red star + small circle, scene 1 two red stars, scene 2 red star -> 5, 4 recalled.
    assert (novel["n_novel_occurrences"], novel["novel_pair_recall"]) == (5, pytest.approx(4 / 5))
    assert novel["n_novel_colour_occurrences"] == 4 and novel["novel_colour_pair_recall"] == pytest.approx(3 / 4)
    assert novel["novel_size_pair_recall"] == 1.0
    assert novel["novel_substitution_rate"] == pytest.approx(1 / 5)
    # Stated held-out pairs: red star (0, 1, 3), small circle (0) -> 3 of 4 true.
    assert (novel["n_novel_stated"], novel["novel_pair_precision"]) == (4, pytest.approx(3 / 4))
    assert novel["novel_pair_recall_low"] < 0.8 < novel["novel_pair_recall_high"]
    seen = pair_metrics(captions, scenes, HELD_OUT, novel=False)
    # Seen occurrences: 0: large star, blue circle (both stated); 1: large star x2 (no size said), green square
    # (stated), large square; 2: small star; 3: green circle, large circle -> 3 of 9 recalled.
    assert seen["n_seen_occurrences"] == 9
    assert seen["seen_pair_recall"] == pytest.approx(3 / 9)


def test_nothing_to_score_is_nan_and_a_missing_scene_is_refused():
    figures = pair_metrics({0: "a red star"}, {0: {"objects": [obj("blue", "square")]}}, HELD_OUT)
    assert figures["n_novel_occurrences"] == 0 and math.isnan(figures["novel_pair_recall"])
    with pytest.raises(UserError, match="no scene"):
        pair_metrics({5: "a red star"}, {0: {"objects": []}}, HELD_OUT)


@pytest.mark.parametrize("seed", range(6))
def test_held_out_pairs_leave_every_shape_and_attribute_seen(seed):
    pairs = choose_held_out_pairs(np.random.default_rng(seed), 6, 2)
    assert pairs == choose_held_out_pairs(np.random.default_rng(seed), 6, 2) and len(pairs) == 8
    colour_pairs = [p for p in pairs if pair_kind(p[0]) == "colour"]
    assert len({colour for colour, _ in colour_pairs}) == 6          # each colour held out with one shape at most
    for shape in SHAPES:
        assert sum(s == shape for _, s in colour_pairs) < len(COLOURS)
        assert sum(s == shape for a, s in pairs if a in SIZES) < len(SIZES)
    with pytest.raises(ValueError):
        choose_held_out_pairs(np.random.default_rng(seed), 7, 0)


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    root = tmp_path_factory.mktemp("novel")
    return {"novel": build_shapes_dataset(root / "novel", TINY, progress=False),
            "plain": build_shapes_dataset(root / "plain", replace(TINY, num_novel=0), progress=False)}


def test_held_out_pairs_never_occur_in_train_val_or_test(worlds):
    held_out = set(load_held_out_pairs(worlds["novel"]))
    assert len(held_out) == 8
    data = load_coco_data(worlds["novel"], splits=("train", "val", "test", "novel"))
    for split in ("train", "val", "test"):
        for scene in load_scenes(worlds["novel"], split).values():
            assert not held_out & {p for o in scene["objects"] for p in object_pairs(o)}
        for caption in decode_captions(data[f"{split}_captions"], data["idx_to_word"]):
            assert not held_out & stated_pairs(caption), caption
    novel_scenes = load_scenes(worlds["novel"], "novel")
    assert len(novel_scenes) == 12 and data["novel_features"].shape == (12, 16)
    for scene in novel_scenes.values():
        assert held_out & {p for o in scene["objects"] for p in object_pairs(o)}


def test_the_manifest_lists_the_pairs_and_their_words(worlds):
    manifest = json.loads((worlds["novel"] / MANIFEST_FILE).read_text())
    listed = manifest["held_out_pairs"]
    assert {tuple(entry["pair"]) for entry in listed} == set(load_held_out_pairs(worlds["novel"]))
    for entry in listed:
        attribute, shape = entry["pair"]
        assert entry["kind"] == pair_kind(attribute) and f"{shape}s" in entry["shape_words"]
        assert attribute in entry["attribute_words"]
    assert manifest["sizes"]["novel"] == {"images": 12, "captions": 60}


def test_train_and_val_are_the_same_with_or_without_the_novel_split(worlds):
    with_novel, plain = (load_coco_data(worlds[name]) for name in ("novel", "plain"))
    for split in ("train", "val"):
        for key in ("captions", "image_idxs", "features", "urls"):
            assert np.array_equal(with_novel[f"{split}_{key}"], plain[f"{split}_{key}"]), (split, key)
        assert load_scenes(worlds["novel"], split) == load_scenes(worlds["plain"], split)
        with h5py.File(worlds["novel"] / "shapes_images.h5") as a, h5py.File(worlds["plain"] / "shapes_images.h5") as b:
            assert np.array_equal(a[f"{split}_images"][()], b[f"{split}_images"][()])
    with pytest.raises(UserError, match="no novel split"):
        load_coco_data(worlds["plain"], splits=("novel",))


def test_evaluating_the_novel_split_reports_novel_pair_recall(worlds, tmp_path, capsys):
    run = tmp_path / "run"
    assert training.main(["--model", "lstm", "--data-dir", str(worlds["novel"]), "--out", str(run), "--epochs", "1",
                          "--hidden-dim", "16", "--wordvec-dim", "8", "--no-progress"]) == 0
    output = tmp_path / "novel.json"
    assert inference.main(["--model", "lstm", "--checkpoint", str(run / "best.npz"), "--evaluate", "--split", "novel",
                           "--output", str(output), "--no-progress"]) == 0
    figures = json.loads(output.read_text())["novel_composition"]
    assert figures["n_novel_occurrences"] >= 12 and figures["test_n_seen_occurrences"] == 2 * sum(
        len(scene["objects"]) for scene in load_scenes(worlds["novel"], "test").values())
    assert 0 <= figures["novel_pair_recall"] <= 1 and 0 <= figures["test_seen_pair_recall"] <= 1
    assert figures["reference_novel_colour_pair_recall"] == 1.0  # every reference names colour and shape
    plain_out = tmp_path / "plain.json"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        cli.run(lambda: inference.main(["--model", "lstm", "--checkpoint", str(run / "best.npz"), "--evaluate",
                                        "--split", "novel", "--data-dir", str(worlds["plain"]),
                                        "--output", str(plain_out)]))
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and len(err.splitlines()) == 1 and "no novel split" in err
    assert not plain_out.exists()


def test_a_bad_novel_option_builds_nothing(tmp_path):
    for options in ({"num_novel": -1}, {"novel_colour_pairs": 7}, {"novel_colour_pairs": 0, "novel_size_pairs": 0}):
        with pytest.raises(UserError):
            build_shapes_dataset(tmp_path / "s", replace(TINY, **options), progress=False)
    assert not (tmp_path / "s").exists()
