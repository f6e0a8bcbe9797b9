"""The array backends the layer tests run on: numpy, array-api-strict (the standard and nothing beyond it) and torch
tensors, all float64. ``Arrays.to`` puts numpy test inputs on a backend; ``Arrays.back`` brings results home."""
import numpy as np
import torch

from core.runtime.arrays import to_numpy

BACKENDS = ("numpy", "array_api_strict", "torch")
TOLERANCE = 1e-10  # a backend's float64 results against numpy's: the same equations, other kernels


class Arrays:
    """Conversions between numpy and backend ``name``, through dicts, lists and tuples; other values pass."""

    def __init__(self, name):
        self.name = name

    def to(self, value):
        if isinstance(value, np.ndarray):
            if self.name == "torch":
                return torch.tensor(value)
            if self.name == "array_api_strict":
                import array_api_strict

                return array_api_strict.asarray(value)
            return value
        return self._each(value, self.to)

    def back(self, value):
        if hasattr(value, "__dlpack__") and not isinstance(value, np.ndarray):
            return to_numpy(value)
        return self._each(value, self.back)

    @staticmethod
    def _each(value, convert):
        if isinstance(value, dict):
            return {key: convert(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(convert(item) for item in value)
        return value

    def __repr__(self):
        return self.name


def assert_close(ours, reference, what="", tol=TOLERANCE):
    """Every array of ``ours`` within ``tol`` of the same entry of ``reference`` (dicts, lists, tuples of arrays)."""
    if isinstance(reference, dict):
        assert set(ours) == set(reference), what
        for key in reference:
            assert_close(ours[key], reference[key], f"{what}/{key}", tol)
    elif isinstance(reference, (list, tuple)):
        assert len(ours) == len(reference), what
        for k, (a, b) in enumerate(zip(ours, reference)):
            assert_close(a, b, f"{what}[{k}]", tol)
    else:
        a, b = np.asarray(ours), np.asarray(reference)
        assert a.shape == b.shape and a.dtype == b.dtype, (what, a.shape, b.shape, a.dtype, b.dtype)
        assert a.size == 0 or np.max(np.abs(a - b)) <= tol, (what, np.max(np.abs(a - b)))
