"""CIDEr-D speed: this project's vectorised scorer against pycocoevalcap's ``Cider`` on the same captions.

The workload is a self-critical training step's reward: 128 images x 5 sampled captions, 5 references each, the
document frequencies of a training set fixed in advance (ours) — pycocoevalcap has no such mode, so it scores the
640 captions as 640 entries with their image's references, which is how self-critical codebases call it. Both are
timed in turns; the ratio is reported, and the scores of the corpus mode are checked equal first.

    python -m benchmarks.bench_cider [--images 128] [--samples 5] [--train-images 5000]
"""
import numpy as np
from pycocoevalcap.cider.cider import Cider

from benchmarks.harness import interleaved_medians, print_rows, report_blas, report_machine
from core.evaluation.cider import CiderD, DocumentFrequency
from core.runtime.cli import ArgumentParser, positive_int, run

WORDS = 1000  # a COCO-like vocabulary of frequent words


def captions(rng, count):
    """``count`` captions of 8-15 words drawn from a Zipf-like distribution, as lists of words."""
    weights = 1.0 / np.arange(1, WORDS + 1)
    words = np.array([f"w{i}" for i in range(WORDS)])
    return [list(rng.choice(words, rng.integers(8, 16), p=weights / weights.sum())) for _ in range(count)]


def main(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=positive_int, default=128, help="images in the batch")
    p.add_argument("--samples", type=positive_int, default=5, help="sampled captions per image")
    p.add_argument("--references", type=positive_int, default=5, help="reference captions per image")
    p.add_argument("--train-images", type=positive_int, default=5000, help="images of the document frequencies")
    p.add_argument("--repeats", type=positive_int, default=15, help="rounds of turns")
    args = p.parse_args(argv)
    report_machine()
    report_blas()
    rng = np.random.default_rng(0)
    df = DocumentFrequency([captions(rng, args.references) for _ in range(args.train_images)])
    refs = [captions(rng, args.references) for _ in range(args.images)]
    hyps = captions(rng, args.images * args.samples)
    image = np.repeat(np.arange(args.images), args.samples)
    gts = {i: [" ".join(r) for r in refs[image[i]]] for i in range(len(hyps))}
    res = {i: [" ".join(h)] for i, h in enumerate(hyps)}
    ours, theirs = CiderD(document_frequency=df), Cider()
    assert np.allclose(CiderD().compute_score(gts, res)[1], theirs.compute_score(gts, res)[1], rtol=0, atol=1e-9)
    seconds = interleaved_medians({"ours": lambda: ours.score(hyps, image, refs),
                                   "ours, corpus": lambda: CiderD().compute_score(gts, res),
                                   "pycocoevalcap": lambda: theirs.compute_score(gts, res)}, repeats=args.repeats)
    print_rows(f"CIDEr-D of {len(hyps)} captions ({args.images} images x {args.samples}), {args.references} "
               f"references each, median of {args.repeats} rounds in turns", [
                   ("ours, train document frequencies", f"{seconds['ours'] * 1e3:.1f} ms"),
                   ("ours, corpus document frequencies", f"{seconds['ours, corpus'] * 1e3:.1f} ms"),
                   ("pycocoevalcap Cider", f"{seconds['pycocoevalcap'] * 1e3:.1f} ms"),
                   ("ratio pycocoevalcap/ours (train)", f"{seconds['pycocoevalcap'] / seconds['ours']:.1f}"),
                   ("ratio pycocoevalcap/ours (corpus)", f"{seconds['pycocoevalcap'] / seconds['ours, corpus']:.1f}")])
    return 0


if __name__ == "__main__":
    run(main)
