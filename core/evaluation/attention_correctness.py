"""Attention correctness on the shapes worlds: how much of a word's attention falls on the object it names.

After Liu et al. 2017 ("Attention Correctness in Neural Image Captioning"), made exact by the known scenes:
- A caption is read with ``core.evaluation.grounding.parse_caption`` in its world's words (synonyms and plurals as
  grounding reads them). Each noun phrase whose colour and shape match some object of the scene is scored at its
  shape noun (``circle`` in ``a red circle``; ``things`` in ``two red things``). Phrases naming neither colour nor
  shape (``three shapes``) say nothing about which object is meant and are skipped, as are phrases matching no
  object (hallucinations).
- The phrase refers to every object with its colour and shape (``two red circles``: both); a size word
  narrows that to the objects of that size when some have it. A wrong size word leaves the phrase scored,
  as grounding treats size as a claim of its own.
- With ``include_attributes`` the phrase's colour and size words are scored too, against the same
  objects: the grammar puts them before the noun, so the model may well look at the object there.
- A word's correctness is the attention mass its row of alphas puts on the cells its objects cover (the
  union for several). The uniform baseline is the share of cells they cover: what attention spread
  evenly over the image would score.
- A cell covers an object if one of the object's pixels lies in it, the pixels being those the object shows in the
  image, as its world's ``object_pixels`` gives them (``core.shapes_world.worlds``): in the default world those
  whose centre is inside the outline, the renderer's own rasterisation, so it is exact; in the harder world those it
  covers at least half and no object drawn over it covers at least half. An object hidden beyond the visibility
  threshold may still be named (it is in the truth) and is scored on what is visible of it; a phrase whose objects
  show no pixel at all is skipped. The cell grid spans the whole image (as the VGG16 grid does over the image
  resized to 224 px).
Means are over all scored words of all captions; NaN over no word.

Dimension legend: L generated words, R grid cells (side x side, row-major: r = y * side + x, y from the
top), S image side in pixels, N objects of a scene.
"""
import math

import numpy as np

from core.evaluation.grounding import Mention, parse_caption
from core.shapes_world.spec import DEFAULT_WORLD
from core.shapes_world.worlds import WORLDS

# Row sums further than this from 1 mean the alphas are not attention distributions.
_SUM_TOLERANCE = 1e-3


def grid_side(num_cells):
    """The side of a square grid of ``num_cells`` cells; ValueError unless it is a positive square."""
    side = math.isqrt(num_cells) if num_cells > 0 else 0
    if side == 0 or side * side != num_cells:
        raise ValueError(f"attention must be over a square grid of cells, got {num_cells} cells")
    return side


def _pixel_cell_overlap(image_size, side):
    """Bool of shape (side, S): whether cell c's span [c S/side, (c+1) S/side) overlaps pixel p's [p, p+1)."""
    cells = np.arange(side)[:, None]
    pixels = np.arange(image_size)[None, :]
    # Integer products, so cell edges that fall on pixel edges are exact.
    return (cells * image_size < (pixels + 1) * side) & ((cells + 1) * image_size > pixels * side)


def scene_cell_masks(scene, side, image_size=64, world=WORLDS[DEFAULT_WORLD.name]):
    """Cells each object of ``scene`` covers (module docstring), as bool of shape (N, R) with R = side².

    Inputs:
    - scene: dict with ``objects``, each ``{"shape", "colour", "x", "y", "r", "angle", ...}`` as its world's
      ``sample_scene`` writes them and ``core.evaluation.loop.load_scenes`` reads them.
    - side: int, cells per side of the attention grid (8 for the shapes encoder, 14 for VGG16).
    - image_size: int S, the side in pixels the scene was rendered at (shapes_scenes.json's image_size).
    - world: the scene's ``core.shapes_world.worlds.World``, whose ``object_pixels`` says which pixels are whose
      (the default world's unless given).
    """
    overlap = _pixel_cell_overlap(image_size, side).astype(np.int64)   # (side, S)
    pixels = world.object_pixels(scene, image_size).astype(np.int64)  # (N, S, S)
    # (side, S) @ (N, S, S) @ (S, side) -> (N, side, side): each object's pixels per cell
    per_cell = overlap @ pixels @ overlap.T
    return per_cell.reshape(len(pixels), side * side) > 0             # (N, R), row-major like the alphas


def _referents(mention, objects):
    """Indices of the objects a phrase refers to (module docstring); empty when it names none present."""
    if (mention.colour, mention.shape) == (None, None):
        return []
    named = [i for i, obj in enumerate(objects) if Mention(mention.colour, mention.shape).matches(obj)]
    sized = [i for i in named if objects[i]["size"] == mention.size]
    return sized or named


