"""The evaluation report (core.inference.report): its data has one card per evaluated image, marks equal to the
grounding module's findings, and each word's attention from the pass that decoded the caption, summing to 1;
bad flags are one line and write nothing. The page in a real browser: tests/test_report_browser.py."""
import base64
import io
import json
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

import inference
from benchmarks.bench_report import synthetic_runs
from core.data.grid import model_inputs
from core.data.layout import REPORT_INDEX
from core.data.loader import load_coco_data
from core.datasets.shapes_build import build_shapes_dataset
from core.evaluation import loop
from core.evaluation.grounding import caption_findings, grounding_metrics
from core.inference.report import ATTENTION_TOTAL, decode_attention, encode_attention, read_report_data, write_report
from core.inference.report_html import MARK_KINDS, caption_html
from core.model.registry import load_model
from tests.test_attention_models import TINY_WORLD, train
from tests.test_bad_inputs import assert_one_line_exit
from tests.test_grounding import obj

# Two small red circles on the left, a large blue star at the top right, a green square at the bottom.
SCENE = [obj("red", "circle", 10, 30), obj("red", "circle", 20, 50), obj("blue", "star", 50, 10, size="large"),
         obj("green", "square", 40, 60)]


def mark(kind, first, end, note):
    return {"kind": kind, "words": [first, end], "note": note}


@pytest.mark.parametrize("caption, marks, missed", [
    ("two green stars left of a red circle",
     [mark("hallucination", 0, 3, "no green star in the scene"),
      mark("count", 0, 3, "the scene has 0 green stars, not 2"),
      mark("relation", 3, 5, "no green star left of a red circle in the scene")], ["blue star", "green square"]),
    ("one red circle above a big blue star",
     [mark("count", 0, 3, "the scene has 2 red circles, not 1"),
      mark("relation", 3, 4, "no red circle above a large blue star in the scene")], ["green square"]),
    ("a small blue star below a red circle",
     [mark("size", 0, 4, "no small blue star in the scene"),
      mark("relation", 4, 5, "no small blue star below a red circle in the scene")], ["green square"]),
    ("two red circles and a blue star and a green square", [], []),
    ("three shapes", [mark("count", 0, 2, "the scene has 4 objects, not 3")],
     ["blue star", "green square", "red circle"]),
])
def test_marks_are_the_grounding_findings_on_hand_made_scenes(caption, marks, missed):
    findings = caption_findings(caption, SCENE)
    hallucinated = any(m["kind"] == "hallucination" for m in marks)
    assert findings == {"marks": marks, "missed": missed, "hallucinated": hallucinated}
    metrics = grounding_metrics({0: caption}, {0: {"objects": SCENE}})
    assert findings["hallucinated"] == (metrics["hallucination_rate"] == 1)
    for kind, figure, claims in (("count", "count_accuracy", "n_count_claims"),
                                 ("relation", "relation_accuracy", "n_relation_claims"),
                                 ("size", "size_accuracy", "n_size_claims")):
        wrong = round((1 - metrics[figure]) * metrics[claims]) if metrics[claims] else 0
        assert sum(m["kind"] == kind for m in marks) == wrong
    assert len(missed) == metrics["n_scene_pairs"] - round(metrics["object_recall"] * metrics["n_scene_pairs"])
    assert marked_words(caption_html(caption, findings)) == expected_marked_words(caption, marks)


class _Words(HTMLParser):
    """The words of a caption's HTML with the mark kinds each carries."""

    def __init__(self):
        super().__init__()
        self.words, self._kinds = [], None

    def handle_starttag(self, tag, attrs):
        classes = dict(attrs).get("class", "").split()
        if tag == "span" and "w" in classes:
            self._kinds = {c[2:] for c in classes if c.startswith("m-")}

    def handle_data(self, data):
        if self._kinds is not None:
            self.words.append((data, self._kinds))
            self._kinds = None


