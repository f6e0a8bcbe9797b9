"""The classic CS231n import path of the numpy update rules: ``from core import optim; optim.adam(w, dw, config)``.

The rules live with the training code that applies them (``core.training.optim``); this module re-exports them.
"""
from core.training.optim import (
                                 UPDATE_RULES,
                                 AdamDefaults,
                                 MomentumDefaults,
                                 RMSPropDefaults,
                                 SGDDefaults,
                                 adam,
                                 rmsprop,
                                 sgd,
                                 sgd_momentum,
)

__all__ = ["sgd", "sgd_momentum", "rmsprop", "adam", "UPDATE_RULES", "SGDDefaults", "MomentumDefaults",
           "RMSPropDefaults", "AdamDefaults"]
