"""Writing files so that nothing is lost: atomic writes, writable-path checks, and a lock on a run's folder.

Every file the project writes goes through ``atomic_write``: a temporary file beside the target, renamed over
it only once complete, so a reader never sees half a file and a failed write leaves the previous file intact.
Temporary names carry the writer's PID, so a later write to the same target removes what a killed writer left.
"""
import errno
import fcntl
import glob
import os
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

from core.runtime.errors import UserError

TMP_SUFFIX = ".tmp"
LOCK_FILE = ".lock"
STAGING_PREFIX = ".staging."


def atomic_write(path, write):
    """Call ``write(tmp_path)`` then rename the temp file onto ``path``: readers never see half a file.

    An OS error (a full disk, a read-only folder) becomes a UserError naming ``path``; the previous file stays.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_left_by_dead(path.parent, f".{path.name}.", TMP_SUFFIX)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as err:
        raise _write_error(path, err) from None
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise _write_error(path, err) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path, text):
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def remove_left_by_dead(folder, prefix, suffix=""):
    """Remove the files and folders ``<prefix><pid>.<anything><suffix>`` in ``folder`` whose process ``pid`` is gone:
    what a writer killed mid-write left behind (temporaries, staging and build folders)."""
    for item in Path(folder).glob(f"{glob.escape(prefix)}*{glob.escape(suffix)}"):
        pid = item.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            if item.is_dir():
                shutil.rmtree(item, ignore_errors=True)
            else:
                item.unlink(missing_ok=True)


@contextmanager
def staged_files(folder):
    """Write several files as one: yields a staging folder inside ``folder``; once the block ends without error,
    every file in it moves into ``folder`` (renames, with Ctrl-C held until the last one), else none does.

    A staging folder that a killed process left behind is removed by the next call on the same folder.
    """
    folder = writable_dir(folder, "output folder")
    remove_left_by_dead(folder, STAGING_PREFIX)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}.", dir=folder))
    try:
        yield staging
        with _sigint_held():
            for path in sorted(staging.iterdir()):
                os.replace(path, folder / path.name)
    except OSError as err:
        raise _write_error(folder, err) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def _sigint_held():
    """Hold a Ctrl-C until the block is done, then deliver it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def build_folder(out, write):
    """Make the folder ``out`` by ``write(folder)`` into a staging folder beside it, then one rename (an older
    ``out`` is moved aside first and removed after): an interrupted build leaves the old folder, or none."""
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        for leftover in (".building", ".old"):  # what builds killed before their last rename left
            remove_left_by_dead(out.parent, f".{out.name}.", leftover)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".building", dir=out.parent))
    except OSError as err:
        raise _write_error(out, err) from None
    try:
        write(tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".old", dir=out.parent))
            out.rename(old / out.name)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except OSError as err:
        raise _write_error(out, err) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def pid_alive(pid):
    """Whether a process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def writable_dir(path, flag):
    """``path`` as a folder the run may write into (created if needed); UserError naming ``flag`` otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file, not a folder; choose a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-test.", delete=True)
        probe.close()
    except OSError as err:
        raise UserError(f"{flag} {path} is not writable ({err.strerror}); choose another folder") from None
    return path


def check_writable_dir(path, flag):
    """UserError naming ``flag`` unless a folder could be made or written at ``path``; creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file, not a folder; choose a folder")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"{flag} {path}: {existing} is a file, not a folder; choose another folder")
    try:
        tempfile.NamedTemporaryFile(dir=existing, prefix=".write-test.").close()
    except OSError as err:
        raise UserError(f"{flag} {path} is not writable ({err.strerror}); choose another folder") from None


def writable_file(path, flag):
    """``path`` as a file the run may write (its folder created if needed); UserError naming ``flag`` otherwise."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file name")
    writable_dir(path.parent, flag)
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{flag} {path} is not writable; choose another file")
    return path


class FolderLock:
    """An exclusive lock on a folder for the life of a run: a second run on it is refused, naming the holder.

    The kernel releases the lock when its process dies (``flock``), so a killed run leaves no stale lock.
    """

    def __init__(self, folder, flag):
        self.path, self.flag, self._fd = Path(folder) / LOCK_FILE, flag, None

    def __enter__(self):
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise _write_error(self.path, err) from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            raise UserError(f"{self.flag} {self.path.parent} is in use by another run (PID {holder}); wait for it "
                            "to end or choose another folder") from None
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, str(os.getpid()).encode(), 0)
        except OSError as err:
            os.close(self._fd)
            raise _write_error(self.path, err) from None
        return self

    def __exit__(self, *exc_info):
        os.close(self._fd)  # closing releases the flock


def _write_error(path, err):
    reason = err.strerror or str(err)
    hint = "free some space" if err.errno == errno.ENOSPC else "check the folder's permissions"
    return UserError(f"cannot write {path} ({reason}); {hint} and run again (earlier files there are intact)")


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
