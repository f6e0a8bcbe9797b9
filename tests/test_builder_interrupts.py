"""Ctrl-C during the ``python -m`` dataset builders (the shapes world, the COCO installer): at start-up, while their
imports load, and in the middle of the work, one line and exit code 130, and no dataset folder, whole or half
written (a download stopped midway keeps only its ``.part`` file, which the next run resumes)."""
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILDERS = {"core.datasets.shapes_build": "--out", "core.datasets.coco": "--dir"}
TINY_WORLD = ["--num-train", "64", "--num-val", "16", "--num-test", "0", "--num-novel", "0", "--encoder-epochs", "50",
              "--pca-dim", "8"]


def start(module, *args):
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def interrupt(process):
    """Ctrl-C to ``process``; its stderr once it exits with code 130."""
    os.kill(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    return err


def loading_imports(process):
    """Whether ``process`` has begun loading numpy: its module code runs, past the interpreter's own start-up (which
    no program can guard; a cold start compiling the sources takes long on a busy machine), and its imports load."""
    try:
        return "numpy" in Path(f"/proc/{process.pid}/maps").read_text()
    except OSError:  # no /proc: a fixed pause instead
        time.sleep(0.5)
        return True


def wait_for(condition, process, seconds=120):
    deadline = time.monotonic() + seconds
    while not condition() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert condition(), process.communicate(timeout=10)


def test_ctrl_c_during_the_shapes_build_leaves_no_folder(tmp_path):
    process = start("core.datasets.shapes_build", "--out", str(tmp_path / "shapes"), *TINY_WORLD)
    wait_for(lambda: any(tmp_path.glob(".shapes.*")), process)  # its staging folder: the build is under way
    err = interrupt(process)  # the builder shows its stages' progress bars on stderr, then the one line
    assert err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


class StallingHandler(BaseHTTPRequestHandler):
    """Promises a large archive, sends a little of it, then stalls until the test ends."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(10 ** 7))
        self.end_headers()
        self.wfile.write(b"PK" + bytes(4094))
        self.wfile.flush()
        self.server.done.wait(60)

    def log_message(self, *args):
        pass


@pytest.fixture
def stalling_url():
    """The URL of an archive whose download never ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), StallingHandler)
    server.done = threading.Event()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/coco.zip"
    server.done.set()
    server.shutdown()


@pytest.mark.parametrize("module", BUILDERS)
def test_ctrl_c_during_start_up_is_one_line_and_code_130(module, tmp_path, stalling_url):
    extra = ["--url", stalling_url, "--no-progress"] if module == "core.datasets.coco" else []
    process = start(module, BUILDERS[module], str(tmp_path / "data"), *extra)
    wait_for(lambda: loading_imports(process), process, seconds=60)
    assert interrupt(process).strip().splitlines() == ["interrupted"]
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".part")] == []


def test_ctrl_c_during_the_coco_download_leaves_no_dataset(tmp_path, stalling_url):
    process = start("core.datasets.coco", "--dir", str(tmp_path / "coco_captioning"), "--url", stalling_url,
                    "--no-progress")
    part = tmp_path / "coco_captioning.zip.part"
    wait_for(part.is_file, process)  # the download has begun: the archive's first bytes are on their way
    time.sleep(0.5)
    assert interrupt(process).strip().splitlines() == ["interrupted"]
    assert [p.name for p in tmp_path.iterdir()] == [part.name]
