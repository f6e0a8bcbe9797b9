"""Batched feature extraction with any encoder, and writing a dataset's complete set of feature files.

An encoder is a ``torch.nn.Module`` with an int attribute ``feature_dim``, a method
``preprocess(images)`` taking uint8 images of shape (B, H, W, 3) to a float32 tensor (B, 3, S, S),
and ``forward(x)`` giving features of shape (B, feature_dim). An encoder with grid features also has
``grid_shape`` (R, C) and ``forward_with_grid(x)`` giving both, features (B, feature_dim) and the map
(B, R, C) they were computed from, in one pass.

Images arrive as any sequence with ``len()`` and slicing (a numpy array, an h5py dataset, an
``ImageFolder``). They are streamed batch by batch, and the next batch is read on a background
thread while the current one runs through the network, so disk and JPEG decoding overlap compute.

Dimension legend: M images, B batch size, H/W image height/width, S encoder input size,
F feature width, K PCA width, R cells and C channels of a grid map.
"""
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from core.data.grid import as_grid_rows, write_grid_h5
from core.data.layout import ENCODER_INFO_FILE, PCA_FILE, SPLITS, features_file, grid_file, urls_file
from core.data.store import read_features_h5, save_features_h5, write_features_h5
from core.devices import pick_device
from core.features.pca import fit_pca, save_pca
from core.fileio import atomic_write_text, staged_files


def resolve_device(device=None):
    """A torch.device from a name, a torch.device, or None / "auto" (CUDA when present, else CPU)."""
    return pick_device("auto" if device is None else str(device))


BATCH_SIZE = 64  # images per forward pass, unless told otherwise


