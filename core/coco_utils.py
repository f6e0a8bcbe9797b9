"""The classic CS231n import path: ``from core.coco_utils import load_coco_data, decode_captions,
sample_coco_minibatch``.

The code lives on the data floor (``core.data``); this module only re-exports what CS231n users type.
"""
from core.data.layout import CAPTIONS_FILE, SPLITS, VOCAB_FILE, features_file, urls_file
from core.data.loader import load_coco_data, save_captions_h5, save_vocab_json
from core.data.minibatch import sample_coco_minibatch
from core.data.store import LazyFeatures
from core.data.vocab import build_vocab, decode_captions, encode_captions

__all__ = ["load_coco_data", "sample_coco_minibatch", "LazyFeatures", "save_captions_h5", "save_vocab_json",
           "build_vocab", "encode_captions", "decode_captions", "features_file", "urls_file", "CAPTIONS_FILE",
           "VOCAB_FILE", "SPLITS"]
