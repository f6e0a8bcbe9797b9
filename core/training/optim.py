"""The numpy update: CS231n's first-order update rules, and ``NumpyUpdater``, which applies one to every parameter
of a numpy model (``loss -> (loss, grads)``) after clipping the gradients by their global norm.

``core.training.solver`` calls ``NumpyUpdater.train_step`` once per minibatch; in a process group
(``core.runtime.distributed``) the gradients are summed over ranks, weighted by each rank's ``share`` of the loss,
so every rank takes the single-process step: each one's all-reduce starts as soon as the model's backward pass
has it (``loss(..., grads=...)``), and the update waits for them all.

Each rule is ``rule(w, dw, config=None) -> (next_w, config)``: ``w`` and ``dw`` are arrays of the same shape,
``config`` a dict of hyperparameters plus the rule's running state (velocity, moment estimates, step count).
Missing hyperparameters take the defaults of the rule's dataclass below; unknown keys raise ValueError.
The config holds only arrays and Python floats/ints, so it can be saved in an ``.npz`` checkpoint; values read
back from one (numpy arrays, 0-d for numbers) are accepted. State arrays are updated in place and keep ``w``'s
dtype, and ``next_w`` has the dtype of ``w``. The rules take the Array API namespace of ``w`` (numpy, torch,
CuPy; core.runtime.arrays): state read back as numpy goes to ``w``'s namespace and device on first use.
"""
import math
from dataclasses import asdict, dataclass

import numpy as np

from core.runtime.arrays import device_of, namespace, to_numpy
from core.runtime.distributed import SINGLE
from core.training.solver import LOSS


@dataclass(frozen=True)
class SGDDefaults:
    learning_rate: float = 1e-2


@dataclass(frozen=True)
class MomentumDefaults:
    learning_rate: float = 1e-2
    momentum: float = 0.9


@dataclass(frozen=True)
class RMSPropDefaults:
    learning_rate: float = 1e-2
    decay_rate: float = 0.99
    epsilon: float = 1e-8


@dataclass(frozen=True)
class AdamDefaults:
    learning_rate: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8


def _prepare(config, defaults, w, dw, state_arrays=(), counters=()):
    """Fill ``config`` (a new dict if None) with defaults and zero state; return it and dw in w's dtype.

    Hyperparameters become Python floats: a 0-d float64 array read from a checkpoint would otherwise
    promote float32 weights to float64. State arrays take ``w``'s dtype (zeros when missing); counters are ints.
    """
    config = {} if config is None else config
    xp, device = namespace(w), device_of(w)
    hyper = asdict(defaults)
    unknown = set(config) - set(hyper) - set(state_arrays) - set(counters)
    if unknown:
        raise ValueError(f"unknown optimizer options {sorted(unknown)}: known are "
                         f"{sorted(set(hyper) | set(state_arrays) | set(counters))}")
    for key, value in hyper.items():
        config[key] = float(config.get(key, value))
    for key in state_arrays:
        state = xp.asarray(config[key], dtype=w.dtype, device=device) if key in config else xp.zeros_like(w)
        if state.shape != w.shape:
            raise ValueError(f"optimizer state {key!r} has shape {tuple(state.shape)}, weights {tuple(w.shape)}")
        config[key] = state
    for key in counters:
        config[key] = int(config.get(key, 0))
    return config, xp.asarray(dw, dtype=w.dtype, device=device)


def sgd(w, dw, config=None):
    """Vanilla stochastic gradient descent: w -= learning_rate * dw."""
    config, dw = _prepare(config, SGDDefaults(), w, dw)
    return w - config["learning_rate"] * dw, config


def sgd_momentum(w, dw, config=None):
    """SGD with momentum: v = momentum * v - learning_rate * dw; w += v. State: ``velocity``."""
    config, dw = _prepare(config, MomentumDefaults(), w, dw, state_arrays=("velocity",))
    v = config["velocity"]
    v *= config["momentum"]
    v -= config["learning_rate"] * dw
    return w + v, config


def rmsprop(w, dw, config=None):
    """RMSProp: a running mean of squared gradients scales each coordinate's step. State: ``cache``."""
    config, dw = _prepare(config, RMSPropDefaults(), w, dw, state_arrays=("cache",))
    rho, cache = config["decay_rate"], config["cache"]
    cache *= rho
    cache += (1 - rho) * dw * dw
    return w - config["learning_rate"] * dw / (namespace(w).sqrt(cache) + config["epsilon"]), config


