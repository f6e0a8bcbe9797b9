"""The classic CS231n import path of the image helpers: ``from core.image_utils import image_from_url, load_image``.

Reading lives on the data floor (``core.data.images``: every image is decoded there), resizing and normalisation
with the encoders (``core.features.preprocess``, ``core.features.pixels``); this module re-exports them.
"""
from core.data.images import image_from_url
from core.features.pixels import SQUEEZENET_MEAN, SQUEEZENET_STD, blur_image, deprocess_image, preprocess_image
from core.features.preprocess import load_image

__all__ = ["image_from_url", "load_image", "preprocess_image", "deprocess_image", "blur_image", "SQUEEZENET_MEAN",
           "SQUEEZENET_STD"]
