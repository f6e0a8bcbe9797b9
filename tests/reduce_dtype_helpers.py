"""One rank of a 2-process gloo group for tests/test_reduce_dtype.py: gradients reduced in each of REDUCE_DTYPES.

    RANK=r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=p python -m tests.reduce_dtype_helpers OUT_DIR

Writes OUT_DIR/rank<r>.npz: this rank's own gradients (``local/...``) and, per dtype, what the group reduced
(``<dtype>/...``): numpy and torch gradients through ``Group.gradient_reducer``, each times its rank's share, and a
small Transformer's gradients through ``Group.data_parallel_loss`` (DistributedDataParallel, which averages), with
the type and dtype each reduced gradient came back in (``<dtype>/<name>:type``).
"""
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from core.data.layout import SPECIAL_TOKENS
from core.model.registry import model_kind
from core.runtime.distributed import process_group
from core.runtime.gradient_reduction import REDUCE_DTYPES

SHARES = (0.25, 0.75)  # each rank's share of the loss; they sum to 1
WORDS = 24


def own_gradients(rank):
    """This rank's gradients: numpy float32 and float64, a torch float32 tensor; values spread over decades."""
    rng = np.random.default_rng(rank)
    spread = 10.0 ** rng.uniform(-4, 2, (48, 33))
    return {"numpy32": (rng.standard_normal((48, 33)) * spread).astype(np.float32),
            "numpy64": rng.standard_normal((7, 5)) * 1e-3,
            "torch32": torch.from_numpy((rng.standard_normal((300,)) * 10).astype(np.float32))}


def transformer_batch(rank):
    """Features (4, 32) and captions (4, 9) of this rank: <START>, 5 words, <END>, <NULL> padding."""
    rng = np.random.default_rng([rank, 1])
    captions = np.zeros((4, 9), dtype=np.int64)
    captions[:, 0], captions[:, 1:6], captions[:, 6] = 1, rng.integers(len(SPECIAL_TOKENS), WORDS, (4, 5)), 2
    return torch.from_numpy(rng.standard_normal((4, 32)).astype(np.float32)), torch.from_numpy(captions)


def transformer_gradients(group, rank):
    """The Transformer's gradients after one backward of this rank's batch, through DDP in a group, else alone."""
    kind = model_kind("transformer")
    words = [*SPECIAL_TOKENS, *(f"w{i}" for i in range(len(SPECIAL_TOKENS), WORDS))]
    features, captions = transformer_batch(rank)
    config = kind.make_config({"wordvec_dim": 16, "num_heads": 2, "num_layers": 1, "dropout": 0.0})
    model = kind.build({word: i for i, word in enumerate(words)}, config.for_data(features.numpy()))
    loss = group.data_parallel_loss(model, torch.device("cpu")) if group else model.loss
    loss(features, captions).backward()
    return {f"ddp/{name}": p.grad.numpy() for name, p in model.named_parameters()}


def reduced(group, rank):
    """Every gradient reduced in ``group.reduce_dtype``, with the type each came back as."""
    reducer = group.gradient_reducer(SHARES[rank])
    reducer.update(own_gradients(rank))
    reducer.finish(0.0)
    out = {name: np.asarray(value) for name, value in reducer.items()}
    out.update({f"{name}:type": f"{type(value).__name__} {value.dtype}" for name, value in reducer.items()})
    return {**out, **transformer_gradients(group, rank)}


def main(out_dir):
    with process_group() as group:
        rank = group.rank
        arrays = {f"local/{name}": np.asarray(g) for name, g in own_gradients(rank).items()}
        arrays.update({f"local/{name}": g for name, g in transformer_gradients(None, rank).items()})
        for dtype in REDUCE_DTYPES:
            arrays.update({f"{dtype}/{name}": value
                           for name, value in reduced(replace(group, reduce_dtype=dtype), rank).items()})
        np.savez(Path(out_dir) / f"rank{rank}.npz", **arrays)


if __name__ == "__main__":
    main(sys.argv[1])
