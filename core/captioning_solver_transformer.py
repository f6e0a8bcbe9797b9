"""The classic CS231n import path of the Transformer's solver:
``from core.captioning_solver_transformer import CaptioningSolverTransformer``.

The solver is an adapter over the project's one training loop and lives in ``core.training.classic``.
"""
from core.training.classic import CaptioningSolverTransformer, TransformerSolverOptions

__all__ = ["CaptioningSolverTransformer", "TransformerSolverOptions"]
