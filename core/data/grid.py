"""Grid (region) features on disk: one HDF5 dataset ``grid`` of shape (M, R, C) per split, float16.

Row m is image m's final convolutional map (the row of the same image in the pooled feature files), its R
cells in row-major order of a square side x side map (cell r = y * side + x, y from the top), C channels.
float16 halves COCO's files (196 x 512 values an image: 200 KB instead of 400 KB) at a rounding error of at
most 2**-11 of a value (3e-8 for values under 6e-5). On the shapes world's val maps that is at most 0.035% of
the largest value, and the encoder's own fc7 computed from the rounded maps moves by under 0.1% of its spread,
changing none of its heads' predictions: nothing a decoder could learn from. Readers get float32.

A whole split does not fit in memory (COCO's train grid is 16 GB), so ``LazyGrid`` reads only the rows a
minibatch asks for, in one HDF5 read, and opens its file lazily, again in a forked child.

Dimension legend: M images (rows), R cells of a map, C channels, B rows asked for.
"""
import math
import os
from pathlib import Path

import h5py
import numpy as np

from core.data.layout import GRID_KEY, grid_file
from core.runtime.errors import UserError
from core.runtime.fileio import atomic_write

GRID_DTYPE = np.float16
REBUILD_HINT = ("re-extract with features_extraction.py (without --no-grid), or rebuild the shapes dataset "
                "(python -m core.datasets.shapes_build)")


def as_grid_rows(block):
    """A block of maps (B, R, C) as stored: float16, rounded to nearest; UserError if a value overflows it."""
    rows = np.asarray(block, dtype=np.float32).astype(GRID_DTYPE)
    if not np.isfinite(rows).all():
        raise UserError(f"grid features beyond float16's range (|x| > {np.finfo(GRID_DTYPE).max:.0f}) or not "
                        "finite: the encoder's weights are broken, or pass --no-grid")
    return rows


def write_grid_h5(path, shape, fill):
    """Create a grid file whose float16 dataset of ``shape`` (M, R, C) is filled by ``fill(dataset)``, atomically.

    ``fill`` writes row blocks as it computes them (through ``as_grid_rows``); the file appears at ``path`` only
    once it has returned.
    """
    if len(shape) != 3 or math.isqrt(shape[1]) ** 2 != shape[1]:
        raise ValueError(f"grid shape must be (M, R, C) with R a square number of cells, got {shape}")

    def write(tmp):
        with h5py.File(tmp, "w") as f:
            # Contiguous (unchunked): a row is one contiguous run of bytes, so a random minibatch costs B seeks.
            fill(f.create_dataset(GRID_KEY, shape=tuple(shape), dtype=GRID_DTYPE))

    atomic_write(path, write)


