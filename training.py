"""Train a captioning model (rnn, lstm, att_lstm or transformer) on the default shapes dataset, COCO, or any
CS231n-layout folder.

    python training.py --model lstm                        # the default dataset, built on first use
    python training.py --model lstm --dataset shapes-hard  # the harder generated world, built on first use
    python training.py --model rnn --num_samples 300       # the classic overfitting sanity check
    python training.py --model transformer --resume        # continue runs/transformer/last.pt
    python training.py --model lstm --objective scst       # self-critical CIDEr-D training from runs/lstm/best.npz
    torchrun --nproc_per_node 2 training.py --model lstm   # 2 processes, each half of every minibatch
    python training.py --model att_lstm --backend torch --device cuda   # the hand-written model on a GPU
"""
if __name__ == "__main__":  # before the imports, which take seconds: Ctrl-C meanwhile is one line, code 130
    from core.runtime.interrupts import exit_on_interrupt

    exit_on_interrupt()
import argparse

from core.data.layout import PROTOCOLS
from core.datasets.resolve import DATASETS
from core.model.registry import MODEL_TYPES
from core.runtime import cli
from core.runtime.arrays import BACKENDS
from core.runtime.gradient_reduction import REDUCE_DTYPES
from core.training.engine import OBJECTIVES, TrainSettings
from core.training.scst import BASELINES

DEFAULTS = cli.defaults_of(TrainSettings)
# Architecture flags -> (argparse type, meaning) of the model config field each sets; which kinds take which
# is the registry's business (a flag a kind does not take is refused).
ARCHITECTURE = {"wordvec_dim": (cli.positive_int, "word embedding width"),
                "hidden_dim": (cli.positive_int, "rnn/lstm/att_lstm hidden width"),
                "att_dim": (cli.positive_int, "att_lstm attention width"),
                "att_penalty": (cli.non_negative_float, "att_lstm doubly stochastic attention penalty lambda (0: off)"),
                "num_layers": (cli.positive_int, "transformer decoder layers"),
                "num_heads": (cli.positive_int, "transformer attention heads"),
                "dropout": (cli.non_negative_float, "transformer dropout probability, in [0, 1)"),
                "memory": (str, "transformer: what it cross-attends over, pooled (one vector) or grid (the image's "
                                "cells; the default on data with grid features)")}


