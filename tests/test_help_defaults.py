"""Every flag's help names its default, walked over each script's parser; the renamed flags keep their old
spelling, which still works and says the new one in one line on stderr."""
import argparse
from pathlib import Path

import pytest

import features_extraction
import inference
import results
import training
from core.datasets import coco, shapes_build
from tests.test_flag_walk import parser_of

ROOT = Path(__file__).resolve().parents[1]
PARSERS = {"training": training.parse_args, "inference": inference.parse_args, "coco": coco.parse_args,
           "features_extraction": lambda argv: features_extraction.build_parser().parse_args(argv),
           "results": results.parse_args, "shapes_build": shapes_build.parse_args}


def shown(default):
    """How a help text writes a default: a path relative to the repository, a list as its items with spaces between,
    anything else as str() gives it."""
    if isinstance(default, Path) and default.is_relative_to(ROOT):
        return str(default.relative_to(ROOT))
    if isinstance(default, (list, tuple)):
        return " ".join(map(str, default))
    return str(default)


def defaults_missing_from_help(parser):
    """The flags taking a value whose default (not None, not empty) the help does not name."""
    return [action.option_strings[0] for action in parser._actions
            if action.option_strings and action.nargs != 0 and action.default not in (None, [], argparse.SUPPRESS)
            and not ("default" in (action.help or "") and shown(action.default) in action.help)]


@pytest.mark.parametrize("script", PARSERS)
def test_every_default_is_in_the_help(script):
    assert defaults_missing_from_help(parser_of(PARSERS[script])) == []


def test_the_walk_sees_a_missing_default():
    parser = argparse.ArgumentParser()
    parser.add_argument("--beam-size", type=int, default=3, help="beam width")
    parser.add_argument("--length-penalty", type=float, default=0.0, help="alpha")
    parser.add_argument("--named", type=int, default=5, help="count (default 5)")
    assert defaults_missing_from_help(parser) == ["--beam-size", "--length-penalty"]


@pytest.mark.parametrize("parse", [training.parse_args, inference.parse_args])
def test_splits_is_the_old_spelling_of_protocol(parse, capsys):
    args = parse(["--model", "lstm", "--splits", "karpathy"])
    assert args.protocol == "karpathy"
    assert capsys.readouterr().err.strip().splitlines() == ["warning: --splits is deprecated, use --protocol"]
    assert parse(["--model", "lstm", "--protocol", "karpathy"]).protocol == "karpathy"
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("parse, counts", [(training.parse_args, "captions"), (inference.parse_args, "images")])
def test_num_samples_says_what_it_counts_under_both_spellings(parse, counts):
    action = next(a for a in parser_of(parse)._actions if "--num-samples" in a.option_strings)
    assert "--num_samples" in action.option_strings and f"{counts} (not " in action.help
    assert parse(["--model", "lstm", "--num_samples", "3"]).num_samples == 3
