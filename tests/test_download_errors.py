"""The COCO installer's failures as a user meets them: one stderr line, exit code 2, no traceback, no --dir left.

Archives come from a server on 127.0.0.1 (tests/test_download.py's). A full disk is a file size limit on the
subprocess (writes past it fail with EFBIG, as they would with ENOSPC); a folder that cannot be made is a path
under a plain file, since permission bits do not stop root, who runs CI.
"""
import io
import resource
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.test_download import coco_zip_bytes, server  # noqa: F401  (server is a fixture)

REPO_ROOT = Path(__file__).resolve().parent.parent
MODULE = [sys.executable, "-m", "core.datasets.coco"]
SCRIPT = ["bash", "core/datasets/get_datasets.sh"]


def run_installer(command, target, url, file_size_limit=None):
    """Run ``command`` with ``--dir target --url url``; ``file_size_limit`` bytes caps every file it writes."""
    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))
    return subprocess.run([*command, "--dir", str(target), "--url", url, "--no-progress"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60,
                          preexec_fn=None if file_size_limit is None else limit_file_size)


def assert_one_error_line(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


def flip_first_deflated_byte(archive, member):
    """``archive`` (bytes) with the first byte of ``member``'s deflate stream inverted: zlib rejects the stream."""
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        offset = zf.getinfo(member).header_offset
    name_length, extra_length = struct.unpack("<HH", archive[offset + 26:offset + 30])  # the local header's
    data = bytearray(archive)
    data[offset + 30 + name_length + extra_length] ^= 0xFF
    return bytes(data)


def test_member_with_a_flipped_byte(server, tmp_path):  # noqa: F811
    archive = coco_zip_bytes(tmp_path)
    server.files["coco_captioning.zip"] = flip_first_deflated_byte(archive, "coco_captioning/coco2014_captions.h5")
    target = tmp_path / "datasets" / "coco_captioning"
    result = run_installer(MODULE, target, server.url("coco_captioning.zip"))
    assert_one_error_line(result, "coco_captioning.zip is not a readable zip archive", "delete it")
    assert not target.exists()


@pytest.mark.parametrize("url", ["notaurl", "127.0.0.1/coco_captioning.zip"])
def test_url_without_a_scheme(server, tmp_path, url):  # noqa: F811
    target = tmp_path / "coco_captioning"
    result = run_installer(MODULE, target, url)
    assert_one_error_line(result, f"--url must be an http(s) or file URL, got '{url}'")
    assert list(tmp_path.iterdir()) == [] and server.requests == []


def test_unknown_flag(tmp_path):
    result = subprocess.run([*MODULE, "--dir", str(tmp_path / "coco"), "--bogus"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    assert_one_error_line(result, "--bogus")
    assert list(tmp_path.iterdir()) == []


def test_full_disk_while_downloading(server, tmp_path):  # noqa: F811
    server.files["coco_captioning.zip"] = coco_zip_bytes(tmp_path)
    target = tmp_path / "datasets" / "coco_captioning"
    result = run_installer(SCRIPT, target, server.url("coco_captioning.zip"), file_size_limit=1000)
    assert_one_error_line(result, f"cannot write in {target.parent} (File too large)")
    assert not target.exists()


def test_full_disk_while_extracting(server, tmp_path):  # noqa: F811
    target = tmp_path / "datasets" / "coco_captioning"
    target.parent.mkdir()
    (target.parent / "coco_captioning.zip").write_bytes(coco_zip_bytes(tmp_path))  # downloaded earlier
    result = run_installer(SCRIPT, target, server.url("coco_captioning.zip"), file_size_limit=1000)
    assert_one_error_line(result, f"cannot write in {target.parent} (File too large)", "--dir")
    assert [p.name for p in target.parent.iterdir()] == ["coco_captioning.zip"]  # no staging folder left
    assert server.requests == []


def test_folder_that_cannot_be_made(server, tmp_path):  # noqa: F811
    (tmp_path / "plain_file").write_text("not a folder")
    target = tmp_path / "plain_file" / "datasets" / "coco_captioning"
    result = run_installer(SCRIPT, target, server.url("coco_captioning.zip"))
    assert_one_error_line(result, "cannot write in", "plain_file")
    assert (tmp_path / "plain_file").read_text() == "not a folder"


@pytest.fixture
def bare_python(tmp_path):
    """An interpreter without the project's packages: python without site-packages, isolated from PYTHONPATH."""
    path = tmp_path / "bare_python"
    path.write_text(f"#!/bin/sh\nexec {sys.executable} -S -I \"$@\"\n")
    path.chmod(0o755)
    return str(path)


def test_the_script_without_the_environment_answers_help_and_refuses_the_rest(bare_python, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PYTHON": bare_python}
    shown = subprocess.run(SCRIPT + ["--help"], cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=30)
    assert shown.returncode == 0 and "Download the CS231n COCO captioning data" in shown.stdout, shown.stderr
    assert "Traceback" not in shown.stderr
    run = subprocess.run(SCRIPT + ["--dir", str(tmp_path / "coco")], cwd=REPO_ROOT, capture_output=True, text=True,
                         env=env, timeout=30)
    assert_one_error_line(run, "cannot import the project's packages", "make test")
    assert not (tmp_path / "coco").exists()
