"""The documentation says what the code does: every flag the README and docs/ give a script is one of that script's
flags (read from its parser, nothing is run), docs/cli.md lists every flag of every script, links and file paths
resolve, the README stays a short manual, no page outside CHANGELOG.md narrates the project's history, and the
licence and citation files are there and well-formed."""
import argparse
import datetime
import re
from functools import cache
from pathlib import Path

import pytest

import features_extraction
import inference
import results
import training
from core.datasets import coco, shapes_build
from tests.test_flag_walk import parser_of

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
CLI_PAGE = ROOT / "docs" / "cli.md"
README_MAX_LINES = 250

# How the pages invoke each script -> its parse function.
SCRIPTS = {"training.py": training.parse_args, "inference.py": inference.parse_args,
           "features_extraction.py": features_extraction.parse_args, "results.py": results.parse_args,
           "core.datasets.shapes_build": shapes_build.parse_args, "get_datasets.sh": coco.parse_args}
# Flags of other programs the pages show: torchrun's and pip's.
OTHER_PROGRAMS = {"--nproc_per_node", "--nnodes", "--rdzv-backend", "--rdzv-endpoint", "--rdzv-id", "--rdzv-conf",
                  "--max-restarts", "--index-url"}
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*")
# Phrases that tell the project's history instead of what is true; that belongs in CHANGELOG.md.
HISTORY = re.compile(r"\b(?:this|last|previous|later|earlier|next) session\b|\bre-?measured\b|\bwas measured before\b"
                     r"|\bnot regenerated\b|\bearlier\b|\bno longer\b|\bused to\b|\bnow\b|\bas before\b|\bwent from\b"
                     r"|\bat the time\b|\bpreviously\b|\bformerly\b|\banymore\b", re.IGNORECASE)


@cache
def script_flags(script):
    """Every long option string of ``script``'s parser, --help included."""
    parser = parser_of(SCRIPTS[script])
    return frozenset(option for action in parser._actions for option in action.option_strings
                     if option.startswith("--"))


def benchmark_flags():
    """The flags the benchmarks' parsers define, read from their source."""
    return {flag for path in (ROOT / "benchmarks").glob("*.py") for flag in re.findall(r'"(--[a-z][a-z0-9_-]*)"',
                                                                                      path.read_text())}


def without_code(text):
    """The text without its fenced code blocks."""
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def command_segments(text):
    """Each command the text shows: every line of its code blocks (backslash continuations joined, comments cut)
    and every inline code span."""
    segments = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            segments.append(line.split(" #")[0])
    segments += re.findall(r"`([^`\n]+)`", without_code(text))
    return segments


def invoked_script(segment):
    """(the script a command runs, what follows its name), or None when it runs none of them."""
    for script in SCRIPTS:
        match = re.search(rf"(?:^|[\s/]){re.escape(script)}(?=\s|$)", segment)
        if match:
            return script, segment[match.end():]
    return None


def cli_sections():
    """docs/cli.md's sections: {script: [(the flags a row of its table names, the row's default cell)]}."""
    sections, script = {}, None
    for line in CLI_PAGE.read_text().splitlines():
        if line.startswith("## "):
            script = next((name for name in SCRIPTS if name in line), None)
            if script is None:
                raise AssertionError(f"docs/cli.md: section {line!r} names none of {sorted(SCRIPTS)}")
            sections[script] = []
        elif script and line.startswith("| `--"):
            cells = line.split("|")
            sections[script].append((FLAG.findall(cells[1]), cells[2].strip()))
    return sections


def shown_default(value):
    """A parser's default as docs/cli.md writes it; None where it has none to show (None, a switch, suppressed)."""
    if value is None or isinstance(value, bool) or value == argparse.SUPPRESS:
        return None
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    if isinstance(value, Path) and ROOT in value.parents:
        return str(value.relative_to(ROOT))
    return str(value)


def history_phrases(text):
    return [match.group(0) for match in HISTORY.finditer(text)]


def slug(heading):
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path):
    return {slug(line.lstrip("#")) for line in without_code(path.read_text()).splitlines() if line.startswith("#")}


def page_id(path):
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_commands_use_only_flags_their_script_has(page):
    wrong = []
    for segment in command_segments(page.read_text()):
        invoked = invoked_script(segment)
        if invoked:
            script, rest = invoked
            wrong += [f"{script} {flag}" for flag in FLAG.findall(rest) if flag not in script_flags(script)]
    assert not wrong, f"{page_id(page)} gives scripts flags their parsers lack: {sorted(set(wrong))}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_flag_mentioned_exists_somewhere(page):
    known = set().union(*(script_flags(script) for script in SCRIPTS), benchmark_flags(), OTHER_PROGRAMS)
    unknown = sorted(set(FLAG.findall(page.read_text())) - known)
    assert not unknown, f"{page_id(page)} mentions flags no script has: {unknown}"


