"""The generated shapes world, the project's default captioning dataset: one import for its public parts.

- ``core.shapes_world.render``: scene sampling and rendering (``sample_scene``, ``render_scene``).
- ``core.shapes_world.captions``: the caption templates (``scene_captions``).
- ``core.datasets.shapes_build``: the dataset build in the CS231n layout (``ensure_shapes_dataset``).
- ``core.features.shapes_cnn``: the encoder CNN pretrained on the world (``ShapesEncoder``).
"""
from core.datasets.shapes_build import ShapesConfig, build_shapes_dataset, ensure_shapes_dataset
from core.shapes_world.captions import scene_captions, vertical_relation
from core.shapes_world.render import render_scene, render_scenes, sample_scene, sample_scenes

__all__ = ["ShapesConfig", "build_shapes_dataset", "ensure_shapes_dataset", "scene_captions",
           "vertical_relation", "render_scene", "render_scenes", "sample_scene", "sample_scenes"]
