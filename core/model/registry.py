"""The model kinds, by name: the one place that knows which kinds exist, how each is built, loaded and stored.

A kind is one ``ModelKind`` entry: its model class (whose ``Config`` dataclass holds the architecture defaults) and
the framework it runs on (numpy: hand-written backward passes, ``.npz`` checkpoints; torch: autograd, ``.pt``
checkpoints). How a kind trains (epochs, optimizer, updater) is its recipe in ``core.training.recipes``. Adding a
kind is one entry here plus its recipe; nothing else in the project branches on a kind's name.
"""
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from core.data.vocab import idx_to_word_problem
from core.model.att_lstm import CaptioningAttLSTM
from core.model.rnn_model import CaptioningRNN
from core.model.transformer import CaptioningTransformer
from core.runtime.arrays import Backend, pick_backend
from core.runtime.checkpoint import NUMPY_SUFFIX, TORCH_SUFFIX, load_training_state, params_problem
from core.runtime.devices import pick_device
from core.runtime.errors import UserError


@dataclass(frozen=True)
class ModelKind:
    """Everything the rest of the code needs to know of one model kind."""
    name: str
    model_class: type  # CaptioningRNN, CaptioningAttLSTM or CaptioningTransformer; ``Config`` holds the defaults
    framework: str  # "numpy" or "torch"
    config: dict = field(default_factory=dict)  # this kind's own values of ``model_class.Config`` fields
    # Config values a new run takes, unless set, when its data has grid features (the Transformer's grid memory).
    with_grid: dict = field(default_factory=dict)

    @property
    def checkpoint_suffix(self):
        return TORCH_SUFFIX if self.framework == "torch" else NUMPY_SUFFIX

    def option_names(self):
        """The architecture options a user may set (``Config`` fields not fixed by the kind or by the data)."""
        measured = {"input_dim", "feature_scale", "num_cells"}
        return [f.name for f in fields(self.model_class.Config) if f.name not in set(self.config) | measured]

    def make_config(self, options, has_grid=False):
        """The model's Config: the kind's defaults, its ``with_grid`` values when the data has grid features,
        then ``options`` (dict name -> value); the data's part (``Config.for_data``) comes once the data is
        loaded. Unknown or invalid options are a UserError."""
        unknown = set(options) - set(self.option_names())
        if unknown:
            flags = ", ".join(f"--{name.replace('_', '-')}" for name in sorted(unknown))
            raise UserError(f"{flags} does not apply to --model {self.name}; its options are "
                            f"{', '.join(self.option_names())}")
        values = {**self.config, **(self.with_grid if has_grid else {}), **options}
        try:
            return self.model_class.Config(**values)
        except ValueError as err:
            raise UserError(f"--model {self.name}: {err}; change the option") from None

    def check_size(self, config, vocab_size, copies=4, source=None):
        """UserError when the parameters, their gradients and the optimizer's two moments (``copies`` of them)
        cannot fit in this machine's memory: a clear line instead of a MemoryError deep in the first step.
        ``source`` names where the config comes from (default: the run's options)."""
        itemsize = np.dtype(getattr(config, "dtype", "float32")).itemsize
        needed = copies * itemsize * config.num_parameters(vocab_size)
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if needed > available:
            fix = "use another checkpoint" if source else "lower the width options"
            raise UserError(f"{source or f'--model {self.name} with these options'} has "
                            f"{config.num_parameters(vocab_size):,} parameters, {needed / 2 ** 30:.0f} GiB with "
                            f"gradients and optimizer state, more than this machine's {available / 2 ** 30:.0f} GiB: "
                            f"{fix}")

    def device(self, name="auto", backend="numpy"):
        """The device a model of this kind computes on, from ``--device`` and ``--backend``: a torch.device for
        torch models and the torch and CuPy backends of hand-written ones, "cpu" for numpy. UserError for what
        cannot run here (core.runtime.arrays.pick_backend), and for another backend than numpy for a torch model."""
        if self.framework == "torch":
            if backend != "numpy":
                raise UserError(f"--backend {backend}: --model {self.name} is a torch model already (--device "
                                "places it); --backend is for the hand-written models, drop it")
            return pick_device(name)
        placement = pick_backend(backend, name)
        if placement.name == "numpy":
            return "cpu"
        import torch

        return torch.device(placement.device)

    def build(self, word_to_idx, config, seed=0, device="cpu", backend="numpy"):
        """A fresh model with initial weights drawn from ``seed``; a hand-written one with its arrays on
        ``backend`` (numpy, torch, cupy) and ``device``, from the same initial weights whatever the backend."""
        if self.framework == "torch":
            import torch

            torch.manual_seed(seed)  # torch initialises from its global generator
            return self.model_class(word_to_idx, config).to(device)
        model = self.model_class(word_to_idx, config, seed=seed)
        return model if backend == "numpy" else model.to_backend(Backend(backend, str(device)))

    def load_params(self, model, params, path):
        """Put checkpoint parameters into ``model`` (eval mode for torch); UserError on any mismatch."""
        expected = model.state_dict() if self.framework == "torch" else model.params
        problem = params_problem(params, expected)
        if problem:
            raise UserError(f"checkpoint {path} {problem}: it does not match its own config; use another checkpoint")
        if self.framework == "torch":
            model.load_state_dict(params)
            model.eval()  # no dropout while decoding
            return
        for name, value in params.items():
            model.params[name] = model.backend.asarray(value, dtype=model.dtype)


