"""Regenerate the README's results table: train every model on the default dataset, evaluate, compare baselines.

    python results.py            # trains every model (and its self-critical fine-tuning) on the shapes world,
                                 # reports the test split; writes runs/results/ and updates README.md
"""
if __name__ == "__main__":  # before the imports, which take seconds: Ctrl-C meanwhile is one line, code 130
    from core.runtime.interrupts import exit_on_interrupt

    exit_on_interrupt()
import argparse
from pathlib import Path

from core.data.layout import RESULTS_TABLE
from core.model.registry import MODEL_TYPES
from core.results.study import ResultsSettings
from core.runtime import cli
from core.training.scst import BASELINES

DEFAULTS = cli.defaults_of(ResultsSettings)


def parse_args(argv=None):
    p = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=MODEL_TYPES, default=list(DEFAULTS["models"]),
                   help="models to train")
    p.add_argument("--out", default=DEFAULTS["out"], help="where the runs and the results files go")
    p.add_argument("--beam-size", type=cli.positive_int, default=DEFAULTS["beam_size"],
                   help="beam width of the beam-search rows")
    cli.add_seed(p, DEFAULTS["seed"], "seed of every training run")
    p.add_argument("--no-blind", action="store_true", help="skip the blind (shuffled-features) baselines")
    p.add_argument("--no-scst", action="store_true",
                   help="skip the self-critical rows (each fine-tunes its model's cross-entropy checkpoint)")
    p.add_argument("--scst-baseline", choices=BASELINES, default=DEFAULTS["scst_baseline"],
                   help=f"reward baseline of the self-critical rows (default {DEFAULTS['scst_baseline']})")
    p.add_argument("--no-readme", action="store_true", help="do not rewrite the table in README.md")
    cli.add_no_progress(p)
    return p.parse_args(argv)


def settings_from_args(args):
    """The ResultsSettings the parsed flags ask for."""
    return cli.settings_from_args(ResultsSettings, args, models=tuple(args.models), blind=not args.no_blind,
                                  scst=not args.no_scst,
                                  readme=None if args.no_readme else DEFAULTS["readme"], progress=not args.no_progress)


def main(argv=None):
    from core.results.study import run_results

    settings = settings_from_args(parse_args(argv))
    run_results(settings)
    print((Path(settings.out) / RESULTS_TABLE).read_text())
    return 0


if __name__ == "__main__":
    cli.run(main)
