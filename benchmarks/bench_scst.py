"""What a self-critical step of the LSTM spends on its rewards: the CIDEr-D of the sampled captions, within a
whole step (sampling, rewards, the weighted loss's forward and backward, the update).

The model is the default LSTM (word vectors 256, hidden 512) over a COCO-sized vocabulary, untrained, so its
samples run to the full 16 words: longer than a trained model's, the most the reward has to score. The document
frequencies are those of 5,000 training images' references.

    python -m benchmarks.bench_scst [--images 128] [--samples 5] [--vocab 1004]
"""
import time

import numpy as np

from benchmarks.harness import print_rows, report_blas, report_machine
from core.data.layout import SPECIAL_TOKENS
from core.evaluation.cider import DocumentFrequency
from core.model.rnn_model import CaptioningRNN
from core.runtime.cli import ArgumentParser, positive_int, run
from core.training.optim import NumpyUpdater
from core.training.recipes import OptimConfig
from core.training.scst import SCSTConfig, SCSTUpdater, image_references


class TimedRewards(SCSTUpdater):
    """An SCSTUpdater that adds up the seconds its reward computations take."""
    reward_seconds = 0.0

    def rewards(self, *args):
        start = time.perf_counter()
        scores = super().rewards(*args)
        self.reward_seconds += time.perf_counter() - start
        return scores


def references(rng, images, per_image, vocab, length=17):
    """Reference rows (images, per_image, length): <START>, 8-15 words, <END>, <NULL> padding."""
    refs = np.zeros((images, per_image, length), dtype=np.int64)
    for slot in np.ndindex(images, per_image):
        k = rng.integers(8, 16)
        refs[slot][0], refs[slot][k + 1] = 1, 2
        refs[slot][1:k + 1] = rng.integers(len(SPECIAL_TOKENS), vocab, k)
    return refs


def main(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=positive_int, default=128, help="images per minibatch")
    p.add_argument("--samples", type=positive_int, default=5, help="captions sampled per image")
    p.add_argument("--vocab", type=positive_int, default=1004, help="vocabulary size")
    p.add_argument("--steps", type=positive_int, default=6, help="steps timed (after one warm-up step)")
    args = p.parse_args(argv)
    report_machine()
    report_blas()
    rng = np.random.default_rng(0)
    words = list(SPECIAL_TOKENS) + [f"w{i}" for i in range(args.vocab - len(SPECIAL_TOKENS))]
    model = CaptioningRNN({w: i for i, w in enumerate(words)}, cell_type="lstm", input_dim=512)
    df = DocumentFrequency(image_references(references(rng, 5000, 5, args.vocab), start_idx=1, null_idx=0))
    updater = TimedRewards(NumpyUpdater(model, OptimConfig(lr=2e-4)), SCSTConfig(samples=args.samples), df)
    features = rng.standard_normal((args.images, 512)).astype(np.float32)
    refs = references(rng, args.images, 5, args.vocab)
    updater.train_step(features, refs, 2e-4, np.random.default_rng(1))
    updater.reward_seconds, steps = 0.0, []
    for step in range(args.steps):
        start = time.perf_counter()
        updater.train_step(features, refs, 2e-4, np.random.default_rng(step))
        steps.append(time.perf_counter() - start)
    step_seconds, reward_seconds = sum(steps) / len(steps), updater.reward_seconds / len(steps)
    print_rows(f"self-critical LSTM step, {args.images} images x {args.samples} samples, mean of {args.steps} steps", [
        ("whole step", f"{step_seconds * 1e3:.0f} ms"),
        ("rewards (CIDEr-D of the samples)", f"{reward_seconds * 1e3:.1f} ms"),
        ("rewards' share of the step", f"{100 * reward_seconds / step_seconds:.1f}%")])
    return 0


if __name__ == "__main__":
    run(main)
