"""Regenerate the results tables: train every model on a generated world, evaluate, compare baselines.

    python results.py               # every model (and its self-critical fine-tuning) on the shapes world, reported
                                    # on the test split; writes runs/results/, docs/results.md and README.md's rows
    python results.py --seeds 3     # every row over seeds 0, 1, 2: mean ± standard deviation
    python results.py --world hard  # the harder world: runs/results-hard/ and docs/results-hard.md
"""
if __name__ == "__main__":  # before the imports, which take seconds: Ctrl-C meanwhile is one line, code 130
    from core.runtime.interrupts import exit_on_interrupt

    exit_on_interrupt()
import argparse
import shlex
import sys
from pathlib import Path

from core.data.layout import README_FILE, RESULTS_TABLE
from core.model.registry import MODEL_TYPES
from core.results.study import WORLDS, ResultsSettings, world_of
from core.runtime import cli
from core.training.scst import BASELINES

DEFAULTS = cli.defaults_of(ResultsSettings)


def parse_args(argv=None):
    p = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=MODEL_TYPES, default=list(DEFAULTS["models"]),
                   help=f"models to train (default: all, {' '.join(DEFAULTS['models'])})")
    p.add_argument("--world", choices=WORLDS, default=DEFAULTS["world"],
                   help="the generated world: " + "; ".join(f"{name}, dataset {world.dataset}, tables in {world.doc}"
                                                            f"{f' and {README_FILE}' if world.readme else ''}"
                                                            for name, world in WORLDS.items())
                        + f" (default {DEFAULTS['world']})")
    p.add_argument("--out", default=DEFAULTS["out"],
                   help="where the runs and the results files go (default: "
                        + ", ".join(f"{world.out} for --world {name}" for name, world in WORLDS.items()) + ")")
    p.add_argument("--seeds", type=cli.positive_int, default=DEFAULTS["seeds"],
                   help="train and evaluate every row with this many seeds, from --seed on, and show mean ± standard "
                        f"deviation (default {DEFAULTS['seeds']})")
    cli.add_seed(p, DEFAULTS["seed"], "seed of every training run, the first one with --seeds")
    p.add_argument("--beam-size", type=cli.positive_int, default=DEFAULTS["beam_size"],
                   help=f"beam width of the beam-search rows (default {DEFAULTS['beam_size']})")
    p.add_argument("--patience", type=cli.non_negative_int, default=DEFAULTS["patience"],
                   help="stop a training run once this many epochs in a row have not improved its validation loss "
                        f"(reward, for self-critical runs); 0: never (default {DEFAULTS['patience']})")
    p.add_argument("--scst-min-improvement", type=cli.non_negative_float, default=DEFAULTS["scst_min_improvement"],
                   help="the share of its best validation reward a self-critical epoch must gain to count as an "
                        f"improvement for --patience (default {DEFAULTS['scst_min_improvement']})")
    p.add_argument("--no-blind", action="store_true",
                   help="skip the blind (shuffled-features) baseline (default: the first of --models trained blind)")
    p.add_argument("--no-scst", action="store_true",
                   help="skip the self-critical rows, each fine-tuning its model's cross-entropy checkpoint (default: "
                        "a self-critical row under each model)")
    p.add_argument("--scst-baseline", choices=BASELINES, default=DEFAULTS["scst_baseline"],
                   help=f"reward baseline of the self-critical rows (default {DEFAULTS['scst_baseline']})")
    p.add_argument("--no-docs", "--no-readme", dest="no_docs", action="store_true",
                   help=f"write only --out: leave the generated tables of {README_FILE} and the docs page as they are "
                        "(default: rewrite them)")
    cli.add_no_progress(p)
    return p.parse_args(argv)


def settings_from_args(args):
    """The ResultsSettings the parsed flags ask for."""
    return cli.settings_from_args(ResultsSettings, args, models=tuple(args.models), blind=not args.no_blind,
                                  scst=not args.no_scst, docs=not args.no_docs, progress=not args.no_progress)


def main(argv=None):
    from core.results.study import run_results

    argv = sys.argv[1:] if argv is None else argv
    settings = settings_from_args(parse_args(argv))
    world = world_of(settings)
    run_results(settings, command=shlex.join(["python", "results.py", *argv]))
    print((Path(settings.out or world.out) / RESULTS_TABLE).read_text())
    return 0


if __name__ == "__main__":
    cli.run(main)
