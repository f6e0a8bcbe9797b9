"""Train a captioning model (rnn, lstm or transformer) on the default shapes dataset, COCO, or any CS231n-layout folder.

    python training.py --model lstm                        # the default dataset, built on first use
    python training.py --model rnn --num_samples 300       # the classic overfitting sanity check
    python training.py --model transformer --resume        # continue runs/transformer/last.pt
"""
import argparse

from core import cli
from core.datasets.resolve import DATASETS
from core.model.registry import MODEL_TYPES


def parse_args(argv=None):
    p = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, choices=MODEL_TYPES, help="which decoder to train")
    p.add_argument("--num_samples", "--num-samples", dest="num_samples", type=cli.positive_int, default=None,
                   help="number of training captions, drawn without replacement by --seed (default: all)")
    p.add_argument("--dataset", choices=DATASETS, default="shapes",
                   help="shapes: the generated default dataset (built on first use); coco: core/datasets/"
                        "coco_captioning (get it with bash core/datasets/get_datasets.sh)")
    p.add_argument("--data-dir", default=None, help="any folder in the CS231n coco_captioning layout; overrides --dataset")
    p.add_argument("--epochs", type=cli.positive_int, default=None,
                   help="passes over the training captions (default: per model, longer for few captions)")
    p.add_argument("--batch-size", type=cli.positive_int, default=128, help="captions per minibatch")
    p.add_argument("--lr", type=cli.positive_float, default=None, help="peak learning rate (default: per model)")
    p.add_argument("--seed", type=int, default=0, help="seeds python, numpy, torch, the data subset and batch order")
    p.add_argument("--device", default="auto", help="torch device for the transformer: auto, cpu or cuda[:N]")
    p.add_argument("--out", default=None, help="output directory (default: runs/<model>)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last checkpoint where it stopped")
    p.add_argument("--dry-run", action="store_true", help="one training step and one validation pass: a smoke test")
    p.add_argument("--shuffle-features", action="store_true",
                   help="pair captions with random images' features: the blind baseline")
    p.add_argument("--wordvec-dim", type=cli.positive_int, default=None, help="word embedding width")
    p.add_argument("--hidden-dim", type=cli.positive_int, default=None, help="rnn/lstm hidden width")
    p.add_argument("--num-layers", type=cli.positive_int, default=None, help="transformer decoder layers")
    p.add_argument("--num-heads", type=cli.positive_int, default=None, help="transformer attention heads")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    p.add_argument("--show", action="store_true", help="open the loss plot in a window at the end")
    args = p.parse_args(argv)
    transformer_only = {"num_layers": args.num_layers, "num_heads": args.num_heads}
    rnn_only = {"hidden_dim": args.hidden_dim}
    wrong = transformer_only if args.model != "transformer" else rnn_only
    for name, value in wrong.items():
        if value is not None:
            p.error(f"--{name.replace('_', '-')} does not apply to --model {args.model}")
    return args


def main(argv=None):
    from core.trainer import TrainSettings, run_training

    args = parse_args(argv)
    model_config = {key: value for key, value in (("wordvec_dim", args.wordvec_dim), ("hidden_dim", args.hidden_dim),
                                                  ("num_layers", args.num_layers), ("num_heads", args.num_heads))
                    if value is not None}
    settings = TrainSettings(model=args.model, num_samples=args.num_samples, dataset=args.dataset,
                             data_dir=args.data_dir, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             seed=args.seed, device=args.device, out=args.out, resume=args.resume,
                             dry_run=args.dry_run, shuffle_features=args.shuffle_features,
                             progress=not args.no_progress, model_config=model_config)
    summary = run_training(settings)
    print(f"trained {args.model} for {summary['steps']} steps in {summary['seconds']:.0f} s on {summary['device']}: "
          f"final train loss {summary['final_train_loss']:.4f}, best val loss {summary['best_val_loss']:.4f}")
    print(f"outputs in {summary['out_dir']}: best checkpoint {summary['best']}, loss.png, history.json, config.json")
    if args.show:
        from core.plotting import show_png

        show_png(f"{summary['out_dir']}/loss.png")
    return 0


if __name__ == "__main__":
    cli.run(main)
