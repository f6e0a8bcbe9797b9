"""A tiny CS231n-layout dataset with COCO file names in its URL lists, and a Karpathy ``dataset_coco.json`` for it."""
import json

from tests.conftest import write_tiny_cs231n

NUM_TRAIN, NUM_VAL = 24, 8
FIRST_ID = {"train": 1, "val": 101}
# The Karpathy split of each CS231n row (split, row); rows missing here are not in the JSON.
PLAN = {**{("train", row): "train" for row in range(22)},
        ("val", 0): "restval", ("val", 1): "restval", ("val", 2): "val", ("val", 3): "val",
        ("val", 4): "test", ("val", 5): "test", ("val", 6): "test"}
# What each split of the Karpathy protocol holds, in order: train2014 rows first, then val2014 rows.
EXPECTED = {"train": [("train", row) for row in range(22)] + [("val", 0), ("val", 1)],
            "val": [("val", 2), ("val", 3)], "test": [("val", 4), ("val", 5), ("val", 6)]}
LEFT_OUT = NUM_TRAIN + NUM_VAL - len(PLAN)  # train rows 22, 23 and val row 7


def coco_name(split, row):
    return f"COCO_{split}2014_{FIRST_ID[split] + row:012d}.jpg"


def image_entry(split, row, karpathy_split):
    return {"filepath": f"{split}2014", "filename": coco_name(split, row), "split": karpathy_split,
            "cocoid": FIRST_ID[split] + row, "imgid": row,
            "sentences": [{"tokens": ["a", "red", "circle"], "raw": "A red circle.", "imgid": row, "sentid": row}]}


def karpathy_content(plan=PLAN):
    """The JSON's content for ``plan``, plus one image the CS231n layout does not have (which must not matter)."""
    images = [image_entry(split, row, karpathy_split) for (split, row), karpathy_split in plan.items()]
    images.append(dict(image_entry("val", 0, "test"), filename="COCO_val2014_000000999999.jpg", cocoid=999999))
    return {"images": images, "dataset": "coco"}


def write_karpathy_json(base, content=None):
    path = base / "dataset_coco.json"
    path.write_text(json.dumps(karpathy_content() if content is None else content))
    return path


def write_coco_style(base, with_json=True):
    """The tiny CS231n dataset whose URL lines end in COCO file names, with its dataset_coco.json."""
    write_tiny_cs231n(base, num_train=NUM_TRAIN, num_val=NUM_VAL)
    for split, count in (("train", NUM_TRAIN), ("val", NUM_VAL)):
        (base / f"{split}2014_urls.txt").write_text(
            "".join(f"http://127.0.0.1:9/{split}2014/{coco_name(split, row)}\n" for row in range(count)))
    if with_json:
        write_karpathy_json(base)
    return base
