"""CaptioningTransformer: a Transformer decoder that writes captions conditioned on image features.

The image features become the memory the decoder cross-attends to (``TransformerConfig.memory``): one position,
the projected feature vector, or a map's cells plus a global position (``GridMemory``); the caption is
embedded, position-encoded and decoded causally. Decoding implements the step interface of
``core.decoding`` with a per-layer key/value cache, or with full-prefix recomputation as a reference.

Dimension legend:
- N: batch size (images, or image x beam rows while decoding)
- D: image feature width (``input_dim``): of a feature vector, or of one cell of a map
- R: cells of a grid feature map; M: memory positions, 1 (pooled) or R + 1 (grid)
- T: caption length fed to the decoder
- t: number of positions decoded so far
- W: word vector width (``wordvec_dim``)
- V: vocabulary size
"""
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.decoding import greedy_decode
from core.layers.attention import LayerCache
from core.layers.transformer import PositionalEncoding, TransformerDecoderLayer
from core.model.captioner import set_vocabulary
from core.model.transformer_config import TransformerConfig
from core.model.transformer_inputs import GridMemory


def caption_loss(scores, captions_out, null_idx):
    """Cross-entropy averaged over the target positions that are not ``<NULL>``.

    Averaging over padding too (as the classic CS231n solver does) would shrink the loss and the
    gradient of short captions by their share of padding.

    Inputs:
    - scores: of shape (N, T, V), unnormalised word scores.
    - captions_out: of shape (N, T), the target word indices.
    - null_idx: int, the padding index to ignore.

    Returns:
    - loss: a scalar tensor (float32); 0 when every target is ``<NULL>``.
    """
    if scores.shape[:2] != captions_out.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and captions_out {tuple(captions_out.shape)} "
                         "disagree on (N, T)")
    targets = captions_out.reshape(-1)  # (N*T,)
    # float32 so the sum stays exact under autocast; the clamp avoids 0/0 without a host sync.
    total = F.cross_entropy(scores.reshape(-1, scores.shape[-1]).float(), targets,  # (N*T, V)
                            ignore_index=null_idx, reduction="sum")
    return total / (targets != null_idx).sum().clamp(min=1)


def weighted_caption_loss(scores, captions_out, null_idx, weights):
    """-sum_n weights[n] * log p(caption n) / N: self-critical training's surrogate, whose gradient is the policy
    gradient when ``weights`` are the advantages (the numpy models' ``loss(..., weights)`` computes the same).

    Inputs: scores of shape (N, T, V); captions_out of shape (N, T); weights of shape (N,).
    Returns: a scalar tensor (float32).
    """
    N, T, V = scores.shape
    word_loss = F.cross_entropy(scores.reshape(N * T, V).float(), captions_out.reshape(N * T),  # (N*T, V)
                                ignore_index=null_idx, reduction="none").view(N, T)  # (N*T,) -> (N, T)
    return (word_loss.sum(dim=1) * weights.float()).sum() / N


@dataclass
class DecodeState:
    """What decoding carries between steps.

    - memory: the image memory of shape (N, M, W).
    - tokens: the words fed so far, of shape (N, t), long.
    - caches: one LayerCache per decoder layer, or None in full-prefix recomputation mode.
    - attention: the last layer's cross-attention weights of the last step, averaged over heads, of shape
      (N, M); None before the first step. Every step keeps it: a mean over heads of weights the hand-written
      attention has anyway (the fused kernel hides its own, so there it is one more softmax, of one layer).
    """
    memory: torch.Tensor
    tokens: torch.Tensor
    caches: list[LayerCache] | None
    attention: torch.Tensor | None = None


