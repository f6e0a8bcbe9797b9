"""CS231n's captioning solvers, ``CaptioningSolver`` (numpy models) and ``CaptioningSolverTransformer`` (the torch
Transformer), as thin adapters over the one training loop (``core.training.solver.Solver``): their keyword arguments
become an ``OptimConfig`` and a ``SolverConfig``, and the loop trains the model in memory, writing no file.

How CS231n's arguments map onto the loop:
- ``update_rule``, ``optim_config`` (``learning_rate`` and the rule's other hyperparameters, e.g. ``beta1``), or the
  Transformer's ``learning_rate`` (Adam): the updater's settings. The rate is constant but for ``lr_decay``, which
  multiplies it after each epoch; no warm-up, no cosine decay, no gradient clipping, as in CS231n.
- ``batch_size``, ``num_epochs``: an epoch is ceil(N / batch_size) minibatches of a shuffled order of the N
  training captions (CS231n draws each minibatch with replacement); after each epoch the loop computes a validation
  loss, in ``history``.
- ``verbose``, ``print_every``: a "(Iteration i / n) loss: x" line every ``print_every`` iterations, as CS231n
  prints; no progress bar.
- ``loss_history``: the training loss of every iteration so far.
"""
from dataclasses import dataclass, field, fields, replace

from core.training.optim import AdamDefaults, NumpyUpdater, rule_hyperparameters
from core.training.recipes import OptimConfig
from core.training.solver import Solver, SolverConfig
from core.training.torch_optim import TorchUpdater

# CS231n's schedule: the rate alone, no clipping and no cosine decay (the rest of OptimConfig's defaults hold).
CLASSIC_OPTIM = OptimConfig(grad_clip=0.0, min_lr_ratio=1.0)


@dataclass(frozen=True)
class LoopOptions:
    """The keyword arguments both CS231n solvers take, with CS231n's defaults."""
    batch_size: int = 100
    num_epochs: int = 10
    print_every: int = 10
    verbose: bool = True
    seed: int = 0  # of the minibatch order and the validation subset (CS231n draws from numpy's global generator)


@dataclass(frozen=True)
class SolverOptions(LoopOptions):
    """``CaptioningSolver``'s keyword arguments, with CS231n's defaults."""
    update_rule: str = "sgd"  # a name in core.optim.UPDATE_RULES
    optim_config: dict = field(default_factory=dict)  # learning_rate (default: the rule's) and the rule's options
    lr_decay: float = 1.0


@dataclass(frozen=True)
class TransformerSolverOptions(LoopOptions):
    """``CaptioningSolverTransformer``'s keyword arguments, with CS231n's defaults."""
    learning_rate: float = 1e-3


class _ClassicSolver:
    """What the two solvers share: options by keyword, the loop without an output folder, ``train``,
    ``loss_history``. A subclass names its ``Options`` dataclass and builds its updater in ``_updater``."""

    def __init__(self, model, data, **options):
        known = [f.name for f in fields(self.Options)]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"{type(self).__name__}: unrecognized arguments {unknown}; known are {known}")
        self.model, self.data, self.options = model, data, self.Options(**options)
        loop = SolverConfig(epochs=self.options.num_epochs, batch_size=self.options.batch_size,
                            seed=self.options.seed, progress=False,
                            print_every=self.options.print_every if self.options.verbose else 0)
        self.solver = Solver(self._updater(), data, loop, out_dir=None, meta={}, suffix=None)

    @property
    def loss_history(self):
        """The training loss of every iteration so far, a list of floats."""
        return self.solver.history["train_loss"]

    def train(self):
        """Run every epoch; returns the loop's history (``train_loss`` per iteration, ``epoch_val_loss``...)."""
        return self.solver.train()


class CaptioningSolver(_ClassicSolver):
    """Trains a numpy captioning model (``loss(features, captions) -> (loss, grads)``, ``params``) as CS231n's
    ``CaptioningSolver(model, data, update_rule="adam", optim_config={"learning_rate": 5e-3}, lr_decay=0.95,
    batch_size=25, num_epochs=50, print_every=10, verbose=True)`` does; ``data`` is ``load_coco_data``'s dict.
    Unknown keyword arguments, update rules or optim_config names raise ValueError."""

    Options = SolverOptions

    def _updater(self):
        options = self.options
        rate = rule_hyperparameters(options.update_rule, options.optim_config)["learning_rate"]
        rule_options = {name: value for name, value in options.optim_config.items() if name != "learning_rate"}
        config = replace(CLASSIC_OPTIM, update_rule=options.update_rule, lr=rate, lr_decay=options.lr_decay,
                         rule_options=rule_options)
        return NumpyUpdater(self.model, config)


class CaptioningSolverTransformer(_ClassicSolver):
    """Trains a ``CaptioningTransformer`` with Adam at a constant rate, as CS231n's
    ``CaptioningSolverTransformer(model, data, idx_to_word, num_epochs=100, batch_size=25, learning_rate=0.001,
    verbose=True, print_every=10)`` does, on the device the model is on."""

    Options = TransformerSolverOptions

    def __init__(self, model, data, idx_to_word, **options):
        self.idx_to_word = idx_to_word
        super().__init__(model, data, **options)

    def _updater(self):
        # AdamW without weight decay (OptimConfig's default) is Adam; CS231n's torch.optim.Adam has Adam's betas.
        config = replace(CLASSIC_OPTIM, lr=self.options.learning_rate, betas=(AdamDefaults.beta1, AdamDefaults.beta2))
        return TorchUpdater(self.model, config, next(self.model.parameters()).device)
