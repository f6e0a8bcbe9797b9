"""CaptioningTransformer: a Transformer decoder that writes captions conditioned on image features.

The image feature vector becomes a one-position memory the decoder cross-attends to; the caption is
embedded, position-encoded and decoded causally. Decoding implements the step interface of
``core.decoding`` with a per-layer key/value cache, or with full-prefix recomputation as a reference.

Dimension legend:
- N: batch size (images, or image x beam rows while decoding)
- D: image feature width (``input_dim``)
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

from core.data.layout import END, NULL, START
from core.data.vocab import index_to_word
from core.decoding import greedy_decode
from core.transformer_layers import LayerCache, PositionalEncoding, TransformerDecoderLayer


@dataclass(frozen=True)
class TransformerConfig:
    """Architecture of a CaptioningTransformer. The defaults train a good captioner on the shapes world in minutes
    on two CPU cores; ``input_dim`` is the training features' width (``for_data``)."""
    input_dim: int = 512  # D
    wordvec_dim: int = 128  # W, the width of word vectors and of every decoder layer
    num_heads: int = 4  # attention heads per layer (must divide W)
    num_layers: int = 2
    max_length: int = 50  # the longest caption the decoder accepts, and the most decoding steps
    dim_feedforward: int = 512  # hidden width of each layer's feed-forward block
    dropout: float = 0.1  # probability used by every dropout
    fused: bool = False  # torch's fused attention kernel instead of the hand-written attention

    def __post_init__(self):
        for name in ("input_dim", "wordvec_dim", "num_heads", "num_layers", "max_length", "dim_feedforward"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.wordvec_dim % self.num_heads:
            raise ValueError(f"wordvec_dim {self.wordvec_dim} is not divisible by num_heads {self.num_heads}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout!r}")

    def num_parameters(self, vocab_size):
        """How many numbers the model's parameters hold, for a vocabulary of ``vocab_size`` words."""
        V, D, W, F = vocab_size, self.input_dim, self.wordvec_dim, self.dim_feedforward
        attention = 4 * (W * W + W)  # query, key, value and output projections
        layer = 2 * attention + (W * F + F) + (F * W + W) + 3 * 2 * W  # self, cross, feed-forward, 3 LayerNorms
        return (D * W + W) + V * W + self.num_layers * layer + (W * V + V)

    def for_data(self, features):
        """This config fitted to training features of shape (M, D): their width."""
        return replace(self, input_dim=int(features.shape[1]))


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


@dataclass
class DecodeState:
    """What decoding carries between steps.

    - memory: the image memory of shape (N, 1, W).
    - tokens: the words fed so far, of shape (N, t), long.
    - caches: one LayerCache per decoder layer, or None in full-prefix recomputation mode.
    """
    memory: torch.Tensor
    tokens: torch.Tensor
    caches: list[LayerCache] | None


class CaptioningTransformer(nn.Module):
    """Image features (N, D) -> memory (N, 1, W); captions (N, T) -> word scores (N, T, V)."""

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
        self.word_to_idx = dict(word_to_idx)
        self.idx_to_word = index_to_word(self.word_to_idx)
        self.null_idx, self.start_idx, self.end_idx = (self.word_to_idx[t] for t in (NULL, START, END))
        self.input_dim = config.input_dim
        self.max_length = config.max_length
        vocab_size = len(word_to_idx)
        input_dim, wordvec_dim, dropout = config.input_dim, config.wordvec_dim, config.dropout
        num_heads, dim_feedforward, fused = config.num_heads, config.dim_feedforward, config.fused

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
        gains and the word embedding table (whose rows see gradient only when their word occurs) do not decay."""
        embedding = self.embedding.weight
        decay = [p for p in self.parameters() if p.dim() >= 2 and p is not embedding]
        no_decay = [p for p in self.parameters() if p.dim() < 2 or p is embedding]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, betas=betas)

    def forward(self, features, captions):
        """
        Inputs:
        - features: image features of shape (N, D).
        - captions: word indices of shape (N, T), long, T <= max_length; typically <START> w1 .. wk.

        Returns:
        - scores: of shape (N, T, V); scores[:, t] predict the word after captions[:, t].
        """
        if captions.dim() != 2 or captions.shape[0] != features.shape[0]:
            raise ValueError(f"captions of shape {tuple(captions.shape)} should be (N, T) with "
                             f"N={features.shape[0]} rows like the features")
        return self.output(self._decode(captions, self._memory(features)))

    def loss(self, features, captions):
        """Teacher-forced loss of whole captions (``caption_loss`` of the shifted captions).

        Inputs:
        - features: image features of shape (N, D).
        - captions: word indices of shape (N, T + 1), long: <START> w1 .. wk <END> <NULL> ...

        Returns:
        - loss: a scalar tensor.
        """
        scores = self(features, captions[:, :-1])  # (N, T, V), predicting captions[:, 1:]
        return caption_loss(scores, captions[:, 1:], self.null_idx)

    def sample(self, features, max_length=30):
        """Greedy captions, in eval mode while sampling (the previous mode is restored afterwards).

        Inputs:
        - features: image features of shape (N, D), numpy or tensor.
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
        - features: image features of shape (N, D), numpy or tensor.
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
            hidden = self._decode(prefix, state.memory)[:, -1]  # (N, t + 1, W) -> (N, W)
            caches = None
        else:
            x = self.positional_encoding(self.embedding(new[:, None]), offset=t)  # (N, 1, W)
            caches = []
            for layer, cache in zip(self.layers, state.caches):
                x, cache = layer.step(x, cache)
                caches.append(cache)
            hidden = x[:, 0]  # (N, 1, W) -> (N, W)
        log_probs = torch.log_softmax(self.output(hidden).float(), dim=-1)  # (N, V)
        return log_probs.cpu().numpy(), replace(state, tokens=prefix, caches=caches)

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
        return DecodeState(state.memory[index], state.tokens[index], caches)

    def _memory(self, features):
        """Image features of shape (N, D) -> memory of shape (N, 1, W)."""
        if features.dim() != 2 or features.shape[1] != self.input_dim:
            raise ValueError(f"features of shape {tuple(features.shape)} should be (N, {self.input_dim}) "
                             f"to match the model's input_dim")
        return self.visual_projection(features).unsqueeze(1)  # (N, W) -> (N, 1, W)

    def _decode(self, captions, memory):
        """Causal decoding of a whole prefix; captions (N, T), memory (N, 1, W) -> hidden (N, T, W)."""
        T = captions.shape[1]
        if T > self.max_length:
            raise ValueError(f"captions of length {T} exceed the model's max_length={self.max_length}")
        x = self.positional_encoding(self.embedding(captions))  # (N, T, W)
        # Lower triangle: position s may attend to positions 0..s only.
        causal = torch.ones(T, T, dtype=torch.bool, device=captions.device).tril()  # (T, T)
        for layer in self.layers:
            x = layer(x, memory, causal)
        return x
