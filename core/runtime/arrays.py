"""Array backends of the hand-written models: numpy (the default), torch tensors (CPU or CUDA, no autograd) and
CuPy arrays, all through the Python Array API standard.

The layers take the namespace of their inputs (``namespace(x, ...)``, array-api-compat's) and call only what the
standard has, so one code runs on every backend, and on array-api-strict's arrays, which the tests use to prove
that nothing outside the standard slipped in. What the standard lacks is here, in ``Ops``: results written into
preallocated arrays (numpy's, torch's and CuPy's ``out=``, an assignment elsewhere), the rows of a scatter-add
(the embedding's backward), a subtraction at one column per row (the softmax loss's gradient), and the forms
that run faster on one library than the plain one (tanh and the gates' sigmoid on torch's CPU tensors, batched
matrix-vector products), taken where they pay and never on numpy, which keeps the numpy-only layers'
arithmetic. ``Backend`` says where a model's arrays live; checkpoints hold numpy arrays whatever it is
(``to_numpy``).
"""
import contextlib
import functools
from dataclasses import dataclass

import numpy as np
from array_api_compat import array_namespace, is_cupy_namespace, is_numpy_namespace, is_torch_namespace
from array_api_compat import device as device_of

from core.runtime.devices import parse_device, pick_device
from core.runtime.errors import UserError

BACKENDS = ("numpy", "torch", "cupy")


def namespace(*arrays):
    """The Array API namespace of ``arrays`` (numpy arrays give array-api-compat's numpy); TypeError when they
    come from different libraries. Python scalars and None are ignored."""
    return array_namespace(*(a for a in arrays if a is not None and not isinstance(a, (bool, int, float))))


def to_numpy(array):
    """``array`` as a numpy array: itself for numpy, a host copy for CUDA, a view where the library allows; lists
    and scalars through np.asarray."""
    if isinstance(array, (np.ndarray, np.generic)):
        return np.asarray(array)
    module = type(array).__module__.split(".")[0]
    if module == "cupy":
        return array.get()
    if module == "torch":
        return array.detach().cpu().numpy()
    return np.from_dlpack(array) if hasattr(array, "__dlpack__") else np.asarray(array)


def contiguous(array):
    """``array`` laid out contiguously (collectives need it): numpy's, CuPy's or a torch tensor."""
    if isinstance(array, np.ndarray):
        return np.ascontiguousarray(array)
    if type(array).__module__.split(".")[0] == "cupy":
        import cupy

        return cupy.ascontiguousarray(array)
    return array.contiguous()


def as_torch(array):
    """A torch tensor sharing ``array``'s memory (numpy on the CPU, CuPy through DLPack)."""
    import torch

    if isinstance(array, torch.Tensor):
        return array
    return torch.from_numpy(array) if isinstance(array, np.ndarray) else torch.from_dlpack(array)


@functools.lru_cache(maxsize=None)
def ops(xp):
    """The ``Ops`` of namespace ``xp`` (made once per namespace)."""
    return Ops(xp)


def _native(xp):
    """The library behind ``xp`` when it has numpy's calling conventions (``out=``, integer-array assignment)."""
    if is_numpy_namespace(xp):
        return np
    if is_torch_namespace(xp):
        import torch

        return torch
    if is_cupy_namespace(xp):
        import cupy

        return cupy
    return None


def _into(name):
    """The method ``Ops.<name>(*args, out=out)``: ``xp.<name>(*args)`` written into ``out``, returning ``out``."""

    def kernel(self, *args, out):
        if self.lib is not None:
            return getattr(self.lib, name)(*args, out=out)
        out[...] = getattr(self.xp, name)(*args)
        return out

    kernel.__name__ = name
    kernel.__doc__ = f"``{name}(*args)`` written into ``out`` (its shape and dtype); returns ``out``."
    return kernel


