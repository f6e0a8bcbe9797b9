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
from core.features.pca import fit_pca, save_pca
from core.runtime.devices import pick_device
from core.runtime.distributed import SINGLE
from core.runtime.fileio import atomic_write_text, staged_files


def resolve_device(device=None):
    """A torch.device from a name, a torch.device, or None / "auto" (CUDA when present, else CPU)."""
    return pick_device("auto" if device is None else str(device))


BATCH_SIZE = 64  # images per forward pass, unless told otherwise


def extract_features(encoder, images, batch_size=BATCH_SIZE, device=None, desc="features", out=None, progress=True,
                     grid_out=None, group=SINGLE):
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
    - group: a ``core.runtime.distributed.Group``; its ranks take the batches in turn (the single-process batches,
      so the features are the same) and rank 0 gathers and stores them: only rank 0 fills ``out`` and ``grid_out``,
      the others pass None (with_grid: whether to compute the grid) and get None back.

    Returns:
    - features: float32 array of shape (M, F), or ``out`` when given.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = resolve_device(device)
    encoder.to(device).eval()
    M, F = len(images), encoder.feature_dim
    if out is None and group.is_main:
        out = np.empty((M, F), dtype=np.float32)
    elif out is not None and tuple(out.shape) != (M, F):
        raise ValueError(f"out must have shape {(M, F)}, got {tuple(out.shape)}")
    if grid_out is not None and tuple(grid_out.shape) != (M, *encoder.grid_shape):
        raise ValueError(f"grid_out must have shape {(M, *encoder.grid_shape)}, got {tuple(grid_out.shape)}")
    starts = list(range(0, M, batch_size))
    rounds = range(0, len(starts), group.world_size)  # a round: each rank one batch
    mine = [starts[i + group.rank] if i + group.rank < len(starts) else None for i in rounds]

    def read(k):
        return reader.submit(images.__getitem__, slice(mine[k], mine[k] + batch_size)) \
            if k < len(mine) and mine[k] is not None else None

    with_grid = group.broadcast(grid_out is not None)
    with ThreadPoolExecutor(max_workers=1) as reader, torch.no_grad():
        pending = read(0)
        for k in tqdm(range(len(mine)), desc=desc, unit="batch", disable=not progress):
            encoded = None if pending is None else _encode(encoder, np.asarray(pending.result()), device, with_grid)
            pending = read(k + 1)
            for start, batch_out in group.gather((mine[k], encoded)) or []:  # rank 0 stores every rank's
                if batch_out is not None:
                    features, grid = batch_out
                    out[start:start + len(features)] = features
                    if grid is not None:
                        grid_out[start:start + len(grid)] = grid
    return out if group.is_main else None


def _encode(encoder, batch, device, with_grid):
    """(features (B, F) float32, grid (B, R, C) as stored or None) of a batch of uint8 images (B, H, W, 3)."""
    if batch.dtype != np.uint8 or batch.ndim != 4:
        raise ValueError(f"images must be uint8 of shape (B, H, W, C), got {batch.dtype} {batch.shape}")
    x = encoder.preprocess(batch).to(device, non_blocking=True)  # (B, 3, S, S)
    if not with_grid:
        return encoder(x).float().cpu().numpy(), None  # (B, F)
    features, grid = encoder.forward_with_grid(x)  # (B, F), (B, R, C)
    return features.float().cpu().numpy(), as_grid_rows(grid.float().cpu().numpy())


def write_feature_files(out_dir, encoder, splits, encoder_info, pca_dim, batch_size, device=None, progress=True,
                        grid=False, group=SINGLE):
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

    In a ``group`` (``core.runtime.distributed.Group``) every rank encodes its share of the batches and rank 0 writes
    the files, with the PCA fitted on the train features as they are stored: the files are a single process's.
    """
    if not group.is_main:
        for images, _ in splits.values():
            extract_features(encoder, images, batch_size=batch_size, device=device, progress=False, group=group)
        return
    with staged_files(out_dir) as staging:
        _write_into(staging, encoder, splits, encoder_info, pca_dim, batch_size, device, progress, grid, group)
        if not grid:
            for split in splits:
                (Path(out_dir) / grid_file(split)).unlink(missing_ok=True)


def _write_into(out_dir, encoder, splits, encoder_info, pca_dim, batch_size, device, progress, grid, group):
    missing = set(SPLITS) - set(splits)
    if missing:
        raise ValueError(f"splits lacks {sorted(missing)}")
    for split in splits:
        images, urls = splits[split]
        if len(urls) != len(images):
            raise ValueError(f"{split}: {len(images)} images but {len(urls)} urls")
        _extract_split(out_dir, split, encoder, images, grid, batch_size=batch_size, device=device,
                       desc=f"{split} features", progress=progress, group=group)
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