def parse_args(argv=None):
    p = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, choices=MODEL_TYPES, help="which decoder to train")
    p.add_argument("--num_samples", "--num-samples", dest="num_samples", type=cli.positive_int,
                   default=DEFAULTS["num_samples"],
                   help="number of training captions (not images) to train on, drawn without replacement by --seed "
                        "(default: all)")
    p.add_argument("--dataset", choices=DATASETS, default=DEFAULTS["dataset"],
                   help="shapes: the generated default dataset; shapes-hard: the harder generated world (both built "
                        "on first use); coco: core/datasets/coco_captioning (get it with bash "
                        f"core/datasets/get_datasets.sh) (default {DEFAULTS['dataset']})")
    p.add_argument("--data-dir", default=DEFAULTS["data_dir"],
                   help="any folder in the CS231n coco_captioning layout; overrides --dataset")
    p.add_argument("--protocol", "--splits", action=cli.Renamed, choices=PROTOCOLS, default=DEFAULTS["protocol"],
                   help="which images make train/val/test: cs231n, the dataset's own train2014/val2014 files (and test "
                        "files where it has them); karpathy, Karpathy's COCO splits of those images (train + restval / "
                        "val / the 5,000-image test of published scores; needs dataset_coco.json: bash "
                        "core/datasets/get_datasets.sh --karpathy); --splits is its old name (default "
                        f"{DEFAULTS['protocol']})")
    p.add_argument("--epochs", type=cli.positive_int, default=DEFAULTS["epochs"],
                   help="passes over the training captions (default: per model, longer for few captions)")
    p.add_argument("--batch-size", type=cli.positive_int, default=DEFAULTS["batch_size"],
                   help=f"captions per minibatch (default {DEFAULTS['batch_size']})")
    p.add_argument("--lr", type=cli.learning_rate, default=DEFAULTS["lr"],
                   help="peak learning rate, in (0, 10] (default: per model)")
    cli.add_seed(p, DEFAULTS["seed"], "seeds python, numpy, torch, the data subset and batch order")
    cli.add_device(p, DEFAULTS["device"])
    p.add_argument("--backend", choices=BACKENDS, default=DEFAULTS["backend"],
                   help="arrays of the hand-written models (rnn, lstm, att_lstm): numpy on the CPU; torch tensors on "
                        "--device (our backward on torch's kernels, no autograd); cupy on a CUDA --device. "
                        f"Checkpoints are numpy .npz whatever it is (default {DEFAULTS['backend']})")
    p.add_argument("--out", default=DEFAULTS["out"],
                   help="output directory (default: runs/<model>, runs/<model>-scst for --objective scst)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last checkpoint where it stopped")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an --out that holds a trained run, replacing its checkpoints (default: "
                        "refused)")
    p.add_argument("--dry-run", action="store_true",
                   help="one training step and one validation pass: a smoke test (next to a trained run's "
                        "checkpoints it writes into <out>/dry-run instead)")
    p.add_argument("--save-every", type=cli.non_negative_int, default=DEFAULTS["save_every"],
                   help="also write the resumable last checkpoint every N steps within an epoch (default 0: "
                        "every 10 minutes of training)")
    p.add_argument("--patience", type=cli.non_negative_int, default=DEFAULTS["patience"],
                   help="stop once this many epochs in a row have not improved the validation loss (the reward "
                        f"with --objective scst); the best checkpoint is kept (default {DEFAULTS['patience']}: never)")
    p.add_argument("--min-improvement", type=cli.non_negative_float, default=DEFAULTS["min_improvement"],
                   help="for --patience: the share of the best validation loss (reward) an epoch must gain to count "
                        f"as an improvement, e.g. 0.005 (default {DEFAULTS['min_improvement']}: any gain)")
    p.add_argument("--objective", choices=OBJECTIVES, default=DEFAULTS["objective"],
                   help="xe: cross-entropy (teacher forcing); scst: self-critical training of the CIDEr-D of sampled "
                        "captions, starting from --init-from; minibatches are then --batch-size images (default "
                        f"{DEFAULTS['objective']})")
    p.add_argument("--init-from", default=DEFAULTS["init_from"],
                   help="scst: the cross-entropy checkpoint to start from (default: runs/<model>/best)")
    p.add_argument("--scst-samples", type=cli.positive_int, default=DEFAULTS["scst_samples"],
                   help=f"scst: captions sampled per image (default {DEFAULTS['scst_samples']})")
    p.add_argument("--scst-baseline", choices=BASELINES, default=DEFAULTS["scst_baseline"],
                   help="scst: what a sample's reward is compared with: mean, the image's other samples' mean "
                        "reward; greedy, its greedy caption's reward (default "
                        f"{DEFAULTS['scst_baseline']})")
    p.add_argument("--shuffle-features", action="store_true",
                   help="pair captions with random images' features: the blind baseline")
    p.add_argument("--reduce-dtype", choices=REDUCE_DTYPES, default=DEFAULTS["reduce_dtype"],
                   help="under torchrun with more than one process: the dtype each gradient is all-reduced in; "
                        "bfloat16 and float16 round it to 8 and 11 significant bits before the sum, for half the "
                        "bytes; a single process accepts it and it has no effect (default "
                        f"{DEFAULTS['reduce_dtype']}: each gradient in its own dtype)")
    for name, (kind, meaning) in ARCHITECTURE.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None,
                       help=f"{meaning} (default: per model, core/model/registry.py)")
    cli.add_no_progress(p)
    p.add_argument("--show", action="store_true", help="open the loss plot in a window at the end")
    return p.parse_args(argv)


def settings_from_args(args):
    """The TrainSettings the parsed flags ask for."""
    model_config = {name: getattr(args, name) for name in ARCHITECTURE if getattr(args, name) is not None}
    return cli.settings_from_args(TrainSettings, args, model_config=model_config, progress=not args.no_progress)


def main(argv=None):
    from core.training.engine import run_training

    args = parse_args(argv)
    summary = run_training(settings_from_args(args))
    if not summary["main"]:
        return 0  # under torchrun, rank 0 reports for the group
    name, sign = summary["metric"].name, summary["metric"].sign
    print(f"trained {args.model} for {summary['steps']} steps in {summary['seconds']:.0f} s on {summary['device']}: "
          f"final train {name} {sign * summary['final_train_loss']:.4f}, best val {name} "
          f"{sign * summary['best_val_loss']:.4f}")
    print(f"outputs in {summary['out_dir']}: best checkpoint {summary['best']}, loss plot, history, config")
    if args.show:
        from core.data.layout import LOSS_PLOT
        from core.runtime.plotting import show_png

        show_png(f"{summary['out_dir']}/{LOSS_PLOT}")
    return 0


if __name__ == "__main__":
    cli.run(main)
