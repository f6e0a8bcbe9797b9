"""Installing Karpathy's dataset_coco.json through get_datasets.sh --karpathy, against a server on 127.0.0.1: the
same downloader as the CS231n archive (resume, checksum), safe extraction, and every refusal leaving nothing."""
import hashlib
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from core.datasets.karpathy_install import install_karpathy_splits
from core.runtime.errors import UserError
from tests.karpathy_helpers import karpathy_content
from tests.test_download import coco_zip_bytes, server  # noqa: F401 (server is a fixture)

REPO_ROOT = Path(__file__).resolve().parent.parent
COCO_JSON = json.dumps(karpathy_content()).encode()


def zip_bytes(members, compression=zipfile.ZIP_DEFLATED):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


GOOD_ZIP = zip_bytes({"dataset_coco.json": COCO_JSON, "dataset_flickr8k.json": b'{"images": []}'})


def get_datasets(*args):
    return subprocess.run(["bash", "core/datasets/get_datasets.sh", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)


def test_get_datasets_karpathy_installs_both(server, tmp_path):  # noqa: F811
    server.files["coco_captioning.zip"] = coco_zip_bytes(tmp_path)
    server.files["caption_datasets.zip"] = GOOD_ZIP
    target = tmp_path / "datasets" / "coco_captioning"
    sha = hashlib.sha256(GOOD_ZIP).hexdigest()
    result = get_datasets("--dir", str(target), "--url", server.url("coco_captioning.zip"), "--no-progress",
                          "--karpathy", "--karpathy-url", server.url("caption_datasets.zip"), "--karpathy-sha256", sha)
    assert result.returncode == 0, result.stderr
    assert (target / "dataset_coco.json").read_bytes() == COCO_JSON
    assert not (target / "dataset_flickr8k.json").exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["coco_captioning"]  # archives and staging gone
    assert install_karpathy_splits(target, url=server.url("caption_datasets.zip")) == target / "dataset_coco.json"
    assert len(server.requests) == 2  # installed: checked, nothing downloaded again


def test_a_partial_archive_resumes(server, tmp_path):  # noqa: F811
    server.files["caption_datasets.zip"] = GOOD_ZIP
    (tmp_path / "coco").mkdir()
    (tmp_path / "caption_datasets.zip.part").write_bytes(GOOD_ZIP[:100])
    install_karpathy_splits(tmp_path / "coco", url=server.url("caption_datasets.zip"), keep_archive=True,
                            progress=False)
    assert server.requests == [("/caption_datasets.zip", "bytes=100-")]
    assert (tmp_path / "caption_datasets.zip").read_bytes() == GOOD_ZIP
    assert (tmp_path / "coco" / "dataset_coco.json").read_bytes() == COCO_JSON


def corrupt(data):
    raw = bytearray(data)
    raw[raw.index(b'"images"') + 3] ^= 0xFF  # a stored member's byte: its CRC fails
    return bytes(raw)


STORED = zip_bytes({"dataset_coco.json": COCO_JSON}, zipfile.ZIP_STORED)
BAD_ARCHIVES = [
    ("member escaping the target", zip_bytes({"dataset_coco.json": COCO_JSON, "../evil.json": b"{}"}), "refusing"),
    ("absolute member", zip_bytes({"dataset_coco.json": COCO_JSON, "/tmp/evil_karpathy.json": b"{}"}), "refusing"),
    ("corrupt member", corrupt(STORED), "fails its CRC check"),
    ("not a zip", b"<html>moved</html>", "not a readable zip archive"),
    ("no dataset_coco.json", zip_bytes({"dataset_flickr8k.json": b"{}"}), "holds no dataset_coco.json"),
    ("dataset_coco.json twice", zip_bytes({"a/dataset_coco.json": COCO_JSON, "b/dataset_coco.json": COCO_JSON}),
     "holds 2 dataset_coco.json"),
    ("not Karpathy's structure", zip_bytes({"dataset_coco.json": b'{"annotations": []}'}), "no list of 'images'"),
    ("not JSON", zip_bytes({"dataset_coco.json": b"\xff\xfe not json"}), "cannot read"),
]


@pytest.mark.parametrize("name, archive, fragment", BAD_ARCHIVES, ids=[case[0] for case in BAD_ARCHIVES])
def test_a_bad_archive_installs_nothing(server, tmp_path, name, archive, fragment):  # noqa: F811
    server.files["caption_datasets.zip"] = archive
    (tmp_path / "coco").mkdir()
    with pytest.raises(UserError, match=fragment) as info:
        install_karpathy_splits(tmp_path / "coco", url=server.url("caption_datasets.zip"), progress=False)
    assert "\n" not in str(info.value)
    assert list((tmp_path / "coco").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["caption_datasets.zip", "coco"]  # no staging, no evil.json


def test_an_invalid_json_in_place_is_refused_not_overwritten(server, tmp_path):  # noqa: F811
    server.files["caption_datasets.zip"] = GOOD_ZIP
    (tmp_path / "coco").mkdir()
    (tmp_path / "coco" / "dataset_coco.json").write_text("[]")
    with pytest.raises(UserError, match="exists but is not Karpathy's COCO splits"):
        install_karpathy_splits(tmp_path / "coco", url=server.url("caption_datasets.zip"))
    assert (tmp_path / "coco" / "dataset_coco.json").read_text() == "[]" and server.requests == []


@pytest.mark.parametrize("flags, fragment", [
    (["--karpathy", "--karpathy-sha256", "abc"], "--karpathy-sha256 must be 64 hex digits"),
    (["--karpathy", "--karpathy-url", "ftp://x/caption_datasets.zip"], "--karpathy-url must be an http(s)"),
    (["--karpathy-url", "http://127.0.0.1:9/caption_datasets.zip"], "go with --karpathy"),
])
def test_bad_karpathy_flags_exit_2_before_any_download(server, tmp_path, flags, fragment):  # noqa: F811
    result = subprocess.run([sys.executable, "-m", "core.datasets.coco", "--dir", str(tmp_path / "coco"), "--url",
                             server.url("coco_captioning.zip"), *flags], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and fragment in result.stderr, result.stderr
    assert server.requests == [] and list(tmp_path.iterdir()) == []


def test_a_checksum_mismatch_deletes_the_download(server, tmp_path):  # noqa: F811
    server.files["caption_datasets.zip"] = GOOD_ZIP
    (tmp_path / "coco").mkdir()
    with pytest.raises(UserError, match="SHA-256"):
        install_karpathy_splits(tmp_path / "coco", url=server.url("caption_datasets.zip"), sha256="0" * 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco"]
