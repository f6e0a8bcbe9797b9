"""The harder shapes world: its scenes and pixels (its words are ``hard_spec``, its captions ``hard_captions``).

Against the default world (``render``): a larger canvas (96-128 px), 2-6 objects that may overlap and hide one
another, eight shapes and twelve colours of which several are near-confusable (green / lime / teal, blue / navy,
red / pink, orange / brown), three sizes, and textured or cluttered backgrounds.

A scene is a JSON-friendly dict, the default world's format plus the bookkeeping of occlusion::

    {"background": [r, g, b], "texture": "striped", "noise_seed": int,
     "objects": [{"shape", "colour", "size", "x", "y", "r", "angle",
                  "z": draw order (0 first, hidden by later ones), "visible": share of its own pixels left visible,
                  "covers": [indices of the objects it hides part of]}, ...]}

Objects are listed left to right; ``z`` says which is drawn over which. ``visible`` is measured on the rasterised
masks, so an object that later objects hide beyond ``VISIBLE_THRESHOLD`` is in the truth but need not be named
(``required_objects``). Rendering is a pure function of the scene, so a scene re-renders to the same pixels.

Dimension legend: N objects of a scene, S image side in pixels, K outline vertices, P pixels.
"""
import math

import numpy as np

from core.runtime.errors import UserError
from core.shapes_world.render import coverage
from core.shapes_world.spec import VISIBLE_THRESHOLD, required_objects  # noqa: F401 (part of this world's API)

SHAPES = ("circle", "square", "triangle", "star", "diamond", "pentagon", "hexagon", "cross")
PALETTE = {
    "red": (215, 35, 35), "pink": (235, 110, 165), "orange": (245, 135, 25), "brown": (135, 80, 35),
    "yellow": (235, 205, 30), "lime": (150, 215, 45), "green": (35, 150, 55), "teal": (25, 145, 145),
    "blue": (40, 75, 215), "navy": (25, 35, 115), "purple": (135, 55, 180), "grey": (125, 125, 125),
}
COLOURS = tuple(PALETTE)
SIZES = ("small", "medium", "large")
TEXTURES = ("plain", "striped", "checkered", "dotted", "cluttered")
IMAGE_SIZES = range(96, 129, 8)
MIN_OBJECTS, MAX_OBJECTS = 2, 6
COVER_SHARE = 0.05        # an object "covers" another when it hides at least this share of the other's pixels
_RADIUS_128 = {"small": (6.0, 8.0), "medium": (10.0, 12.5), "large": (15.0, 18.5)}
_MAX_ANGLE = 20.0
_NOISE_STD = 6.0
_MIN_CENTRE_GAP = 0.6     # centres at least this many reaches apart: overlap, never one object on another's centre
_CROSS = ((0.35, 1), (0.35, 0.35), (1, 0.35), (1, -0.35), (0.35, -0.35), (0.35, -1), (-0.35, -1), (-0.35, -0.35),
          (-1, -0.35), (-1, 0.35), (-0.35, 0.35), (-0.35, 1))


def _radial(count, start, radii):
    """Unit outline (K, 2) of ``count`` vertices from angle ``start``, radii cycling through ``radii``."""
    theta = start + 2 * np.pi * np.arange(count) / count
    r = np.resize(np.asarray(radii, dtype=np.float64), count)
    return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)          # (K, 2)


# Each polygon's outline at unit reach; the reach is r times the extent, so that all shapes of a size look as big.
_OUTLINES = {"square": _radial(4, np.pi / 4, (1.0,)), "triangle": _radial(3, -np.pi / 2, (1.0,)),
             "star": _radial(10, -np.pi / 2, (1.0, 0.45)), "diamond": _radial(4, 0.0, (0.62, 1.0)),
             "pentagon": _radial(5, -np.pi / 2, (1.0,)), "hexagon": _radial(6, 0.0, (1.0,)),
             "cross": np.asarray(_CROSS, dtype=np.float64)}
_EXTENT = {"circle": 1.0, "square": 1.2, "triangle": 1.3, "star": 1.3, "diamond": 1.25, "pentagon": 1.1,
           "hexagon": 1.08, "cross": 1.1}


def check_canvas(image_size, max_objects=MAX_OBJECTS):
    """UserError (naming the flag) unless ``image_size`` is a supported side that holds ``max_objects`` large
    objects: their bounding discs may fill at most three quarters of the canvas, overlaps aside."""
    if image_size not in IMAGE_SIZES:
        raise UserError(f"--image-size {image_size}: the hard world uses a multiple of 8 in 96..128")
    reach = _RADIUS_128["large"][1] * image_size / 128 * max(_EXTENT.values())
    if max_objects * math.pi * reach * reach > 0.75 * image_size * image_size:
        raise UserError(f"--image-size {image_size} cannot hold {max_objects} large objects: use a larger image "
                        "or fewer objects")


def _extent(obj):
    return obj["r"] * _EXTENT[obj["shape"]]


def _sample_object(rng, image_size, excluded):
    """One object with random attributes, fully inside the image, holding none of the ``excluded`` attribute-shape
    pairs (its attributes drawn again until it holds none)."""
    while True:
        shape, colour = SHAPES[rng.integers(len(SHAPES))], COLOURS[rng.integers(len(COLOURS))]
        size = SIZES[rng.integers(len(SIZES))]
        if excluded.isdisjoint(((colour, shape), (size, shape))):
            break
    lo, hi = _RADIUS_128[size]
    r = float(np.round(rng.uniform(lo, hi) * image_size / 128, 2))
    reach = r * _EXTENT[shape] + 1.0
    x, y = np.round(rng.uniform(reach, image_size - reach, size=2), 2)
    return {"shape": shape, "colour": colour, "size": size, "x": float(x), "y": float(y), "r": r,
            "angle": float(np.round(rng.uniform(-_MAX_ANGLE, _MAX_ANGLE), 1))}


