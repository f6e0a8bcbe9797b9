"""Exact PCA for CNN features, fitted in one streaming pass so 83k x 4096 fc7 files never load whole.

The covariance is accumulated in float64 over row chunks, then diagonalised with ``eigh``. To avoid
the cancellation of the textbook ``E[x x^T] - mean mean^T``, rows are shifted by the first chunk's
mean before accumulating (the shifted-data algorithm): the shift is close to the true mean, so the
correction term stays tiny. With fewer rows than features (N < F, e.g. smoke tests) the data matrix
is the smaller one, and its SVD gives the same exact components far faster.

Sign convention: an eigenvector is only defined up to sign, so each component is flipped to make
its largest-magnitude entry positive. The same data then always gives the same components.

Dimension legend: N rows (images), F input feature width, K output width (``dim``).
"""
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core.runtime.errors import UserError
from core.runtime.fileio import atomic_write

DEFAULT_CHUNK = 4096


@dataclass(frozen=True)
class PCA:
    """A fitted projection: ``(x - mean) @ components.T``.

    - mean: float32 array of shape (F,).
    - components: float32 array of shape (K, F), rows orthonormal, by decreasing variance.
    - explained_variance: float32 array of shape (K,), the variance of each projected coordinate.
    """

    mean: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray

    @property
    def dim(self):
        return self.components.shape[0]

    def project(self, x, chunk=DEFAULT_CHUNK):
        """Project features onto the components.

        Inputs:
        - x: array of shape (N, F) or (F,), or any (N, F) sequence read by slices (an h5py dataset).
        - chunk: rows projected at a time, bounding memory for large lazily read inputs.

        Returns:
        - float32 array of shape (N, K), or (K,) for a single row of shape (F,).
        """
        if isinstance(x, np.ndarray) and x.ndim == 1:
            return self.project(x[None])[0]
        if len(x.shape) != 2 or x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"features of shape (N, {self.mean.shape[0]}) expected, got {x.shape}")
        out = np.empty((x.shape[0], self.dim), dtype=np.float32)
        for start in range(0, x.shape[0], chunk):
            rows = np.asarray(x[start:start + chunk], dtype=np.float32)
            out[start:start + chunk] = (rows - self.mean) @ self.components.T  # (n, F) @ (F, K) -> (n, K)
        return out


def fit_pca(features, dim, chunk=DEFAULT_CHUNK, desc="PCA", progress=True):
    """Fit an exact PCA to the rows of ``features``, reading ``chunk`` rows at a time.

    Inputs:
    - features: array of shape (N, F), or any (N, F) sequence read by slices (an h5py dataset).
    - dim: K, the number of components kept; needs K <= F and N > K (N rows span at most N - 1
      centred directions, so with fewer rows the last components would be arbitrary).
    - chunk: rows read per step; bounds memory to a (chunk, F) float64 block plus the (F, F) sums.

    Returns:
    - PCA with components of shape (K, F) and explained_variance of shape (K,) (sample variance,
      divided by N - 1).
    """
    N, F = features.shape
    if not 0 < dim <= F:
        raise ValueError(f"PCA dim must be in 1..{F} (the feature width), got {dim}")
    if N <= dim:
        raise UserError(f"PCA to {dim} dimensions needs more than {dim} feature rows, got {N}: "
                        "lower the PCA dimension or use more images")
    # With fewer rows than features the data matrix is smaller than the covariance: take its SVD.
    fit = _pca_by_svd if N < F else _pca_by_covariance
    mean, directions, variances = fit(features, chunk, desc, progress)
    components = directions[:dim]  # (K, F)
    peak = np.argmax(np.abs(components), axis=1)
    components = components * np.sign(components[np.arange(dim), peak])[:, None]
    return PCA(mean=mean.astype(np.float32), components=components.astype(np.float32),
               explained_variance=np.maximum(variances[:dim], 0.0).astype(np.float32))


def _pca_by_covariance(features, chunk, desc, progress):
    """(mean (F,), directions (F, F) as rows, variances (F,)), by decreasing variance, in one pass."""
    N, F = features.shape
    shift = np.asarray(features[:chunk], dtype=np.float64).mean(axis=0)
    row_sum = np.zeros(F, dtype=np.float64)
    scatter = np.zeros((F, F), dtype=np.float64)
    for start in tqdm(range(0, N, chunk), desc=desc, unit="chunk", disable=not progress):
        rows = np.asarray(features[start:start + chunk], dtype=np.float64) - shift
        row_sum += rows.sum(axis=0)
        scatter += rows.T @ rows  # (F, n) @ (n, F) -> (F, F)
    offset = row_sum / N  # mean - shift
    covariance = (scatter - N * np.outer(offset, offset)) / (N - 1)  # (F, F)
    variances, vectors = np.linalg.eigh(covariance)  # ascending; columns are eigenvectors
    order = np.argsort(variances)[::-1]
    return shift + offset, vectors[:, order].T, variances[order]


def _pca_by_svd(features, chunk, desc, progress):
    """(mean (F,), directions (N, F) as rows, variances (N,)), by decreasing variance, for N < F."""
    rows = np.concatenate([np.asarray(features[start:start + chunk], dtype=np.float64)
                           for start in tqdm(range(0, features.shape[0], chunk), desc=desc, unit="chunk",
                                             disable=not progress)])
    mean = rows.mean(axis=0)
    _, singular_values, vt = np.linalg.svd(rows - mean, full_matrices=False)  # vt of shape (N, F)
    return mean, vt, singular_values ** 2 / (rows.shape[0] - 1)


def save_pca(path, pca):
    """Write ``pca`` to an .npz file (arrays ``mean``, ``components``, ``explained_variance``), atomically."""
    def write(tmp):
        # A file handle, not a name: np.savez would append ".npz" to the temporary name.
        with open(tmp, "wb") as f:
            np.savez(f, mean=pca.mean, components=pca.components,
                     explained_variance=pca.explained_variance)

    atomic_write(path, write)


def load_pca(path):
    """Read a PCA written by ``save_pca``; UserError naming the file when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: PCA file not found; run features_extraction.py to fit it")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in ("mean", "components", "explained_variance")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path}: not a valid PCA file ({exc}); run features_extraction.py again") from None
    mean, components, variance = arrays["mean"], arrays["components"], arrays["explained_variance"]
    if (mean.ndim != 1 or components.ndim != 2 or components.shape[1] != mean.shape[0]
            or variance.shape != (components.shape[0],)):
        raise UserError(f"{path}: PCA arrays have inconsistent shapes mean {mean.shape}, components "
                        f"{components.shape}, explained_variance {variance.shape}; fit it again")
    if not all(np.issubdtype(a.dtype, np.floating) for a in (mean, components, variance)):
        raise UserError(f"{path}: PCA arrays must be floating point; fit it again")
    if not all(np.isfinite(a).all() for a in (mean, components, variance)):
        raise UserError(f"{path}: PCA arrays hold NaN or infinite values; fit it again")
    return PCA(mean=mean.astype(np.float32), components=components.astype(np.float32),
               explained_variance=variance.astype(np.float32))