def open_grid(path, rows=None):
    """A ``LazyGrid`` of the grid file at ``path``, after checking it (of ``rows`` rows when given).

    Raises UserError naming the file when it is missing, not HDF5, lacks dataset ``grid``, is not (M, R, C)
    floats with R a square, or has another number of rows than ``rows`` (the pooled feature file's).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found: this model needs grid features; {REBUILD_HINT}")
    try:
        with h5py.File(path, "r") as f:
            dataset = f.get(GRID_KEY)
            shape = dataset.shape if isinstance(dataset, h5py.Dataset) else None
            problem = _grid_problem(dataset)
    except OSError as err:
        raise UserError(f"cannot read grid file {path} ({err}); delete it and {REBUILD_HINT}") from None
    if problem:
        raise UserError(f"{path}: {problem}; {REBUILD_HINT}")
    if rows is not None and shape[0] != rows:
        raise UserError(f"{path} has {shape[0]} rows but the pooled features have {rows}: the files come from "
                        f"different extractions; {REBUILD_HINT}")
    return LazyGrid(path, shape)


def _grid_problem(dataset):
    """Why an HDF5 object is not a grid dataset, or None."""
    if not isinstance(dataset, h5py.Dataset):
        return f"no dataset {GRID_KEY!r}"
    if dataset.ndim != 3 or not np.issubdtype(dataset.dtype, np.floating):
        return f"dataset {GRID_KEY!r} must be (M, R, C) floats, got shape {dataset.shape} {dataset.dtype}"
    if math.isqrt(dataset.shape[1]) ** 2 != dataset.shape[1]:
        return f"dataset {GRID_KEY!r} has {dataset.shape[1]} cells a row, not a square map"
    if 0 in dataset.shape[1:]:
        return f"dataset {GRID_KEY!r} has shape {dataset.shape}: no cells or no channels"
    return None


class LazyGrid:
    """A read-only (M, R, C) grid file, read as float32 only where indexed.

    ``grid[index]`` takes an int, a slice, or an integer array of any shape (any order, repeats allowed): the
    distinct rows asked for are read in one HDF5 read, in increasing order as HDF5 needs, then put back in the
    order asked, so memory is bounded by the batch, never the file. There is no ``__array__``: reading a whole
    split is ``grid[:]``, said on purpose. The file opens on first read and again in a forked child (HDF5
    handles must not cross a fork); pickling keeps only the path, for data-loader workers.
    """

    dtype = np.dtype(np.float32)
    ndim = 3

    def __init__(self, path, shape):
        self.path, self.shape = Path(path), tuple(int(n) for n in shape)
        self._file, self._pid = None, None

    @property
    def side(self):
        """The map's side: R = side * side cells."""
        return math.isqrt(self.shape[1])

    def __len__(self):
        return self.shape[0]

    def _dataset(self):
        if self._file is None or self._pid != os.getpid():
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as err:
                raise UserError(f"cannot read grid file {self.path} ({err}); {REBUILD_HINT}") from None
            self._pid = os.getpid()
        return self._file[GRID_KEY]

    def __getitem__(self, index):
        """Rows ``index`` as float32: shape (*index.shape, R, C) for an integer array, (R, C) for an int."""
        rows = self._rows(index)
        unique, inverse = np.unique(rows.ravel(), return_inverse=True)
        block = self._read(unique)                                     # (U, R, C) as stored
        in_order = np.array_equal(inverse, np.arange(len(block)))     # e.g. grid[:k]: no reordering copy
        # Reordered before the widening: the copy is of float16. numpy widens twice as fast as HDF5 does on read.
        out = (block if in_order else block.take(inverse, axis=0)).astype(np.float32)  # (B, R, C) as asked
        # A finite sum proves every value finite, without a boolean array the size of the batch; only a
        # non-finite sum (a bad value, or an overflow) needs the value-by-value check.
        if not np.isfinite(out.sum()) and not np.isfinite(out).all():
            raise UserError(f"{self.path}: grid rows hold NaN or infinite values; delete it and {REBUILD_HINT}")
        return out.reshape(rows.shape + self.shape[1:])

    def _rows(self, index):
        """``index`` as an integer array of rows in 0..M-1."""
        if isinstance(index, slice):
            return np.arange(*index.indices(len(self)))
        if isinstance(index, tuple):  # np.asarray would take grid[i, j] for rows i and j
            raise IndexError("a LazyGrid is indexed by rows only: grid[rows], then index the float32 array it gives")
        index = np.asarray(index)
        if index.size == 0:
            index = index.astype(np.intp)  # np.asarray([]) is float64
        if index.dtype == bool or not np.issubdtype(index.dtype, np.integer):
            raise IndexError(f"grid rows must be indexed by integers or a slice, got dtype {index.dtype}")
        rows = np.where(index < 0, index + len(self), index)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"grid row index out of range for {len(self)} rows in {self.path}")
        return rows

    def _read(self, unique):
        """Rows ``unique`` (increasing, distinct) in one HDF5 read, a slice when they are consecutive."""
        if unique.size == 0:
            return np.empty((0, *self.shape[1:]), GRID_DTYPE)
        dataset = self._dataset()
        consecutive = unique[-1] - unique[0] + 1 == unique.size
        try:
            return dataset[int(unique[0]):int(unique[-1]) + 1] if consecutive else dataset[unique]
        except OSError as err:  # a file damaged after it was opened
            raise UserError(f"cannot read grid file {self.path} ({err}); delete it and {REBUILD_HINT}") from None

    def __array__(self, dtype=None, copy=None):
        raise TypeError(f"LazyGrid({self.path}) reads rows by index (grid[rows]); grid[:] reads the whole split")

    def close(self):
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __getstate__(self):
        return {"path": self.path, "shape": self.shape}

    def __setstate__(self, state):
        self.__init__(state["path"], state["shape"])

    def __repr__(self):
        return f"LazyGrid({str(self.path)!r}, shape={self.shape}, dtype=float32)"


def has_grid_files(base_dir, splits):
    """Whether ``base_dir`` holds grid features for every split of ``splits``."""
    return all((Path(base_dir) / grid_file(split)).is_file() for split in splits)


def model_inputs(data, reads_grid):
    """``data`` (``load_coco_data``'s dict) with the features a model reads as ``<split>_features``: the grid
    for models that attend over cells (loaded with ``grid=True``), the pooled features otherwise."""
    if not reads_grid:
        return data
    return dict(data, **{key.replace("_grid", "_features"): value for key, value in data.items()
                         if key.endswith("_grid")})