def marked_words(html):
    parser = _Words()
    parser.feed(html)
    return parser.words


def expected_marked_words(caption, marks):
    return [(word, {m["kind"] for m in marks if m["words"][0] <= i < m["words"][1]})
            for i, word in enumerate(caption.split())]


def test_attention_is_stored_as_integers_summing_to_one_per_word():
    weights = np.random.default_rng(0).dirichlet(np.full(64, 0.2), size=7) * 0.9  # the cells' share is 0.9
    encoded = encode_attention(weights)
    decoded = decode_attention(encoded)
    counts = np.rint(decoded * ATTENTION_TOTAL).astype(np.int64)  # (7, 64): the stored integers
    assert len(encoded) == 7 and (counts.sum(axis=1) == ATTENTION_TOTAL).all()
    assert np.allclose(decoded.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.abs(decoded - weights / weights.sum(axis=1, keepdims=True)).max() <= 1 / ATTENTION_TOTAL
    assert set(MARK_KINDS) == {"hallucination", "count", "size", "relation"}


def test_small_pictures_travel_in_the_data_large_ones_are_files(tmp_path):
    runs, pictures = synthetic_runs(3)
    pictures = {0: pictures[0], 1: np.zeros((300, 200, 3), dtype=np.uint8), 2: None}  # shapes-sized, COCO-sized, none
    write_report(tmp_path / "report", runs, pictures.get, "pictures", progress=False)
    sources = [image["src"] for image in read_report_data(tmp_path / "report")["images"]]
    assert sources[0].startswith("data:image/jpeg;base64,") and sources[1:] == ["images/1.jpg", None]
    with Image.open(tmp_path / "report" / sources[1]) as picture:
        assert picture.size == (171, 256)  # at most PICTURE_SIDE a side, the aspect kept
    with Image.open(io.BytesIO(base64.b64decode(sources[0].split(",", 1)[1]))) as picture:
        assert picture.size == (64, 64)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny shapes world and an attention LSTM trained on it briefly."""
    root = tmp_path_factory.mktemp("report_world")
    data = build_shapes_dataset(root / "data", TINY_WORLD, progress=False)
    train("att_lstm", data, root / "att_lstm", epochs=3)
    return root


def evaluate(world, *flags):
    argv = ["--model", "att_lstm", "--checkpoint", str(world / "att_lstm" / "best.npz"), "--evaluate", "--split",
            "test", "--no-progress", *map(str, flags)]
    assert inference.main(argv) == 0


def replayed_attention(model, features, words):
    """The attention of each of ``words`` (ids) when the model is fed the caption word by word, (T, R)."""
    state, token, rows = model.init_decode(features[None]), np.array([model.start_idx]), []
    for word in words:
        _, state = model.decode_step(token, state)
        rows.append(model.attention(state)[0])
        token = np.array([word])
    return np.array(rows)


@pytest.mark.parametrize("beam_size", [1, 2])
def test_report_has_a_card_per_image_with_its_findings_and_its_decodings_attention(world, tmp_path, beam_size):
    evaluate(world, "--report", tmp_path / "report", "--output", tmp_path / "out.json", "--beam-size", beam_size)
    record = json.loads((tmp_path / "out.json").read_text())
    data = read_report_data(tmp_path / "report")
    model, _ = load_model(world / "att_lstm" / "best.npz")
    grid = model_inputs(load_coco_data(world / "data", splits=("test",), grid=True), True)["test_features"]
    assert [image["row"] for image in data["images"]] == sorted(map(int, record["predictions"])) == list(range(8))
    assert "attention_weights" not in record and data["runs"][0]["cells"] == 64
    index = (tmp_path / "report" / REPORT_INDEX).read_text()
    for image in data["images"]:
        entry, per_image = image["runs"][0], record["per_image"][str(image["row"])]
        assert entry["c"] == record["predictions"][str(image["row"])] and image["src"].startswith("data:image/jpeg")
        assert entry["h"] == caption_html(entry["c"], per_image["findings"]) and entry["h"] in index  # no-JS readable
        assert marked_words(entry["h"]) == expected_marked_words(entry["c"], per_image["findings"]["marks"])
        assert (entry["cider"], entry["bleu4"]) == (per_image["CIDEr"], per_image["BLEU-4"])
        weights = decode_attention(entry["att"])  # (T, R)
        assert len(weights) == len(entry["c"].split()) and np.allclose(weights.sum(axis=1), 1.0, atol=1e-12)
        words = [model.word_to_idx[word] for word in entry["c"].split()]
        replay = replayed_attention(model, grid[image["row"]], words)  # (T, R)
        assert np.abs(weights - replay / replay.sum(axis=1, keepdims=True)).max() <= 1.5e-4
        if beam_size > 1:
            assert entry["beams"][0][0] == entry["c"] and len(entry["beams"]) <= beam_size
        else:
            assert "beams" not in entry


def test_greedy_evaluation_decodes_once_for_captions_and_attention(world, monkeypatch):
    calls = []
    original = loop.decode_recorded
    monkeypatch.setattr(loop, "decode_recorded", lambda *args, **kwargs: calls.append(args[5]) or original(*args,
                                                                                                            **kwargs))
    evaluate(world)
    assert calls == [64]  # one pass, recording attention over the 64 cells


def test_compare_shows_an_earlier_output_beside_this_evaluation(world, tmp_path):
    evaluate(world, "--output", tmp_path / "greedy.json")
    evaluate(world, "--beam-size", 2, "--report", tmp_path / "report", "--compare", tmp_path / "greedy.json")
    greedy = json.loads((tmp_path / "greedy.json").read_text())
    data = read_report_data(tmp_path / "report")
    assert len(data["runs"]) == 2 and data["runs"][1]["cells"] == 0
    assert all(image["runs"][1]["c"] == greedy["predictions"][str(image["row"])] for image in data["images"])
    assert all(image["runs"][1]["h"] == caption_html(image["runs"][1]["c"],
                                                     greedy["per_image"][str(image["row"])]["findings"])
               for image in data["images"])


def test_bad_report_and_compare_flags_are_one_line_and_write_nothing(world, tmp_path, capsys):
    evaluate(world, "--split", "val", "--output", tmp_path / "val.json")
    evaluate(world, "--num-samples", 4, "--output", tmp_path / "four.json")
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    (tmp_path / "not.json").write_text("{")
    report, output = tmp_path / "report", tmp_path / "out.json"
    cases = [
        (["--report", report], "--report goes with --evaluate", False),
        (["--compare", tmp_path / "val.json"], "--compare goes with --report", True),
        (["--report", tmp_path / "a-file"], "--report", True),
        (["--report", "/proc/forbidden/report"], "not writable", True),
        (["--report", tmp_path / "busy"], "holds files that are not a report", True),
        (["--report", report, "--compare", tmp_path / "val.json"], "--compare", True),
        (["--report", report, "--compare", tmp_path / "four.json"], "not the same ones", True),
        (["--report", report, "--compare", tmp_path / "not.json"], "is not JSON", True),
        (["--report", report, "--compare", tmp_path / "missing.json"], "cannot be read", True),
    ]
    for flags, fragment, evaluating in cases:
        argv = ["--model", "att_lstm", "--checkpoint", str(world / "att_lstm" / "best.npz"), "--split", "test",
                "--output", str(output), "--no-progress", *map(str, flags)] + (["--evaluate"] if evaluating else [])
        assert_one_line_exit(inference.main, argv, capsys, fragment)
        assert not report.exists() and not output.exists()
    assert (tmp_path / "a-file").read_text() == "x" and sorted(p.name for p in (tmp_path / "busy").iterdir()) == \
        ["notes.txt"]
