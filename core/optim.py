"""First-order update rules for numpy models, with the CS231n interface.

Each rule is ``rule(w, dw, config=None) -> (next_w, config)``: ``w`` and ``dw`` are arrays of the same shape,
``config`` a dict of hyperparameters plus the rule's running state (velocity, moment estimates, step count).
Missing hyperparameters take the defaults of the rule's dataclass below; unknown keys raise ValueError.
The config holds only numpy arrays and Python floats/ints, so it can be saved in an ``.npz`` checkpoint;
values read back from one (0-d arrays) are accepted. State arrays are updated in place and keep ``w``'s dtype,
and ``next_w`` has the dtype of ``w``.
"""
from dataclasses import asdict, dataclass

import numpy as np


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
