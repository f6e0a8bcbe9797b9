"""Caption files in the three formats (COCO annotations, Karpathy split files, CSV/TSV): each read into the
expected records, the format told by content, the same captions giving the same records in every format, the
classic tokenisation, and every bad file a one-line UserError naming the file."""
import csv
import json

import pytest

from core.datasets.caption_sources import CaptionRecord, read_caption_file, tokenize_caption
from core.runtime.errors import UserError

# Five captions of three images, in file order: (image, caption).
CAPTIONS = [("a.jpg", "A dog, running on the beach!"), ("a.jpg", "The dog's ball is RED."),
            ("b.jpg", "Two cats on 1 mat"), ("c.jpg", "  A café   at night "), ("b.jpg", "cats... sleeping?")]


def coco_content(captions=CAPTIONS):
    """A COCO caption annotation object for (image, caption) pairs, images numbered by first appearance."""
    ids = {}
    for image, _ in captions:
        ids.setdefault(image, 10 * (len(ids) + 1))
    return {"info": {"year": 2014}, "licenses": [],
            "images": [{"id": i, "file_name": image, "height": 480} for image, i in ids.items()],
            "annotations": [{"id": 100 + k, "image_id": ids[image], "caption": caption}
                            for k, (image, caption) in enumerate(captions)]}


def karpathy_content(captions=CAPTIONS, split="val"):
    """A Karpathy split file object (Flickr style: no filepath) for (image, caption) pairs, tokens from
    tokenize_caption."""
    entries = {}
    for image, caption in captions:
        entry = entries.setdefault(image, {"filename": image, "imgid": len(entries), "split": split, "sentences": []})
        entry["sentences"].append({"tokens": tokenize_caption(caption), "raw": caption})
    return {"dataset": "flickr8k", "images": list(entries.values())}


def write(tmp_path, name, content):
    """Write ``content`` (str, bytes, or a JSON-able object) to tmp_path/name and return the path."""
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8", newline="")
    else:
        path.write_text(json.dumps(content), encoding="utf-8")
    return path


def test_coco_file_parsed_into_one_record_per_annotation(tmp_path):
    content = {"images": [{"id": 1, "file_name": "COCO_val2014_000000000001.jpg"}, {"id": 7, "file_name": "b.jpg"}],
               "annotations": [{"id": 3, "image_id": 7, "caption": "A cat."},
                               {"id": 4, "image_id": 1, "caption": "A dog"},
                               {"id": 5, "image_id": 7, "caption": "Another cat"}]}
    assert read_caption_file(write(tmp_path, "captions_val2014.json", content)) == ("coco", [
        CaptionRecord("b.jpg", None, "A cat.", None),
        CaptionRecord("COCO_val2014_000000000001.jpg", None, "A dog", None),
        CaptionRecord("b.jpg", None, "Another cat", None)])


def test_split_argument_sets_the_split_of_every_coco_and_csv_record(tmp_path):
    coco = write(tmp_path, "coco.json", coco_content())
    table = write(tmp_path, "captions.csv", "image,caption\na.jpg,a dog\nb.jpg,a cat\n")
    assert {r.split for r in read_caption_file(coco, split="val")[1]} == {"val"}
    assert [r.split for r in read_caption_file(table, split="test")[1]] == ["test", "test"]


def test_karpathy_file_parsed_into_one_record_per_sentence(tmp_path):
    content = {"images": [
        {"filepath": "val2014", "filename": "COCO_val2014_000000000042.jpg", "split": "restval", "cocoid": 42,
         "sentences": [{"tokens": ["a", "dog"], "raw": "A dog."}, {"tokens": [], "raw": "!!"}]},
        {"filepath": "", "filename": "1000.jpg", "split": "test", "sentences": [{"raw": "No tokens here"}]},
        {"filename": "2000.jpg", "split": "train", "sentences": [{"tokens": ["x"], "raw": "X"}]}]}
    assert read_caption_file(write(tmp_path, "dataset_coco.json", content)) == ("karpathy", [
        CaptionRecord("val2014/COCO_val2014_000000000042.jpg", "restval", "A dog.", ("a", "dog")),
        CaptionRecord("val2014/COCO_val2014_000000000042.jpg", "restval", "!!", ()),
        CaptionRecord("1000.jpg", "test", "No tokens here", None),
        CaptionRecord("2000.jpg", "train", "X", ("x",))])


