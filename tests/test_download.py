"""Tests of the resuming downloader, safe zip extraction and the COCO installer, against a server on 127.0.0.1."""
import hashlib
import io
import socket
import stat
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from core.data.download import download, safe_extract_zip
from core.datasets.coco import install_coco_captioning
from core.runtime.errors import UserError
from tests.test_coco_utils import write_dataset

REPO_ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class FileServer(ThreadingHTTPServer):
    """Serves ``files`` (path -> bytes); records each request's path and Range header.

    ``honour_range`` False makes it ignore Range like a simple server; ``cut_after`` makes it promise
    the whole file but close the connection after that many bytes, like a dropped connection.
    """

    def __init__(self):
        super().__init__(("127.0.0.1", 0), RangeHandler)
        self.files, self.requests = {}, []
        self.honour_range, self.cut_after = True, None

    def url(self, path):
        return f"http://127.0.0.1:{self.server_address[1]}/{path}"


class RangeHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        body = server.files.get(self.path.lstrip("/"))
        if body is None:
            self.send_error(404)
            return
        start, status = 0, 200
        ranged = self.headers.get("Range")
        if ranged and server.honour_range:
            start, status = int(ranged.removeprefix("bytes=").split("-")[0]), 206
        self.send_response(status)
        self.send_header("Content-Length", str(len(body) - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        sent = body[start:] if server.cut_after is None else body[start:start + server.cut_after]
        self.wfile.write(sent)

    def log_message(self, *args):
        pass  # keep test output clean


@pytest.fixture
def server():
    srv = FileServer()
    srv.files["payload.bin"] = PAYLOAD
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


def closed_port_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/payload.bin"


def test_full_download_verified(server, tmp_path):
    dest = download(server.url("payload.bin"), tmp_path / "sub" / "payload.bin", sha256=PAYLOAD_SHA,
                    size=len(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert sorted(p.name for p in dest.parent.iterdir()) == ["payload.bin"]
    assert server.requests == [("/payload.bin", None)]
    download(server.url("payload.bin"), dest, sha256_prefix=PAYLOAD_SHA[:8])  # present and verified: no request
    assert len(server.requests) == 1
    with pytest.raises(UserError, match="delete it"):
        download(server.url("payload.bin"), dest, sha256="0" * 64)


def test_resume_from_partial_file(server, tmp_path):
    dest = tmp_path / "payload.bin"
    Path(f"{dest}.part").write_bytes(PAYLOAD[:100_000])
    download(server.url("payload.bin"), dest, sha256_prefix=PAYLOAD_SHA[:8])
    assert server.requests == [("/payload.bin", "bytes=100000-")]
    assert dest.read_bytes() == PAYLOAD and not Path(f"{dest}.part").exists()


def test_restart_when_server_ignores_range(server, tmp_path):
    server.honour_range = False
    dest = tmp_path / "payload.bin"
    Path(f"{dest}.part").write_bytes(b"stale bytes from another file")
    download(server.url("payload.bin"), dest, sha256=PAYLOAD_SHA)
    assert server.requests[0][1] is not None and dest.read_bytes() == PAYLOAD


def test_dropped_connection_keeps_partial_then_resumes(server, tmp_path):
    dest = tmp_path / "payload.bin"
    server.cut_after = 120_000
    with pytest.raises(UserError, match="cannot download"):
        download(server.url("payload.bin"), dest, sha256=PAYLOAD_SHA)
    assert Path(f"{dest}.part").stat().st_size == 120_000 and not dest.exists()
    server.cut_after = None
    download(server.url("payload.bin"), dest, sha256=PAYLOAD_SHA)
    assert server.requests[-1] == ("/payload.bin", "bytes=120000-") and dest.read_bytes() == PAYLOAD


@pytest.mark.parametrize("expect", [{"sha256": "ab" * 32}, {"sha256_prefix": "00000000"}, {"size": 12}])
def test_mismatch_deletes_partial(server, tmp_path, expect):
    dest = tmp_path / "payload.bin"
    with pytest.raises(UserError, match=r"payload\.bin"):
        download(server.url("payload.bin"), dest, **expect)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["closed port", "missing file"])
def test_unreachable_raises_user_error(server, tmp_path, where):
    url = closed_port_url() if where == "closed port" else server.url("nothing.bin")
    dest = tmp_path / "payload.bin"
    with pytest.raises(UserError) as info:
        download(url, dest)
    message = str(info.value)
    assert f"cannot download {url}" in message and str(dest) in message and "\n" not in message
    assert not dest.exists()


def make_zip(path, members):
    """Write a zip of ``members`` (ZipInfo or name -> bytes)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def symlink_member(name, target):
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target


@pytest.mark.parametrize("bad", ["../evil.txt", "sub/../../evil.txt", "/tmp/evil_abs.txt", "symlink"])
def test_unsafe_zip_refused_and_nothing_extracted(tmp_path, bad):
    members = {"good.txt": b"fine"}
    if bad == "symlink":
        info, target = symlink_member("link", b"/etc/passwd")
        members[info] = target
    else:
        members[bad] = b"evil"
    archive = make_zip(tmp_path / "a.zip", members)
    with pytest.raises(UserError, match="refusing"):
        safe_extract_zip(archive, tmp_path / "out" / "target")
    assert list((tmp_path / "out").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "out"]


def test_good_zip_extracts_and_corrupt_zip_leaves_nothing(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"top/x.txt": b"x" * 1000, "top/sub/y.bin": PAYLOAD[:5000]})
    target = safe_extract_zip(archive, tmp_path / "out")
    assert (target / "top" / "x.txt").read_bytes() == b"x" * 1000
    assert (target / "top" / "sub" / "y.bin").read_bytes() == PAYLOAD[:5000]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "out"]
    raw = bytearray(archive.read_bytes())
    raw[raw.index(b"x" * 1000) + 500] ^= 0xFF  # flip a stored byte so its CRC fails
    (tmp_path / "bad.zip").write_bytes(bytes(raw))
    with pytest.raises(UserError, match="bad.zip"):
        safe_extract_zip(tmp_path / "bad.zip", tmp_path / "out2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "bad.zip", "out"]


def coco_zip_bytes(tmp_path):
    """The bytes of a tiny coco_captioning.zip holding a valid dataset under coco_captioning/."""
    write_dataset(tmp_path / "src" / "coco_captioning")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted((tmp_path / "src").rglob("*")):
            zf.write(path, path.relative_to(tmp_path / "src").as_posix())
    return buffer.getvalue()


def run_cli(args):
    return subprocess.run([sys.executable, "-m", "core.datasets.coco", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)


def test_coco_installer_end_to_end(server, tmp_path):
    server.files["coco_captioning.zip"] = coco_zip_bytes(tmp_path)
    target = tmp_path / "datasets" / "coco_captioning"
    sha = hashlib.sha256(server.files["coco_captioning.zip"]).hexdigest()
    result = run_cli(["--dir", str(target), "--url", server.url("coco_captioning.zip"), "--sha256", sha])
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in (tmp_path / "src" / "coco_captioning")
                                                              .iterdir())
    assert sorted(p.name for p in target.parent.iterdir()) == ["coco_captioning"]  # archive and staging gone
    install_coco_captioning(target)  # already installed: checked, nothing downloaded
    assert len(server.requests) == 1


def test_installer_refuses_archive_without_dataset(server, tmp_path):
    server.files["coco_captioning.zip"] = make_zip(tmp_path / "x.zip", {"coco_captioning/readme": b"x"}).read_bytes()
    target = tmp_path / "datasets" / "coco_captioning"
    with pytest.raises(UserError, match="lacks coco2014_captions.h5"):
        install_coco_captioning(target, url=server.url("coco_captioning.zip"))
    assert not target.exists()


@pytest.mark.parametrize("command", [[sys.executable, "-m", "core.datasets.coco"],
                                     ["bash", "core/datasets/get_datasets.sh"]])
def test_cli_server_down_exits_2_with_one_line(tmp_path, command):
    url = closed_port_url()
    result = subprocess.run([*command, "--dir", str(tmp_path / "coco"), "--url", url], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and f"cannot download {url}" in result.stderr
    assert not (tmp_path / "coco").exists()
