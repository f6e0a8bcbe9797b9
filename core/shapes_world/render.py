"""Scene sampling and rendering for the generated shapes world.

A scene is a JSON-friendly dict (the format of ``shapes_scenes.json``)::

    {"background": [r, g, b], "noise_seed": int,
     "objects": [{"shape": "star", "colour": "red", "size": "small",
                  "x": 20.5, "y": 40.0, "r": 6.0, "angle": 12.0}, ...]}

``x``/``y`` are the object centre in pixels (x to the right, y downwards), ``r`` its radius-like extent
(the radius of a circle; polygons are scaled from it, see ``_EXTENT``) and ``angle`` a small rotation in
degrees. Objects are listed left to right. Rendering is a pure function of the scene: the background
noise comes from ``noise_seed``, so a scene re-renders to the same pixels.

Dimension legend: M images, N objects of a scene, S image side in pixels, P pixels of an object's bounding box.
"""
import numpy as np
from tqdm import tqdm

from core.runtime.errors import UserError
from core.shapes_world.composition import holds_any, object_pairs
from core.shapes_world.spec import COLOURS, SHAPES, SIZES

# Object colours: saturated and far apart, so that colour is readable under the background noise.
PALETTE = {
    "red": (215, 35, 35),
    "green": (35, 160, 55),
    "blue": (40, 75, 215),
    "yellow": (235, 205, 30),
    "purple": (135, 55, 180),
    "orange": (245, 135, 25),
}
# How far each shape reaches from its centre, in units of r: polygons are made a little larger than the
# circle so that all shapes of one size look about as big.
_EXTENT = {"circle": 1.0, "square": 1.2, "triangle": 1.2, "star": 1.25}
# Radius ranges at 64 px, scaled with the image side; the gap between them keeps "small" and "large" apart.
_RADIUS_64 = {"small": (5.0, 6.5), "large": (9.5, 12.0)}
_NOISE_STD = 7.0
_MAX_ANGLE = 15.0


def _extent(obj):
    """The radius of the circle that contains the whole object, in pixels."""
    return obj["r"] * _EXTENT[obj["shape"]]


def _fits(obj, placed, image_size):
    """Whether ``obj`` keeps clear of every placed object.

    Bounding circles may not touch, so every object is fully visible; centres must also differ in x by
    a fifth of the image, so the left-to-right order that captions use is plain to see (with a tenth,
    most of the encoder's remaining errors were objects swapped between left-to-right slots).
    """
    margin, min_dx = 1.0, 0.2 * image_size
    for other in placed:
        gap = np.hypot(obj["x"] - other["x"], obj["y"] - other["y"])
        if gap < _extent(obj) + _extent(other) + margin or abs(obj["x"] - other["x"]) < min_dx:
            return False
    return True


def _sample_object(rng, image_size, excluded):
    """One object with random attributes and a random position fully inside the image, holding none of the
    ``excluded`` attribute-shape pairs (drawn again until it holds none; with none excluded, drawn once)."""
    scale = image_size / 64.0
    while True:
        # Indexing with rng.integers rather than rng.choice: choice is several times slower per call.
        shape = SHAPES[rng.integers(len(SHAPES))]
        size = SIZES[rng.integers(len(SIZES))]
        lo, hi = _RADIUS_64[size]
        r = float(np.round(rng.uniform(lo, hi) * scale, 2))
        reach = r * _EXTENT[shape] + 1.0
        x, y = np.round(rng.uniform(reach, image_size - reach, size=2), 2)
        angle = float(np.round(rng.uniform(-_MAX_ANGLE, _MAX_ANGLE), 1))
        obj = {"shape": shape, "colour": COLOURS[rng.integers(len(COLOURS))], "size": size,
               "x": float(x), "y": float(y), "r": r, "angle": angle}
        if excluded.isdisjoint(object_pairs(obj)):
            return obj