def extract_features(encoder, images, batch_size=BATCH_SIZE, device=None, desc="features", out=None, progress=True,
                     grid_out=None):
    """Run ``encoder`` over all images in batches (no gradients, eval mode).

    Inputs:
    - encoder: an encoder as described in the module docstring; moved to ``device`` and set to eval.
    - images: sequence of M images; ``images[i:j]`` gives uint8 of shape (j - i, H, W, 3).
    - batch_size: B, images per forward pass.
    - device: torch device or name; None or "auto" picks CUDA when available, else CPU.
    - desc: label of the progress bar.
    - out: optional writable array of shape (M, F) (e.g. an h5py dataset from
      ``store.write_features_h5``) filled in place, so huge feature sets never sit in memory.
    - grid_out: optional writable array of shape (M, R, C) (e.g. a dataset from ``grid.write_grid_h5``),
      filled with the grid features as stored (float16, ``grid.as_grid_rows``) by the same forward passes.

    Returns:
    - features: float32 array of shape (M, F), or ``out`` when given.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = resolve_device(device)
    encoder.to(device).eval()
    M, F = len(images), encoder.feature_dim
    if out is None:
        out = np.empty((M, F), dtype=np.float32)
    elif tuple(out.shape) != (M, F):
        raise ValueError(f"out must have shape {(M, F)}, got {tuple(out.shape)}")
    if grid_out is not None and tuple(grid_out.shape) != (M, *encoder.grid_shape):
        raise ValueError(f"grid_out must have shape {(M, *encoder.grid_shape)}, got {tuple(grid_out.shape)}")
    starts = range(0, M, batch_size)
    with ThreadPoolExecutor(max_workers=1) as reader, torch.no_grad():
        pending = reader.submit(images.__getitem__, slice(0, batch_size)) if M else None
        for start in tqdm(starts, desc=desc, unit="batch", disable=not progress):
            batch = np.asarray(pending.result())
            next_start = start + batch_size
            if next_start < M:
                pending = reader.submit(images.__getitem__, slice(next_start, next_start + batch_size))
            if batch.dtype != np.uint8 or batch.ndim != 4:
                raise ValueError(f"images must be uint8 of shape (B, H, W, C), got {batch.dtype} {batch.shape}")
            x = encoder.preprocess(batch).to(device, non_blocking=True)  # (B, 3, S, S)
            if grid_out is None:
                features = encoder(x)  # (B, F)
            else:
                features, grid = encoder.forward_with_grid(x)  # (B, F), (B, R, C)
                grid_out[start:start + len(batch)] = as_grid_rows(grid.float().cpu().numpy())
            out[start:start + len(batch)] = features.float().cpu().numpy()
    return out


def write_feature_files(out_dir, encoder, splits, encoder_info, pca_dim, batch_size, device=None, progress=True,
                        grid=False):
    """Extract and write every feature file of the dataset layout for the given splits (train and val, and a
    held-out test split when the dataset has one).

    Inputs:
    - out_dir: pathlib.Path of the dataset folder (created if needed).
    - encoder: the encoder to run.
    - splits: dict split name -> a pair (images, urls): an image sequence of length M and M url strings (one
      per image, written one per line); "train" and "val" at least.
    - encoder_info: dict written to ``encoder.json`` (must contain "name").
    - pca_dim: K, width of the ``_pca`` files; the PCA is fitted on the train split only.
    - grid: also write the grid features ``{split}2014_grid.h5`` (M, R, C), from the same forward passes as the
      features (the encoder needs ``grid_shape`` and ``forward_with_grid``). Without it, grid files of these
      splits already in ``out_dir`` are removed with the move: they would no longer match the features.

    Writes ``{split}2014_vgg16_fc7.h5`` (M, F), ``{split}2014_vgg16_fc7_pca.h5`` (M, K),
    ``{split}2014_urls.txt``, ``pca.npz`` and ``encoder.json``, all or none of them: they are written into a
    staging folder and move into ``out_dir`` together (an interrupted run leaves the previous files).
    """
    with staged_files(out_dir) as staging:
        _write_into(staging, encoder, splits, encoder_info, pca_dim, batch_size, device, progress, grid)
        if not grid:
            for split in splits:
                (Path(out_dir) / grid_file(split)).unlink(missing_ok=True)


def _write_into(out_dir, encoder, splits, encoder_info, pca_dim, batch_size, device, progress, grid):
    missing = set(SPLITS) - set(splits)
    if missing:
        raise ValueError(f"splits lacks {sorted(missing)}")
    for split in splits:
        images, urls = splits[split]
        if len(urls) != len(images):
            raise ValueError(f"{split}: {len(images)} images but {len(urls)} urls")
        _extract_split(out_dir, split, encoder, images, grid, batch_size=batch_size, device=device,
                       desc=f"{split} features", progress=progress)
        atomic_write_text(out_dir / urls_file(split), "".join(f"{url}\n" for url in urls))
    with read_features_h5(out_dir / features_file("train", False)) as train_features:
        pca = fit_pca(train_features, dim=pca_dim, desc="PCA fit (train)", progress=progress)
    save_pca(out_dir / PCA_FILE, pca)
    for split in splits:
        raw_name, pca_name = features_file(split, False), features_file(split, True)
        with read_features_h5(out_dir / raw_name) as features:
            save_features_h5(out_dir / pca_name, pca.project(features))
    atomic_write_text(out_dir / ENCODER_INFO_FILE, json.dumps(encoder_info, indent=2) + "\n")


def _extract_split(out_dir, split, encoder, images, grid, **options):
    """Write a split's raw features and, with ``grid``, its grid features, filled by one pass over the images."""
    raw_path, shape = out_dir / features_file(split, False), (len(images), encoder.feature_dim)
    if not grid:
        write_features_h5(raw_path, shape, lambda dataset: extract_features(encoder, images, out=dataset, **options))
        return
    write_features_h5(raw_path, shape, lambda dataset: write_grid_h5(
        out_dir / grid_file(split), (len(images), *encoder.grid_shape),
        lambda grid_dataset: extract_features(encoder, images, out=dataset, grid_out=grid_dataset, **options)))
