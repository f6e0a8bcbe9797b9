"""The image memory the Transformer decoder's cross-attention attends over.

With ``memory="pooled"`` it is one position,
the projected feature vector (``CaptioningTransformer`` builds it itself). With ``memory="grid"`` it is a map's
cells plus one global position, built by ``GridMemory`` here.

Dimension legend:
- N: batch size (images)
- T: number of caption positions
- E: embedding width of the caption positions
- R: cells of a square side x side feature map, in row-major order: cell r = y * side + x, y from the top
- C: channels of a cell (the config's ``input_dim``)
- D: the model width (``wordvec_dim``)
"""
import math

import numpy as np
import torch
from torch import nn


def grid_side(num_cells):
    """The side of a square map of ``num_cells`` cells; ValueError unless ``num_cells`` is a positive square."""
    side = math.isqrt(num_cells) if num_cells > 0 else 0
    if side * side != num_cells:
        raise ValueError(f"a grid memory needs a square map, side x side cells, got {num_cells} cells")
    return side


def measure_grid(features, rows=128):
    """The cells, channels and scale of grid features, from their first ``rows`` images only.

    Inputs:
    - features: an array-like of shape (M, R, C), a numpy array or a lazy (HDF5-backed) object that
      supports ``.shape`` and ``features[:k]``; it is not read whole.
    - rows: how many leading images to sample for the scale.

    Returns a tuple of:
    - num_cells: R, a perfect square.
    - input_dim: C.
    - feature_scale: the mean norm of a sampled cell over sqrt(C), so that cells divided by it have entries
      of unit scale (1.0 when the sample is all zeros).
    """
    shape = tuple(features.shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"grid features should be of shape (M, R, C) with R cells of C channels per image, "
                         f"got {shape}")
    _, num_cells, input_dim = (int(n) for n in shape)
    grid_side(num_cells)
    sample = np.asarray(features[:rows], dtype=np.float32)  # (k, R, C); float32 halves the sample's memory
    norms = np.linalg.norm(sample, axis=-1)  # (k, R, C) -> (k, R)
    scale = float(norms.mean(dtype=np.float64) / math.sqrt(input_dim))
    return num_cells, input_dim, scale if math.isfinite(scale) and scale > 0 else 1.0


class GridMemory(nn.Module):
    """Grid features of shape (N, R, C) -> image memory of shape (N, R + 1, D).

    Positions 0 .. R - 1 are the cells, each divided by ``feature_scale``, projected C -> D, plus the embedding
    of its row and the embedding of its column; position R is the global one: the projection of the mean over
    the cells (the pooled vector of the map) plus a type embedding that tells it apart from the cells.

    Why row + column embeddings rather than a learned (R, D) table: 2 * side * D numbers instead of R * D, each
    trained by a whole row or column of cells rather than one cell, and "left of" / "above" are then a matter of
    one table each, as captions describe them. Why a scalar scale rather than per-channel standardisation: the
    projection learns per-channel weights anyway; the scale only brings the cells' entries to unit size at
    initialisation (next to embeddings of std 0.02), and one number is all a checkpoint's config has to carry.
    """

    def __init__(self, input_dim, num_cells, width, feature_scale=1.0):
        """
        Inputs:
        - input_dim: C, the channels of a cell.
        - num_cells: R, the cells of the square map.
        - width: D, the width of the memory.
        - feature_scale: cells are divided by it before the projection.
        """
        super().__init__()
        side = grid_side(num_cells)
        self.input_dim, self.num_cells, self.feature_scale = input_dim, num_cells, float(feature_scale)
        self.projection = nn.Linear(input_dim, width)
        self.row = nn.Embedding(side, width)
        self.column = nn.Embedding(side, width)
        self.global_type = nn.Embedding(1, width)

    def forward(self, features):
        """
        Inputs:
        - features: cells of shape (N, R, C), in the row-major order of the map.

        Returns:
        - memory of shape (N, R + 1, D): the cells in the same order, then the global position.
        """
        if features.dim() != 3 or features.shape[1:] != (self.num_cells, self.input_dim):
            raise ValueError(f"features of shape {tuple(features.shape)} should be (N, {self.num_cells}, "
                             f"{self.input_dim}) to match the model's num_cells and input_dim")
        cells = features / self.feature_scale  # (N, R, C)
        tokens = torch.cat([cells, cells.mean(dim=1, keepdim=True)], dim=1)  # (N, R, C), (N, 1, C) -> (N, R+1, C)
        return self.projection(tokens) + self.positions()  # (N, R+1, C) @ (C, D) -> (N, R+1, D), + (R+1, D)

    def positions(self):
        """The embedding added to each memory position, of shape (R + 1, D): cell y * side + x gets row y's
        embedding plus column x's, the global position its type embedding."""
        side, width = self.row.weight.shape
        table = self.row.weight[:, None] + self.column.weight[None]  # (side, 1, D) + (1, side, D) -> (side, side, D)
        return torch.cat([table.reshape(side * side, width), self.global_type.weight])  # (R, D), (1, D) -> (R+1, D)
