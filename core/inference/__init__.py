"""Captioning with a trained model: ``engine`` is ``inference.py``'s one call (printed samples, galleries, your own
images, evaluation); ``evaluation`` captions a split's images and scores them."""
