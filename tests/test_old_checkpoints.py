"""Checkpoints written by the layout before the restructuring (main at 3602036) still load and decode the same.

The files are written here byte-format by byte-format as that code wrote them (an ``.npz`` of ``meta``,
``param/<name>`` and ``optim/<name>/<field>``; a weights-only ``.pt`` dict with ``params`` and ``meta``),
with the meta records that code produced, and parameters drawn from a seeded generator. The expected
captions were decoded by that code from the same files.
"""
import json

import numpy as np
import pytest
import torch

from core.decoding import greedy_decode
from core.model.registry import load_model

WORDS = ["<NULL>", "<START>", "<END>", "<UNK>", "a", "red", "blue", "green", "circle", "square", "star", "left",
         "of", "big", "small", "two"]
DATA = {"dir": "/gone/data", "dataset": "custom", "num_samples": None, "shuffle_features": False}
SOLVER = {"epochs": 600, "batch_size": 128, "val_captions": 2560, "seed": 0, "max_iterations": 1, "progress": False}
HISTORY = {"train_loss": [2.77], "epoch_train_loss": [2.77], "epoch_val_loss": [2.76], "epoch_seconds": [0.01],
           "iterations_per_epoch": 1}
OPTIM = {"update_rule": "adam", "lr": 0.002, "weight_decay": 0.0, "grad_clip": 5.0, "warmup_steps": 0,
         "schedule": "cosine", "lr_decay": 0.95, "min_lr_ratio": 0.05}
OLD_META = {
    "lstm": {"model_type": "lstm", "model_config": {"input_dim": 32, "wordvec_dim": 6, "hidden_dim": 7,
                                                    "cell_type": "lstm", "dtype": "float32",
                                                    "feature_scale": 1.1455357037322251}},
    "transformer": {"model_type": "transformer",
                    "model_config": {"input_dim": 32, "wordvec_dim": 8, "num_heads": 2, "num_layers": 1,
                                     "max_length": 50, "dim_feedforward": 512, "dropout": 0.1, "fused": False}},
}
SHAPES = {
    "lstm": {"W_embed": (16, 6), "W_proj": (32, 7), "Wx": (6, 28), "Wh": (7, 28), "W_vocab": (7, 16), "b_proj": (7,),
             "b": (28,), "b_vocab": (16,)},
    "transformer": dict(
        [("visual_projection.weight", (8, 32)), ("visual_projection.bias", (8,)), ("embedding.weight", (16, 8))]
        + [(f"layers.0.{attn}.{proj}.{kind}", (8, 8) if kind == "weight" else (8,))
           for attn in ("self_attn", "cross_attn") for proj in ("query", "key", "value", "proj")
           for kind in ("weight", "bias")]
        + [("layers.0.linear1.weight", (512, 8)), ("layers.0.linear1.bias", (512,)),
           ("layers.0.linear2.weight", (8, 512)), ("layers.0.linear2.bias", (8,))]
        + [(f"layers.0.norm{i}.{kind}", (8,)) for i in (1, 2, 3) for kind in ("weight", "bias")]
        + [("output.weight", (16, 8)), ("output.bias", (16,))]),
}


def old_meta(kind):
    optim = dict(OPTIM, lr=0.001, weight_decay=0.01, grad_clip=1.0, warmup_steps=100) if kind == "transformer" \
        else OPTIM
    run = {"step": 1, "batch_size": 128, "num_train": 48, "best_val_loss": 2.76, "best_epoch": 0,
           "history": HISTORY, "solver": SOLVER, "optim": optim}
    return dict(OLD_META[kind], idx_to_word=WORDS, data=DATA, title=f"{kind} on data", format_version=1, run=run)


def old_params(kind):
    rng = np.random.default_rng(7)
    return {name: (rng.standard_normal(shape) * 0.5).astype(np.float32) for name, shape in SHAPES[kind].items()}


def write_old_checkpoint(kind, path):
    params, meta = old_params(kind), json.dumps(old_meta(kind))
    if kind == "transformer":
        state = {name: torch.from_numpy(value) for name, value in params.items()}
        torch.save({"params": state, "rng": torch.get_rng_state(), "meta": meta}, path)
    else:
        arrays = {"meta": np.array(meta), **{f"param/{name}": value for name, value in params.items()},
                  "optim/W_embed/t": np.array(1), "optim/W_embed/m": np.zeros((16, 6), np.float32)}
        np.savez(path, **arrays)
    return path


# Log-probabilities of the word after "<START> a" / "<START> red" for two feature rows, from the old code.
EXPECTED = {
    "lstm": [[-3.2777, -2.2483, -3.2102, -3.1913, -2.5689, -2.7910, -3.3163, -2.4414, -3.6949, -2.9075, -2.4595, -2.8694, -2.7109, -2.9159, -2.6862, -2.2683],  # noqa: E501
              [-3.1173, -2.1301, -3.3859, -3.0728, -2.6936, -2.9601, -3.7189, -2.8908, -3.7301, -3.1825, -2.0639, -2.5671, -2.6007, -3.2697, -2.8183, -2.1508]],  # noqa: E501
    "transformer": [[-1.9236, -2.5677, -3.3940, -4.9856, -3.8457, -4.2447, -2.0795, -5.7372, -2.9498, -1.4308, -4.1798, -3.5715, -2.8454, -5.2706, -4.2454, -1.8301],  # noqa: E501
              [-1.9559, -2.6418, -3.3066, -5.3123, -3.7815, -4.3501, -2.2643, -6.2324, -2.8591, -1.1555, -4.3726, -3.7755, -2.6156, -5.0050, -4.3922, -2.2612]],  # noqa: E501
}


@pytest.mark.parametrize("kind, suffix", [("lstm", ".npz"), ("transformer", ".pt")])
def test_checkpoint_of_the_old_layout_loads_and_decodes_the_same(tmp_path, kind, suffix):
    model, meta = load_model(write_old_checkpoint(kind, tmp_path / f"best{suffix}"), expect_type=kind)
    assert meta["model_type"] == kind and model.config()["input_dim"] == 32
    features = np.random.default_rng(3).standard_normal((2, 32)).astype(np.float32)
    state = model.init_decode(features)
    _, state = model.decode_step(np.array([1, 1]), state)
    log_probs, _ = model.decode_step(np.array([4, 5]), state)
    np.testing.assert_allclose(log_probs, np.array(EXPECTED[kind]), atol=2e-4)
    assert greedy_decode(model, features, 8).shape == (2, 8)
