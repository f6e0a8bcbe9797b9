"""Datasets in the CS231n coco_captioning layout: the COCO downloader, the generated shapes world's build, and
which folder a command reads. Above ``core.features``: building the shapes world pretrains its encoder."""