def test_cli_reference_lists_exactly_each_scripts_flags():
    sections = cli_sections()
    assert set(sections) == set(SCRIPTS), f"docs/cli.md lacks a section for {sorted(set(SCRIPTS) - set(sections))}"
    problems = []
    for script, rows in sections.items():
        documented = [flag for row_flags, _ in rows for flag in row_flags]
        flags = script_flags(script) - {"--help"}  # on every script, said once at the top of the page
        problems += [f"{script}: no row for {flag}" for flag in sorted(flags - set(documented))]
        problems += [f"{script}: a row for {flag}, which it lacks" for flag in sorted(set(documented) - flags)]
    assert not problems, f"docs/cli.md: {problems}"


def test_cli_reference_defaults_are_the_parsers():
    wrong = []
    for script, rows in cli_sections().items():
        defaults = {option: action.default for action in parser_of(SCRIPTS[script])._actions
                    for option in action.option_strings}
        for flags, cell in rows:
            default = shown_default(defaults.get(flags[0]))
            if default is not None and default not in cell:
                wrong.append(f"{script} {flags[0]}: the parser's default is {default}, the page says {cell!r}")
    assert not wrong, f"docs/cli.md: {wrong}"


def test_readme_is_a_short_manual():
    lines = README.read_text().splitlines()
    assert len(lines) < README_MAX_LINES, f"README.md has {len(lines)} lines; keep it under {README_MAX_LINES}"
    assert "<!-- results:start -->" in lines and "<!-- results:end -->" in lines


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_links_and_paths_resolve(page):
    text = without_code(page.read_text())
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        path = (page.parent / file_part).resolve() if file_part else page
        if not path.exists():
            broken.append(target)
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(target)
    for name in re.findall(r"`((?:core|tests|benchmarks|docs)/[\w/.-]+\.(?:py|md|sh|png|toml))`", text):
        if not (ROOT / name).exists():
            broken.append(name)
    assert not broken, f"{page_id(page)}: links or paths that resolve to nothing: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_no_history_outside_the_changelog(page):
    found = history_phrases(page.read_text())
    assert not found, f"{page_id(page)} narrates history ({found}): say what is true, history goes to CHANGELOG.md"


def test_history_check_catches_its_phrases():
    text = "Re-measured in a later session, it No longer holds; the table was measured before the split, as now."
    assert [phrase.lower() for phrase in history_phrases(text)] == ["re-measured", "later session", "no longer",
                                                                     "was measured before", "now"]
    assert history_phrases("Known scenes; the nowcast is not a thing; renowned.") == []


def test_licence_is_mit():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "Copyright (c) 2026 the image-captioning project contributors" in text


def read_cff(text):
    """CITATION.cff's top-level keys; yaml where it is installed, else a reading of the simple form used here."""
    try:
        import yaml
    except ImportError:
        yaml = None
    if yaml is not None:
        return yaml.safe_load(text)
    values, key = {}, None
    for line in text.splitlines():
        top = re.match(r"([a-z][\w-]*):\s*(.*)$", line)
        if top:
            key, value = top.groups()
            values[key] = value.strip().strip('"') if value.strip() else []
        elif re.match(r"\s+- ", line) and isinstance(values.get(key), list):
            item = line.strip()[2:]
            name = re.match(r"([\w-]+):\s*(.*)$", item)
            values[key].append({name.group(1): name.group(2).strip('"')} if name else item)
        elif line.strip() and not line.startswith("#"):
            assert line.startswith(" ") and key is not None, f"CITATION.cff: unexpected line {line!r}"
    return values


def test_citation_file_is_valid_cff():
    cff = read_cff((ROOT / "CITATION.cff").read_text())
    assert str(cff["cff-version"]) == "1.2.0"
    for key in ("message", "title"):
        assert isinstance(cff[key], str) and cff[key]
    assert cff["authors"] and all(isinstance(author, dict) and author for author in cff["authors"])
    assert cff["license"] == "MIT"
    assert str(datetime.date.fromisoformat(str(cff["date-released"]))) == "2026-12-04"
    released = re.findall(r"^## \[?v?(\d+\.\d+\.\d+)\]?", (ROOT / "CHANGELOG.md").read_text(), flags=re.MULTILINE)
    project = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), flags=re.MULTILINE).group(1)
    assert str(cff["version"]) == (released[0] if released else project)
