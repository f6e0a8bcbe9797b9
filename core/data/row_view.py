"""Chosen rows of several row arrays, one after another, as one read-only array that reads only what is indexed.

A split of another protocol (Karpathy's) takes rows from both CS231n feature files; the raw fc7 and grid files
are too large to copy whole (COCO's train fc7 is 1.3 GB, its grid 16 GB), so the split's rows stay a view onto
the lazy files, and a minibatch reads its rows from each file in one indexing.

Dimension legend: M rows of the view, B rows asked for.
"""
import numpy as np


class RowView:
    """Rows ``rows_k`` of ``array_k`` for k = 0, 1, ..., concatenated: row m of the view is one row of one array.

    ``parts`` is a list of (array, rows): arrays (an ndarray, ``LazyFeatures`` or ``LazyGrid``) of equal row shapes
    and dtypes, ``rows`` integer arrays into each. Indexed by an int, a slice or an integer array of any shape (any
    order, repeats allowed), it gives an in-memory array; ``np.asarray(view)`` reads every row. Pickles with its
    parts (lazy parts reopen their files by path, for data-loader workers).
    """

    def __init__(self, parts):
        self.parts = [(array, np.asarray(rows, dtype=np.intp)) for array, rows in parts]
        if not self.parts or len({(array.shape[1:], np.dtype(array.dtype)) for array, _ in self.parts}) != 1:
            raise ValueError("RowView needs at least one array, all of the same row shape and dtype")
        self._part = np.concatenate([np.full(len(rows), k, np.intp) for k, (_, rows) in enumerate(self.parts)])
        self._row = np.concatenate([rows for _, rows in self.parts])
        first = self.parts[0][0]
        self.shape, self.dtype = (len(self._row), *first.shape[1:]), np.dtype(first.dtype)

    @property
    def ndim(self):
        return len(self.shape)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, index):
        """Rows ``index``: shape (*index.shape, ...row shape) for an integer array, the row shape for an int."""
        if isinstance(index, tuple):
            raise IndexError("a RowView is indexed by rows only: view[rows], then index the array it gives")
        positions = np.arange(len(self))[index]  # numpy's own rules: negative rows, bounds, slices, masks
        flat = np.atleast_1d(positions).ravel()  # (B,)
        out = np.empty((flat.size, *self.shape[1:]), self.dtype)
        parts = self._part[flat]
        for k, (array, _) in enumerate(self.parts):
            mine = np.flatnonzero(parts == k)
            if mine.size:
                out[mine] = array[self._row[flat[mine]]]
        return out.reshape(np.shape(positions) + self.shape[1:])

    def __array__(self, dtype=None, copy=None):
        data = self[:]
        return data if dtype is None else data.astype(dtype, copy=False)

    def close(self):
        """Release the files of the lazy parts."""
        for array, _ in self.parts:
            close = getattr(array, "close", None)
            if close is not None:
                close()

    def __repr__(self):
        return f"RowView({len(self.parts)} parts, shape={self.shape}, dtype={self.dtype})"
