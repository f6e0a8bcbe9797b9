"""Dropout whose masks cost a quarter of the random numbers: the Transformer's dropout, fused with ReLU
where the feed-forward block allows.

On the CPU, ``torch.nn.functional.dropout`` spends most of its time drawing one random number per
element (``bernoulli_``): in a training step of the captioning Transformer that is about 30% of the time.
Here one 64-bit random integer makes the decisions for four elements, 16 bits each: element k is
dropped when its 16-bit chunk, read as a signed integer, is below ``round(p * 2^16) - 2^15``. So the
dropout probability is p rounded to a multiple of 2^-16 (0.1 becomes 0.1000061), the kept elements
are scaled by 1 / (1 - that probability), and the expectation of every output equals its input exactly.

Both autograd functions keep only a 1-byte drop mask (dropout) or nothing beyond the output the next
layer keeps anyway (ReLU + dropout) for the backward pass.
"""
import math

import torch
from torch import nn

CHUNKS_PER_DRAW = 4  # 16-bit decisions per 64-bit random integer
LEVELS = 1 << 16


def drop_probability(p):
    """The probability actually used for a requested p in [0, 1): p rounded to a multiple of 2^-16."""
    return round(p * LEVELS) / LEVELS


def drop_mask(shape, p, device):
    """A bool tensor of ``shape``, True where an element is dropped, each with probability
    ``drop_probability(p)``, independently."""
    count = math.prod(shape)
    draws = torch.empty(-(-count // CHUNKS_PER_DRAW), dtype=torch.int64, device=device)
    draws.random_(-(1 << 63), (1 << 63) - 1)  # (almost) all 2^64 values: every 16-bit chunk uniform
    chunks = draws.view(torch.int16)[:count].view(shape)  # (count,) -> shape, 4 chunks per draw
    return chunks < round(p * LEVELS) - LEVELS // 2


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p):
        drop = drop_mask(x.shape, p, x.device)
        ctx.scale = 1.0 / (1.0 - drop_probability(p))
        ctx.save_for_backward(drop)
        return (x * ctx.scale).masked_fill_(drop, 0)

    @staticmethod
    def backward(ctx, grad):
        drop, = ctx.saved_tensors
        return (grad * ctx.scale).masked_fill_(drop, 0), None


class _ReluDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p):
        ctx.scale = 1.0 / (1.0 - drop_probability(p))
        out = torch.relu(x).mul_(ctx.scale).masked_fill_(drop_mask(x.shape, p, x.device), 0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        out, = ctx.saved_tensors
        # out > 0 exactly where x > 0 and the element was kept: ReLU's and dropout's gradients in one pass.
        return torch.ops.aten.threshold_backward(grad, out, 0).mul_(ctx.scale), None


def _check_p(p):
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")


def dropout(x, p, training=True):
    """Inverted dropout of ``x`` (any shape) with probability ``drop_probability(p)``; identity when not
    training or when that probability is 0."""
    _check_p(p)
    if not training or drop_probability(p) == 0:
        return x
    return _Dropout.apply(x, p)


def relu_dropout(x, p, training=True):
    """``dropout(relu(x), p, training)`` as one autograd step."""
    _check_p(p)
    if not training or drop_probability(p) == 0:
        return torch.relu(x)
    return _ReluDropout.apply(x, p)


class Dropout(nn.Module):
    """``nn.Dropout``'s interface (``p``, train/eval) over ``dropout`` above."""

    def __init__(self, p=0.1):
        super().__init__()
        _check_p(p)
        self.p = p

    def forward(self, x):
        return dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"