def _scored_positions(words, include_attributes, spec):
    """Yield (positions, mention) for each noun phrase of ``words`` (list of str, in the words of the WorldSpec
    ``spec``): the phrase's Mention and the indices of its words to score, the noun's alone or, with
    ``include_attributes``, its colour and size words' too."""
    for mention in parse_caption(" ".join(words), spec).mentions:
        pos = mention.words[1] - 1  # the phrase ends with its noun
        positions = [pos]
        if include_attributes:
            # The parser takes colour and size only from the words right before the noun, in that order.
            attributes = (mention.colour is not None) + (mention.size is not None)
            positions = list(range(pos - attributes, pos)) + positions
        yield positions, mention


def _check_alphas(alphas, num_words):
    """``alphas`` as float of shape (num_words, R): the first rows of an (L, R) array of distributions."""
    alphas = np.asarray(alphas, dtype=np.float64)
    if alphas.ndim != 2 or alphas.shape[0] < num_words:
        raise ValueError(f"alphas must be of shape (L, R) with L >= {num_words} (one row per generated word), "
                         f"got shape {alphas.shape}")
    alphas = alphas[:num_words]
    grid_side(alphas.shape[1])
    if not np.all(np.isfinite(alphas)) or np.any(alphas < 0) or \
            np.any(np.abs(alphas.sum(axis=1) - 1.0) > _SUM_TOLERANCE):
        raise ValueError("each row of alphas must be a distribution over cells: finite, >= 0, summing to 1")
    return alphas


def word_correctness(caption, alphas, scene, image_size=64, include_attributes=False,
                     world=WORLDS[DEFAULT_WORLD.name]):
    """Per-word attention correctness of one caption (definitions in the module docstring).

    Inputs:
    - caption: str, the generated words separated by spaces (no <START>/<END>).
    - alphas: array of shape (L, R), row t the attention while generating word t; only the first
      len(caption.split()) rows are read, so a row for <END> may be there or not.
    - scene: the caption's scene, as for ``scene_cell_masks``.
    - image_size: int S, the side in pixels the scene was rendered at.
    - include_attributes: also score the colour and size words of each scored phrase.
    - world: the scene's ``core.shapes_world.worlds.World``, whose words the caption uses.

    Returns:
    - list of (position, word, correctness, baseline) for each scored word, in caption order.
    """
    words = caption.lower().split()
    alphas = _check_alphas(alphas, len(words))                         # (len(words), R)
    masks = scene_cell_masks(scene, grid_side(alphas.shape[1]), image_size, world)   # (N, R)
    scores = []
    for positions, mention in _scored_positions(words, include_attributes, world.spec):
        cells = masks[_referents(mention, scene["objects"])].any(axis=0)   # (R,): union over the referents
        if not cells.any():
            continue  # names no object present, or only objects hidden entirely
        baseline = float(cells.mean())
        scores += [(pos, words[pos], float(alphas[pos][cells].sum()), baseline) for pos in positions]
    return sorted(scores)


def attention_correctness(predictions, attentions, scenes, image_size=64, include_attributes=False,
                          world=WORLDS[DEFAULT_WORLD.name]):
    """Attention correctness of many captions, averaged over every scored word.

    Inputs:
    - predictions: dict id -> caption (str), as ``core.evaluation.loop`` keeps them.
    - attentions: dict id -> alphas of shape (L, R) for that caption (see ``word_correctness``).
    - scenes: dict id -> scene (``load_scenes``); every id of ``predictions`` must be in both dicts.
    - image_size, include_attributes, world: as for ``word_correctness``.

    Returns:
    - dict with floats ``attention_correctness`` (mean attention mass on the named objects' cells),
      ``uniform_baseline`` (mean share of cells they cover), ``correctness_ratio`` (the first over the
      second: 1 is no better than uniform) and int ``n_scored_words``.
    """
    missing = [key for key in predictions if key not in attentions or key not in scenes]
    if missing:
        raise ValueError(f"{len(missing)} captions lack attention weights or a scene (e.g. id {missing[0]!r})")
    scores = [score for key, caption in predictions.items()
              for score in word_correctness(caption, attentions[key], scenes[key], image_size,
                                            include_attributes, world)]
    correctness = float(np.mean([s[2] for s in scores])) if scores else float("nan")
    baseline = float(np.mean([s[3] for s in scores])) if scores else float("nan")
    return {"attention_correctness": correctness, "uniform_baseline": baseline,
            "correctness_ratio": correctness / baseline if scores else float("nan"),
            "n_scored_words": len(scores)}
