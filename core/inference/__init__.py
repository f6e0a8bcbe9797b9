"""Captioning with a trained model: ``engine`` is ``inference.py``'s one call (printed samples, galleries, your own
images, evaluation); ``attention_maps`` draws where attention models look; ``report`` and ``report_html`` write an
evaluation's static report page (its script and style in ``report_assets``). Imports training's neighbours below it
(models, evaluation) but never training or results."""