class CaptioningTransformer(nn.Module):
    """Image features (N, D) -> memory (N, 1, W), or grid features (N, R, D) -> memory (N, R + 1, W);
    captions (N, T) -> word scores (N, T, V)."""

    attention_note = "last decoder layer's cross-attention, mean over heads; the global position's share not drawn"

    Config = TransformerConfig

    def __init__(self, word_to_idx, config=None, **options):
        """
        Inputs:
        - word_to_idx: dict word -> index over V words, with ``<NULL>``, ``<START>`` and ``<END>``.
        - config: a TransformerConfig (default: its defaults); ``options`` override its fields by name, e.g.
          ``CaptioningTransformer(word_to_idx, input_dim=512, wordvec_dim=256, num_heads=4)``.
        """
        super().__init__()
        self._config = config = replace(config or TransformerConfig(), **options)
        set_vocabulary(self, word_to_idx)
        self.input_dim = config.input_dim
        self.max_length = config.max_length
        vocab_size = len(word_to_idx)
        input_dim, wordvec_dim, dropout = config.input_dim, config.wordvec_dim, config.dropout
        num_heads, dim_feedforward, fused = config.num_heads, config.dim_feedforward, config.fused

        if config.memory == "grid":
            self.grid_memory = GridMemory(input_dim, config.num_cells, wordvec_dim, config.feature_scale)
        else:
            self.visual_projection = nn.Linear(input_dim, wordvec_dim)
        self.embedding = nn.Embedding(vocab_size, wordvec_dim, padding_idx=self.null_idx)
        self.positional_encoding = PositionalEncoding(wordvec_dim, dropout=dropout, max_len=config.max_length)
        self.layers = nn.ModuleList(
            TransformerDecoderLayer(wordvec_dim, num_heads, dim_feedforward, dropout, fused)
            for _ in range(config.num_layers))
        self.output = nn.Linear(wordvec_dim, vocab_size)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module):
        """Small normal weights (std 0.02, as GPT and CS231n do) keep early attention logits near zero."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)

    def config(self):
        """The JSON-able TransformerConfig of this model."""
        return asdict(self._config)

    def configure_optimizers(self, weight_decay, lr, betas):
        """AdamW whose decoupled weight decay reaches the matrices of the linear layers only: biases, LayerNorm
        gains and the embedding tables (the word table, whose rows see gradient only when their word occurs, and
        the grid memory's additive position tables) do not decay."""
        matrices = {id(m.weight) for m in self.modules() if isinstance(m, nn.Linear)}
        decay = [p for p in self.parameters() if id(p) in matrices]
        no_decay = [p for p in self.parameters() if id(p) not in matrices]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, betas=betas)

    def forward(self, features, captions):
        """
        Inputs:
        - features: image features of shape (N, D), or (N, R, D) with the grid memory.
        - captions: word indices of shape (N, T), long, T <= max_length; typically <START> w1 .. wk.

        Returns:
        - scores: of shape (N, T, V); scores[:, t] predict the word after captions[:, t].
        """
        if captions.dim() != 2 or captions.shape[0] != features.shape[0]:
            raise ValueError(f"captions of shape {tuple(captions.shape)} should be (N, T) with "
                             f"N={features.shape[0]} rows like the features")
        return self.output(self._decode(captions, self._memory(features)))

    def loss(self, features, captions, weights=None):
        """Teacher-forced loss of whole captions (``caption_loss`` of the shifted captions).

        Inputs:
        - features: image features of shape (N, D), or (N, R, D) with the grid memory.
        - captions: word indices of shape (N, T + 1), long: <START> w1 .. wk <END> <NULL> ...
        - weights: optional tensor of shape (N,), each caption's weight: then ``weighted_caption_loss``, the
          summed log-probability of each caption times its weight, over N (self-critical training).

        Returns:
        - loss: a scalar tensor.
        """
        scores = self(features, captions[:, :-1])  # (N, T, V), predicting captions[:, 1:]
        if weights is not None:
            return weighted_caption_loss(scores, captions[:, 1:], self.null_idx, weights)
        return caption_loss(scores, captions[:, 1:], self.null_idx)

    def sample(self, features, max_length=30):
        """Greedy captions, in eval mode while sampling (the previous mode is restored afterwards).

        Inputs:
        - features: image features of shape (N, D), or (N, R, D) with the grid memory; numpy or tensor.
        - max_length: int, the most words per caption (<END> included), at most the model's max_length.

        Returns:
        - captions: int64 array of shape (N, max_length), laid out as ``core.decoding.greedy_decode``
          returns them.
        """
        if max_length > self.max_length:
            raise ValueError(f"sample max_length={max_length} exceeds the model's max_length={self.max_length}")
        was_training = self.training
        self.eval()
        try:
            return greedy_decode(self, features, max_length)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def init_decode(self, features, use_cache=True):
        """The decoding state of N images, before any word is fed.

        Inputs:
        - features: image features of shape (N, D), or (N, R, D) with the grid memory; numpy or tensor.
        - use_cache: keep per-layer key/value caches so step t computes position t only. False
          recomputes the whole prefix at every step: slower, kept as the reference the cache is
          checked and benchmarked against.

        Returns:
        - a DecodeState of N rows, on the model's device.
        """
        reference = self.output.weight
        features = torch.as_tensor(features, dtype=reference.dtype, device=reference.device)
        memory = self._memory(features)  # (N, 1, W)
        tokens = torch.empty((features.shape[0], 0), dtype=torch.long, device=reference.device)
        caches = [layer.init_cache(memory) for layer in self.layers] if use_cache else None
        return DecodeState(memory, tokens, caches)

    @torch.no_grad()
    def decode_step(self, tokens, state):
        """Feed each row's previous word and score the next one.

        Inputs:
        - tokens: int array of shape (N,), the word at position t of each row (<START> at t = 0).
        - state: the DecodeState after positions 0 .. t - 1.

        Returns a tuple of:
        - log_probs: float32 numpy array of shape (N, V), log-softmax of the word at position t + 1.
        - the DecodeState after position t.
        """
        N, t = state.tokens.shape
        new = torch.as_tensor(np.asarray(tokens), dtype=torch.long, device=state.tokens.device)
        if new.shape != (N,):
            raise ValueError(f"tokens of shape {tuple(new.shape)} should be ({N},), one per decoded row")
        if t >= self.max_length:
            raise ValueError(f"cannot decode position {t}: the model's max_length is {self.max_length}")
        prefix = torch.cat([state.tokens, new[:, None]], dim=1)  # (N, t + 1)
        if state.caches is None:
            hidden, weights = self._decode(prefix, state.memory, need_weights=True)  # (N, t+1, W), (N, t+1, M)
            hidden, attention, caches = hidden[:, -1], weights[:, -1], None  # -> (N, W), (N, M)
        else:
            x = self.positional_encoding(self.embedding(new[:, None]), offset=t)  # (N, 1, W)
            caches = []
            for layer, cache in zip(self.layers[:-1], state.caches[:-1]):
                x, cache = layer.step(x, cache)
                caches.append(cache)
            x, cache, attention = self.layers[-1].step(x, state.caches[-1], need_weights=True)  # attention (N, M)
            caches.append(cache)
            hidden = x[:, 0]  # (N, 1, W) -> (N, W)
        log_probs = torch.log_softmax(self.output(hidden).float(), dim=-1)  # (N, V)
        return log_probs.cpu().numpy(), DecodeState(state.memory, prefix, caches, attention)

    def attention(self, state):
        """Where the last decode step looked: the last decoder layer's cross-attention weights, averaged over heads.

        Inputs:
        - state: a DecodeState returned by ``decode_step`` (or reordered since).

        Returns:
        - weights: float32 numpy array of shape (N, M), the raw weights over all M memory positions (each row
          sums to 1). With the grid memory M = R + 1: columns 0 .. R - 1 are the cells in row-major order (cell
          y * side + x), ``weights[:, :R].reshape(N, side, side)`` the map over the image; column R is what the
          global position got, so the cells sum to 1 minus it. With the pooled memory M = 1 and every weight is 1.
        """
        if state.attention is None:
            raise ValueError("no attention yet: call decode_step first")
        return state.attention.float().cpu().numpy()

    def reorder_state(self, state, index):
        """Select, repeat or permute decoding rows (beam search follows its beams with this).

        Inputs:
        - state: a DecodeState of N rows.
        - index: int array of shape (M,); new row i is old row index[i].

        Returns:
        - a DecodeState of M rows.
        """
        index = torch.as_tensor(np.asarray(index), dtype=torch.long, device=state.tokens.device)
        caches = None if state.caches is None else [cache.select(index) for cache in state.caches]
        attention = None if state.attention is None else state.attention[index]
        return DecodeState(state.memory[index], state.tokens[index], caches, attention)

    def _memory(self, features):
        """Image features of shape (N, D) -> memory of shape (N, 1, W); with the grid memory, features of shape
        (N, R, D) -> memory of shape (N, R + 1, W)."""
        if self._config.memory == "grid":
            return self.grid_memory(features)
        if features.dim() != 2 or features.shape[1] != self.input_dim:
            raise ValueError(f"features of shape {tuple(features.shape)} should be (N, {self.input_dim}) "
                             f"to match the model's input_dim")
        return self.visual_projection(features).unsqueeze(1)  # (N, W) -> (N, 1, W)

    def _decode(self, captions, memory, need_weights=False):
        """Causal decoding of a whole prefix; captions (N, T), memory (N, M, W) -> hidden (N, T, W), and with
        need_weights the last layer's cross-attention weights averaged over heads, of shape (N, T, M)."""
        T = captions.shape[1]
        if T > self.max_length:
            raise ValueError(f"captions of length {T} exceed the model's max_length={self.max_length}")
        x = self.positional_encoding(self.embedding(captions))  # (N, T, W)
        # Lower triangle: position s may attend to positions 0..s only.
        causal = torch.ones(T, T, dtype=torch.bool, device=captions.device).tril()  # (T, T)
        for layer in self.layers[:-1]:
            x = layer(x, memory, causal)
        last = self.layers[-1]
        # need_weights only when asked: the benchmark swaps in torch's layers, which have no such argument.
        return last(x, memory, causal, need_weights=True) if need_weights else last(x, memory, causal)
