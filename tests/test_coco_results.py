"""inference.py --coco-results: the COCO results format, read by the official tools (pycocotools' COCO and
pycocoevalcap's COCOEvalCap) to the same metrics as our evaluation."""
import json

import pytest

import inference
import training
from core.evaluation.loop import coco_results
from core.evaluation.metrics import java_available
from core.runtime.errors import UserError


def test_image_ids_come_from_the_file_names():
    urls = ["http://images.cocodataset.org/val2014/COCO_val2014_000000391895.jpg", "photos/0042.png"]
    assert coco_results({0: "a cat", 1: "a dog"}, urls, "val2014_urls.txt") == [
        {"image_id": 391895, "caption": "a cat"}, {"image_id": 42, "caption": "a dog"}]
    with pytest.raises(UserError, match="val2014_urls.txt line 1"):
        coco_results({0: "x"}, ["photos/beach.jpg"], "val2014_urls.txt")
    with pytest.raises(UserError, match="same image id 7"):
        coco_results({0: "x", 1: "y"}, ["a/7.jpg", "b/007.jpg"], "val2014_urls.txt")


@pytest.mark.skipif(not java_available(), reason="the COCO tokenizer (PTBTokenizer) runs on Java")
def test_cocoevalcap_reads_the_file_to_our_metrics(tiny_dataset, tmp_path, monkeypatch):
    from pycocoevalcap import eval as coco_eval
    from pycocotools.coco import COCO

    run = tmp_path / "run"
    assert training.main(["--model", "lstm", "--data-dir", str(tiny_dataset), "--out", str(run), "--epochs", "1",
                          "--hidden-dim", "8", "--wordvec-dim", "8", "--no-progress"]) == 0
    results, output = tmp_path / "results.json", tmp_path / "val.json"
    assert inference.main(["--model", "lstm", "--checkpoint", str(run / "best.npz"), "--evaluate", "--output",
                           str(output), "--coco-results", str(results), "--no-progress"]) == 0
    record = json.loads(output.read_text())
    # The tiny dataset's URLs end in .../val/<row>.jpg, so an image's COCO id is its row.
    annotations = {"info": {}, "licenses": [], "type": "captions",
                   "images": [{"id": int(row)} for row in record["references"]],
                   "annotations": [{"id": k, "image_id": int(row), "caption": text}
                                   for k, (row, text) in enumerate((row, text) for row, refs in
                                                                   record["references"].items() for text in refs)]}
    (tmp_path / "captions_val.json").write_text(json.dumps(annotations))
    coco = COCO(str(tmp_path / "captions_val.json"))
    monkeypatch.setattr(coco_eval, "Spice", NoSpice)  # SPICE downloads Stanford models: no network here
    evaluation = coco_eval.COCOEvalCap(coco, coco.loadRes(str(results)))
    evaluation.evaluate()
    ours = record["metrics"]
    for theirs, name in (("Bleu_4", "BLEU-4"), ("ROUGE_L", "ROUGE-L"), ("CIDEr", "CIDEr"), ("METEOR", "METEOR")):
        assert evaluation.eval[theirs] == pytest.approx(ours[name], abs=1e-9), name


class NoSpice:
    def compute_score(self, gts, res):
        return 0.0, [0.0] * len(gts)

    def method(self):
        return "SPICE"
