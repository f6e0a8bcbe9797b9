"""Which weights a dataset's features were made with, and the checks that new features come from the same ones.

A dataset's encoder record (``encoder.json``) names its encoder and the weights its features came from, by file name
and SHA-256: of the VGG16 file, and of the tensors in the shapes CNN's ``encoder.pt`` (``torch.save`` writes a random
id into every file, so the same weights saved twice differ as files). Features of the same images from other
weights lie elsewhere in feature space, and a model trained on the recorded ones would caption them wrongly
without any error: encoding new images (``inference.py --image``) and extracting features again into a folder that
holds some compare digests first, and refuse in one line naming both.
"""
import hashlib
import json
from pathlib import Path

from core.data.download import sha256_of
from core.data.layout import ENCODER_INFO_FILE, WEIGHTS_DIGEST_KEY, WEIGHTS_NAME_KEY
from core.features.vgg16 import default_weights_path
from core.runtime.errors import UserError

ENCODER_NAMES = ("vgg16", "shapes")


def weights_record(path):
    """The encoder record's entries naming the weights file at ``path``: its name and SHA-256."""
    path = Path(path)
    return {WEIGHTS_NAME_KEY: path.name, WEIGHTS_DIGEST_KEY: sha256_of(path)}


def read_encoder_info(base_dir):
    """The dict in ``base_dir/encoder.json``; UserError naming the file when missing or malformed."""
    path = Path(base_dir) / ENCODER_INFO_FILE
    if not path.is_file():
        raise UserError(f"{path}: not found; this dataset does not record its encoder, rebuild its features")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable ({exc}); rebuild the dataset's features") from None
    if not isinstance(info, dict) or info.get("name") not in ENCODER_NAMES:
        raise UserError(f"{path}: needs a \"name\" among {', '.join(ENCODER_NAMES)}; rebuild the dataset's features")
    digest = info.get(WEIGHTS_DIGEST_KEY)
    if digest is not None and not (isinstance(digest, str) and len(digest) == 64):
        raise UserError(f"{path}: \"{WEIGHTS_DIGEST_KEY}\" is not a SHA-256 hex digest; rebuild the dataset's features")
    return info


def _described(info):
    """'<weights file> (SHA-256 <digest>)' of an encoder record."""
    return f"{info.get(WEIGHTS_NAME_KEY, 'weights')} (SHA-256 {info[WEIGHTS_DIGEST_KEY]})"


def recorded_vgg16_weights(data_dir, info, weights=None):
    """The VGG16 weights file with the digest that ``data_dir``'s encoder record ``info`` names: ``weights``
    (``--vgg16-weights``) when given, else the torch hub cache file. UserError in one line otherwise: no digest
    recorded, no such file, or another digest (both named, with the fix)."""
    record = Path(data_dir) / ENCODER_INFO_FILE
    if info.get(WEIGHTS_DIGEST_KEY) is None:
        raise UserError(f"{record} records no digest of the VGG16 weights its features were made with (built before "
                        "records had one), so new images cannot be checked to land in the same feature space: extract "
                        "its features again with features_extraction.py --vgg16-weights FILE")
    path = Path(weights) if weights is not None else default_weights_path()
    if not path.is_file():
        where = f"--vgg16-weights {path}: file not found" if weights is not None else \
            f"no VGG16 weights in the torch hub cache ({path})"
        raise UserError(f"{where}; {data_dir}'s features were made with {_described(info)}: pass that file with "
                        "--vgg16-weights")
    digest = sha256_of(path)
    if digest != info[WEIGHTS_DIGEST_KEY]:
        source = "--vgg16-weights" if weights is not None else "the torch hub cache's"
        raise UserError(f"{source} {path} has SHA-256 {digest} but {data_dir}'s features were made with "
                        f"{_described(info)}: pass that file with --vgg16-weights")
    return path


def tensors_digest(state):
    """The SHA-256 of a state_dict's tensors (names, dtypes, shapes, values in key order), whatever file holds them."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def check_loaded_weights(encoder, info, base_dir):
    """UserError unless the tensors of ``encoder``, loaded from ``base_dir``, have the digest its encoder record
    ``info`` names (a record without one is not checked)."""
    digest = tensors_digest(encoder.state_dict()) if info.get(WEIGHTS_DIGEST_KEY) is not None else None
    if digest is not None and digest != info[WEIGHTS_DIGEST_KEY]:
        raise UserError(f"the weights in {base_dir} have SHA-256 {digest} but {Path(base_dir) / ENCODER_INFO_FILE} "
                        f"records {info[WEIGHTS_DIGEST_KEY]}: the two files come from different builds; rebuild the "
                        "dataset")


def check_same_weights(out_dir, info, flag="--out"):
    """UserError when ``out_dir`` already holds features made with other weights than the record ``info`` names,
    before any of them is replaced: a model trained on them would read the new ones wrongly. A folder without
    features, or whose record names no digest, may receive them."""
    if not (Path(out_dir) / ENCODER_INFO_FILE).is_file():
        return
    existing = read_encoder_info(out_dir)
    if existing.get(WEIGHTS_DIGEST_KEY) is not None and existing[WEIGHTS_DIGEST_KEY] != info[WEIGHTS_DIGEST_KEY]:
        raise UserError(f"{flag} {out_dir} holds features made with {_described(existing)}, not with "
                        f"{_described(info)}: use those weights, or another {flag}")