@pytest.mark.parametrize("end", ["\n", "\r\n", "\r"])
def test_csv_parsed_with_extra_columns_quotes_blank_lines_and_a_byte_order_mark(tmp_path, end):
    text = end.join(['\ufeffimage,id,caption,source', 'a.jpg,1,"A dog, running",web', '',
                     ' b.jpg ,2,"Two lines\nof caption",web', ''])
    assert read_caption_file(write(tmp_path, "captions.csv", text)) == ("csv", [
        CaptionRecord("a.jpg", None, "A dog, running", None),
        CaptionRecord("b.jpg", None, "Two lines\nof caption", None)])


def test_tsv_with_commas_in_its_captions_and_a_split_column(tmp_path):
    text = "Image\tSplit\tCaption\na.jpg\ttrain\tA dog, a cat, and a bird\nb.jpg\ttest\tA cat\n"
    assert read_caption_file(write(tmp_path, "captions.tsv", text)) == ("csv", [
        CaptionRecord("a.jpg", "train", "A dog, a cat, and a bird", None),
        CaptionRecord("b.jpg", "test", "A cat", None)])


def test_the_same_captions_give_the_same_records_in_all_three_formats(tmp_path):
    with open(tmp_path / "captions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["caption", "split", "image"])
        writer.writerows([caption, "val", image] for image, caption in CAPTIONS)
    read = {"coco": read_caption_file(write(tmp_path, "coco.json", coco_content()), split="val"),
            "karpathy": read_caption_file(write(tmp_path, "karpathy.json", karpathy_content())),
            "csv": read_caption_file(tmp_path / "captions.csv")}
    # Sorted: a Karpathy file groups its sentences by image, so their order differs from the others'.
    expected = sorted((image, "val", tokenize_caption(caption)) for image, caption in CAPTIONS)
    for name, (format_name, records) in read.items():
        assert format_name == name
        assert sorted((r.image, r.split, tokenize_caption(r.caption)) for r in records) == expected, name
    assert all(list(r.tokens) == tokenize_caption(r.caption) for r in read["karpathy"][1])


@pytest.mark.parametrize("name, content, format_name", [
    ("data.csv", coco_content(), "coco"),
    ("x.json", "image,caption\na.jpg,a dog\n", "csv"),
    ("captions.txt", karpathy_content(), "karpathy"),
    ("captions.tsv", "\n  " + json.dumps(coco_content(), indent=2), "coco"),
    ("no_suffix", "image\tcaption\na.jpg\ta dog\n", "csv"),
])
def test_format_recognised_by_content_not_by_file_name(tmp_path, name, content, format_name):
    assert read_caption_file(write(tmp_path, name, content))[0] == format_name


@pytest.mark.parametrize("text, words", [
    ("A man riding a horse.", ["a", "man", "riding", "a", "horse"]),
    ("Hello, world!", ["hello", "world"]),
    ("don't stop", ["dont", "stop"]),
    ("Two DOGS, 3 cats & 12 birds", ["two", "dogs", "3", "cats", "12", "birds"]),
    ("well-known state-of-the-art", ["wellknown", "stateoftheart"]),
    ("a café in Zürich", ["a", "café", "in", "zürich"]),
    ("a cafe\u0301", ["a", "café"]),  # the accent as a combining mark
    ("  tabs\tand\nnewlines  ", ["tabs", "and", "newlines"]),
    ("... !? --", []),
    ("", []),
])
def test_tokenize_caption(text, words):
    assert tokenize_caption(text) == words


def coco_with(**changes):
    """coco_content() with its first image or annotation entries changed, or its top-level keys replaced."""
    content = coco_content()
    for key, value in changes.items():
        kind, _, field = key.partition("__")
        if field:
            content[kind][0][field] = value
        else:
            content[kind] = value
    return content


def karpathy_with(**changes):
    """karpathy_content() with its first image entry (or that entry's first sentence, s_ keys) changed."""
    content = karpathy_content()
    for key, value in changes.items():
        if key.startswith("s_"):
            content["images"][0]["sentences"][0][key[2:]] = value
        else:
            content["images"][0][key] = value
    return content


DUPLICATE_COCO_ID = coco_with(images=coco_content()["images"] + [{"id": 10, "file_name": "z.jpg"}])
DUPLICATE_KARPATHY_FILE = {"images": karpathy_content()["images"] + [karpathy_content()["images"][0]]}
GOOD_CSV = "image,caption\na.jpg,a dog\n"

# (case, file name, content (None: no file), split argument, what the message must say)
ERROR_CASES = [
    ("missing", "gone.json", None, None, "no such file"),
    ("directory", "folder", "DIR", None, "cannot be read"),
    ("malformed_json", "c.json", '{"images": [,]}', None, "malformed or truncated JSON at line 1"),
    ("truncated_json", "c.json", json.dumps(coco_content())[:-20], None, "malformed or truncated JSON"),
    ("json_neither", "c.json", {"info": {}, "licenses": []}, None, "neither COCO caption annotations"),
    ("json_list", "c.json", [1, 2], None, "neither COCO caption annotations"),
    ("coco_image_info_only", "c.json", {"images": coco_content()["images"]}, None, "neither COCO"),
    ("json_no_images", "c.json", {"images": []}, None, "neither COCO"),
    ("json_images_of_numbers", "c.json", {"images": [1, 2]}, None, "neither COCO"),
    ("prose", "notes.txt", "just some words\nand more\n", None, "matches none of the three formats"),
    ("csv_without_caption", "c.csv", "image,text\na.jpg,a dog\n", None, "matches none of the three formats"),
    ("empty_file", "c.csv", "", None, "matches none of the three formats"),
    ("unknown_image_id", "c.json", coco_with(annotations__image_id=99), None, "annotation 0 names image id 99"),
    ("duplicate_coco_id", "c.json", DUPLICATE_COCO_ID, None, "images[3]: image id 10 appears twice"),
    ("duplicate_karpathy_file", "k.json", DUPLICATE_KARPATHY_FILE, None, "images[3]: image a.jpg appears twice"),
    ("karpathy_bad_split", "k.json", karpathy_with(split="dev"), None, "images[0] (a.jpg) has split 'dev'"),
    ("csv_empty_caption", "c.csv", "image,caption\na.jpg,a dog\nb.jpg,  \n", None, "line 3: the caption cell"),
    ("csv_empty_image", "c.csv", "image,caption\n,a dog\n", None, "line 2: the image cell is empty"),
    ("coco_empty_caption", "c.json", coco_with(annotations__caption=" "), None, "annotation 0 has an empty"),
    ("karpathy_empty_raw", "k.json", karpathy_with(s_raw=""), None, "(a.jpg) sentence 0 has an empty 'raw'"),
    ("csv_bad_split", "c.csv", "image,caption,split\na.jpg,a dog,validation\n", None, "split 'validation'"),
    ("invalid_utf8", "c.csv", b"\xef\xbb\xbfimage,caption\na.jpg,caf\xe9 au lait\n", None,
     "not valid UTF-8 at line 2;"),
    ("split_for_karpathy", "k.json", karpathy_content(), "train", "names each image's split itself"),
    ("bad_split_argument", "c.csv", GOOD_CSV, "dev", "unknown split 'dev'"),
    ("split_for_csv_with_split_column", "c.csv", "image,caption,split\na.jpg,a dog,val\n", "val", "already says"),
    ("csv_cell_count", "c.csv", "image,caption\na.jpg,a dog, running\n", None, "line 2 has 3 cells"),
    ("csv_duplicate_column", "c.csv", "image,caption,Caption\na.jpg,a,b\n", None, "column 'caption' twice"),
    ("csv_huge_field", "c.csv", "image,caption\na.jpg," + "x" * 200_000 + "\n", None, "unreadable as CSV/TSV"),
    ("coco_annotations_not_list", "c.json", coco_with(annotations={}), None, "lacks 'annotations' or it is not"),
    ("coco_image_not_object", "c.json", coco_with(images=[1]), None, "images[0] is not a JSON object"),
    ("coco_caption_not_string", "c.json", coco_with(annotations__caption=5), None, "annotation 0 lacks 'caption'"),
    ("coco_boolean_image_id", "c.json", coco_with(images__id=True), None, "images[0] lacks 'id'"),
    ("karpathy_tokens_not_strings", "k.json", karpathy_with(s_tokens=[1]), None, "'tokens' is not a list of"),
    ("karpathy_filepath_not_string", "k.json", karpathy_with(filepath=3), None, "'filepath' is not a string"),
]


@pytest.mark.parametrize("name, content, split, says", [case[1:] for case in ERROR_CASES],
                         ids=[case[0] for case in ERROR_CASES])
def test_every_bad_file_is_a_one_line_user_error_naming_the_file(tmp_path, name, content, split, says):
    path = tmp_path / name
    if content == "DIR":
        path.mkdir()
    elif content is not None:
        write(tmp_path, name, content)
    with pytest.raises(UserError) as caught:
        read_caption_file(path, split=split)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and says in message, message