def sample_scene(rng, image_size=64, max_objects=3, tries=100, excluded=frozenset()):
    """Sample one scene of 1..max_objects non-overlapping objects, listed left to right.

    Inputs:
    - rng: np.random.Generator, the only source of randomness.
    - image_size: int S, the image side in pixels.
    - max_objects: int, the most objects in a scene (the count is uniform in 1..max_objects).
    - tries: int, placement attempts per object before the scene is started over.
    - excluded: frozenset of (attribute, shape) pairs no object may hold (``core.shapes_world.composition``).

    Returns:
    - scene: dict in the format of the module docstring.
    """
    count = int(rng.integers(1, max_objects + 1))
    while True:
        placed = []
        for _ in range(count * tries):
            obj = _sample_object(rng, image_size, excluded)
            if _fits(obj, placed, image_size):
                placed.append(obj)
            if len(placed) == count:
                background = rng.integers(185, 246, size=3)
                return {"background": [int(v) for v in background],
                        "noise_seed": int(rng.integers(2 ** 31)),
                        "objects": sorted(placed, key=lambda o: o["x"])}


def check_canvas(image_size):
    """UserError unless ``image_size`` is a side the default world supports (its objects fit 64..96 px)."""
    if not 64 <= image_size <= 96 or image_size % 8:
        raise UserError(f"--image-size {image_size}: image size unsupported by the default world: use a multiple of "
                        "8 in 64..96")


def sample_scenes(num_scenes, rng, image_size=64, excluded=frozenset(), required=frozenset(), sampler=sample_scene):
    """A list of ``num_scenes`` scenes drawn with ``sampler`` (a world's ``sample_scene``), none holding an
    ``excluded`` pair; with ``required`` pairs, scenes where no required object holds one are drawn again (the
    novel-composition split)."""
    scenes = []
    while len(scenes) < num_scenes:
        scene = sampler(rng, image_size, excluded=excluded)
        if not required or holds_any(scene, required):
            scenes.append(scene)
    return scenes


def _polygon(obj):
    """The object's outline as vertices of shape (K, 2) in pixels."""
    r, shape = obj["r"], obj["shape"]
    if shape == "square":
        radii, start, k = np.full(4, r * _EXTENT["square"]), np.pi / 4, 4
    elif shape == "triangle":
        radii, start, k = np.full(3, r * _EXTENT["triangle"]), -np.pi / 2, 3
    else:
        # A five-pointed star: outer tips alternate with inner corners at 45% of the reach.
        reach = r * _EXTENT["star"]
        radii, start, k = np.tile([reach, 0.45 * reach], 5), -np.pi / 2, 10
    theta = start + np.deg2rad(obj["angle"]) + 2 * np.pi * np.arange(k) / k
    return np.stack([obj["x"] + radii * np.cos(theta), obj["y"] + radii * np.sin(theta)], axis=1)


def polygon_distance(points, vertices):
    """Signed distance from points (P, 2) to a closed polygon (K, 2): negative inside.

    The unsigned part is the distance to the nearest edge; the sign comes from an even-odd crossing test
    of a horizontal ray, done for all edges at once. x and y are kept as separate (P, K) arrays because
    reductions over a length-2 axis are slow in numpy.
    """
    px, py = points[:, 0:1], points[:, 1:2]                        # (P, 1) each
    x0, y0 = vertices[None, :, 0], vertices[None, :, 1]            # (1, K) each
    ex, ey = np.roll(x0, -1, axis=1) - x0, np.roll(y0, -1, axis=1) - y0    # (1, K) each
    wx, wy = px - x0, py - y0                                      # (P, K) each
    along = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)   # (P, K)
    dx, dy = wx - ex * along, wy - ey * along                      # (P, K) each
    distance = np.sqrt((dx * dx + dy * dy).min(axis=1))            # (P,)
    straddles = (y0 <= py) != (y0 + ey <= py)                      # (P, K)
    # Where an edge is horizontal it never straddles, so its meaningless crossing point is masked out.
    with np.errstate(divide="ignore", invalid="ignore"):
        cross_x = x0 + wy * ex / ey                                # (P, K)
    inside = np.count_nonzero(straddles & (px < cross_x), axis=1) % 2 == 1
    return np.where(inside, -distance, distance)


