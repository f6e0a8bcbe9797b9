"""Show-Attend-Tell pictures: where a captioner looked while it generated each word of a caption.

One PNG per caption: the image, then a panel per generated word showing the image lit by that word's
attention over the encoder's grid of cells. The side x side grid of weights is upsampled bilinearly to the
image's pixels (each weight placed at its cell's centre, held flat beyond the outer centres), since the
grid spans the whole image: VGG16's 14 x 14 grid lies over the image resized to 224 px, so over every
image whatever its size. Each panel keeps the image at full brightness where the weight is at its
caption-wide maximum and dims it towards a quarter where the weight is 0; one scale for all panels keeps
diffuse and peaked attention apart. Figures are built as in ``core.runtime.plotting``: no pyplot, Agg, atomic PNG.

Dimension legend: L generated words, R grid cells (side x side, row-major: r = y * side + x, y from the
top), H and W image height and width in pixels.
"""
import math
import textwrap

import numpy as np
from matplotlib.figure import Figure

from core.evaluation.attention import words_of
from core.runtime.plotting import save_figure

PANEL_INCHES = 1.9
TITLE_POINTS = 10.0
NOTE_POINTS = 8.0
# The brightness left where a word puts no attention: dark enough to see the focus, light enough to see
# what lies outside it.
DIM_FLOOR = 0.25
SMALL_IMAGE = 160  # images below this many pixels a side are shown with hard pixel edges, as in galleries


def _interpolation(cells, pixels):
    """Linear interpolation weights of shape (pixels, cells) from cell centres to pixel centres, edges held."""
    # Pixel centre p + 0.5 in cell units, measured from the first cell's centre.
    position = np.clip((np.arange(pixels) + 0.5) * cells / pixels - 0.5, 0.0, cells - 1)   # (pixels,)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, cells - 1)
    weights = np.zeros((pixels, cells))
    np.add.at(weights, (np.arange(pixels), low), 1.0 - (position - low))
    np.add.at(weights, (np.arange(pixels), high), position - low)
    return weights


def upsample_attention(cell_map, height, width):
    """Bilinear upsampling of a grid of weights of shape (side, side) to float of shape (height, width)."""
    cell_map = np.asarray(cell_map, dtype=np.float64)
    rows = _interpolation(cell_map.shape[0], height)                   # (H, side)
    columns = _interpolation(cell_map.shape[1], width)                 # (W, side)
    return rows @ cell_map @ columns.T                                 # (H, W)


def _check_inputs(image, words, alphas):
    """ValueError unless the arguments fit; returns the alphas of the words as float of shape (len(words), R)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 of shape (H, W, 3), got {image.dtype} {image.shape}")
    if isinstance(words, str) or not all(isinstance(word, str) for word in words):
        raise ValueError("words must be a list of str (the caption split into words), "
                         f"got {type(words).__name__}")
    alphas = np.asarray(alphas, dtype=np.float64)
    if alphas.ndim != 2 or alphas.shape[0] < len(words):
        raise ValueError(f"alphas must be of shape (L, R) with L >= {len(words)} (one row per word), "
                         f"got shape {alphas.shape}")
    side = math.isqrt(alphas.shape[1])
    if side == 0 or side * side != alphas.shape[1]:
        raise ValueError(f"alphas must be over a square grid of cells, got {alphas.shape[1]} cells")
    if not np.all(np.isfinite(alphas)) or np.any(alphas < 0):
        raise ValueError("alphas must be finite and non-negative")
    return alphas[:len(words)]


def _spotlit(image, weights, peak):
    """``image`` (H, W, 3) uint8 dimmed where ``weights`` of shape (H, W) fall short of ``peak``."""
    light = DIM_FLOOR + (1.0 - DIM_FLOOR) * weights / peak                   # (H, W)
    return np.rint(image * light[:, :, None]).astype(np.uint8)              # (H, W, 3)


def _show(ax, picture, label):
    """One panel: ``picture`` (H, W, 3) uint8 without ticks, titled ``label``."""
    small = max(picture.shape[:2]) < SMALL_IMAGE
    ax.imshow(picture, interpolation="nearest" if small else "antialiased")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(label, fontsize=TITLE_POINTS)


def _text_lines(text, width, points):
    """``text`` wrapped to ``width`` inches at ``points`` points (no lines for None)."""
    chars = max(20, int(width * 72 / (0.55 * points)))
    return textwrap.wrap(text or "", chars)


def plot_attention(image, words, alphas, path, title=None, note=None, columns=6):
    """Save a Show-Attend-Tell figure of one caption's attention to the PNG ``path``.

    Inputs:
    - image: uint8 array of shape (H, W, 3), the picture the grid of cells spans.
    - words: list of L' generated words (str), one panel each.
    - alphas: array of shape (L, R) with L >= L', row t the attention over the side x side grid of cells
      (R = side², row-major from the top left) while word t was generated; rows past L' (an <END>) are
      ignored.
    - path: where the PNG goes (parent folders are created; written atomically).
    - title: optional heading, e.g. the image id and caption.
    - note: optional line under the panels saying what the weights are, e.g. "last decoder layer's
      cross-attention, mean over heads".
    - columns: panels per row (the image's included); longer captions wrap onto more rows.

    Returns the Path written.
    """
    alphas = _check_inputs(image, words, alphas)                          # (L', R)
    if int(columns) < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    height, width = image.shape[:2]
    side = math.isqrt(alphas.shape[1])
    maps = [upsample_attention(row.reshape(side, side), height, width) for row in alphas]   # (H, W) each
    peak = max([m.max() for m in maps] + [0.0]) or 1.0  # all-zero attention shows the dimmed image
    columns = min(int(columns), len(words) + 1)
    rows = math.ceil((len(words) + 1) / columns)
    panel_h = PANEL_INCHES * height / width + 0.35  # room for the word above each panel
    fig_w = columns * PANEL_INCHES
    key = "lit where attended (bilinear from the cell grid; brightness scaled to the caption's largest weight)"
    head = _text_lines(title, fig_w, TITLE_POINTS + 1)
    foot = _text_lines(note, fig_w, NOTE_POINTS) + _text_lines(key, fig_w, NOTE_POINTS)
    head_h, foot_h = 0.1 + len(head) * 0.22, 0.1 + len(foot) * 0.17
    fig_h = head_h + rows * panel_h + foot_h
    fig = Figure(figsize=(fig_w, fig_h))
    fig.subplots_adjust(left=0.02, right=0.98, top=1 - (head_h + 0.3) / fig_h, bottom=foot_h / fig_h,
                        wspace=0.08, hspace=0.35 / PANEL_INCHES)
    _show(fig.add_subplot(rows, columns, 1), image, "image")
    for k, (word, weights) in enumerate(zip(words, maps)):
        _show(fig.add_subplot(rows, columns, k + 2), _spotlit(image, weights, peak), word)
    if head:
        fig.text(0.5, 1 - 0.08 / fig_h, "\n".join(head), ha="center", va="top", fontsize=TITLE_POINTS + 1)
    fig.text(0.02, (foot_h - 0.05) / fig_h, "\n".join(foot), va="top", fontsize=NOTE_POINTS, color="#404040")
    return save_figure(fig, path)


def save_attention_map(image, ids, weights, model, path, title):
    """Write the map of one caption: ids (L,) decoded words, weights (L, R) their attention."""
    words = words_of(ids, model.idx_to_word, model.end_idx)
    return plot_attention(image, words, weights[:len(words)], path, title=title, note=model.attention_note)
