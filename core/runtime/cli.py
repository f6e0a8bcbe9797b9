"""What the scripts share: an argument parser whose errors are one line, flag types, the flags every script has
(``--seed``, ``--device``, ``--no-progress``), settings dataclasses <-> flags, and the error exit."""
import argparse
import dataclasses
import random
import sys
import threading

import numpy as np

from core.runtime.errors import UserError
from core.runtime.interrupts import INTERRUPTED_EXIT, restore_interrupt


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error and exit code 2 (argparse's own code for usage errors)."""

    def error(self, message):
        sys.stderr.write(f"error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def _number(text, parse, accept, expected):
    """``text`` parsed by ``parse`` (int or float) when ``accept`` holds for it; else argparse's error, naming
    what was ``expected``."""
    try:
        value = parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not accept(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text):
    """argparse type: an integer > 0."""
    return _number(text, int, lambda value: value > 0, "a positive integer")


def non_negative_int(text):
    """argparse type: an integer >= 0."""
    return _number(text, int, lambda value: value >= 0, "an integer of 0 or more")


def learning_rate(text):
    """argparse type: a learning rate in (0, 10]; beyond that every update rule here diverges at once."""
    value = positive_float(text)
    if value > 10:
        raise argparse.ArgumentTypeError(f"expected a learning rate in (0, 10], got {text!r}")
    return value


def positive_float(text):
    """argparse type: a finite float > 0."""
    return _number(text, float, lambda value: np.isfinite(value) and value > 0, "a positive number")


def non_negative_float(text):
    """argparse type: a finite float >= 0."""
    return _number(text, float, lambda value: np.isfinite(value) and value >= 0, "a number of 0 or more")


def seed(text):
    """argparse type: a seed numpy accepts, an integer in 0 .. 2**32 - 1."""
    return _number(text, int, lambda value: 0 <= value < 2 ** 32, f"an integer seed in 0..{2 ** 32 - 1}")


def add_seed(parser, default, meaning):
    parser.add_argument("--seed", type=seed, default=default, help=f"{meaning} (default {default})")


def add_device(parser, default):
    parser.add_argument("--device", default=default,
                        help="torch device: auto (CUDA when available), cpu or cuda[:N]; numpy models run on the CPU "
                             f"and refuse CUDA (default {default})")


def add_no_progress(parser):
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")


class Renamed(argparse.Action):
    """A flag stored under its first spelling, the new name; a later spelling, an older name, still works, with one
    line on stderr saying the new one."""

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string != self.option_strings[0]:
            sys.stderr.write(f"warning: {option_string} is deprecated, use {self.option_strings[0]}\n")
        setattr(namespace, self.dest, values)


def defaults_of(settings_class):
    """{field name: default} of a settings dataclass, for the flags built from it."""
    return {f.name: f.default for f in dataclasses.fields(settings_class) if f.default is not dataclasses.MISSING}


def settings_from_args(settings_class, args, **values):
    """An instance of ``settings_class`` from the parsed flags of the same names, ``values`` taking precedence."""
    names = {f.name for f in dataclasses.fields(settings_class)}
    taken = {name: getattr(args, name) for name in names if hasattr(args, name)}
    return settings_class(**dict(taken, **values))


def seed_everything(seed):
    """Seed python's, numpy's legacy and torch's global generators from the one ``--seed``."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run(main):
    """Call ``main()``; a UserError becomes one line on stderr and exit code 2, Ctrl-C exit code 130."""
    try:
        if threading.current_thread() is threading.main_thread():
            restore_interrupt()  # from the script's start-up handler (core.runtime.interrupts)
        code = main()
    except UserError as err:
        sys.stderr.write(f"error: {err}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(INTERRUPTED_EXIT)
    sys.exit(code or 0)
