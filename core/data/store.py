"""Feature files on disk: HDF5 files holding one float32 dataset ``features`` of shape (M, F).

Writes are atomic (a temporary file in the target folder, renamed over the target only once it is
complete), so an interrupted run never leaves a truncated file that looks finished. Reads are lazy:
COCO's fc7 files are several GB, so callers get a view that reads only the rows they index.

Dimension legend: M images (rows), F feature width.
"""
from pathlib import Path

import h5py
import numpy as np

from core.data.layout import FEATURES_KEY
from core.runtime.errors import UserError
from core.runtime.fileio import atomic_write


def save_features_h5(path, features):
    """Write ``features`` of shape (M, F) as float32 dataset ``features`` of an HDF5 file, atomically."""
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"features must have shape (M, F), got {features.shape}")
    write_features_h5(path, features.shape, lambda dataset: dataset.write_direct(
        np.ascontiguousarray(features, dtype=np.float32)))


def write_features_h5(path, shape, fill):
    """Create a feature file whose float32 dataset of ``shape`` (M, F) is filled by ``fill(dataset)``.

    For feature sets too large to hold in memory: ``fill`` writes row blocks as it computes them.
    The file appears at ``path`` only once ``fill`` has returned.
    """
    def write(tmp):
        with h5py.File(tmp, "w") as f:
            # Contiguous (unchunked) layout: one random row is one small read, which minibatch
            # sampling from a multi-GB fc7 file needs; writes of row blocks are contiguous too.
            fill(f.create_dataset(FEATURES_KEY, shape=tuple(shape), dtype=np.float32))

    atomic_write(path, write)


class LazyFeatures:
    """A read-only (M, F) feature matrix in an HDF5 file, read from disk only when indexed.

    Behaves like a numpy array for ``len``, ``.shape``, ``.dtype``, ``.ndim``, ``np.asarray(view)``
    (reads everything) and indexing by an int, a slice, or an integer array of any shape, in any
    order, with repeats (h5py alone reads only increasing, unique rows: the view reads each distinct
    row once and puts them back in the order asked). The file stays open, so a minibatch costs one
    read; pickling reopens it by path (for data-loader worker processes). Use as a context manager,
    or call ``close()``, to release the file.
    """

    def __init__(self, path, key=FEATURES_KEY):
        self.path, self.key = Path(path), key
        self._file = h5py.File(self.path, "r")
        self._data = self._file[key]

    @property
    def shape(self):
        return self._data.shape

    @property
    def dtype(self):
        return self._data.dtype

    @property
    def ndim(self):
        return len(self.shape)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, index):
        """Rows ``index`` as an in-memory array; an integer array of shape (B,) gives shape (B, F)."""
        if isinstance(index, tuple):
            rows = self[index[0]]
            return rows[(slice(None),) * (rows.ndim - self.ndim + 1) + index[1:]]
        if isinstance(index, (int, np.integer, slice)) or index is Ellipsis:
            return self._data[index]
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        elif index.size == 0:
            index = index.astype(np.intp)  # np.asarray([]) is float64
        if not np.issubdtype(index.dtype, np.integer):
            raise IndexError(f"feature rows must be indexed by integers, got dtype {index.dtype}")
        rows = np.where(index < 0, index + len(self), index)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"feature row index out of range for {len(self)} rows in {self.path}")
        unique, inverse = np.unique(rows.ravel(), return_inverse=True)
        block = self._data[unique] if unique.size else np.empty((0,) + self.shape[1:], self.dtype)
        return block[inverse].reshape(rows.shape + self.shape[1:])  # (*index.shape, F)

    def __array__(self, dtype=None, copy=None):
        data = self._data[()]
        return data if dtype is None else data.astype(dtype, copy=False)

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __getstate__(self):
        return {"path": self.path, "key": self.key}

    def __setstate__(self, state):
        self.__init__(state["path"], state["key"])

    def __repr__(self):
        return f"LazyFeatures({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"


def read_features_h5(path, expected_dim=None):
    """Open a feature file written by ``save_features_h5`` and return a lazy ``LazyFeatures`` view.

    Raises UserError (naming the file) when it is missing or not HDF5, lacks dataset ``features``,
    or holds anything other than a 2-D float32 matrix (of width ``expected_dim`` when given).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: feature file not found; extract features first (features_extraction.py)")
    try:
        with h5py.File(path, "r") as f:
            problem = _features_problem(f, expected_dim)
    except OSError as exc:
        raise UserError(f"{path}: not a readable HDF5 file ({exc}); delete it and extract again") from None
    if problem:
        raise UserError(f"{path}: {problem}; extract features again (features_extraction.py)")
    return LazyFeatures(path)


def _features_problem(f, expected_dim):
    """Why the open HDF5 file ``f`` is not a feature file (of width ``expected_dim``), or None."""
    dataset = f.get(FEATURES_KEY)
    if not isinstance(dataset, h5py.Dataset):
        return f"no dataset '{FEATURES_KEY}'"
    if dataset.ndim != 2 or dataset.shape[1] == 0:
        return f"dataset '{FEATURES_KEY}' has shape {dataset.shape}, expected (M, F) with F > 0"
    if dataset.dtype != np.float32:
        return f"dataset '{FEATURES_KEY}' has dtype {dataset.dtype}, expected float32"
    if expected_dim is not None and dataset.shape[1] != expected_dim:
        return f"dataset '{FEATURES_KEY}' has width {dataset.shape[1]}, expected {expected_dim}"
    return None