MODEL_KINDS = {kind.name: kind for kind in (
    ModelKind("rnn", CaptioningRNN, "numpy", config={"cell_type": "rnn"}),
    ModelKind("lstm", CaptioningRNN, "numpy", config={"cell_type": "lstm"}),
    ModelKind("att_lstm", CaptioningAttLSTM, "numpy"),
    ModelKind("transformer", CaptioningTransformer, "torch", with_grid={"memory": "grid"}),
)}
MODEL_TYPES = tuple(MODEL_KINDS)


def input_shape(config):
    """The shape of one image's features a model of ``config`` reads: (R, C) grid cells or (D,) pooled."""
    return (config.num_cells, config.input_dim) if config.reads_grid else (config.input_dim,)


def model_kind(name):
    """The ModelKind called ``name``; UserError naming the kinds there are."""
    if name not in MODEL_KINDS:
        raise UserError(f"unknown model {name!r}: use one of {', '.join(MODEL_TYPES)}")
    return MODEL_KINDS[name]


def load_model(path, device="cpu", expect_type=None, backend="numpy"):
    """Rebuild the model saved in checkpoint ``path``, ready for inference (torch models in eval mode; hand-written
    ones on ``backend``, see ``ModelKind.build``).

    Returns (model, meta). Raises UserError on any mismatch.
    """
    path = Path(path)
    meta, state = load_training_state(path)
    problem = _meta_problem(meta)
    if problem:
        raise UserError(f"checkpoint {path} {problem}; use another checkpoint")
    model_type = meta["model_type"]
    if expect_type is not None and model_type != expect_type:
        raise UserError(f"checkpoint {path} holds a {model_type!r} model, not {expect_type!r}: "
                        f"pass --model {model_type} or another --checkpoint")
    kind = model_kind(model_type)
    try:
        config = kind.model_class.Config(**meta["model_config"])
    except (TypeError, ValueError, KeyError) as err:
        raise UserError(f"checkpoint {path} has an unusable model config ({err}); use another checkpoint") from None
    kind.check_size(config, len(meta["idx_to_word"]), copies=1, source=f"checkpoint {path}")
    word_to_idx = {word: i for i, word in enumerate(meta["idx_to_word"])}
    model = kind.build(word_to_idx, config, device=device, backend=backend)
    kind.load_params(model, state["params"], path)
    return model, meta


def _meta_problem(meta):
    """Why a checkpoint's ``meta`` cannot rebuild its model (model type, config, vocabulary, data record), or None."""
    if not isinstance(meta.get("model_type"), str) or not isinstance(meta.get("model_config"), dict):
        return "lacks its model_type or model_config record"
    if not isinstance(meta.get("data"), dict) or not isinstance(meta["data"].get("dir"), str):
        return "lacks its data record (the dataset it was trained on)"
    return idx_to_word_problem(meta.get("idx_to_word"))
