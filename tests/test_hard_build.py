"""The harder world's dataset build, end to end: the same on-disk layout as the default world's (the same readers
load both, the manifest and scene file name the world), the encoder's heads sized by the world, held-out pairs of the
world's own shapes/colours/sizes kept out of train/val/test, bad input refused with one line and nothing written,
``--dataset shapes-hard`` resolved to its own home, and a tiny dataset trained on and evaluated."""
import json
import math
from dataclasses import replace

import numpy as np
import pytest

import inference
import training
from core.data.layout import MANIFEST_FILE, SHAPES_SCENES_FILE
from core.data.loader import load_coco_data
from core.data.vocab import decode_captions
from core.datasets import resolve, shapes_build
from core.datasets.shapes_build import build_shapes_dataset
from core.datasets.shapes_config import ShapesConfig
from core.evaluation.composition import stated_pairs
from core.evaluation.loop import load_held_out_pairs, load_scenes, load_world
from core.features.shapes_cnn import load_shapes_encoder
from core.runtime import cli
from core.runtime.errors import UserError
from core.shapes_world.composition import choose_held_out_pairs, object_pairs
from core.shapes_world.hard_spec import HARD_WORLD
from core.shapes_world.spec import DEFAULT_WORLD, required_objects

SMALL = dict(num_val=12, num_test=12, encoder_epochs=1, pca_dim=16, probe_epochs=1, threads=1)
HARD = ShapesConfig.for_world("hard", num_train=48, num_novel=16, **SMALL)
DEFAULT = ShapesConfig.for_world("default", num_train=32, num_novel=8, **SMALL)
SPLITS = ("train", "val", "test", "novel")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("worlds")
    return {"hard": build_shapes_dataset(root / "hard", HARD, progress=False),
            "plain": build_shapes_dataset(root / "plain", replace(HARD, num_novel=0), progress=False),
            "default": build_shapes_dataset(root / "default", DEFAULT, progress=False)}


