"""Every flag of every script, given malformed values (negative, zero, huge, NaN, infinite, not a number, empty):
never a traceback. Scripts whose runs stop early (training, inference, the shapes builder: a missing dataset,
checkpoint or a foreign --out is the first thing they find after checking the flags) run whole through
``core.runtime.cli.run`` and must exit with code 2 and one line; the others' flags go through their parsers."""
import argparse
from unittest import mock

import pytest

import features_extraction
import inference
import results
import training
from core.datasets import coco, shapes_build
from core.runtime import cli

MALFORMED = ("-1", "0", "1e308", "nan", "-inf", "abc", "99999999999999999999", "")


class _Captured(Exception):
    pass


def parser_of(parse):
    """The ArgumentParser that ``parse(argv)`` builds, captured as it starts parsing."""
    captured = []

    def capture(self, *args, **kwargs):
        captured.append(self)
        raise _Captured

    with mock.patch.object(argparse.ArgumentParser, "parse_args", capture), pytest.raises(_Captured):
        parse([])
    return captured[0]


def valued_flags(parser):
    """The first option string of every flag that takes a value."""
    return [action.option_strings[0] for action in parser._actions if action.option_strings and action.nargs != 0]


# script -> (its parse function, its main, the argv every case starts from, flags not walked whole); "{tmp}" is the
# case's folder. A whole run must stop at the first thing it reads: these argvs make that missing or foreign.
WHOLE = {
    "training": (training.parse_args, training.main, ["--model", "lstm", "--data-dir", "{tmp}/missing", "--out",
                                                      "{tmp}/run", "--no-progress"], ()),
    "inference": (inference.parse_args, inference.main, ["--model", "lstm", "--checkpoint", "{tmp}/missing.npz",
                                                         "--no-progress"], ()),
    # any --out that is not there yet would start a build: that flag goes through the parser only
    "shapes_build": (shapes_build.parse_args, shapes_build.main, ["--out", "{tmp}/foreign"], ("--out",)),
}
PARSED = {"results": results.parse_args, "coco": coco.parse_args,
          "features_extraction": lambda argv: features_extraction.build_parser().parse_args(argv)}


def whole_cases():
    for script, (parse, _, _base, parsed_only) in WHOLE.items():
        for flag in valued_flags(parser_of(parse)):
            for value in MALFORMED:
                yield script, flag, value, flag in parsed_only


def run_whole(script, argv, capsys):
    _, main, _, _ = WHOLE[script]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        cli.run(lambda: main(argv))
    return exited.value.code, capsys.readouterr().err


CASES = list(whole_cases())


@pytest.mark.parametrize("script, flag, value, parsed_only", CASES,
                         ids=[f"{s} {f} {v!r}" for s, f, v, _ in CASES])
def test_a_malformed_flag_value_is_never_a_traceback(script, flag, value, parsed_only, tmp_path, monkeypatch,
                                                     capsys):
    monkeypatch.chdir(tmp_path)  # an empty path means the working folder: let it be the case's own
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("not a dataset")
    parse, _, base, _ = WHOLE[script]
    argv = [arg.format(tmp=tmp_path) for arg in base] + [f"{flag}={value}"]
    if parsed_only:
        parse_only(parse, argv)
        return
    code, err = run_whole(script, argv, capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def parse_only(parse, argv):
    try:
        parse(argv)
    except SystemExit as exited:
        assert exited.code == 2


@pytest.mark.parametrize("script", sorted(PARSED))
def test_the_other_scripts_parse_malformed_values_without_a_traceback(script, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    parse = PARSED[script]
    flags = valued_flags(parser_of(parse))
    assert flags
    for flag in flags:
        for value in MALFORMED:
            parse_only(parse, [f"{flag}={value}"])
    assert "Traceback" not in capsys.readouterr().err
