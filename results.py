"""Regenerate the README's results table: train every model on the default dataset, evaluate, compare baselines.

    python results.py            # about 35 minutes on 2 CPU cores; writes runs/results/ and updates README.md
"""
import argparse

from core import cli
from core.model.registry import MODEL_TYPES


def parse_args(argv=None):
    p = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=MODEL_TYPES, default=list(MODEL_TYPES), help="models to train")
    p.add_argument("--out", default="runs/results", help="where runs, results.json and results.md go")
    p.add_argument("--beam-size", type=cli.positive_int, default=3, help="beam width of the beam-search rows")
    p.add_argument("--seed", type=int, default=0, help="seed of every training run")
    p.add_argument("--no-blind", action="store_true", help="skip the blind (shuffled-features) baselines")
    p.add_argument("--no-readme", action="store_true", help="do not rewrite the table in README.md")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    return p.parse_args(argv)


def main(argv=None):
    from core.results_table import ResultsSettings, run_results

    args = parse_args(argv)
    settings = ResultsSettings(models=tuple(args.models), out=args.out, beam_size=args.beam_size, seed=args.seed,
                               blind=not args.no_blind, readme=None if args.no_readme else "README.md",
                               progress=not args.no_progress)
    run_results(settings)
    print(open(f"{args.out}/results.md").read())
    return 0


if __name__ == "__main__":
    cli.run(main)
