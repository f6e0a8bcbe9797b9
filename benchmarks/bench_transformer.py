"""Benchmark of CaptioningTransformer: a training step against torch's built-in decoder, and KV-cached decoding.

Run as ``python -m benchmarks.bench_transformer [--device cpu|cuda] [--repeats R] [--threads K]
[--decode-images N]``.

1. One training step (forward, backward, AdamW step) at N=128, T=16, W=256, 2 heads, 2 layers,
   feed-forward 2048, V=1004, float32, with the decoder layers of the same captioning model being: the
   built-in ``torch.nn.TransformerDecoderLayer`` (batch_first, post-norm, same dropout probability,
   torch's dropout kernel), ours with hand-written attention, ours with fused attention, and ours without
   attention at all (its time is the floor under any attention code). Ours draw dropout masks 16 bits at
   a time (``core.layers.dropout``). Ratios are built-in time / this time: above 1.0 is faster.
2. The attention cores softmax(QK^T/sqrt(Dh))V of one step, hand-written against torch's fused kernel:
   the only part the ``fused`` flag changes, hence the most it can gain.
3. Greedy decoding of N images to 30 words with the key/value cache against full-prefix recomputation
   (every row decodes all 30 steps, so both do the same work whatever the untrained model writes).
"""
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from benchmarks.harness import interleaved_medians, print_rows, report_blas, report_machine, time_call
from core.data.layout import SPECIAL_TOKENS
from core.layers.attention import scaled_dot_product
from core.layers.dropout import Dropout, relu_dropout
from core.model.transformer import CaptioningTransformer
from core.runtime.cli import ArgumentParser, positive_int, run
from core.runtime.errors import UserError

BATCH, LENGTH, INPUT_DIM, VOCAB_WORDS = 128, 16, 512, 1000
MODEL = dict(input_dim=INPUT_DIM, wordvec_dim=256, num_heads=2, num_layers=2, dim_feedforward=2048,
             dropout=0.1)
DECODE_STEPS = 30


class BuiltinDecoderLayer(nn.TransformerDecoderLayer):
    """torch's decoder layer behind our layer's call signature and mask convention (True = may attend)."""

    def forward(self, tgt, memory, tgt_mask=None):
        # The model only passes causal masks; saying so lets torch pick its fastest causal kernel.
        return super().forward(tgt, memory, tgt_mask=~tgt_mask, tgt_is_causal=True)


class AttentionFreeLayer(nn.Module):
    """Our decoder layer with both attention blocks removed (norm, feed-forward, dropouts kept).

    Its step time is what any attention implementation must add to: built-in / attention-free is the
    highest ratio an attention rewrite could reach in this model.
    """

    def __init__(self, width, dim_feedforward, dropout):
        super().__init__()
        self.linear1 = nn.Linear(width, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, width)
        self.norm = nn.LayerNorm(width)
        self.dropout3 = Dropout(dropout)

    def forward(self, tgt, memory, tgt_mask=None):
        hidden = relu_dropout(self.linear1(tgt), self.dropout3.p, self.training)  # (N, T, W) -> (N, T, F)
        return self.norm(tgt + self.dropout3(self.linear2(hidden)))  # (N, T, F) -> (N, T, W)


def vocabulary():
    words = list(SPECIAL_TOKENS) + [f"word{i}" for i in range(VOCAB_WORDS)]
    return {word: index for index, word in enumerate(words)}


def build_model(kind, device):
    """CaptioningTransformer whose decoder layers are of ``kind``: one of KINDS."""
    torch.manual_seed(0)
    model = CaptioningTransformer(vocabulary(), fused=kind == "fused", **MODEL)
    W, H, F, p = MODEL["wordvec_dim"], MODEL["num_heads"], MODEL["dim_feedforward"], MODEL["dropout"]
    if kind == "built-in":
        layers = [BuiltinDecoderLayer(W, H, F, p, batch_first=True, norm_first=False)
                  for _ in range(MODEL["num_layers"])]
        model.layers = nn.ModuleList(layers)
    elif kind == "attention-free":
        model.layers = nn.ModuleList(AttentionFreeLayer(W, F, p) for _ in range(MODEL["num_layers"]))
    return model.to(device)


KINDS = ("built-in", "hand-written", "fused", "attention-free")


