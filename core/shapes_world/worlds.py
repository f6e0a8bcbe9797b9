"""The generated worlds a shapes dataset is built from, by name: each one's words, scene sampler, renderer, caption
templates and canvas check, so that the dataset build, the encoder's heads and the grounding parser ask one place.

- ``default``: up to three objects that never touch on a 64-96 px canvas (``render``, ``captions``, ``spec``).
- ``hard``: two to six objects that overlap and hide one another on a textured 96-128 px canvas, more shapes and
  near-confusable colours, three sizes, richer captions (``hard``, ``hard_captions``, ``hard_spec``).
"""
from dataclasses import dataclass
from typing import Callable

from core.runtime.errors import UserError
from core.shapes_world import captions, hard, render
from core.shapes_world.hard_captions import hard_scene_captions
from core.shapes_world.hard_spec import HARD_WORLD
from core.shapes_world.spec import DEFAULT_WORLD, WorldSpec


@dataclass(frozen=True)
class World:
    """One world: ``sample_scene(rng, image_size, excluded=pairs)``, ``render_scene(scene, image_size)``,
    ``scene_captions(scene, rng, image_size)`` (five captions), ``check_canvas(image_size)`` (UserError naming
    --image-size when its objects cannot fit) and ``object_pixels(scene, image_size)``, the pixels each object of a
    scene shows in its image, bool of shape (N, S, S) indexed [y, x] (what attention correctness scores against)."""
    spec: WorldSpec
    sample_scene: Callable
    render_scene: Callable
    scene_captions: Callable
    check_canvas: Callable
    object_pixels: Callable


WORLDS = {
    "default": World(DEFAULT_WORLD, render.sample_scene, render.render_scene, captions.scene_captions,
                     render.check_canvas, render.object_pixels),
    "hard": World(HARD_WORLD, hard.sample_scene, hard.render_scene, hard_scene_captions, hard.check_canvas,
                  hard.object_pixels),
}


def get_world(name):
    """The World called ``name``; a UserError naming --world otherwise."""
    if name not in WORLDS:
        raise UserError(f"--world {name!r} is unknown: use one of {', '.join(WORLDS)}")
    return WORLDS[name]


def world_spec(name):
    """The WorldSpec (words and object limits) of the world called ``name``."""
    return get_world(name).spec
