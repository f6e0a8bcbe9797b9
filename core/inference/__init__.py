"""Captioning with a trained model: ``engine`` is ``inference.py``'s one call (printed samples, galleries, your own
images, evaluation); ``attention`` records where attention models look and ``attention_maps`` draws it. Imports
training's neighbours below it (models, evaluation) but never training or results."""
