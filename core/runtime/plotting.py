"""PNG pictures of training: loss curves and caption galleries.

Figures are built with ``matplotlib.figure.Figure`` on an Agg canvas, never through pyplot, so plotting
works headless, leaves no global figure state behind and never opens a window. Every PNG is written
to a temporary file next to its target and moved into place, so a crash never leaves half a picture.
"""
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from core.runtime.fileio import atomic_write

GALLERY_KEYS = frozenset({"image", "generated", "references", "label"})
# history key -> (legend label, colour, marker) of the per-epoch curves.
EPOCH_SERIES = {"epoch_train_loss": ("epoch train", "tab:orange", "o"),
                "epoch_val_loss": ("epoch val", "tab:green", "s")}


@dataclass(frozen=True)
class GalleryLayout:
    """Sizes of one gallery tile, in inches and points (the PNG is saved at ``dpi``)."""
    tile_width: float = 3.2
    image_height: float = 2.6
    label_height: float = 0.3
    gutter: float = 0.2
    generated_size: float = 10.0
    reference_size: float = 8.5
    chars_per_line: int = 36
    max_references: int = 2
    small_image: int = 160  # images below this many pixels a side are upscaled with hard pixel edges
    dpi: int = 100


def save_figure(fig, path, dpi=100):
    """Render ``fig`` to the PNG ``path`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    FigureCanvasAgg(fig)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    return path


def smooth(values, window):
    """Moving average of ``values`` (shape (T,)) over ``window`` points; returns (centres, means).

    Non-finite points (a diverged step) are left out of every window rather than poisoning it.
    """
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    window = max(1, min(int(window), len(values)))
    sums = np.convolve(np.where(finite, values, 0.0), np.ones(window), mode="valid")
    counts = np.convolve(finite.astype(np.float64), np.ones(window), mode="valid")
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts  # NaN where a window holds no finite point
    centres = np.arange(len(means)) + (window - 1) / 2.0
    return centres, means


def _as_losses(values):
    """A list of losses (None for a missing one, as JSON stores it) as a float array of shape (T,)."""
    values = [] if values is None else values
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def use_log_scale(*series):
    """True when the positive finite losses span more than two decades."""
    values = np.concatenate([np.asarray(s, dtype=np.float64).ravel() for s in series])
    values = values[np.isfinite(values) & (values > 0)]
    return values.size > 0 and values.max() / values.min() > 100.0


def plot_loss(history, path, title=None):
    """Plot per-iteration and per-epoch losses to the PNG ``path``.

    Inputs:
    - history: dict with ``train_loss`` (list of T per-iteration losses), ``epoch_train_loss`` and
      ``epoch_val_loss`` (lists of E per-epoch losses; either may be empty or absent) and
      ``iterations_per_epoch`` (int, places epoch e's points at iteration (e + 1) * it).
      Optional ``metric`` and ``metric_sign``: what the values are, plotted as metric_sign * value (a
      self-critical run stores minus its CIDEr-D reward and is drawn as the reward).
    - path: where the PNG goes (parent folders are created).
    - title: optional figure title.

    Returns the Path written.
    """
    if "train_loss" not in history or "iterations_per_epoch" not in history:
        raise ValueError("history needs 'train_loss' and 'iterations_per_epoch'")
    name, sign = history.get("metric", "loss"), history.get("metric_sign", 1.0)
    train = sign * _as_losses(history["train_loss"])
    per_epoch = {key: sign * _as_losses(history.get(key)) for key in EPOCH_SERIES}
    fig = Figure(figsize=(8, 4.8))
    ax = fig.add_subplot(1, 1, 1)
    steps = np.arange(1, len(train) + 1)  # iteration k is the k-th update, so epoch e ends at e * it
    ax.plot(steps, train, color="tab:blue", alpha=0.25, linewidth=0.8, label="train (per iteration)")
    if len(train) > 1:
        centres, means = smooth(train, max(1, len(train) // 30))
        ax.plot(centres + 1, means, color="tab:blue", linewidth=2.0, label="train (smoothed)")
    for key, (label, colour, marker) in EPOCH_SERIES.items():
        losses = per_epoch[key]
        if len(losses):
            # A run stopped mid-epoch closes its last epoch early: never place a point past the data.
            ends = np.minimum((np.arange(len(losses)) + 1) * history["iterations_per_epoch"],
                              max(len(train), 1))
            ax.plot(ends, losses, color=colour, marker=marker, linewidth=1.5, label=label)
    if use_log_scale(train, *per_epoch.values()):
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel(name)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper right" if sign > 0 else "lower right")
    ax.set_title(title or f"{name} over {len(train)} iterations")
    fig.tight_layout()
    return save_figure(fig, path)


def _wrap(text, font_size, layout, max_lines=4):
    """``text`` broken into lines that fit a tile at ``font_size`` points (long text cut with '...')."""
    chars = max(10, int(layout.chars_per_line * layout.generated_size / font_size))
    return textwrap.wrap(text, chars, max_lines=max_lines, placeholder=" ...") or [""]


def _tile_text(item, layout):
    """The wrapped (generated lines, reference lines) of one gallery item."""
    generated = _wrap(item.get("generated", ""), layout.generated_size, layout)
    references = [line for ref in list(item.get("references") or [])[:layout.max_references]
                  for line in _wrap("- " + ref, layout.reference_size, layout, max_lines=3)]
    return generated, references


def _check_item(index, item):
    """Reject misspelt keys, a bare string as references, and images not uint8 of shape (H, W, 3)."""
    unknown = set(item) - GALLERY_KEYS
    if unknown:
        raise ValueError(f"gallery item {index} has unknown keys {sorted(unknown)}; "
                         f"allowed: {sorted(GALLERY_KEYS)}")
    if isinstance(item.get("references"), str):
        raise ValueError(f"gallery item {index}: references must be a list of captions, not one string")
    image = item.get("image")
    if image is not None and (image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3):
        raise ValueError(f"gallery item {index}: image must be uint8 of shape (H, W, 3), "
                         f"got {image.dtype} {image.shape}")


def _draw_image(ax, image, label, layout):
    """Show ``image`` in a thin frame (hard pixel edges when small), or a grey 'no image' tile."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color("#909090")
    if image is None:
        ax.imshow(np.full((3, 4, 3), 200, dtype=np.uint8))
        ax.text(0.5, 0.5, "no image", transform=ax.transAxes, ha="center", va="center",
                fontsize=12, color="#505050")
    else:
        small = max(image.shape[:2]) < layout.small_image
        ax.imshow(image, interpolation="nearest" if small else "antialiased")
    if label:
        ax.set_title(label, fontsize=layout.reference_size, color="#303030")


def _line_height(font_size):
    """Inches one line of text takes at ``font_size`` points, with a little leading."""
    return font_size / 72.0 * 1.3


def _draw_tile(fig, item, text, box, layout):
    """Draw one tile whose image box is ``box`` = (left, bottom, width, height) in inches."""
    fig_w, fig_h = fig.get_size_inches()
    left, bottom, width, height = box
    ax = fig.add_axes((left / fig_w, bottom / fig_h, width / fig_w, height / fig_h))
    _draw_image(ax, item.get("image"), item.get("label"), layout)
    generated, references = text
    text_top = bottom - 0.08
    fig.text(left / fig_w, text_top / fig_h, "\n".join(generated), va="top",
             fontsize=layout.generated_size, fontweight="bold", linespacing=1.15)
    fig.text(left / fig_w, (text_top - len(generated) * _line_height(layout.generated_size)) / fig_h,
             "\n".join(references), va="top", fontsize=layout.reference_size, color="#555555",
             linespacing=1.15)


def _heading(title, width, layout):
    """The sheet's heading lines (title, then the key to the fonts) wrapped to ``width`` inches."""
    chars = max(20, int(width * 72 / (0.6 * layout.generated_size)))
    key = "bold: generated caption    grey: reference captions"
    return textwrap.wrap(title or "", chars) + textwrap.wrap(key, chars)


def save_gallery(path, items, columns=4, title=None, layout=GalleryLayout()):
    """Save a grid of images, each with its generated caption (bold) and reference captions.

    Inputs:
    - path: where the PNG goes (parent folders are created).
    - items: list of dicts with ``image`` (uint8 array of shape (H, W, 3), or None for a grey
      placeholder), ``generated`` (str), ``references`` (list of str, the first two shown) and
      ``label`` (str shown above the image, e.g. the image id). Missing keys show nothing.
    - columns: tiles per row.
    - title: optional heading of the sheet.
    - layout: GalleryLayout of tile sizes.

    Returns the Path written.
    """
    if not items:
        raise ValueError("save_gallery needs at least one item")
    if int(columns) < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    for index, item in enumerate(items):
        _check_item(index, item)
    columns = min(int(columns), len(items))
    texts = [_tile_text(item, layout) for item in items]
    rows = [range(start, min(start + columns, len(items))) for start in range(0, len(items), columns)]
    # Each row's text band fits its own wordiest tile, so one long caption does not stretch every row.
    text_heights = [0.25 + max(len(texts[i][0]) * _line_height(layout.generated_size) +
                               len(texts[i][1]) * _line_height(layout.reference_size) for i in row)
                    for row in rows]
    width = columns * layout.tile_width
    heading = _heading(title, width, layout)
    head_h = 0.25 + len(heading) * _line_height(layout.generated_size + 1)
    height = head_h + sum(layout.label_height + layout.image_height + t for t in text_heights)
    fig = Figure(figsize=(width, height))
    fig.text(0.5, 1 - 0.12 / height, "\n".join(heading), ha="center", va="top",
             fontsize=layout.generated_size + 1)
    top = height - head_h
    for row, text_h in zip(rows, text_heights):
        bottom = top - layout.label_height - layout.image_height
        for column, i in enumerate(row):
            box = (column * layout.tile_width + layout.gutter / 2, bottom,
                   layout.tile_width - layout.gutter, layout.image_height)
            _draw_tile(fig, items[i], texts[i], box, layout)
        top = bottom - text_h
    return save_figure(fig, path, dpi=layout.dpi)


def show_png(path):
    """Open a saved PNG in a window (``--show``); needs a display and an interactive matplotlib backend."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    ax.imshow(plt.imread(str(path)))
    ax.axis("off")
    plt.show()
