"""Datasets in the CS231n coco_captioning layout: the COCO downloader, the generated shapes world's build, the
build from your own images and captions, and which folder a command reads.
Above ``core.features``: building the shapes world pretrains its encoder."""
