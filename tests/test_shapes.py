"""The generated shapes world: scenes, pixels, captions, the encoder, and the dataset build (tiny builds)."""
import json
from dataclasses import replace

import h5py
import numpy as np
import pytest
import torch

from core.coco_utils import decode_captions, load_coco_data
from core.datasets import shapes_build
from core.datasets.shapes_build import ShapesConfig, build_shapes_dataset, ensure_shapes_dataset
from core.features.encoders import load_encoder
from core.features.shapes_cnn import ShapesEncoder, ShapesEncoderConfig, load_shapes_encoder
from core.features.shapes_pretrain import (
    HeadTrainingConfig,
    dense_labels,
    evaluate_encoder,
    pretrain_encoder,
    scene_labels,
    train_heads,
)
from core.runtime.errors import UserError
from core.shapes_world.captions import scene_captions, vertical_relation
from core.shapes_world.render import PALETTE, render_scene, sample_scenes
from core.shapes_world.spec import (
    COLOURS,
    COUNT_WORDS,
    GENERIC_NOUNS,
    MAX_CAPTION_WORDS,
    RELATION_WORDS,
    SHAPE_NOUNS,
    SIZE_WORDS,
)

SIZE = 64
# Without held-out pairs: the world as it was before the novel split (tests/test_novel_split.py covers that).
TINY = ShapesConfig(num_train=64, num_val=16, num_test=8, num_novel=0, novel_colour_pairs=0, novel_size_pairs=0,
                    encoder_epochs=1, pca_dim=16, probe_epochs=2)
NOUN_TO_SHAPE = {noun: shape for shape, (singular, plural) in SHAPE_NOUNS.items() for noun in singular + plural}
FILLER = {"and", "image", "picture", "scene", "with", "of", "on", "its", "own"}
RELATION_VOCAB = {word for wordings in RELATION_WORDS.values() for words in wordings for word in words}
WORLD_VOCAB = (set(NOUN_TO_SHAPE) | set(COLOURS) | {w for ws in SIZE_WORDS.values() for w in ws}
               | {w for ws in COUNT_WORDS.values() for w in ws} | {w for ws in GENERIC_NOUNS for w in ws}
               | RELATION_VOCAB | FILLER)


