"""Multi-head attention written from tensor ops, with the key/value cache of incremental decoding.

Dimension legend used throughout:
- N: batch size (images)
- S: query sequence length
- T: key/value sequence length
- E: embedding width (``embed_dim``)
- H: number of attention heads
- Dh: width of one head, E // H

Attention masks follow one convention everywhere: ``attn_mask`` of shape (S, T), boolean or 0/1, where
True/1 means "query s may attend to key t" and False/0 means it may not (the opposite of
``torch.nn.MultiheadAttention``, whose boolean True means blocked). Every query must be allowed at least
one key, otherwise its softmax is undefined.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.layers.dropout import Dropout


def scaled_dot_product(q, k, v, allowed=None, dropout=None, need_weights=False):
    """The hand-written attention core: softmax(q k^T / sqrt(Dh)) v per head.

    Inputs:
    - q: queries of shape (N, H, S, Dh).
    - k: keys of shape (N, H, T, Dh).
    - v: values of shape (N, H, T, Dh).
    - allowed: optional bool mask of shape (S, T), True where query s may attend to key t.
    - dropout: optional module applied to the attention weights.
    - need_weights: also return the attention weights (before dropout).

    Returns:
    - output of shape (N, H, S, Dh).
    - with need_weights, also the weights of shape (N, H, S, T), in at least float32, summing to 1 over T.
    """
    weights = attention_weights(q, k, allowed)  # (N, H, S, T)
    dropped = weights.to(v.dtype)
    if dropout is not None:
        dropped = dropout(dropped)
    output = dropped @ v  # (N, H, S, T) @ (N, H, T, Dh) -> (N, H, S, Dh)
    return (output, weights) if need_weights else output


def attention_weights(q, k, allowed=None):
    """softmax(q k^T / sqrt(Dh)) over the keys, per head.

    Inputs:
    - q: queries of shape (N, H, S, Dh).
    - k: keys of shape (N, H, T, Dh).
    - allowed: optional bool mask of shape (S, T), True where query s may attend to key t.

    Returns:
    - weights of shape (N, H, S, T), in at least float32, 0 where not allowed, summing to 1 over T.
    """
    # Scaling q rather than the scores touches S*Dh numbers instead of S*T.
    scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-2, -1)  # (N,H,S,Dh) @ (N,H,Dh,T) -> (N,H,S,T)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))  # (N, H, S, T), mask broadcast
    # Softmax in at least float32 so half-precision scores under autocast keep their mass.
    return torch.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32))


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention with dropout on the attention weights.

    ``forward(query, key, value)`` is the usual entry point. Incremental decoding splits it in two:
    ``project_kv`` turns keys/values into per-head tensors once (to cache or concatenate), and
    ``attend`` runs a query against such head tensors. With ``need_weights`` both also return the attention
    weights averaged over heads, as ``torch.nn.MultiheadAttention`` does by default.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.1, fused=False):
        """
        Inputs:
        - embed_dim: E, the width of queries, keys, values and output.
        - num_heads: H, which must divide E.
        - dropout: probability of zeroing an attention weight during training.
        - fused: use torch's scaled_dot_product_attention kernel instead of the hand-written
          softmax(QK^T / sqrt(Dh)) V; same weights, same mask convention.
        """
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.fused = fused
        self.query = nn.Linear(embed_dim, embed_dim)
        self.key = nn.Linear(embed_dim, embed_dim)
        self.value = nn.Linear(embed_dim, embed_dim)
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.attn_drop = Dropout(dropout)

    def forward(self, query, key, value, attn_mask=None, need_weights=False):
        """
        Inputs:
        - query: of shape (N, S, E).
        - key: of shape (N, T, E).
        - value: of shape (N, T, E).
        - attn_mask: optional, of shape (S, T), bool or 0/1; False/0 means "may not attend".
        - need_weights: also return the attention weights (see ``attend``).

        Returns:
        - output of shape (N, S, E).
        - with need_weights, also the weights of shape (N, S, T) (see ``attend``).
        """
        if key.shape != value.shape:
            raise ValueError(f"key {tuple(key.shape)} and value {tuple(value.shape)} differ in shape")
        key_heads, value_heads = self.project_kv(key, value)
        return self.attend(query, key_heads, value_heads, attn_mask, need_weights)

    def project_kv(self, key, value):
        """Project keys and values into heads, once per sequence, so a cache can hold them.

        Inputs:
        - key: of shape (N, T, E).
        - value: of shape (N, T, E).

        Returns a tuple of:
        - key_heads: of shape (N, H, T, Dh).
        - value_heads: of shape (N, H, T, Dh).
        """
        self._check_width(key, "key")
        self._check_width(value, "value")
        return self._split_heads(self.key(key)), self._split_heads(self.value(value))

    def attend(self, query, key_heads, value_heads, attn_mask=None, need_weights=False):
        """Attend from ``query`` to keys/values already projected by ``project_kv``.

        Inputs:
        - query: of shape (N, S, E).
        - key_heads: of shape (N, H, T, Dh).
        - value_heads: of shape (N, H, T, Dh).
        - attn_mask: optional, of shape (S, T), bool or 0/1; False/0 means "may not attend".
        - need_weights: also return the attention weights, averaged over heads, before dropout. The fused
          kernel does not expose its weights, so the fused path computes them by the hand-written formula.

        Returns:
        - output of shape (N, S, E).
        - with need_weights, also the weights of shape (N, S, T), in at least float32, summing to 1 over T.
        """
        self._check_width(query, "query")
        N, S, _ = query.shape
        T = key_heads.shape[2]
        if key_heads.shape != (N, self.num_heads, T, self.head_dim) or value_heads.shape != key_heads.shape:
            raise ValueError(f"key/value heads {tuple(key_heads.shape)}, {tuple(value_heads.shape)} do not "
                             f"match (N, H, T, Dh) = ({N}, {self.num_heads}, T, {self.head_dim})")
        allowed = None
        if attn_mask is not None:
            if attn_mask.shape != (S, T):
                raise ValueError(f"attn_mask of shape {tuple(attn_mask.shape)} should be (S, T) = ({S}, {T})")
            allowed = attn_mask.to(device=query.device, dtype=torch.bool)
        q = self._split_heads(self.query(query))  # (N, S, E) -> (N, H, S, Dh)
        weights = None
        if self.fused:
            p = self.attn_drop.p if self.training else 0.0
            heads = F.scaled_dot_product_attention(q, key_heads, value_heads, attn_mask=allowed, dropout_p=p)
            if need_weights:
                weights = attention_weights(q, key_heads, allowed)  # (N, H, S, T)
        elif need_weights:
            heads, weights = scaled_dot_product(q, key_heads, value_heads, allowed, self.attn_drop, True)
        else:
            heads = scaled_dot_product(q, key_heads, value_heads, allowed, self.attn_drop)
        # (N, H, S, Dh) -> (N, S, H, Dh) -> (N, S, E)
        output = self.proj(heads.transpose(1, 2).reshape(N, S, self.embed_dim))
        return (output, weights.mean(dim=1)) if need_weights else output  # (N, H, S, T) -> (N, S, T)

    def _split_heads(self, x):
        """(N, L, E) -> (N, H, L, Dh)."""
        N, L, _ = x.shape
        return x.view(N, L, self.num_heads, self.head_dim).transpose(1, 2)  # (N,L,H,Dh) -> (N,H,L,Dh)

    def _check_width(self, x, name):
        if x.dim() != 3 or x.shape[-1] != self.embed_dim:
            raise ValueError(f"{name} of shape {tuple(x.shape)} should be (N, L, E) with E={self.embed_dim}")


@dataclass
class LayerCache:
    """The key/value heads one decoder layer has computed so far during incremental decoding.

    - key, value: self-attention heads of the positions fed so far, each of shape (N, H, t, Dh).
    - memory_key, memory_value: cross-attention heads of the image memory, each of shape (N, H, M, Dh),
      computed once per image.
    """
    key: torch.Tensor
    value: torch.Tensor
    memory_key: torch.Tensor
    memory_value: torch.Tensor

    def append(self, key, value):
        """A cache extended by the heads of new positions, each of shape (N, H, s, Dh)."""
        return LayerCache(torch.cat([self.key, key], dim=2), torch.cat([self.value, value], dim=2),
                          self.memory_key, self.memory_value)

    def select(self, index):
        """A cache whose row i is this cache's row index[i]; index a long tensor of shape (M,)."""
        return LayerCache(self.key[index], self.value[index], self.memory_key[index], self.memory_value[index])
