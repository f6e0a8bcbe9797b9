"""The classic CS231n import path of the numpy models' solver: ``from core.captioning_solver import CaptioningSolver``.

The solver is an adapter over the project's one training loop and lives in ``core.training.classic``.
"""
from core.training.classic import CaptioningSolver, SolverOptions

__all__ = ["CaptioningSolver", "SolverOptions"]
