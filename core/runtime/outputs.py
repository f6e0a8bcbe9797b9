"""Outputs that never replace inputs: every file a command writes is checked, before any work, against the files
it reads and against the other files it writes (resolved paths and hard links alike)."""
import os
from pathlib import Path

from core.runtime.errors import UserError


def same_file(a, b):
    """Whether paths ``a`` and ``b`` name one file: the same resolved path, or (both existing) the same inode,
    as hard links and bind mounts give."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def files_under(folder):
    """The files directly in ``folder`` (none when it is no folder): what a command reading a dataset reads."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def check_outputs(outputs, inputs):
    """UserError unless every output is distinct from every input and from the other outputs.

    outputs: (path, flag) pairs, path None for an output not asked for; inputs: (path, what) pairs, e.g.
    ("runs/lstm/best.npz", "the checkpoint").
    """
    outputs = [(Path(path), flag) for path, flag in outputs if path]
    for k, (path, flag) in enumerate(outputs):
        for read, what in inputs:
            if same_file(path, read):
                raise UserError(f"{flag} {path} is {what} this command reads ({read}): writing it would replace "
                                "it; choose another file name")
        for other, other_flag in outputs[k + 1:]:
            if same_file(path, other):
                raise UserError(f"{flag} and {other_flag} name the same file ({path}): one would replace the "
                                "other; give them different names")
