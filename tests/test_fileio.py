"""core.runtime.fileio: atomic writes clear what dead writers left, and refuse unwritable places in one line."""
import os
import subprocess
import sys

import pytest

from core.runtime.errors import UserError
from core.runtime.fileio import FolderLock, atomic_write_text, check_writable_dir, remove_left_by_dead, writable_file


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid  # reaped: no process has this PID now (barring reuse within the test)


def test_a_write_removes_the_temporaries_of_dead_writers_only(tmp_path):
    dead = tmp_path / f".best.npz.{dead_pid()}.abc.tmp"
    alive = tmp_path / f".best.npz.{os.getpid()}.def.tmp"
    other = tmp_path / f".last.npz.{dead_pid()}.ghi.tmp"
    for path in (dead, alive, other):
        path.write_text("half")
    atomic_write_text(tmp_path / "best.npz", "whole")
    assert not dead.exists() and alive.exists() and other.exists()
    assert (tmp_path / "best.npz").read_text() == "whole"


def test_left_folders_of_dead_builds_are_removed(tmp_path):
    (tmp_path / f".shapes.{dead_pid()}.x.building").mkdir()
    (tmp_path / f".shapes.{os.getpid()}.y.building").mkdir()
    remove_left_by_dead(tmp_path, ".shapes.", ".building")
    assert [p.name for p in tmp_path.iterdir()] == [f".shapes.{os.getpid()}.y.building"]


def test_unwritable_places_are_one_line_naming_the_flag(tmp_path):
    (tmp_path / "file").write_text("x")
    for check, path, fragment in ((check_writable_dir, tmp_path / "file", "is a file"),
                                  (check_writable_dir, tmp_path / "file" / "sub", "is a file"),
                                  (writable_file, tmp_path, "is a folder"),
                                  (writable_file, "/proc/forbidden/out.json", "not writable")):
        with pytest.raises(UserError, match=fragment) as raised:
            check(path, "--out")
        assert str(raised.value).startswith("--out") and "\n" not in str(raised.value)
    assert not (tmp_path / "file" / "sub").exists()


def test_a_held_folder_lock_names_its_holder(tmp_path):
    with FolderLock(tmp_path, "--out"):
        with pytest.raises(UserError, match=f"PID {os.getpid()}"):
            FolderLock(tmp_path, "--out").__enter__()
    with FolderLock(tmp_path, "--out"):  # released on exit
        pass
