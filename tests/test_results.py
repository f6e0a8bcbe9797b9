"""core.results: decoding times are medians over runs taken in turns, one per decoding."""
import numpy as np

from core.coco_utils import load_coco_data
from core.decoding import DecodeConfig
from core.model.registry import model_kind
from core.results_table import _decode_seconds


def test_decode_seconds_times_every_decoding(tiny_dataset, monkeypatch):
    data = load_coco_data(tiny_dataset)
    kind = model_kind("rnn")
    config = kind.make_config({"hidden_dim": 8, "wordvec_dim": 4}).for_data(data["val_features"])
    model = kind.build(data["word_to_idx"], config)
    calls = []
    monkeypatch.setattr("core.results_table.caption_features",
                        lambda model, features, max_length, config: calls.append((len(features), config)))
    decodings = {"greedy": DecodeConfig(), "beam 2": DecodeConfig(beam_size=2)}
    seconds = _decode_seconds(model, data, 5, decodings, repeats=3)
    assert set(seconds) == set(decodings) and all(s >= 0 for s in seconds.values())
    num_val = len(np.unique(data["val_image_idxs"]))
    assert calls == [(num_val, decodings["greedy"]), (num_val, decodings["beam 2"])] * 3  # in turns