def training_steps(device, rng):
    """One closure per kind, each running forward + backward + AdamW step on the same batch."""
    features = torch.from_numpy(rng.standard_normal((BATCH, INPUT_DIM)).astype(np.float32)).to(device)
    captions = torch.from_numpy(rng.integers(4, 4 + VOCAB_WORDS, size=(BATCH, LENGTH + 1))).to(device)

    def make_step(kind):
        model = build_model(kind, device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step():
            optimizer.zero_grad(set_to_none=True)
            model.loss(features, captions).backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
        return step

    return {kind: make_step(kind) for kind in KINDS}


def attention_core_seconds(device, repeats):
    """Median seconds of the attention cores of one training step (forward + backward): per layer one
    causal self-attention over T keys and one cross-attention over the single memory key.

    This is the only part the ``fused`` flag changes; returns {"hand-written": s, "fused": s}.
    """
    H, p = MODEL["num_heads"], MODEL["dropout"]
    Dh = MODEL["wordvec_dim"] // H
    generator = torch.Generator(device=device).manual_seed(0)

    def heads(length):
        return torch.randn(BATCH, H, length, Dh, device=device, generator=generator, requires_grad=True)

    causal = torch.ones(LENGTH, LENGTH, dtype=torch.bool, device=device).tril()  # (T, T)
    shapes = [(heads(LENGTH), heads(LENGTH), heads(LENGTH), causal), (heads(LENGTH), heads(1), heads(1), None)]
    dropout = Dropout(p).train()  # the model's own dropout (torch's kernel applies its own)
    cores = {
        "hand-written": lambda q, k, v, mask: scaled_dot_product(q, k, v, mask, dropout),
        "fused": lambda q, k, v, mask: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p),
    }

    def run_cores(core):
        for _ in range(MODEL["num_layers"]):
            for q, k, v, mask in shapes:
                core(q, k, v, mask).sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return {kind: time_call(lambda core=core: run_cores(core), repeats=repeats, warmup=2)
            for kind, core in cores.items()}


def decode(model, features, use_cache):
    """Greedy words of shape (N, DECODE_STEPS), every row run for every step."""
    state = model.init_decode(features, use_cache=use_cache)
    tokens = np.full(features.shape[0], model.start_idx)
    words = []
    desc = "decoding with cache" if use_cache else "decoding by recomputation"
    for _ in tqdm(range(DECODE_STEPS), desc=desc, leave=False):
        log_probs, state = model.decode_step(tokens, state)
        tokens = log_probs.argmax(axis=1)
        words.append(tokens)
    return np.stack(words, axis=1)


def decoding_seconds(device, rng, num_images):
    """(cached seconds, recomputed seconds), each one timed run after a small warm-up."""
    model = build_model("hand-written", device).eval()
    features = rng.standard_normal((num_images, INPUT_DIM)).astype(np.float32)
    seconds, words = {}, {}
    for use_cache in (True, False):
        decode(model, features[:8], use_cache)
        start = time.perf_counter()
        words[use_cache] = decode(model, features, use_cache)
        seconds[use_cache] = time.perf_counter() - start
    if not np.array_equal(words[True], words[False]):
        raise AssertionError("cached and recomputed decoding disagree")
    return seconds[True], seconds[False]


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where the models run (default: cpu)")
    parser.add_argument("--repeats", type=positive_int, default=5,
                        help="timed training steps per decoder, median reported (default: 5)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch intra-op threads (default: torch's own choice)")
    parser.add_argument("--decode-images", type=positive_int, default=1000,
                        help="images decoded to 30 words, each mode timed once (default: 1000)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible; use --device cpu")
    return args


TARGETS = {"hand-written": 1.0, "fused": 1.2}  # built-in / ours, from the project brief


def report_training(device, rng, repeats):
    seconds = interleaved_medians(training_steps(device, rng), repeats=repeats)  # kind -> median seconds
    rows = []
    for kind, s in seconds.items():
        target = f" (target >= {TARGETS[kind]:.1f}x)" if kind in TARGETS else ""
        rows.append((f"{kind} step", f"{1e3 * s:8.1f} ms   built-in / this = {seconds['built-in'] / s:.2f}x{target}"))
    print_rows(f"Training step, N={BATCH} T={LENGTH} {MODEL} V={len(vocabulary())} float32 "
               "(attention-free: the ceiling for any attention code)", rows)

    cores = attention_core_seconds(device, repeats)
    step = seconds["hand-written"]
    rows = [(f"{kind} cores", f"{1e3 * s:8.1f} ms = {100 * s / step:.1f}% of the hand-written step")
            for kind, s in cores.items()]
    rows.append(("fused ceiling", "built-in / (hand-written step - hand-written cores) = "
                                  f"{seconds['built-in'] / (step - cores['hand-written']):.2f}x"))
    print_rows("Attention cores softmax(QK^T/sqrt(Dh))V of one step, fwd+bwd (all the fused flag changes)", rows)


def report_decoding(device, rng, num_images):
    cached, recomputed = decoding_seconds(device, rng, num_images)
    print_rows(f"Greedy decoding of {num_images} images to {DECODE_STEPS} words (identical words)", [
        ("key/value cache", f"{cached:8.2f} s"),
        ("full-prefix recomputation", f"{recomputed:8.2f} s"),
        ("speed-up", f"{recomputed / cached:8.2f}x (target >= 2x)"),
    ])


def main(argv=None):
    args = parse_args(argv)
    report_machine()
    report_blas()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    print(f"device={device} threads={torch.get_num_threads()} repeats={args.repeats} torch={torch.__version__}")
    report_training(device, rng, args.repeats)
    report_decoding(device, rng, args.decode_images)


if __name__ == "__main__":
    run(main)