@pytest.mark.parametrize("name, spec, size, slots", [("hard", HARD_WORLD, 96, 6), ("default", DEFAULT_WORLD, 64, 3)])
def test_the_layout_readers_load_both_worlds(built, name, spec, size, slots):
    data = load_coco_data(built[name], splits=SPLITS)
    config = HARD if name == "hard" else DEFAULT
    for split in SPLITS:
        count = getattr(config, f"num_{split}")
        assert data[f"{split}_features"].shape == (count, 16) and data[f"{split}_captions"].shape == (5 * count, 17)
        assert len(load_scenes(built[name], split)) == count
    assert load_world(built[name]).spec is spec and load_scenes(built[name], "val", with_image_size=True)[1] == size
    manifest = json.loads((built[name] / MANIFEST_FILE).read_text())
    assert manifest["world"] == name and manifest["config"]["world"] == name
    assert json.loads((built[name] / SHAPES_SCENES_FILE).read_text())["world"] == name
    heads = load_shapes_encoder(built[name]).heads.shapes
    assert heads["shape"] == (slots, len(spec.shapes)) and heads["colour"] == (slots, len(spec.colours))
    assert heads["size"] == (slots, len(spec.sizes)) and heads["count"] == (1, slots)
    assert heads["vertical"] == (slots * (slots - 1) // 2, 3)


def test_held_out_pairs_come_from_the_hard_worlds_shapes_colours_and_sizes():
    pairs = {pair for seed in range(10)
             for pair in choose_held_out_pairs(np.random.default_rng(seed), 6, 2, HARD_WORLD)}
    assert {shape for _, shape in pairs} - set(DEFAULT_WORLD.shapes)
    assert {attribute for attribute, _ in pairs} - set(DEFAULT_WORLD.colours) - set(DEFAULT_WORLD.sizes)
    assert all(shape in HARD_WORLD.shapes and attribute in HARD_WORLD.colours + HARD_WORLD.sizes
               for attribute, shape in pairs)


def test_held_out_pairs_never_occur_in_train_val_or_test_and_every_novel_image_holds_one(built):
    held_out = set(load_held_out_pairs(built["hard"]))
    assert len(held_out) == 8
    data = load_coco_data(built["hard"], splits=SPLITS)
    for split in ("train", "val", "test"):
        for scene in load_scenes(built["hard"], split).values():
            assert not held_out & {pair for o in scene["objects"] for pair in object_pairs(o)}
        for caption in decode_captions(data[f"{split}_captions"], data["idx_to_word"]):
            assert not held_out & stated_pairs(caption, HARD_WORLD), caption
    for scene in load_scenes(built["hard"], "novel").values():
        assert held_out & {pair for o in required_objects(scene) for pair in object_pairs(o)}
    listed = json.loads((built["hard"] / MANIFEST_FILE).read_text())["held_out_pairs"]
    for entry in listed:
        attribute, shape = entry["pair"]
        words = HARD_WORLD.colour_words if entry["kind"] == "colour" else HARD_WORLD.size_words
        singular, plural = HARD_WORLD.shape_nouns[shape]
        assert entry["attribute_words"] == list(words[attribute]) and entry["shape_words"] == [*singular, *plural]


def test_train_and_val_are_the_same_with_or_without_the_novel_split(built):
    with_novel, plain = load_coco_data(built["hard"]), load_coco_data(built["plain"])
    for split in ("train", "val"):
        for key in ("captions", "image_idxs", "features"):
            assert np.array_equal(with_novel[f"{split}_{key}"], plain[f"{split}_{key}"]), (split, key)
        assert load_scenes(built["hard"], split) == load_scenes(built["plain"], split)


def one_line_exit(main, argv, capsys):
    """Run ``main(argv)`` as a script does: returns (exit code, stderr lines)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        cli.run(lambda: main(argv))
    return exited.value.code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("flags, fragment", [
    (["--world", "nope"], "--world"),
    (["--world", "hard", "--image-size", "64"], "--image-size 64"),
    (["--world", "hard", "--image-size", "136"], "--image-size 136"),
    (["--image-size", "128"], "--image-size 128"),
    (["--world", "hard", "--novel-colour-pairs", "13"], "--novel-colour-pairs 13"),
])
def test_bad_build_input_is_one_line_and_writes_nothing(flags, fragment, tmp_path, capsys):
    code, err = one_line_exit(shapes_build.main, ["--out", str(tmp_path / "out"), *flags], capsys)
    assert code == 2 and len(err) == 1 and fragment in err[0]
    assert not any(tmp_path.iterdir())


def test_the_hard_worlds_limits_follow_its_words():
    ShapesConfig.for_world("hard", novel_colour_pairs=12, novel_size_pairs=16)
    with pytest.raises(UserError, match="--novel-size-pairs 17"):
        ShapesConfig.for_world("hard", novel_size_pairs=17)
    assert ShapesConfig.for_world("hard").image_size == 96 and ShapesConfig.for_world("default") == ShapesConfig()


def test_shapes_hard_is_built_on_first_use_in_its_own_home(monkeypatch):
    calls = []
    monkeypatch.setattr(shapes_build, "ensure_shapes_dataset", lambda home, config, progress: calls.append(
        (home, config)) or home)
    home = resolve.resolve_data_dir("shapes-hard", progress=False)
    assert calls == [(home, ShapesConfig.for_world("hard"))] and home.name == "shapes-hard"
    assert home.parent == resolve.dataset_home("shapes").parent and shapes_build.world_home("hard") == home
    with pytest.raises(UserError, match="karpathy"):
        resolve.resolve_data_dir("shapes-hard", progress=False, protocol="karpathy")


def test_a_tiny_hard_dataset_trains_and_evaluates(built, tmp_path, capsys):
    run = tmp_path / "run"
    assert training.main(["--model", "lstm", "--data-dir", str(built["hard"]), "--out", str(run), "--epochs", "1",
                          "--batch-size", "16", "--hidden-dim", "32", "--wordvec-dim", "16", "--no-progress"]) == 0
    for split in ("test", "novel"):
        output = tmp_path / f"{split}.json"
        assert inference.main(["--model", "lstm", "--checkpoint", str(run / "best.npz"), "--evaluate", "--split",
                               split, "--output", str(output), "--no-progress"]) == 0
        result = json.loads(output.read_text())
        grounding = result["grounding"]
        assert grounding["n_captions"] == 12 if split == "test" else 16
        for key in ("object_recall", "hallucination_rate"):
            assert math.isfinite(grounding[key]), key
        for key, count in (("object_precision", "n_object_mentions"), ("count_accuracy", "n_count_claims"),
                           ("relation_accuracy", "n_relation_claims"), ("size_accuracy", "n_size_claims")):
            assert math.isfinite(grounding[key]) == (grounding[count] > 0), key
    assert math.isfinite(result["novel_composition"]["reference_novel_pair_recall"])
    plain_out = tmp_path / "plain.json"
    code, err = one_line_exit(inference.main, ["--model", "lstm", "--checkpoint", str(run / "best.npz"), "--evaluate",
                                               "--split", "novel", "--data-dir", str(built["plain"]),
                                               "--output", str(plain_out)], capsys)
    assert code == 2 and len(err) == 1 and "no novel split" in err[0] and not plain_out.exists()


def test_the_results_study_runs_on_the_hard_world(built, tmp_path):
    from core.results.study import ResultsSettings, run_results

    settings = ResultsSettings(models=("lstm",), world="hard", out=str(tmp_path / "runs"), data_dir=str(built["hard"]),
                               epochs=1, scst=False, blind=False, docs=False, progress=False)
    rows = run_results(settings, command="python results.py --world hard")
    greedy = rows[0]
    assert (greedy["name"], greedy["decoding"]) == ("lstm", "greedy")
    # the held-out pairs are the hard world's (e.g. grey, navy): read in its words, as the references state them
    assert 0 <= greedy["novel_pair_recall"] <= 1 and greedy["reference_novel_pair_recall"] > 0
    assert (tmp_path / "runs" / "results.md").is_file()
