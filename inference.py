"""Caption images with a trained model: samples next to the truth, PNG galleries, evaluation, your own images.

    python inference.py --model lstm                          # 8 train + 8 val images, galleries in runs/lstm
    python inference.py --model transformer --evaluate --beam-size 3 --output val.json
    python inference.py --model lstm --image my_scene.png     # encoded with the dataset's own encoder + PCA
    python inference.py --model att_lstm --evaluate --split test  # + attention maps, attention correctness
    python inference.py --model lstm --evaluate --split novel     # + recall of held-out attribute-shape pairs
"""
if __name__ == "__main__":  # before the imports, which take seconds: Ctrl-C meanwhile is one line, code 130
    from core.runtime.interrupts import exit_on_interrupt

    exit_on_interrupt()
import argparse

from core.data.layout import ENCODER_INFO_FILE, END, EVALUATION_SPLITS, HELD_OUT_SPLIT, NOVEL_SPLIT, PROTOCOLS
from core.datasets.resolve import DATASETS
from core.decoding import DecodeConfig
from core.inference.engine import SHOWN_IMAGES, InferenceSettings
from core.model.registry import MODEL_TYPES
from core.runtime import cli

DEFAULTS = cli.defaults_of(InferenceSettings)
DECODE = cli.defaults_of(DecodeConfig)


def parse_args(argv=None):
    p = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, choices=MODEL_TYPES, help="the model type the checkpoint holds")
    p.add_argument("--checkpoint", default=DEFAULTS["checkpoint"],
                   help="checkpoint file (default: runs/<model>/best.npz, or best.pt for the transformer)")
    p.add_argument("--split", choices=EVALUATION_SPLITS, default=DEFAULTS["split"],
                   help=f"which split to caption (default: both for galleries, val for --evaluate); {HELD_OUT_SPLIT}: "
                        f"the held-out split, where the data has one; {NOVEL_SPLIT}: the shapes world's novel "
                        "compositions (held-out attribute-shape pairs), evaluated with novel-pair recall")
    p.add_argument("--num_samples", "--num-samples", dest="num_samples", type=cli.positive_int,
                   default=DEFAULTS["num_samples"],
                   help=f"number of images (not captions): shown per split (default {SHOWN_IMAGES}); with "
                        "--evaluate, only the split's first N are evaluated (default: all)")
    p.add_argument("--dataset", choices=DATASETS, default=DEFAULTS["dataset"],
                   help="dataset to caption (default: the one the checkpoint was trained on)")
    p.add_argument("--data-dir", default=DEFAULTS["data_dir"],
                   help="any folder in the CS231n layout; overrides --dataset")
    p.add_argument("--protocol", "--splits", action=cli.Renamed, choices=PROTOCOLS, default=DEFAULTS["protocol"],
                   help="which images make train/val/test: cs231n, the dataset's own files; karpathy, Karpathy's COCO "
                        "splits of them (--split test: the 5,000-image test of published scores; needs "
                        "dataset_coco.json: bash core/datasets/get_datasets.sh --karpathy); --splits is its old name "
                        "(default: the protocol the checkpoint was trained with)")
    p.add_argument("--beam-size", type=cli.positive_int, default=DECODE["beam_size"],
                   help=f"beam width; 1 decodes greedily (default {DECODE['beam_size']})")
    p.add_argument("--length-penalty", type=float, default=DECODE["length_penalty"],
                   help="GNMT length-penalty alpha for beam search (0: plain log-probability sum) (default "
                        f"{DECODE['length_penalty']})")
    p.add_argument("--temperature", type=cli.positive_float, default=DECODE["temperature"],
                   help="sample words at this temperature instead of greedy/beam decoding")
    p.add_argument("--max-length", type=cli.positive_int, default=DEFAULTS["max_length"],
                   help=f"most words per caption, {END} included (default {DEFAULTS['max_length']})")
    p.add_argument("--evaluate", action="store_true",
                   help="caption every image of the split and compute BLEU, METEOR, ROUGE-L, CIDEr (+ grounding)")
    p.add_argument("--out", default=DEFAULTS["out"],
                   help="directory for gallery PNGs (default: the checkpoint's directory)")
    p.add_argument("--output", default=DEFAULTS["output"],
                   help="write predictions, references and metrics to this JSON file")
    p.add_argument("--coco-results", default=DEFAULTS["coco_results"], metavar="FILE",
                   help="with --evaluate: also write the captions in the COCO results format ([{image_id, caption}], "
                        "ids from the image file names), for the official evaluation tools and server")
    p.add_argument("--report", default=DEFAULTS["report"], metavar="DIR",
                   help="with --evaluate: also write a static report page, DIR/index.html (every image with its "
                        "caption, references, per-image CIDEr-D and BLEU-4, grounding marks, beam hypotheses, "
                        "attention maps; sorting, filtering), opened from file:// with no server")
    p.add_argument("--compare", default=DEFAULTS["compare"], metavar="FILE",
                   help="with --report: show this earlier --output JSON's captions of the same split and images "
                        "beside this evaluation's")
    p.add_argument("--image", nargs="+", default=[], metavar="FILE",
                   help="caption your own image files (encoded like the training dataset's images)")
    p.add_argument("--vgg16-weights", default=DEFAULTS["vgg16_weights"], metavar="FILE",
                   help="with --image on a dataset of VGG16 features: the weights file its features were made with "
                        f"(checked against the SHA-256 its {ENCODER_INFO_FILE} records) (default: the torch hub "
                        "cache's file, used only when its SHA-256 is the recorded one)")
    p.add_argument("--images-dir", default=DEFAULTS["images_dir"],
                   help="COCO: folder of the split's jpg files, for galleries")
    p.add_argument("--no-fetch", action="store_true", help="COCO: never fetch gallery images from their URLs")
    p.add_argument("--attention-maps", type=cli.non_negative_int, default=DEFAULTS["attention_maps"], metavar="N",
                   help="attention models: save attention maps (attention_<split>_<row>.png) of the greedy captions "
                        f"of the first N shown images of each split; 0: none (default {DEFAULTS['attention_maps']})")
    cli.add_device(p, DEFAULTS["device"])
    cli.add_seed(p, DEFAULTS["seed"], "seeds the choice of shown images and sampling")
    cli.add_no_progress(p)
    args = p.parse_args(argv)
    if args.image and args.evaluate:
        p.error("--image and --evaluate do not go together: evaluation needs a dataset split")
    if args.vgg16_weights and not args.image:
        p.error("--vgg16-weights goes with --image: it encodes your images like the dataset's")
    if args.coco_results and not args.evaluate:
        p.error("--coco-results goes with --evaluate: it writes the evaluated captions")
    if args.report and not args.evaluate:
        p.error("--report goes with --evaluate: it shows the evaluated captions; add --evaluate")
    if args.compare and not args.report:
        p.error("--compare goes with --report: it shows an earlier --output beside this evaluation; add --report DIR")
    return args


def settings_from_args(args):
    """The InferenceSettings the parsed flags ask for."""
    decode = cli.settings_from_args(DecodeConfig, args)
    return cli.settings_from_args(InferenceSettings, args, decode=decode, images=tuple(args.image),
                                  fetch_urls=not args.no_fetch, progress=not args.no_progress)


def main(argv=None):
    from core.inference.engine import run_inference

    run_inference(settings_from_args(parse_args(argv)))
    return 0


if __name__ == "__main__":
    cli.run(main)
