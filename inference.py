"""Caption images with a trained model: samples next to the truth, PNG galleries, evaluation, your own images.

    python inference.py --model lstm                          # 8 train + 8 val images, galleries in runs/lstm
    python inference.py --model transformer --evaluate --beam-size 3 --output val.json
    python inference.py --model lstm --image my_scene.png     # encoded with the dataset's own encoder + PCA
"""
import argparse

from core import cli
from core.coco_utils import SPLITS
from core.datasets.resolve import DATASETS
from core.model.registry import MODEL_TYPES


def parse_args(argv=None):
    p = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, choices=MODEL_TYPES, help="the model type the checkpoint holds")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint file (default: runs/<model>/best.npz, or best.pt for the transformer)")
    p.add_argument("--split", choices=SPLITS, default=None,
                   help="which split to caption (default: both for galleries, val for --evaluate)")
    p.add_argument("--num_samples", "--num-samples", dest="num_samples", type=cli.positive_int, default=None,
                   help="images to show per split (default 8); with --evaluate, evaluate only the first N images")
    p.add_argument("--dataset", choices=DATASETS, default=None,
                   help="dataset to caption (default: the one the checkpoint was trained on)")
    p.add_argument("--data-dir", default=None, help="any folder in the CS231n layout; overrides --dataset")
    p.add_argument("--beam-size", type=cli.positive_int, default=1, help="beam width; 1 decodes greedily")
    p.add_argument("--length-penalty", type=float, default=0.0,
                   help="GNMT length-penalty alpha for beam search (0: plain log-probability sum)")
    p.add_argument("--temperature", type=cli.positive_float, default=None,
                   help="sample words at this temperature instead of greedy/beam decoding")
    p.add_argument("--max-length", type=cli.positive_int, default=16, help="most words per caption, <END> included")
    p.add_argument("--evaluate", action="store_true",
                   help="caption every image of the split and compute BLEU, METEOR, ROUGE-L, CIDEr (+ grounding)")
    p.add_argument("--out", default=None, help="directory for gallery PNGs (default: the checkpoint's directory)")
    p.add_argument("--output", default=None, help="write predictions, references and metrics to this JSON file")
    p.add_argument("--image", nargs="+", default=[], metavar="FILE",
                   help="caption your own image files (encoded like the training dataset's images)")
    p.add_argument("--images-dir", default=None, help="COCO: folder of the split's jpg files, for galleries")
    p.add_argument("--no-fetch", action="store_true", help="COCO: never fetch gallery images from their URLs")
    p.add_argument("--device", default="auto", help="torch device for the transformer: auto, cpu or cuda[:N]")
    p.add_argument("--seed", type=int, default=0, help="seeds the choice of shown images and sampling")
    args = p.parse_args(argv)
    if args.image and args.evaluate:
        p.error("--image and --evaluate do not go together: evaluation needs a dataset split")
    return args


def main(argv=None):
    from core.decoding import DecodeConfig
    from core.inference import InferenceSettings, run_inference

    args = parse_args(argv)
    decode = DecodeConfig(beam_size=args.beam_size, length_penalty=args.length_penalty, temperature=args.temperature)
    settings = InferenceSettings(model=args.model, checkpoint=args.checkpoint, split=args.split,
                                 num_samples=args.num_samples, dataset=args.dataset, data_dir=args.data_dir,
                                 decode=decode, max_length=args.max_length, evaluate=args.evaluate, out=args.out,
                                 output=args.output, images=args.image, images_dir=args.images_dir,
                                 fetch_urls=not args.no_fetch, device=args.device, seed=args.seed)
    run_inference(settings)
    return 0


if __name__ == "__main__":
    cli.run(main)