@pytest.fixture(scope="module")
def scenes():
    return sample_scenes(300, np.random.default_rng(0), SIZE)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Two tiny builds with the same config, one with another seed."""
    root = tmp_path_factory.mktemp("shapes")
    dirs = {name: build_shapes_dataset(root / name, config)
            for name, config in (("a", TINY), ("b", TINY), ("seed1", replace(TINY, seed=1)))}
    return dirs


def mentions(caption):
    """(position, colour, shape) of each colour-shape noun pair in a caption."""
    words = caption.split()
    return [(i, words[i - 1], NOUN_TO_SHAPE[w]) for i, w in enumerate(words) if w in NOUN_TO_SHAPE]


# ---- the world ----------------------------------------------------------------------------------

def test_scenes_are_sorted_separated_and_inside(scenes):
    counts = set()
    for scene in scenes:
        objects = scene["objects"]
        counts.add(len(objects))
        xs = [obj["x"] for obj in objects]
        assert xs == sorted(xs)
        assert all(b - a >= 0.2 * SIZE for a, b in zip(xs, xs[1:]))
        for obj in objects:
            assert obj["r"] <= obj["x"] <= SIZE - obj["r"] and obj["r"] <= obj["y"] <= SIZE - obj["r"]
            for other in objects:
                if other is not obj:
                    assert np.hypot(obj["x"] - other["x"], obj["y"] - other["y"]) > obj["r"] + other["r"]
    assert counts == {1, 2, 3}


def test_pixels_agree_with_scene_truth(scenes):
    for scene in scenes[:100]:
        image = render_scene(scene, SIZE).astype(float)
        assert np.array_equal(render_scene(scene, SIZE), image.astype(np.uint8))  # pure function of the scene
        covered = np.zeros((SIZE, SIZE), dtype=bool)
        for obj in scene["objects"]:
            y, x = int(obj["y"]), int(obj["x"])
            centre = image[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3).mean(axis=0)    # 3x3 mean beats the noise
            assert np.abs(centre - PALETTE[obj["colour"]]).max() < 15, (obj, centre)
            ys, xs = np.mgrid[:SIZE, :SIZE]
            covered |= np.hypot(xs + 0.5 - obj["x"], ys + 0.5 - obj["y"]) < 1.3 * obj["r"] + 2
        background = image[~covered].mean(axis=0)
        assert np.abs(background - scene["background"]).max() < 2


def test_sizes_are_visibly_different(scenes):
    """Large objects cover clearly more pixels than small ones of the same shape."""
    areas = {}
    for scene in scenes[:120]:
        image = render_scene(scene, SIZE).astype(float)
        for obj in scene["objects"]:
            near = np.abs(image - PALETTE[obj["colour"]]).max(axis=2) < 25
            ys, xs = np.mgrid[:SIZE, :SIZE]
            near &= np.hypot(xs + 0.5 - obj["x"], ys + 0.5 - obj["y"]) < 1.3 * obj["r"] + 1
            areas.setdefault((obj["shape"], obj["size"]), []).append(near.sum())
    for shape in NOUN_TO_SHAPE.values():
        assert max(areas[(shape, "small")]) < min(areas[(shape, "large")])


# ---- captions -----------------------------------------------------------------------------------

def test_captions_follow_the_grammar_and_name_every_object(scenes):
    rng = np.random.default_rng(0)
    for scene in scenes:
        captions = scene_captions(scene, rng, SIZE)
        assert len(captions) == 5 and len(set(captions)) >= 3
        truth = sorted((obj["colour"], obj["shape"]) for obj in scene["objects"])
        for caption in captions:
            words = caption.split()
            assert caption == caption.lower() and " ".join(words) == caption
            assert len(words) <= MAX_CAPTION_WORDS and set(words) <= WORLD_VOCAB, caption
            named = {(colour, shape) for _, colour, shape in mentions(caption)}
            assert named == set(truth), (caption, truth)


def test_list_captions_name_objects_left_to_right(scenes):
    rng = np.random.default_rng(1)
    for scene in scenes:
        listed = [(colour, shape) for _, colour, shape in mentions(scene_captions(scene, rng, SIZE)[0])]
        assert listed == [(obj["colour"], obj["shape"]) for obj in scene["objects"]]


def _relation_holds(relation, a, b):
    return {"left": a["x"] < b["x"], "right": a["x"] > b["x"],
            "above": a["y"] < b["y"], "below": a["y"] > b["y"]}[relation]


def test_relations_in_captions_are_true(scenes):
    rng = np.random.default_rng(2)
    claims = 0
    for scene in scenes:
        for caption in scene_captions(scene, rng, SIZE):
            words, found = caption.split(), mentions(caption)
            for (i, *first), (j, *second) in zip(found, found[1:]):
                between = [w for w in words[i + 1:j] if w in RELATION_VOCAB]
                relation = next((r for r in ("left", "right", "above", "below") if r in between), None)
                relation = "below" if "under" in between else relation
                if relation is None:
                    continue
                claims += 1
                firsts = [o for o in scene["objects"] if (o["colour"], o["shape"]) == tuple(first)]
                seconds = [o for o in scene["objects"] if (o["colour"], o["shape"]) == tuple(second)]
                assert any(_relation_holds(relation, a, b) for a in firsts for b in seconds if a is not b), caption
    assert claims > 300


def test_vertical_relation_needs_a_clear_gap():
    a = {"x": 10.0, "y": 10.0, "r": 5.0}
    assert vertical_relation(a, {"x": 40.0, "y": 40.0, "r": 5.0}, SIZE) == "above"
    assert vertical_relation({"x": 40.0, "y": 40.0, "r": 5.0}, a, SIZE) == "below"
    assert vertical_relation(a, {"x": 40.0, "y": 18.0, "r": 5.0}, SIZE) is None


# ---- encoder ------------------------------------------------------------------------------------

def test_scene_labels():
    scene = {"objects": [{"shape": "star", "colour": "red", "size": "small", "x": 10.0, "y": 5.0, "r": 5.0},
                         {"shape": "circle", "colour": "blue", "size": "large", "x": 40.0, "y": 50.0, "r": 10.0}]}
    labels = scene_labels([scene], SIZE)
    assert labels["count"].tolist() == [[1]]
    assert labels["present"].tolist() == [[1, 1, 0]]
    assert labels["shape"].tolist() == [[3, 0, -100]] and labels["colour"].tolist() == [[0, 2, -100]]
    assert labels["size"].tolist() == [[0, 1, -100]] and labels["row"].tolist() == [[0, 2, -100]]
    assert labels["vertical"].tolist() == [[1, -100, -100]]


def test_encoder_learns_from_pixels(scenes):
    images = np.stack([render_scene(scene, SIZE) for scene in scenes[:200]])
    config = ShapesEncoderConfig(widths=(8, 16, 16, 16), feature_dim=64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        untrained = evaluate_encoder(ShapesEncoder(config).eval(), images, scenes[:200])
        encoder = pretrain_encoder(images, scenes[:200], config, HeadTrainingConfig(epochs=4, lr=1e-2, batch_size=32))
        trained = evaluate_encoder(encoder, images, scenes[:200])
    finally:
        torch.set_num_threads(threads)
    assert trained["colour"] > untrained["colour"] + 0.1 and trained["count"] > 0.5     # count chance: 1/3
    features = encoder(encoder.preprocess(images[:4]))
    assert features.shape == (4, 64) and (features >= 0).all()


def test_the_dense_first_phase_trains_the_trunk_and_dense_heads_alone(scenes):
    images = np.stack([render_scene(scene, SIZE) for scene in scenes[:64]])
    config = ShapesEncoderConfig(widths=(8, 16, 16, 16), feature_dim=32)
    training = HeadTrainingConfig(epochs=1, lr=1e-2, batch_size=32, progress=False)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        encoder = ShapesEncoder(config)
    before = {name: value.clone() for name, value in encoder.state_dict().items()}
    labels = dense_labels(scenes[:64], SIZE, config.grid)
    train_heads(encoder, encoder.predict_dense, images, labels, training, encoder.preprocess)
    changed = {name for name, value in encoder.state_dict().items() if not torch.equal(value, before[name])}
    assert {"dense.weight", "trunk.0.weight"} <= changed
    assert not any(name.startswith(("fc7.", "heads.")) for name in changed)
    plain = pretrain_encoder(images, scenes[:64], config, training)
    dense_first = pretrain_encoder(images, scenes[:64], config, training, dense_first=training)
    assert not torch.equal(plain.fc7[1].weight, dense_first.fc7[1].weight)


def test_only_the_hard_world_pretrains_its_trunk_on_the_dense_heads_first():
    assert ShapesConfig().encoder_dense_epochs == 0
    assert ShapesConfig.for_world("hard").encoder_dense_epochs > 0


def test_encoder_input_checks_and_load_errors(tmp_path):
    encoder = ShapesEncoder()
    with pytest.raises(UserError, match="64, 64, 3"):
        encoder.preprocess(np.zeros((2, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(UserError, match="encoder.pt"):
        load_shapes_encoder(tmp_path)
    (tmp_path / "encoder.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "encoder.json").write_text(json.dumps({"name": "shapes"}))
    with pytest.raises(UserError, match="corrupt"):
        load_shapes_encoder(tmp_path)


# ---- the build ----------------------------------------------------------------------------------

LAYOUT = ["coco2014_captions.h5", "coco2014_vocab.json", "train2014_vgg16_fc7_pca.h5", "val2014_vgg16_fc7_pca.h5",
          "train2014_vgg16_fc7.h5", "val2014_vgg16_fc7.h5", "train2014_urls.txt", "val2014_urls.txt", "pca.npz",
          "encoder.json", "encoder.pt", "shapes_images.h5", "shapes_scenes.json", "manifest.json",
          "test2014_vgg16_fc7_pca.h5", "test2014_vgg16_fc7.h5", "test2014_urls.txt",  # the held-out split
          "train2014_grid.h5", "val2014_grid.h5", "test2014_grid.h5"]


def test_build_writes_the_layout(built):
    base = built["a"]
    assert sorted(p.name for p in base.iterdir()) == sorted(LAYOUT)
    data = load_coco_data(base)
    for split, num in (("train", 64), ("val", 16)):
        assert data[f"{split}_captions"].shape == (5 * num, 17) and data[f"{split}_captions"].dtype == np.int32
        assert data[f"{split}_image_idxs"].tolist() == np.repeat(np.arange(num), 5).tolist()
        assert data[f"{split}_features"].shape == (num, 16) and data[f"{split}_features"].dtype == np.float32
        assert data[f"{split}_urls"][3] == f"shapes://{split}/3"
    assert data["idx_to_word"][:4] == ["<NULL>", "<START>", "<END>", "<UNK>"]
    assert (data["train_captions"] != 3).all()                      # no <UNK> in the words it was built from
    raw = load_coco_data(base, pca_features=False)["train_features"]
    assert raw.shape == (64, 1024)
    with h5py.File(base / "shapes_images.h5") as h5:
        images = h5["train_images"][()]
        assert images.shape == (64, SIZE, SIZE, 3) and images.dtype == np.uint8
        assert h5["val_images"].shape == (16, SIZE, SIZE, 3)
    world = json.loads((base / "shapes_scenes.json").read_text())
    assert world["image_size"] == SIZE and len(world["train"]) == 64 and len(world["val"]) == 16
    assert np.array_equal(images[5], render_scene(world["train"][5], SIZE))
    encoder = load_encoder("shapes", base_dir=base, device="cpu")
    with torch.no_grad():
        again = encoder(encoder.preprocess(images[:8])).numpy()
    assert np.allclose(again, raw[:8], atol=1e-4)                  # features come from the stored pixels


def test_build_captions_describe_their_images(built):
    data = load_coco_data(built["a"])
    world = json.loads((built["a"] / "shapes_scenes.json").read_text())
    for text, image in zip(decode_captions(data["val_captions"], data["idx_to_word"]), data["val_image_idxs"]):
        objects = world["val"][image]["objects"]
        assert {(c, s) for _, c, s in mentions(text)} == {(o["colour"], o["shape"]) for o in objects}


def test_build_varies_wordings_across_scenes_in_both_splits(built):
    """Synonyms and sizes are drawn from one stream per split, not re-seeded per scene: with a stream re-seeded
    per scene, every one-object scene got the same wording choices and val differed from train."""
    data = load_coco_data(built["a"])
    world = json.loads((built["a"] / "shapes_scenes.json").read_text())
    size_words = {w for ws in SIZE_WORDS.values() for w in ws}
    for split in ("train", "val"):
        texts = decode_captions(data[f"{split}_captions"], data["idx_to_word"])
        single = [texts[5 * i] for i, scene in enumerate(world[split]) if len(scene["objects"]) == 1]
        with_size = [bool(size_words & set(text.split())) for text in single]
        assert len(single) >= 4 and any(with_size) and not all(with_size), (split, single)
        prefixes = {" ".join(texts[5 * i + 1].split()[:3]) for i in range(len(world[split]))}
        assert len(prefixes) == 3, (split, prefixes)                    # "an image of", "a picture of", ...


def test_manifest_records_the_build(built):
    manifest = json.loads((built["a"] / "manifest.json").read_text())
    assert manifest["config"] == TINY.as_json()
    assert {"scenes", "render", "captions", "encoder_pretraining", "features_pca"} <= set(manifest["seconds"])
    assert manifest["vocab_size"] == len(json.loads((built["a"] / "coco2014_vocab.json").read_text())["idx_to_word"])
    assert sum(manifest["train_caption_length_histogram"].values()) == 5 * 64
    for key in ("encoder_val_accuracy", "probe_val_accuracy", "probe_shuffled_val_accuracy"):
        assert set(manifest[key]) == {"count", "present", "shape", "colour", "size", "row", "vertical", "scene"}


def test_same_seed_same_files_other_seed_differs(built):
    a, b, other = built["a"], built["b"], built["seed1"]
    for name in LAYOUT:
        if name not in ("manifest.json", "encoder.pt"):                 # build times; torch.save's random id
            assert (a / name).read_bytes() == (b / name).read_bytes(), name
    weights_a = torch.load(a / "encoder.pt", weights_only=True)
    weights_b = torch.load(b / "encoder.pt", weights_only=True)
    assert all(torch.equal(weights_a[key], weights_b[key]) for key in weights_a)
    for name in ("shapes_images.h5", "coco2014_captions.h5", "train2014_vgg16_fc7.h5"):
        assert (a / name).read_bytes() != (other / name).read_bytes(), name


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("simulated crash during feature extraction")
    monkeypatch.setattr(shapes_build, "write_feature_files", fail)
    with pytest.raises(RuntimeError, match="simulated"):
        build_shapes_dataset(tmp_path / "data", TINY)
    assert list(tmp_path.iterdir()) == []


def test_ensure_reuses_a_matching_build_and_rebuilds_otherwise(built, monkeypatch):
    calls = []
    monkeypatch.setattr(shapes_build, "build_shapes_dataset", lambda out, config, progress: calls.append(config) or out)
    assert ensure_shapes_dataset(built["a"], TINY, progress=False) == built["a"] and calls == []
    ensure_shapes_dataset(built["a"], replace(TINY, num_val=17), progress=False)
    assert calls == [replace(TINY, num_val=17)]


def test_a_manifest_without_an_option_added_since_records_its_default(built, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(shapes_build, "build_shapes_dataset", lambda out, config, progress: calls.append(config) or out)
    manifest = json.loads((built["a"] / "manifest.json").read_text())
    del manifest["config"]["encoder_dense_epochs"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert ensure_shapes_dataset(tmp_path, TINY, progress=False) == tmp_path and calls == []
    ensure_shapes_dataset(tmp_path, replace(TINY, encoder_dense_epochs=2), progress=False)
    manifest["config"] = None
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    ensure_shapes_dataset(tmp_path, TINY, progress=False)
    assert calls == [replace(TINY, encoder_dense_epochs=2), TINY]


def test_bad_config_and_foreign_folder_are_refused(tmp_path):
    with pytest.raises(UserError, match="unknown shapes dataset options"):
        ShapesConfig.from_dict({"num_train": 64, "colours": 7})
    with pytest.raises(UserError, match="image size"):
        ShapesConfig(image_size=50)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a shapes dataset"):
        build_shapes_dataset(tmp_path, TINY)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_command_line_build_and_bad_flag(tmp_path, capsys):
    shapes_build.main(["--out", str(tmp_path / "cli"), "--num-train", "64", "--num-val", "8", "--num-test", "4",
                       "--encoder-epochs", "1", "--pca-dim", "8"])
    assert json.loads(capsys.readouterr().out)["vocab_size"] > 20
    assert load_coco_data(tmp_path / "cli")["train_features"].shape == (64, 8)
    with pytest.raises(SystemExit) as exit_info:
        shapes_build.main(["--num-train", "zero"])
    assert exit_info.value.code == 2


def test_the_held_out_test_split_is_built_apart(built):
    from core.evaluation.loop import load_scenes

    data = load_coco_data(built["a"], splits=("test",))
    assert data["test_features"].shape == (8, 16) and data["test_captions"].shape == (40, 17)
    assert len(load_scenes(built["a"], "test")) == 8
    # Its own random streams: adding it left train and val as they were without it.
    plain = build_shapes_dataset(built["a"].parent / "no-test", replace(TINY, num_test=0))
    for split in ("train", "val"):
        key = f"{split}_captions"
        assert np.array_equal(load_coco_data(plain)[key], load_coco_data(built["a"])[key])
    with pytest.raises(UserError, match="no test split"):
        load_coco_data(plain, splits=("test",))
