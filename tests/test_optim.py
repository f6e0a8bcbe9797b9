"""core.optim: every rule descends a quadratic, Adam's first step has its closed form, configs are checked."""
import numpy as np
import pytest

from core import optim


def quadratic(w):
    """f(w) = 0.5 * sum(scale * (w - 1)^2) with unequal curvatures; returns (f, df/dw)."""
    scale = np.linspace(0.5, 2.0, w.size).reshape(w.shape)
    return 0.5 * float(np.sum(scale * (w - 1) ** 2)), scale * (w - 1)


@pytest.mark.parametrize("name", sorted(optim.UPDATE_RULES))
def test_rule_descends_a_quadratic(name):
    rule = optim.UPDATE_RULES[name]
    w = np.zeros((3, 4), dtype=np.float32)
    start, _ = quadratic(w)
    config = {"learning_rate": 0.05}
    for _ in range(200):
        _, dw = quadratic(w)
        w, config = rule(w, dw, config)
    assert w.dtype == np.float32
    assert quadratic(w)[0] < 0.02 * start
    assert all(isinstance(v, (np.ndarray, float, int)) for v in config.values())


def test_adam_first_step_closed_form():
    rng = np.random.default_rng(0)
    w, dw = rng.standard_normal(5), rng.standard_normal(5)
    next_w, config = optim.adam(w, dw, {"learning_rate": 0.1})
    # With bias correction the first moments are exactly dw and dw^2, so the step is lr * dw / (|dw| + eps).
    expected = w - 0.1 * dw / (np.abs(dw) + 1e-8)
    assert np.allclose(next_w, expected, rtol=0, atol=1e-12)
    assert config["t"] == 1
    assert np.allclose(config["m"], 0.1 * dw) and np.allclose(config["v"], 0.001 * dw ** 2)


def test_defaults_filled_and_checkpoint_values_accepted():
    w = np.ones(3, dtype=np.float32)
    _, config = optim.adam(w, w)
    assert config["learning_rate"] == 1e-3 and config["beta2"] == 0.999 and config["epsilon"] == 1e-8
    # Values as np.load returns them from an .npz: 0-d float64 arrays and float64 state.
    saved = {key: np.asarray(value, dtype=np.float64) for key, value in config.items()}
    next_w, again = optim.adam(w, w, saved)
    assert next_w.dtype == np.float32 and again["m"].dtype == np.float32 and again["t"] == 2


def test_unknown_option_rejected():
    with pytest.raises(ValueError, match="momentum"):
        optim.sgd(np.zeros(2), np.zeros(2), {"momentum": 0.9})
