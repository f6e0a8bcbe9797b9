"""Datasets on disk in the CS231n coco_captioning layout: the COCO downloader and the generated shapes world."""
from pathlib import Path


def default_data_dir(name: str) -> Path:
    """Where a named dataset lives by default: beside this package, as in the CS231n layout (git-ignored)."""
    return Path(__file__).resolve().parent / name
