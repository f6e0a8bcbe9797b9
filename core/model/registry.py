"""Model types by name: their default configs, construction, and reconstruction from a checkpoint."""
from pathlib import Path

import numpy as np

from core.checkpoint import NUMPY_SUFFIX, TORCH_SUFFIX, load_training_state
from core.errors import UserError

MODEL_TYPES = ("rnn", "lstm", "transformer")

# Architecture defaults: sized to train a good captioner on the shapes world in minutes on 2 CPU cores.
DEFAULT_CONFIGS = {
    "rnn": {"wordvec_dim": 256, "hidden_dim": 512, "feature_scale": 1.0},
    "lstm": {"wordvec_dim": 256, "hidden_dim": 512, "feature_scale": 1.0},
    "transformer": {"wordvec_dim": 128, "num_heads": 4, "num_layers": 2, "dim_feedforward": 512,
                    "dropout": 0.1, "max_length": 50},
}


def is_torch_model(model_type):
    return model_type == "transformer"


def checkpoint_suffix(model_type):
    return TORCH_SUFFIX if is_torch_model(model_type) else NUMPY_SUFFIX


def build_model(model_type, word_to_idx, input_dim, config=None, device=None):
    """A fresh model of ``model_type``; ``config`` overrides entries of ``DEFAULT_CONFIGS[model_type]``."""
    if model_type not in MODEL_TYPES:
        raise UserError(f"unknown model {model_type!r}: use one of {', '.join(MODEL_TYPES)}")
    config = dict(DEFAULT_CONFIGS[model_type], **(config or {}))
    unknown = set(config) - set(DEFAULT_CONFIGS[model_type]) - {"seed", "dtype", "fused", "cell_type",
                                                                  "input_dim"}
    if unknown:
        raise UserError(f"unknown {model_type} option(s) {sorted(unknown)}")
    config["input_dim"] = input_dim
    if is_torch_model(model_type):
        import torch

        from core.model.transformer import CaptioningTransformer

        if "seed" in config:  # torch initialises from its global generator: seed it for a reproducible init
            torch.manual_seed(config.pop("seed"))
        return CaptioningTransformer(word_to_idx, **config).to(device or "cpu")
    from core.model.rnn_model import CaptioningRNN

    config = dict(config, cell_type=model_type)
    if isinstance(config.get("dtype"), str):
        config["dtype"] = np.dtype(config["dtype"]).type
    return CaptioningRNN(word_to_idx, **config)


def load_model(path, device=None, expect_type=None):
    """Rebuild the model saved in checkpoint ``path``, ready for inference (torch models in eval mode).

    Returns (model, meta). Raises UserError on any mismatch.
    """
    path = Path(path)
    meta, state = load_training_state(path)
    model_type = meta.get("model_type")
    if expect_type is not None and model_type != expect_type:
        raise UserError(f"checkpoint {path} holds a {model_type!r} model, not {expect_type!r}: "
                        f"pass --model {model_type} or another --checkpoint")
    idx_to_word = meta["idx_to_word"]
    word_to_idx = {word: i for i, word in enumerate(idx_to_word)}
    config = dict(meta["model_config"])
    config.pop("cell_type", None)
    input_dim = config.pop("input_dim")
    model = build_model(model_type, word_to_idx, input_dim, config, device)
    _load_params(model, model_type, state["params"], path)
    if is_torch_model(model_type):
        model.eval()  # no dropout while decoding
    return model, meta


def _load_params(model, model_type, params, path):
    if is_torch_model(model_type):
        try:
            model.load_state_dict(params)
        except RuntimeError as err:
            raise UserError(f"checkpoint {path} does not match its own config ({str(err).splitlines()[0]})") from None
        return
    for name, value in params.items():
        if name not in model.params or model.params[name].shape != value.shape:
            raise UserError(f"checkpoint {path}: parameter {name} of shape {value.shape} does not match the model")
        model.params[name] = value.astype(model.params[name].dtype, copy=False)
