"""core.results: decoding times are medians over runs taken in turns, one per decoding; the table and the
comparison report have every kind of row."""
import json

import numpy as np

from core.coco_utils import load_coco_data
from core.decoding import DecodeConfig
from core.inference.report import read_report_data
from core.model.registry import model_kind
from core.results.study import ResultsSettings, _decode_seconds, run_results
from tests.test_attention_models import TINY_WORLD


def test_decode_seconds_times_every_decoding(tiny_dataset, monkeypatch):
    data = load_coco_data(tiny_dataset)
    kind = model_kind("rnn")
    config = kind.make_config({"hidden_dim": 8, "wordvec_dim": 4}).for_data(data["val_features"])
    model = kind.build(data["word_to_idx"], config)
    calls = []
    monkeypatch.setattr("core.results.study.caption_features",
                        lambda model, features, max_length, config: calls.append((len(features), config)))
    decodings = {"greedy": DecodeConfig(), "beam 2": DecodeConfig(beam_size=2)}
    seconds = _decode_seconds(model, data, "val", 5, decodings, repeats=3)
    assert set(seconds) == set(decodings) and all(s >= 0 for s in seconds.values())
    num_val = len(np.unique(data["val_image_idxs"]))
    assert calls == [(num_val, decodings["greedy"]), (num_val, decodings["beam 2"])] * 3  # in turns


def test_the_table_has_every_kind_of_row_on_the_test_split(tmp_path):
    from core.datasets.shapes_build import build_shapes_dataset

    data_dir = build_shapes_dataset(tmp_path / "data", TINY_WORLD, progress=False)
    settings = ResultsSettings(models=("lstm",), out=str(tmp_path / "runs"), data_dir=str(data_dir), epochs=1,
                               readme=None, progress=False)
    rows = run_results(settings)
    kinds = [(row["name"], row["training"], row["decoding"]) for row in rows]
    assert kinds[:4] == [("lstm", "XE", "greedy"), ("lstm", "XE", "beam 3"), ("lstm", "SCST (mean baseline)", "greedy"),
                         ("lstm blind", "XE", "greedy")]
    assert {row["decoding"] for row in rows[4:]} == {"retrieval"}
    assert not any("attention_correctness" in row for row in rows)  # no attention model
    table = (tmp_path / "runs" / "results.md").read_text()
    assert "test split" in table and "| lstm | SCST (mean baseline) | greedy |" in table and "att. corr." in table
    assert len(json.loads((tmp_path / "runs" / "results.json").read_text())) == len(rows)
    report = read_report_data(tmp_path / "runs" / "report")  # every model's captions, one under the other
    assert [run["name"] for run in report["runs"]] == [", ".join(kind) for kind in kinds[:4]]
    assert len(report["images"]) == 8 and all(len(image["runs"]) == 4 for image in report["images"])