def _clear(obj, placed):
    """Whether ``obj``'s centre keeps ``_MIN_CENTRE_GAP`` reaches from every placed object's."""
    return all(math.hypot(obj["x"] - o["x"], obj["y"] - o["y"]) >= _MIN_CENTRE_GAP * max(_extent(obj), _extent(o))
               for o in placed)


def object_alpha(obj, image_size):
    """The object's coverage of each pixel, float64 of shape (S, S) in [0, 1], with a one-pixel soft edge (computed
    in its bounding box only; the cross's corners reach 1.06 of its extent)."""
    outline = None
    if obj["shape"] != "circle":
        theta = np.deg2rad(obj["angle"])
        rotation = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
        outline = _OUTLINES[obj["shape"]] * _extent(obj) @ rotation + (obj["x"], obj["y"])  # (K, 2) @ (2, 2)
    box, patch = coverage(obj, 1.1 * _extent(obj) + 1.0, outline, image_size)
    alpha = np.zeros((image_size, image_size))
    alpha[box] = patch
    return alpha


def object_pixels(scene, image_size):
    """The pixels each object shows in the image, bool of shape (N, S, S) indexed [y, x]: those it covers at least
    half that no object drawn after it (higher ``z``) covers at least half. A hidden part is not the object's, and an
    object hidden entirely has no pixel."""
    objects = scene["objects"]
    covered = np.asarray([object_alpha(obj, image_size) >= 0.5 for obj in objects]).reshape(
        len(objects), image_size, image_size)                                   # (N, S, S)
    z = np.asarray([obj["z"] for obj in objects])
    shown = covered.copy()
    for i in range(len(objects)):
        shown[i] &= ~covered[z > z[i]].any(axis=0)                             # (S, S)
    return shown


def _occlusion(objects, image_size):
    """Fill in each object's ``visible`` share and ``covers`` list, objects drawn in ``z`` order."""
    alphas = [object_alpha(obj, image_size) for obj in objects]
    for i, obj in enumerate(objects):
        above = [j for j, other in enumerate(objects) if other["z"] > obj["z"]]
        left = alphas[i].copy()
        for j in sorted(above, key=lambda j: objects[j]["z"]):
            left *= 1.0 - alphas[j]
        obj["visible"] = round(float(left.sum() / alphas[i].sum()), 3)
    for j, obj in enumerate(objects):
        obj["covers"] = [i for i, other in enumerate(objects) if obj["z"] > other["z"]
                         and float((alphas[i] * alphas[j]).sum()) >= COVER_SHARE * float(alphas[i].sum())]


def sample_scene(rng, image_size=128, tries=200, excluded=frozenset()):
    """One scene of MIN_OBJECTS..MAX_OBJECTS objects that may overlap, listed left to right (module docstring),
    none holding an ``excluded`` (attribute, shape) pair."""
    count = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
    placed = []
    while len(placed) < count:  # started over after ``tries`` misses per object, as in the default world
        placed = []
        for _ in range(count * tries):
            obj = _sample_object(rng, image_size, excluded)
            if _clear(obj, placed):
                placed.append(obj)
            if len(placed) == count:
                break
    for z, obj in enumerate(placed):
        obj["z"] = z
    objects = sorted(placed, key=lambda o: o["x"])
    _occlusion(objects, image_size)
    return {"background": [int(v) for v in rng.integers(170, 236, size=3)],
            "texture": TEXTURES[rng.integers(len(TEXTURES))], "noise_seed": int(rng.integers(2 ** 31)),
            "objects": objects}


def _texture(scene, image_size, rng):
    """The background's pattern: (S, S) offsets in grey levels, from the scene's noise stream."""
    ys, xs = np.mgrid[0:image_size, 0:image_size].astype(np.float64)
    period = rng.uniform(6.0, 14.0)
    kind = scene["texture"]
    if kind == "striped":
        angle = rng.uniform(0, np.pi)
        return 18.0 * (np.sin(2 * np.pi * (xs * np.cos(angle) + ys * np.sin(angle)) / period) > 0)
    if kind == "checkered":
        return 18.0 * ((np.floor(xs / period) + np.floor(ys / period)) % 2)
    if kind == "dotted":
        return 22.0 * (np.hypot(xs % period - period / 2, ys % period - period / 2) < period / 5)
    if kind == "cluttered":
        clutter = np.zeros((image_size, image_size))
        for _ in range(int(rng.integers(8, 16))):
            x, y, radius = rng.uniform(0, image_size), rng.uniform(0, image_size), rng.uniform(1.5, 4.0)
            clutter += rng.uniform(-30, 30) * (np.hypot(xs - x, ys - y) < radius)
        return clutter
    return np.zeros((image_size, image_size))


def render_scene(scene, image_size):
    """Render one scene to pixels: uint8 array of shape (S, S, 3), objects drawn in ``z`` order."""
    rng = np.random.default_rng(scene["noise_seed"])
    background = np.asarray(scene["background"], dtype=np.float64)
    image = background + _texture(scene, image_size, rng)[:, :, None]          # (S, S, 1) + (3,) -> (S, S, 3)
    for obj in sorted(scene["objects"], key=lambda o: o["z"]):
        alpha = object_alpha(obj, image_size)[:, :, None]                       # (S, S, 1)
        image += alpha * (np.asarray(PALETTE[obj["colour"]], dtype=np.float64) - image)
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(np.rint(image + _NOISE_STD * noise), 0, 255).astype(np.uint8)