def _object_coverage(obj, image_size):
    """``coverage`` of one object over its bounding box: (box, alpha of shape (h, w))."""
    outline = None if obj["shape"] == "circle" else _polygon(obj)
    return coverage(obj, _extent(obj) + 1.0, outline, image_size)


def _draw_object(image, obj):
    """Blend one object into ``image`` (S, S, 3) float in place, with a one-pixel anti-aliased edge."""
    box, alpha = _object_coverage(obj, image.shape[0])
    patch = image[box]
    patch += alpha[:, :, None] * (np.asarray(PALETTE[obj["colour"]], dtype=np.float64) - patch)   # (h, w, 1)


def coverage(obj, reach, outline, image_size):
    """An object's coverage of the pixels of its bounding box, with a one-pixel anti-aliased edge.

    Inputs:
    - obj: dict with the centre "x", "y" and, for a circle, its radius "r".
    - reach: float, how far the box reaches from the centre, in pixels.
    - outline: (K, 2) polygon vertices in pixels, or None for a circle.
    - image_size: int S; the box is clipped to the image.

    Returns:
    - box: (row slice, column slice) of the box in the image.
    - alpha: float64 of shape (h, w) in [0, 1].
    """
    x0, x1 = max(int(obj["x"] - reach), 0), min(int(np.ceil(obj["x"] + reach)) + 1, image_size)
    y0, y1 = max(int(obj["y"] - reach), 0), min(int(np.ceil(obj["y"] + reach)) + 1, image_size)
    ys, xs = np.mgrid[y0:y1, x0:x1]
    points = np.stack([xs.ravel(), ys.ravel()], axis=1) + 0.5      # (P, 2): pixel centres
    if outline is None:
        distance = np.hypot(points[:, 0] - obj["x"], points[:, 1] - obj["y"]) - obj["r"]
    else:
        distance = polygon_distance(points, outline)
    alpha = np.clip(0.5 - distance, 0.0, 1.0).reshape(y1 - y0, x1 - x0)    # (P,) -> (h, w)
    return (slice(y0, y1), slice(x0, x1)), alpha


def object_pixels(scene, image_size):
    """Each object's pixels, bool of shape (N, S, S) indexed [y, x]: those whose centre lies inside its outline, i.e.
    that the renderer draws at least half in the object's colour (objects never overlap in this world)."""
    masks = np.zeros((len(scene["objects"]), image_size, image_size), dtype=bool)
    for mask, obj in zip(masks, scene["objects"]):
        box, alpha = _object_coverage(obj, image_size)
        mask[box] = alpha >= 0.5
    return masks


def render_scene(scene, image_size):
    """Render one scene to pixels.

    Inputs:
    - scene: dict in the format of the module docstring.
    - image_size: int S, the image side in pixels.

    Returns:
    - image: uint8 array of shape (S, S, 3).
    """
    background = np.asarray(scene["background"], dtype=np.float64)
    image = np.broadcast_to(background, (image_size, image_size, 3)).copy()
    for obj in scene["objects"]:
        _draw_object(image, obj)
    noise = np.random.default_rng(scene["noise_seed"]).standard_normal(image.shape, dtype=np.float32)
    return np.clip(np.rint(image + _NOISE_STD * noise), 0, 255).astype(np.uint8)


def render_scenes(scenes, image_size, desc="render", progress=True, renderer=render_scene):
    """Render a list of M scenes with ``renderer`` (a world's ``render_scene``) into a uint8 array of shape
    (M, S, S, 3), with a progress bar."""
    images = np.empty((len(scenes), image_size, image_size, 3), dtype=np.uint8)
    for i, scene in enumerate(tqdm(scenes, desc=desc, leave=False, disable=not progress)):
        images[i] = renderer(scene, image_size)
    return images
