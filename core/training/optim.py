"""The numpy update: CS231n's first-order update rules, and ``NumpyUpdater``, which applies one to every parameter
of a numpy model (``loss -> (loss, grads)``) after clipping the gradients by their global norm.

``core.training.solver`` calls ``NumpyUpdater.train_step`` once per minibatch; in a process group
(``core.runtime.distributed``) the gradients are first summed over ranks, weighted by each rank's ``share`` of the
loss, so every rank takes the single-process step.

Each rule is ``rule(w, dw, config=None) -> (next_w, config)``: ``w`` and ``dw`` are arrays of the same shape,
``config`` a dict of hyperparameters plus the rule's running state (velocity, moment estimates, step count).
Missing hyperparameters take the defaults of the rule's dataclass below; unknown keys raise ValueError.
The config holds only numpy arrays and Python floats/ints, so it can be saved in an ``.npz`` checkpoint;
values read back from one (0-d arrays) are accepted. State arrays are updated in place and keep ``w``'s dtype,
and ``next_w`` has the dtype of ``w``.
"""
import math
from dataclasses import asdict, dataclass

import numpy as np

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
    hyper = asdict(defaults)
    unknown = set(config) - set(hyper) - set(state_arrays) - set(counters)
    if unknown:
        raise ValueError(f"unknown optimizer options {sorted(unknown)}: known are "
                         f"{sorted(set(hyper) | set(state_arrays) | set(counters))}")
    for key, value in hyper.items():
        config[key] = float(config.get(key, value))
    for key in state_arrays:
        state = np.asarray(config.get(key, np.zeros_like(w)), dtype=w.dtype)
        if state.shape != w.shape:
            raise ValueError(f"optimizer state {key!r} has shape {state.shape}, weights {w.shape}")
        config[key] = state
    for key in counters:
        config[key] = int(config.get(key, 0))
    return config, np.asarray(dw, dtype=w.dtype)


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
    return w - config["learning_rate"] * dw / (np.sqrt(cache) + config["epsilon"]), config


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
    return w - config["learning_rate"] * m_hat / (np.sqrt(v_hat) + config["epsilon"]), config


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
    """Updates a numpy model (``params`` dict, ``loss -> (loss, grads)``) with a rule from ``core.optim``."""

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
        loss, grads = self.model.loss(features, captions, **_weighted(weights))
        if self.group.distributed:  # the loss rides along, so every rank sees the same finite or not
            loss, grads = self.group.reduce_gradients(loss, grads, share)
        if not np.isfinite(loss):
            return float(loss)
        if self.optim_config.grad_clip > 0:
            norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
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
        return {name: w.copy() for name, w in self.model.params.items()}

    def state(self):
        return {"params": self.snapshot(), "optim": self.optim_state}

    def load_state(self, state):
        self.model.params.update({name: np.asarray(w) for name, w in state["params"].items()})
        self.optim_state = {name: dict(state["optim"].get(name, {})) for name in self.model.params}