def adam(w, dw, config=None):
    """Adam with bias-corrected first and second moment estimates. State: ``m``, ``v``, ``t``."""
    config, dw = _prepare(config, AdamDefaults(), w, dw, state_arrays=("m", "v"), counters=("t",))
    beta1, beta2, m, v = config["beta1"], config["beta2"], config["m"], config["v"]
    config["t"] += 1
    t = config["t"]
    m *= beta1
    m += (1 - beta1) * dw
    v *= beta2
    v += (1 - beta2) * dw * dw
    m_hat = m / (1 - beta1 ** t)
    v_hat = v / (1 - beta2 ** t)
    return w - config["learning_rate"] * m_hat / (namespace(w).sqrt(v_hat) + config["epsilon"]), config


UPDATE_RULES = {"sgd": sgd, "sgd_momentum": sgd_momentum, "rmsprop": rmsprop, "adam": adam}


def rule_hyperparameters(update_rule, options):
    """The hyperparameters ``update_rule`` runs with: ``options`` (dict name -> value) over the rule's defaults.

    ValueError for an unknown rule or option name. The rule itself fills and checks them, on an empty array.
    """
    if update_rule not in UPDATE_RULES:
        raise ValueError(f"unknown update rule {update_rule!r}: use one of {sorted(UPDATE_RULES)}")
    _, config = UPDATE_RULES[update_rule](np.zeros(0), np.zeros(0), dict(options))
    hyper = {name: value for name, value in config.items() if isinstance(value, float)}  # the state is not
    state = sorted(set(options) - set(hyper))
    if state:
        raise ValueError(f"{state} is {update_rule}'s running state, not an option: leave it out")
    return hyper


def _weighted(weights):
    """The loss's keyword arguments: none for plain cross-entropy, so models without weights still train."""
    return {} if weights is None else {"weights": weights}


class NumpyUpdater:
    """Updates a hand-written model (``params`` dict, ``loss -> (loss, grads)``, ``backend``) with a rule from
    ``core.optim``, on the model's array backend; its state, for checkpoints, is numpy whatever that backend."""

    def __init__(self, model, config, device="cpu", group=SINGLE):
        options = config.rule_options
        if "learning_rate" in options:
            raise ValueError("rule_options holds learning_rate: the rate is OptimConfig.lr, through the schedule")
        hyper = rule_hyperparameters(config.update_rule, options)
        self.model, self.optim_config = model, config
        self.rule = UPDATE_RULES[config.update_rule]
        # Each parameter's rule state starts from the options set; the rule adds its defaults on the first step.
        self.optim_state = {name: {key: hyper[key] for key in options} for name in model.params}
        self.device, self.group = device, group

    metric = LOSS

    def loss_units(self, captions):
        return len(captions)  # the loss is per caption

    def train_step(self, features, captions, lr, rng=None, share=1.0, weights=None):
        if self.group.distributed:  # each gradient's all-reduce starts as the backward pass produces it
            grads = self.group.gradient_reducer(share)
            loss = grads.finish(self.model.loss(features, captions, grads=grads, **_weighted(weights))[0])
        else:
            loss, grads = self.model.loss(features, captions, **_weighted(weights))
        if not np.isfinite(loss):
            return float(loss)
        if self.optim_config.grad_clip > 0:
            norm = math.sqrt(sum(_squared_norm(g) for g in grads.values()))
            if norm > self.optim_config.grad_clip:
                scale = self.optim_config.grad_clip / (norm + 1e-6)
                grads = {name: g * scale for name, g in grads.items()}
        for name, w in self.model.params.items():
            state = self.optim_state[name]
            state["learning_rate"] = lr
            self.model.params[name], self.optim_state[name] = self.rule(w, grads[name], state)
        return float(loss)

    def eval_loss(self, features, captions):
        return float(self.model.loss(features, captions)[0])

    def decoder(self):
        return self.model

    def snapshot(self):
        return {name: np.array(to_numpy(w)) for name, w in self.model.params.items()}

    def state(self):
        optim = {name: {key: value if isinstance(value, (int, float)) else to_numpy(value)
                        for key, value in config.items()} for name, config in self.optim_state.items()}
        return {"params": self.snapshot(), "optim": optim}

    def load_state(self, state):
        """Parameters onto the model's backend; the rules move the optimizer state there on first use."""
        self.model.params.update({name: self.model.backend.asarray(w) for name, w in state["params"].items()})
        self.optim_state = {name: dict(state["optim"].get(name, {})) for name in self.model.params}


def _squared_norm(g):
    """sum(g ** 2) as a float, by the library's dot product of g flattened."""
    flat = namespace(g).reshape(g, (-1,))
    return float(flat @ flat)