class Ops:
    """What the layers need beyond the standard, for one namespace ``xp``: numpy, torch and CuPy run their own
    kernels, writing into the output; any other namespace gets the same results through the standard."""

    def __init__(self, xp):
        self.xp, self.lib = xp, _native(xp)
        # numpy runs the arithmetic of the numpy-only layers bit for bit (tests/test_backends.py pins it); the
        # other namespaces may take equivalents that are faster on their library
        self.seed_arithmetic = self.lib is np

    matmul, add, subtract, multiply, divide, exp = (
        _into(name) for name in ("matmul", "add", "subtract", "multiply", "divide", "exp"))
    _tanh = _into("tanh")

    def tanh(self, x, *, out):
        """``tanh(x)`` written into ``out``; returns ``out``. On torch's CPU tensors as 2 sigmoid(2x) - 1, four
        passes that still take a third of the time of torch's CPU tanh (docs/speed.md)."""
        if self.lib is None or self.lib.__name__ != "torch" or out.device.type != "cpu":
            return self._tanh(x, out=out)
        self.lib.mul(x, 2, out=out)
        self.lib.sigmoid(out, out=out)
        return out.mul_(2).sub_(1)

    def sigmoid_negated(self, x, *, out):
        """``1 / (1 + exp(x))``, the sigmoid of -x, written into ``out``; returns ``out``. torch in two passes
        (negate, sigmoid), the rest in three (exp, add 1, reciprocal): torch's CPU exp and division run several
        times slower than its sigmoid."""
        if self.lib is not None and self.lib.__name__ == "torch":
            self.lib.neg(x, out=out)
            return self.lib.sigmoid(out, out=out)
        self.exp(x, out=out)
        out += 1
        return self.divide(1, out, out=out)

    def batched_matvec(self, a, v):
        """(n, R, C) @ (n, C) -> (n, R): each matrix a[k] times its vector v[k], or times the one vector v of shape
        (C,). Off numpy, as a row times each transposed matrix: torch's CPU bmm runs that form two to three times
        faster than its matrix-vector products (docs/speed.md)."""
        xp, (n, R, C) = self.xp, a.shape
        if self.seed_arithmetic or self.lib is None:
            if v.ndim == 1:
                return xp.reshape(xp.reshape(a, (n * R, C)) @ v, (n, R))  # (n*R, C) @ (C,) -> (n*R,) -> (n, R)
            return (a @ v[:, :, None])[:, :, 0]  # (n, R, C) @ (n, C, 1) -> (n, R, 1) -> (n, R)
        rows = xp.broadcast_to(v, (n, C))[:, None, :]  # (C,) or (n, C) -> (n, 1, C)
        return (rows @ xp.matrix_transpose(a))[:, 0, :]  # (n, 1, C) @ (n, C, R) -> (n, 1, R) -> (n, R)

    def quiet_overflow(self):
        """A context silencing the overflow warning of exp (numpy warns; the others do not)."""
        return np.errstate(over="ignore") if self.lib is np else contextlib.nullcontext()

    def add_rows_at(self, out, index, rows):
        """out[index[k]] += rows[k] for every k, repeated indices accumulating; out (V, D), index (M,) integers,
        rows (M, D)."""
        if self.lib is np:
            np.add.at(out, index, rows)
        elif self.lib is not None and self.lib.__name__ == "torch":
            out.index_add_(0, index, rows)
        elif self.lib is not None:
            import cupyx

            cupyx.scatter_add(out, index, rows)
        else:
            out += self.xp.astype(self.one_hot(index, out.shape[0]), out.dtype).T @ rows  # (V, M) @ (M, D)
        return out

    def subtract_at_columns(self, out, columns, values):
        """out[k, columns[k]] -= values[k] for every row k; out (M, V), columns (M,) integers, values (M,)."""
        if self.lib is not None:
            out[self.xp.arange(out.shape[0], device=device_of(out)), columns] -= values
        else:
            out -= self.xp.astype(self.one_hot(columns, out.shape[1]), out.dtype) * values[:, None]  # (M, V)
        return out

    def one_hot(self, index, width):
        """Booleans of shape (M, width), row k true at column index[k]."""
        return index[:, None] == self.xp.arange(width, dtype=index.dtype, device=device_of(index))[None, :]


@dataclass(frozen=True)
class Backend:
    """Where a hand-written model's arrays live: ``name`` one of BACKENDS, ``device`` a torch device name
    ("cpu", "cuda:0") for torch and CuPy (CuPy: CUDA only); numpy runs on the CPU."""
    name: str = "numpy"
    device: str = "cpu"

    @property
    def xp(self):
        """The Array API namespace of this backend's arrays."""
        if self.name == "numpy":
            import array_api_compat.numpy as xp
        elif self.name == "torch":
            import array_api_compat.torch as xp
        else:
            import array_api_compat.cupy as xp
        return xp

    def asarray(self, array, dtype=None, copy=None):
        """``array`` (numpy, or this backend's) as this backend's array on its device, in ``dtype`` (a numpy dtype
        or name; default its own); ``copy`` as in the standard's asarray (None: only when needed)."""
        if self.name == "numpy":
            return np.array(array, dtype=dtype, copy=copy)
        dtype = None if dtype is None else np.dtype(dtype).name
        if self.name == "torch":
            import torch

            return torch.asarray(array, dtype=None if dtype is None else getattr(torch, dtype), device=self.device,
                                 copy=copy)
        import cupy

        with cupy.cuda.Device(_cuda_index(self.device)):
            return cupy.array(array, dtype=dtype, copy=copy is not False)


def _cuda_index(name):
    index = name.partition(":")[2]
    return int(index) if index else 0


def pick_backend(name, device="auto"):
    """The Backend ``--backend name --device device`` ask for: numpy on the CPU (refusing another device); torch on
    ``pick_device(device)``; CuPy on a CUDA device. UserError for what cannot run here."""
    if name not in BACKENDS:
        raise UserError(f"--backend {name!r}: use one of {', '.join(BACKENDS)}")
    if name == "numpy":
        if device != "auto" and parse_device(device).type != "cpu":
            raise UserError(f"--device {device}: --backend numpy computes with numpy, on the CPU only; pass "
                            "--backend torch (or cupy) to run the hand-written model there, or --device cpu")
        return Backend()
    if name == "torch":
        return Backend(name, str(pick_device(device)))
    return Backend(name, str(_cupy_device(device)))


def _cupy_device(device):
    """The CUDA device CuPy computes on for ``--device device``; UserError where it cannot."""
    cuda = parse_device("cuda" if device == "auto" else device)
    if cuda.type != "cuda":
        raise UserError(f"--backend cupy --device {device}: CuPy computes on CUDA only; pass --device cuda or "
                        "--backend torch")
    try:
        import cupy
    except ImportError:
        raise UserError("--backend cupy: CuPy is not installed; pip install the cupy build of your CUDA "
                        "(e.g. cupy-cuda12x) or pass --backend torch") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError:
        count = 0
    if (cuda.index or 0) >= count:
        raise UserError(f"--backend cupy --device {device}: CuPy sees {count} CUDA device(s) here; pass another "
                        "--device or --backend torch or numpy")
    return cuda
