"""Scoring captions: COCO metrics (``metrics``), CIDEr-D (``cider``), grounding against scene truth
(``grounding``, its relations in ``relations``; either world's words), the forced-relation probe, attention
correctness, the blind and nearest-neighbour baselines, and the evaluation loop that decodes a split and scores it
(``loop``). Imports data, layers, decoding and models."""
