"""The results study's tables: rows of several seeds folded into mean and standard deviation, the markdown tables
(the full one and the README's headline rows), the provenance written under each, and the generated blocks of the
README and the docs, which parse back into header, rows and provenance.

A generated block, between ``BLOCK_START`` and ``BLOCK_END``:

    | model | training | ... |          the table
    |---|---|...
    | lstm | XE | greedy | 61.2 ± 0.4 | ...

    <note: what the figures are>

    Provenance:
    - commit: <git commit, "unknown" outside git>
    - date: <when the run started, UTC>
    - machine: <CPU, cores, kernel; torch; numpy and its BLAS>
    - command: `<the command that wrote it>`
"""
import datetime
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.runtime.errors import UserError
from core.runtime.fileio import atomic_write_text
from core.runtime.machine import describe_machine

BLOCK_START, BLOCK_END = "<!-- results:start -->", "<!-- results:end -->"
PROVENANCE_TITLE = "Provenance:"
PROVENANCE_KEYS = ("commit", "date", "machine", "command")
KEYS = ("name", "training", "decoding")  # what makes a row, across seeds
PLUS_MINUS = " ± "


@dataclass(frozen=True)
class Column:
    """A table column: its ``header``, the row's ``key``, the factor it is shown at and its decimals."""
    header: str
    key: str
    scale: float = 1.0
    digits: int = 3


_CAPTION_METRICS = tuple(Column(name, name, 100, 1) for name in ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr"))
_NOVEL = (Column("novel-pair recall", "novel_pair_recall"), Column("seen-pair recall", "test_seen_pair_recall"))
FULL_COLUMNS = (*_CAPTION_METRICS, Column("object F1", "object_f1"), Column("halluc.", "hallucination_rate"),
                Column("relation acc.", "relation_accuracy"), Column("forced rel.", "forced_relation_accuracy"),
                Column("att. corr.", "attention_correctness"), *_NOVEL, Column("epochs", "epochs", 1, 1),
                Column("train min", "train_seconds", 1 / 60, 1), Column("decode s", "decode_seconds", 1, 1))
HEADLINE_COLUMNS = (Column("CIDEr", "CIDEr", 100, 1), Column("object F1", "object_f1"),
                    Column("halluc.", "hallucination_rate"), *_NOVEL)


def aggregate(rows):
    """Rows of several seeds (dicts with ``KEYS``) folded into one per (name, training, decoding), in order of first
    appearance: every number all of them hold becomes their mean, with ``<key>_std`` its sample standard deviation
    (0 for one row) and ``seeds`` the number of rows; other values are the first row's."""
    groups = {}
    for row in rows:
        groups.setdefault(tuple(row[key] for key in KEYS), []).append(row)
    folded = []
    for group in groups.values():
        row = {key: value for key, value in group[0].items() if not _is_number(value)}
        numbers = [key for key, value in group[0].items() if _is_number(value) and key != "seed"
                   and all(key in other for other in group)]
        for key in numbers:
            values = np.array([other[key] for other in group], dtype=np.float64)
            row[key] = float(values.mean())
            row[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        folded.append(dict(row, seeds=len(group)))
    return folded


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_table(rows, columns):
    """A markdown table of ``aggregate``d rows: the row's keys, then ``columns``; a value over several seeds is
    shown as mean ± standard deviation, a value a row lacks as n/a."""
    head = ["model", "training", "decoding", *(column.header for column in columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [str(row[key]) for key in KEYS] + [_cell(row, column) for column in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(row, column):
    if column.key not in row:
        return "n/a"
    shown = f"{row[column.key] * column.scale:.{column.digits}f}"
    if row.get("seeds", 1) > 1:
        shown += f"{PLUS_MINUS}{row[f'{column.key}_std'] * column.scale:.{column.digits}f}"
    return shown


def provenance(command, folder="."):
    """What a generated table was made by: the git commit of ``folder`` ("unknown" outside git; marked when files
    differ from it), the date (now, UTC), the machine and ``command``."""
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return {"commit": _commit(folder), "date": date, "machine": describe_machine(), "command": command}


def _commit(folder):
    def git(*args):
        return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit} (with uncommitted changes)" if changed else commit


def block(rows, columns, note, source):
    """The text of a generated block (without its markers): the table of ``rows``, ``note`` and the provenance
    ``source`` (``provenance``'s dict)."""
    lines = [f"- {key}: `{source[key]}`" if key == "command" else f"- {key}: {source[key]}"
             for key in PROVENANCE_KEYS]
    return f"{format_table(rows, columns)}\n\n{note}\n\n{PROVENANCE_TITLE}\n" + "\n".join(lines) + "\n"


def parse_block(text):
    """The generated block in ``text`` (a README or docs page) as written by ``write_block``: a dict with
    ``header`` (the column names), ``rows`` (lists of cells) and ``provenance`` (key -> value); UserError when
    ``text`` has no block."""
    if BLOCK_START not in text or BLOCK_END not in text:
        raise UserError(f"no generated results block (between {BLOCK_START} and {BLOCK_END})")
    inner = text.split(BLOCK_START, 1)[1].split(BLOCK_END, 1)[0]
    table = [line for line in inner.splitlines() if line.startswith("|")]
    cells = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in table]
    source = {}
    for line in inner.split(PROVENANCE_TITLE, 1)[-1].splitlines():
        key, _, value = line.removeprefix("- ").partition(": ")
        if line.startswith("- ") and key in PROVENANCE_KEYS:
            source[key] = value.strip("`")
    return {"header": cells[0] if cells else [], "rows": cells[2:], "provenance": source}


def write_block(path, text):
    """Put ``text`` between the markers of the file ``path``, atomically, keeping everything around them; a file
    without markers gets them at its end, a missing one is created with them alone."""
    path = Path(path)
    current = path.read_text() if path.is_file() else ""
    if BLOCK_START in current and BLOCK_END in current:
        head, rest = current.split(BLOCK_START, 1)
        tail = rest.split(BLOCK_END, 1)[1]
    else:
        head, tail = (current.rstrip("\n") + "\n\n" if current else ""), "\n"
    atomic_write_text(path, f"{head}{BLOCK_START}\n{text}{BLOCK_END}{tail}")
