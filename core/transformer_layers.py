"""The classic CS231n import path of the Transformer layers: ``from core.transformer_layers import
PositionalEncoding, MultiHeadAttention``.

The layers live in ``core.layers.attention`` and ``core.layers.transformer``; this module re-exports them.
"""
from core.layers.attention import MultiHeadAttention
from core.layers.transformer import PositionalEncoding, TransformerDecoderLayer

__all__ = ["PositionalEncoding", "MultiHeadAttention", "TransformerDecoderLayer"]
