"""The Transformer decoder layer and the sinusoidal positional encoding, written from tensor ops.

Dimension legend and attention-mask convention as in ``core.layers.attention`` (N batch, S query length, T key
length or caption positions, E embedding width, H heads), plus F, the feed-forward width (``dim_feedforward``).
"""
import math

import torch
from torch import nn

from core.layers.attention import LayerCache, MultiHeadAttention
from core.layers.dropout import Dropout, relu_dropout


class PositionalEncoding(nn.Module):
    """Adds the sinusoidal encoding of Vaswani et al. to a sequence of embeddings, then dropout.

    Even channels 2i hold sin(p / 10000^(2i/E)), odd channels 2i+1 hold cos(p / 10000^(2i/E)).
    """

    def __init__(self, embed_dim, dropout=0.1, max_len=5000):
        """
        Inputs:
        - embed_dim: E, the width of the embeddings (even).
        - dropout: probability of zeroing an element after adding the encoding.
        - max_len: the most positions ever encoded.
        """
        super().__init__()
        if embed_dim % 2 != 0:
            raise ValueError(f"PositionalEncoding needs an even embed_dim, got {embed_dim}")
        self.dropout = Dropout(dropout)
        positions = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)  # (max_len, 1)
        inv_freq = torch.exp(torch.arange(0, embed_dim, 2, dtype=torch.float32)
                             * (-math.log(10000.0) / embed_dim))  # (E/2,)
        angles = positions * inv_freq  # (max_len, 1) * (E/2,) -> (max_len, E/2)
        pe = torch.zeros(1, max_len, embed_dim)
        pe[0, :, 0::2] = torch.sin(angles)
        pe[0, :, 1::2] = torch.cos(angles)
        # Not persistent: the table is a pure function of the constructor arguments.
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, x, offset=0):
        """
        Inputs:
        - x: embeddings of shape (N, T, E), standing at positions offset .. offset + T - 1.
        - offset: int, the position of x[:, 0]; incremental decoding passes the step index.

        Returns:
        - output of shape (N, T, E).
        """
        T = x.shape[1]
        if offset < 0 or offset + T > self.pe.shape[1]:
            raise ValueError(f"positions {offset}..{offset + T - 1} exceed max_len={self.pe.shape[1]}")
        return self.dropout(x + self.pe[:, offset:offset + T])  # (N, T, E) + (1, T, E)


class TransformerDecoderLayer(nn.Module):
    """One post-norm decoder layer (Vaswani et al., CS231n): masked self-attention, cross-attention to the
    image memory, then a ReLU feed-forward block, each wrapped as LayerNorm(x + Dropout(sublayer(x))).

    Submodule names follow ``torch.nn.TransformerDecoderLayer`` (the cross-attention is ``cross_attn``).
    """

    def __init__(self, input_dim, num_heads, dim_feedforward=2048, dropout=0.1, fused=False):
        """
        Inputs:
        - input_dim: E, the width of the sequence and of the memory.
        - num_heads: H, attention heads in both attention blocks.
        - dim_feedforward: F, the hidden width of the feed-forward block.
        - dropout: probability used by every dropout in the layer.
        - fused: passed to both attention blocks.
        """
        super().__init__()
        self.self_attn = MultiHeadAttention(input_dim, num_heads, dropout, fused)
        self.cross_attn = MultiHeadAttention(input_dim, num_heads, dropout, fused)
        self.linear1 = nn.Linear(input_dim, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, input_dim)
        self.norm1 = nn.LayerNorm(input_dim)
        self.norm2 = nn.LayerNorm(input_dim)
        self.norm3 = nn.LayerNorm(input_dim)
        self.dropout = Dropout(dropout)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.dropout3 = Dropout(dropout)

    def forward(self, tgt, memory, tgt_mask=None, need_weights=False):
        """
        Inputs:
        - tgt: the sequence of shape (N, T, E).
        - memory: the image memory of shape (N, M, E).
        - tgt_mask: optional self-attention mask of shape (T, T), bool or 0/1, False/0 = may not attend.
        - need_weights: also return the cross-attention weights.

        Returns:
        - output of shape (N, T, E).
        - with need_weights, also the cross-attention weights over the memory, averaged over heads, of
          shape (N, T, M).
        """
        self_heads = self.self_attn.project_kv(tgt, tgt)
        memory_heads = self.cross_attn.project_kv(memory, memory)
        output, weights = self._sublayers(tgt, self_heads, memory_heads, tgt_mask, need_weights)
        return (output, weights) if need_weights else output

    def init_cache(self, memory):
        """An empty cache for incremental decoding; the memory is projected here, once.

        Inputs:
        - memory: the image memory of shape (N, M, E).

        Returns:
        - a LayerCache holding no position yet.
        """
        memory_key, memory_value = self.cross_attn.project_kv(memory, memory)
        N, H, _, Dh = memory_key.shape
        empty = memory_key.new_empty((N, H, 0, Dh))
        return LayerCache(empty, empty, memory_key, memory_value)

    def step(self, tgt, cache, need_weights=False):
        """Run the layer on the next position(s) only, attending to every position cached before.

        Inputs:
        - tgt: the new position of shape (N, 1, E), standing right after the cached ones.
        - cache: the LayerCache of the positions before.
        - need_weights: also return the cross-attention weights of this position.

        Returns a tuple of:
        - output of shape (N, 1, E), equal to ``forward`` on the full prefix at that position.
        - the cache extended by this position.
        - with need_weights, the cross-attention weights over the memory, averaged over heads, of shape (N, M).
        """
        if tgt.shape[1] != 1:
            raise ValueError(f"step takes one position at a time, got tgt of shape {tuple(tgt.shape)}")
        cache = cache.append(*self.self_attn.project_kv(tgt, tgt))
        # No mask: the single new query may see every cached position, all of which precede it.
        memory_heads = (cache.memory_key, cache.memory_value)
        out, weights = self._sublayers(tgt, (cache.key, cache.value), memory_heads, None, need_weights)
        return (out, cache, weights[:, 0]) if need_weights else (out, cache)  # weights (N, 1, M) -> (N, M)

    def _sublayers(self, tgt, self_heads, memory_heads, tgt_mask, need_weights):
        """The three residual blocks given projected self/memory key-value heads: (N,T,E) -> (N,T,E), and the
        cross-attention weights of shape (N, T, M) averaged over heads (None unless need_weights)."""
        x = self.norm1(tgt + self.dropout1(self.self_attn.attend(tgt, *self_heads, tgt_mask)))
        cross = self.cross_attn.attend(x, *memory_heads, need_weights=need_weights)
        cross, weights = cross if need_weights else (cross, None)
        x = self.norm2(x + self.dropout2(cross))
        hidden = relu_dropout(self.linear1(x), self.dropout.p, self.training)  # (N, T, E) -> (N, T, F)
        feed_forward = self.linear2(hidden)  # (N, T, F) -> (N, T, E)
        return self.norm3(x + self.dropout3(feed_forward)), weights
