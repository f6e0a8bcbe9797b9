"""Which dataset directory a command reads: ``--data-dir`` if given, else the named dataset's default home."""
from pathlib import Path

from core.data.layout import COCO_ARCHIVE_TOP, HELD_OUT_SPLIT, PROTOCOLS, default_data_dir
from core.runtime.errors import UserError

# The generated datasets by name, each the world it is built from (core.shapes_world.worlds); every dataset name.
SHAPES_DATASETS = {"shapes": "default", "shapes-hard": "hard"}
DATASETS = (*SHAPES_DATASETS, "coco")


def dataset_home(dataset):
    """The folder a named dataset lives in by default."""
    return default_data_dir(COCO_ARCHIVE_TOP if dataset == "coco" else dataset)


def resolve_data_dir(dataset="shapes", data_dir=None, progress=True, protocol=PROTOCOLS[0]):
    """The dataset directory to load; builds a generated dataset (``SHAPES_DATASETS``) in its default home on first
    use. ``protocol`` is the split protocol it will be loaded with: Karpathy's splits are COCO's, refused for the
    shapes worlds before building one."""
    if data_dir is not None:
        path = Path(data_dir)
        if not path.is_dir():
            raise UserError(f"--data-dir {path} is not a directory: give a folder in the CS231n coco_captioning "
                            "layout (see README, 'Data layout')")
        return path
    if dataset in SHAPES_DATASETS:
        if protocol == "karpathy":
            raise UserError(f"--protocol karpathy is for COCO: the shapes world has its own held-out {HELD_OUT_SPLIT} "
                            "split; drop --protocol karpathy or pass --dataset coco")
        from core.datasets.shapes_build import ensure_shapes_dataset
        from core.datasets.shapes_config import ShapesConfig

        return ensure_shapes_dataset(dataset_home(dataset), ShapesConfig.for_world(SHAPES_DATASETS[dataset]),
                                     progress=progress)
    if dataset == "coco":
        path = dataset_home(dataset)
        if not path.is_dir():
            raise UserError(f"COCO captioning data not found at {path}: run `bash core/datasets/get_datasets.sh`, "
                            "or use the default --dataset shapes")
        return path
    raise UserError(f"unknown --dataset {dataset!r}: use one of {', '.join(DATASETS)}")
