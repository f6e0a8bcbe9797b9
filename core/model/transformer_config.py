"""TransformerConfig: the architecture of a CaptioningTransformer, including which image memory it attends over."""
import math
from dataclasses import dataclass, replace

from core.model.captioner import check_positive_ints
from core.model.transformer_inputs import grid_side, measure_grid

MEMORIES = ("pooled", "grid")
# Ceilings far beyond any captioner (published ones use 3 to 12 layers and captions under 60 words), checked before
# building: a config asking for more is a typo or a damaged checkpoint, not a model to spend minutes building.
MAX_LAYERS = 64
MAX_POSITIONS = 4096


@dataclass(frozen=True)
class TransformerConfig:
    """Architecture of a CaptioningTransformer. The defaults train a good captioner on the shapes world in minutes
    on two CPU cores; ``input_dim`` (and with a grid memory ``num_cells`` and ``feature_scale``) are measured from
    the training features (``for_data``).

    ``memory`` chooses what the decoder cross-attends over: "pooled" reads features of shape (N, D) and attends
    over one position, their projection; "grid" reads features of shape (N, R, C), the R = side x side cells of
    a feature map in row-major order, and attends over R + 1 positions (``core.model.transformer_inputs``).
    Checkpoints written before the field existed lack it and load as "pooled", unchanged.
    """
    input_dim: int = 512  # D of pooled features, C (channels per cell) of grid features
    wordvec_dim: int = 128  # W, the width of word vectors and of every decoder layer
    num_heads: int = 4  # attention heads per layer (must divide W)
    num_layers: int = 2
    max_length: int = 50  # the longest caption the decoder accepts, and the most decoding steps
    dim_feedforward: int = 512  # hidden width of each layer's feed-forward block
    dropout: float = 0.1  # probability used by every dropout
    fused: bool = False  # torch's fused attention kernel instead of the hand-written attention
    memory: str = "pooled"  # one of MEMORIES
    num_cells: int = 196  # R, cells per image of grid features (a square); unused by "pooled"
    feature_scale: float = 1.0  # grid cells are divided by it before their projection; unused by "pooled"

    def __post_init__(self):
        check_positive_ints(self, ("input_dim", "wordvec_dim", "num_heads", "num_layers", "max_length",
                                   "dim_feedforward", "num_cells"))
        if self.num_layers > MAX_LAYERS or self.max_length > MAX_POSITIONS:
            raise ValueError(f"num_layers {self.num_layers} and max_length {self.max_length} must be at most "
                             f"{MAX_LAYERS} and {MAX_POSITIONS}")
        if self.wordvec_dim % self.num_heads:
            raise ValueError(f"wordvec_dim {self.wordvec_dim} is not divisible by num_heads {self.num_heads}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout!r}")
        if self.memory not in MEMORIES:
            raise ValueError(f"memory must be one of {', '.join(MEMORIES)}, got {self.memory!r}")
        if self.memory == "grid":
            grid_side(self.num_cells)
        if isinstance(self.feature_scale, bool) or not isinstance(self.feature_scale, (int, float)) \
                or not (math.isfinite(self.feature_scale) and self.feature_scale > 0):
            raise ValueError(f"feature_scale must be a positive number, got {self.feature_scale!r}")

    @property
    def reads_grid(self):
        """Whether the model reads grid features (N, R, C) rather than pooled ones (N, D)."""
        return self.memory == "grid"

    def num_parameters(self, vocab_size):
        """How many numbers the model's parameters hold, for a vocabulary of ``vocab_size`` words."""
        V, D, W, F = vocab_size, self.input_dim, self.wordvec_dim, self.dim_feedforward
        memory = D * W + W  # the projection of features (pooled) or of cells (grid)
        if self.memory == "grid":
            memory += 2 * grid_side(self.num_cells) * W + W  # row, column and global type embeddings
        attention = 4 * (W * W + W)  # query, key, value and output projections
        layer = 2 * attention + (W * F + F) + (F * W + W) + 3 * 2 * W  # self, cross, feed-forward, 3 LayerNorms
        return memory + V * W + self.num_layers * layer + (W * V + V)

    def for_data(self, features):
        """This config fitted to the training features, an array-like (possibly lazy, read in part only).

        With "pooled", features of shape (M, D): their width D. With "grid", features of shape (M, R, C): the
        cells R, the channels C and the cells' ``feature_scale`` (``measure_grid``).
        """
        if self.memory == "grid":
            num_cells, input_dim, scale = measure_grid(features)
            return replace(self, input_dim=input_dim, num_cells=num_cells, feature_scale=scale)
        if len(features.shape) != 2:
            raise ValueError(f"memory 'pooled' reads features of shape (M, D), got {tuple(features.shape)}; "
                             f"features of shape (M, R, C), a map's cells, need memory 'grid'")
        return replace(self, input_dim=int(features.shape[1]))
