"""Numeric gradients for the float64 checks of hand-written backward passes."""
import numpy as np


def numeric_gradient(f, x, h=1e-3):
    """Gradient of the scalar function ``f()`` with respect to array ``x`` (perturbed in place, then restored).

    Fourth-order centered differences: the O(h^4) truncation error allows a step large enough that
    float64 rounding (~eps |f| / h) stays far below the 1e-7 tolerance, unlike the two-point O(h^2) formula.
    """
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        values = []
        for step in (2 * h, h, -h, -2 * h):
            x[idx] = old + step
            values.append(f())
        x[idx] = old
        # Differences first: an x that f ignores then gives exactly 0, not rounding noise.
        grad[idx] = (8 * (values[1] - values[2]) - (values[0] - values[3])) / (12 * h)
    return grad


def rel_error(a, b):
    """Largest elementwise relative error, with a floor so entries near zero compare absolutely."""
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))
