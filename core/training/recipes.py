"""How each model kind trains well: its epochs on the default dataset, its optimizer settings and the updater that
applies them. The model registry (``core.model.registry``) says what a kind is; this says how it is trained.
Adding a kind is one entry in ``core.model.registry.MODEL_KINDS`` and one here."""
from dataclasses import dataclass, field

from core.runtime.distributed import SINGLE
from core.runtime.errors import UserError
from core.training.optim import NumpyUpdater
from core.training.torch_optim import TorchUpdater


@dataclass(frozen=True)
class OptimConfig:
    """How parameters are updated; each model kind's values are in ``RECIPES``."""
    update_rule: str = "adam"  # numpy: sgd, sgd_momentum, rmsprop, adam; the Transformer always uses AdamW
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.0  # AdamW's decoupled decay (Transformer only)
    grad_clip: float = 5.0  # max global gradient norm; 0 turns clipping off
    warmup_steps: int = 0  # linear warm-up, then cosine decay to min_lr_ratio * lr at the last step
    min_lr_ratio: float = 0.05
    lr_decay: float = 1.0  # the rate is multiplied by this after each epoch (CS231n's schedule); 1: no decay
    betas: tuple = (0.9, 0.98)  # AdamW's (Transformer only)
    # The numpy rule's other hyperparameters by name (momentum, beta1, ...; CS231n's optim_config); unset: the
    # rule's defaults (core.training.optim)
    rule_options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    """One model kind's training defaults."""
    epochs: int  # training epochs on the default dataset (runs on few captions last longer)
    optim: OptimConfig  # the optimizer settings it trains well with
    updater: type  # NumpyUpdater or TorchUpdater: what takes a step, ``updater(model, optim, device, group)``

    def make_updater(self, model, optim_config, device="cpu", group=SINGLE):
        """The updater of ``model`` with ``optim_config``, on ``device``, in process group ``group``."""
        return self.updater(model, optim_config, device=device, group=group)


_NUMPY_OPTIM = OptimConfig(lr=2e-3)
RECIPES = {
    "rnn": Recipe(epochs=6, optim=_NUMPY_OPTIM, updater=NumpyUpdater),
    "lstm": Recipe(epochs=5, optim=_NUMPY_OPTIM, updater=NumpyUpdater),
    "att_lstm": Recipe(epochs=5, optim=_NUMPY_OPTIM, updater=NumpyUpdater),
    "transformer": Recipe(epochs=6, optim=OptimConfig(weight_decay=0.01, warmup_steps=100, grad_clip=1.0),
                          updater=TorchUpdater),
}


def recipe(kind):
    """The Recipe of ``kind`` (a ``core.model.registry.ModelKind``); UserError when it has none."""
    if kind.name not in RECIPES:
        raise UserError(f"--model {kind.name} has no training recipe in core/training/recipes.py: add one")
    return RECIPES[kind.name]
