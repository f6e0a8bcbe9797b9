"""Packed sequences: only the (sequence, step) positions a recurrent layer must compute, laid out time-major.

A batch of N sequences of lengths L_n padded to T steps wastes the steps past each length: on captions a
fifth to a third of the batch. Sorted longest first, the sequences still running at step t are the first
n_t = #{n : L_n > t} of them, so step t is one contiguous block of n_t rows and all P = sum(L) positions
form one (P, D) array: step 0's block, then step 1's, and so on. Step t's recurrent input is the first n_t
rows of step t-1's block, since a sequence running at step t also ran at step t-1.

The layout is worked out on the host in numpy; the arrays it packs may be of any Array API namespace (numpy,
torch, CuPy): its index arrays go to their namespace and device once, on first use.

Dimension legend: N sequences, T padded steps, P positions actually computed, D any feature width.
"""
from dataclasses import dataclass, field

import numpy as np

from core.runtime.arrays import device_of, namespace, to_numpy


@dataclass(frozen=True)
class Packing:
    """The layout of one batch. order (N,): batch rows, longest first (ties keep their order);
    sizes (T,): n_t; offsets (T + 1,): where each step's block starts in the packed array;
    index (P,): each packed position's row in the batch flattened to (N*T, D)."""
    order: np.ndarray
    sizes: np.ndarray
    offsets: np.ndarray
    index: np.ndarray
    _placed: dict = field(default_factory=dict, compare=False, repr=False)  # index arrays by namespace and device

    @classmethod
    def of(cls, lengths, N, T):
        """The layout for ``lengths`` of shape (N,), integers in [0, T]; None means every sequence runs T steps."""
        if lengths is None:
            lengths = np.full(N, T)
        lengths = np.asarray(to_numpy(lengths))
        if lengths.shape != (N,) or not np.issubdtype(lengths.dtype, np.integer):
            raise ValueError(f"lengths must be integers of shape ({N},), got {lengths.dtype} of shape {lengths.shape}")
        if N and (lengths.min() < 0 or lengths.max() > T):
            raise ValueError(f"lengths must lie in [0, {T}], got values in [{lengths.min()}, {lengths.max()}]")
        order = np.argsort(-lengths, kind="stable")
        sizes = (lengths[None, :] > np.arange(T)[:, None]).sum(axis=1)  # (T, N) -> (T,)
        running = np.arange(N)[None, :] < sizes[:, None]  # (T, N): step t, rank j in the sorted batch
        index = (order[None, :] * T + np.arange(T)[:, None])[running]  # row n, step t sits at n*T + t
        return cls(order, sizes, np.concatenate([[0], np.cumsum(sizes)]), index)

    @property
    def steps(self):
        """The number of steps with at least one sequence running (trailing all-padding steps are skipped)."""
        return int(np.count_nonzero(self.sizes))

    def block(self, t):
        """The packed rows of step t, a slice."""
        return slice(int(self.offsets[t]), int(self.offsets[t + 1]))

    def step(self, t):
        """(n_t, the slice of step t's packed rows)."""
        return int(self.sizes[t]), self.block(t)

    def pack(self, x):
        """(N, T, D) -> (P, D), a copy holding the positions that run."""
        N, T, D = x.shape
        xp = namespace(x)
        return xp.take(xp.reshape(x, (N * T, D)), self._on("index", x), axis=0)  # (N*T, D) -> (P, D)

    def unpack(self, packed):
        """(P, D) -> (N, T, D), zeros at the positions that do not run."""
        N, T = len(self.order), len(self.sizes)
        xp = namespace(packed)
        padded = xp.concat([packed, xp.zeros((1, packed.shape[1]), dtype=packed.dtype, device=device_of(packed))])
        return xp.reshape(xp.take(padded, self._on("slots", packed), axis=0), (N, T, -1))  # (N*T, D) -> (N, T, D)

    def previous(self):
        """For every packed position of steps 1.. (the last P - n_0), the packed row of the same sequence's
        previous step: rank j of step t sits at offsets[t] + j, its previous step at offsets[t-1] + j."""
        positions = np.arange(self.sizes[0], self.offsets[-1])
        return positions - np.repeat(self.sizes[:-1], self.sizes[1:])

    def previous_rows(self, packed):
        """(P, D) -> (P - n_0, D): at every position of steps 1.., the same sequence's row one step earlier."""
        return namespace(packed).take(packed, self._on("previous", packed), axis=0)

    def sort_rows(self, a):
        """Rows of ``a`` (N, ...) in packing order, longest first."""
        return namespace(a).take(a, self._on("order", a), axis=0)

    def unsort_rows(self, a):
        """Inverse of sort_rows."""
        return namespace(a).take(a, self._on("unorder", a), axis=0)

    def _host(self, name):
        """The host (numpy) index array ``name``: order, index, previous, unorder (the inverse permutation of
        order) or slots (each flat position's packed row, P for the positions that do not run)."""
        if name == "previous":
            return self.previous()
        if name == "unorder":
            return np.argsort(self.order)
        if name == "slots":
            slots = np.full(len(self.order) * len(self.sizes), len(self.index))
            slots[self.index] = np.arange(len(self.index))
            return slots
        return getattr(self, name)

    def _on(self, name, like):
        """The index array ``name`` in the namespace and on the device of array ``like``, made once."""
        xp, device = namespace(like), device_of(like)
        key = (name, xp.__name__, str(device))
        if key not in self._placed:
            self._placed[key] = xp.asarray(self._host(name), device=device)
        return self._placed[key]
