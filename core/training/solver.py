"""The one training loop for every model: epochs, minibatches, validation, best model, checkpoints, resume.

The model-specific part (how a step computes gradients and updates) lives in an updater:
``core.training.optim.NumpyUpdater`` (hand-written backward, CS231n rules) or ``core.training.torch_optim.TorchUpdater``
(autograd, AdamW), wrapped by ``core.training.scst.SCSTUpdater`` for self-critical training. Minibatch order is a
pure function of ``(seed, epoch)``, and checkpoints hold the updater's full state plus the position in the run
(``core.training.resume``), so an interrupted and resumed run takes exactly the steps an uninterrupted one takes.
"""
import json
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core.data.layout import HISTORY_FILE, LOSS_PLOT, checkpoint_file
from core.runtime.checkpoint import save_training_state
from core.runtime.distributed import SINGLE
from core.runtime.errors import UserError
from core.runtime.fileio import atomic_write_text
from core.runtime.interrupts import SaveGuard, stop_on_sigint
from core.runtime.plotting import plot_loss
from core.training.resume import checkpoint_meta, load_run, new_history

PLOT_SECONDS = 30


@dataclass(frozen=True)
class Metric:
    """What an updater's "loss" is, for people: its name and the sign that turns it into that quantity."""
    name: str
    sign: float = 1.0


LOSS = Metric("loss")


def learning_rate(config, step, total_steps, steps_per_epoch):
    """The learning rate at a global step of an ``OptimConfig``'s schedule: linear warm-up, then cosine decay to
    ``min_lr_ratio * lr`` at the last step, times ``lr_decay`` for every epoch completed."""
    warmup = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    progress = min(1.0, max(0, step - config.warmup_steps) / max(1, total_steps - config.warmup_steps))
    decay = config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return config.lr * warmup * decay * config.lr_decay ** (step // steps_per_epoch)


@dataclass(frozen=True)
class SolverConfig:
    """How the loop runs; ``core.training.engine.TrainSettings`` holds the defaults a run starts from."""
    epochs: int
    batch_size: int
    seed: int  # of the minibatch order and the validation subset
    progress: bool
    # Captions scored for the per-epoch validation loss (0: all of them), at most as many as are trained on:
    # validation then never costs more than the epoch it follows (300-caption overfitting runs have 200 epochs).
    val_captions: int = 2560
    max_iterations: int = 0  # stop after this many steps in all (0: no limit); --dry-run uses 1
    # Within an epoch, ``last`` is also written every save_every steps, or (save_every 0) after save_seconds of
    # training since the last write: at COCO size an epoch is thousands of steps a crash would otherwise lose.
    save_every: int = 0
    save_seconds: float = 600.0
    # Every this many steps, a "(Iteration i / n) loss: x" line, CS231n's verbose output (0: none).
    print_every: int = 0
    # Stop once this many epochs in a row have not lowered the validation loss (0: never stop early); the best
    # checkpoint stays the best epoch's.
    patience: int = 0
    # What counts as lowering it, for patience: more than this share of the best loss so far (0: any amount), so that
    # a run whose validation creeps up by hundredths of a percent an epoch counts as flat.
    min_improvement: float = 0.0


def patience_spent(val_losses, patience, min_improvement=0.0):
    """Whether the last ``patience`` epochs of ``val_losses`` (one validation loss per epoch) all failed to go
    below the best before them by more than ``min_improvement`` of its magnitude; never with ``patience`` 0."""
    if not patience or len(val_losses) <= patience:
        return False
    best, improved = val_losses[0], 0
    for epoch, loss in enumerate(val_losses[1:], start=1):
        if loss < best - min_improvement * abs(best):
            best, improved = loss, epoch
    return len(val_losses) - 1 - improved >= patience


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class Solver:
    """Trains ``updater``'s model on ``data`` (the dict of ``core.data.loader.load_coco_data``).

    Writes into ``out_dir``: ``last<suffix>`` (resumable, every epoch and on Ctrl-C), ``best<suffix>`` (lowest
    validation loss), ``history.json`` and ``loss.png``. ``meta`` (model type, config, vocabulary, data
    settings) is stored in every checkpoint beside the run's position and history. With ``out_dir`` None it
    writes nothing (the classic CS231n solvers train in memory, ``core.training.classic``).

    In a process group (``group``, a ``core.runtime.distributed.Group``) every rank steps through the same global
    minibatches, computes on its shard of each, and validates on its shard of each validation batch; rank 0 alone
    writes files.
    """

    def __init__(self, updater, data, config, out_dir, meta, suffix, group=SINGLE):
        self.updater, self.data, self.config = updater, data, config
        self.group = group
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.meta, self.suffix = meta, suffix
        self.writes = group.is_main and self.out_dir is not None  # rank 0 alone writes, when there is a folder
        self.num_train = data["train_captions"].shape[0]
        self.iterations_per_epoch = math.ceil(self.num_train / config.batch_size)
        self.total_steps = config.epochs * self.iterations_per_epoch
        if config.max_iterations:
            self.total_steps = min(self.total_steps, config.max_iterations)
        val_rng = np.random.default_rng([config.seed, 1])
        num_val = data["val_captions"].shape[0]
        keep = min(config.val_captions or num_val, num_val, max(self.num_train, config.batch_size))
        self.val_idx = np.sort(val_rng.choice(num_val, keep, replace=False))
        self.metric = updater.metric  # what the "loss" is: shown and plotted as metric.sign * loss
        self.step, self.history = 0, new_history(self.iterations_per_epoch, self.metric)
        self.best_val_loss, self.best_epoch = math.inf, -1
        self.best_params = None  # the best parameters this process saw (a resumed run's earlier best is on disk)
        self._stop = threading.Event()
        self._saving = SaveGuard()
        self._plotted_at = -math.inf
        self._saved_at = time.perf_counter()
        self.last_saved_step = None  # the step ``last`` holds, once this process wrote it

    @property
    def last_path(self):
        return self.out_dir / checkpoint_file("last", self.suffix)

    @property
    def best_path(self):
        return self.out_dir / checkpoint_file("best", self.suffix)

    def request_stop(self):
        """Ask the loop to save a resumable checkpoint after the current step and stop (what Ctrl-C does)."""
        self._stop.set()

    def resume(self, path=None):
        """Continue from a checkpoint written by this class (default: ``last<suffix>`` in ``out_dir``)."""
        self.step, self.history, self.best_epoch, self.best_val_loss = load_run(
            Path(path or self.last_path), self.meta, self.config.batch_size, self.num_train, self.updater)
        self.last_saved_step = self.step

    def train(self):
        """Run to the configured end; returns the history dict. Ctrl-C saves ``last`` and raises KeyboardInterrupt."""
        # The road of one step: training.py -> core.training.engine.run_training builds this solver ->
        # train -> _train_epoch -> updater.train_step (core.training.optim.NumpyUpdater: model.loss, then an
        # update rule such as optim.adam on every parameter; or core.training.torch_optim.TorchUpdater).
        with stop_on_sigint(self._stop, self._saving):
            while self.step < self.total_steps and not self.stopped_early:
                epoch, first = divmod(self.step, self.iterations_per_epoch)
                if not self._train_epoch(epoch, first):
                    self._save("last")
                    raise KeyboardInterrupt
        if self.stopped_early:
            self._say_stopped_early()
        return self.history

    @property
    def stopped_early(self):
        """Whether validation has not improved for ``patience`` epochs, so the run ends before its last epoch."""
        return self.step < self.total_steps and patience_spent(self.history["epoch_val_loss"], self.config.patience,
                                                          self.config.min_improvement)

    def _say_stopped_early(self):
        epochs = len(self.history["epoch_val_loss"])
        if self.writes:
            self._write_history(final=True)
        if self.config.progress:
            span = "an epoch" if self.config.patience == 1 else f"{self.config.patience} epochs"
            tqdm.write(f"stopped after epoch {epochs}/{self.config.epochs}: {self.metric.name} on validation has not "
                       f"improved in {span} (patience); best epoch {self.best_epoch + 1}")

    def _train_epoch(self, epoch, first):
        """One epoch from iteration ``first``; returns False when stopped early on request (a stop on the epoch's
        last step still ends the epoch first: validation, best, history)."""
        order = np.random.default_rng([self.config.seed, epoch]).permutation(self.num_train)
        last = min(self.iterations_per_epoch, self.total_steps - epoch * self.iterations_per_epoch)
        bar = tqdm(range(first, last), desc=f"epoch {epoch + 1}/{self.config.epochs}", unit="it",
                   disable=not self.config.progress, leave=False, dynamic_ncols=True)
        start = time.perf_counter()
        for it in bar:
            idx = order[it * self.config.batch_size:(it + 1) * self.config.batch_size]
            lr = learning_rate(self.updater.optim_config, self.step, self.total_steps, self.iterations_per_epoch)
            features, captions, share = self._shard("train", idx)
            rng = np.random.default_rng(self.group.stream(self.config.seed, 3, self.step))  # a resume draws the same
            with np.errstate(all="ignore"):  # a diverging step is reported below, in one line
                loss = self.updater.train_step(features, captions, lr, rng, share)
            if not math.isfinite(loss):
                raise self._diverged(f"the training loss became {loss} at epoch {epoch + 1}, step {self.step + 1}",
                                     features)
            self.history["train_loss"].append(loss)
            self.step += 1
            self._show_step(bar, loss, lr)
            if self._save_due() and it + 1 < last:  # an epoch's last step is saved by _end_epoch
                self._save("last")
            if self._stop.is_set():  # after the save: a Ctrl-C during it stops here, not a step later
                break
        bar.close()
        if it + 1 == self.iterations_per_epoch or self.step == self.total_steps:
            self._end_epoch(epoch, time.perf_counter() - start)
        return not self._stop.is_set()

    def _show_step(self, bar, loss, lr):
        """The step's loss and rate on the bar, and every ``print_every`` steps as a line of its own."""
        shown = self.metric.sign * loss
        bar.set_postfix({self.metric.name: f"{shown:.3f}", "lr": f"{lr:.2e}"})
        every = self.config.print_every
        if every and self.group.is_main and (self.step - 1) % every == 0:
            tqdm.write(f"(Iteration {self.step} / {self.total_steps}) {self.metric.name}: {shown:f}")

    def _save_due(self):
        if self.config.save_every:
            return self.step % self.config.save_every == 0
        return time.perf_counter() - self._saved_at > self.config.save_seconds

    def _diverged(self, what, features):
        """The error for a non-finite loss, saying whether the data or the update is to blame."""
        if not np.all(np.isfinite(np.asarray(features, dtype=np.float64))):
            cause = "the minibatch's image features are not finite: the feature files are corrupt, rebuild them"
        else:
            cause = "the update diverged: lower --lr"
        written = self.out_dir is not None and self.last_path.is_file()
        kept = (f"the last good checkpoint {self.last_path} is kept, --resume from it" if written
                else "no checkpoint had been written yet")
        return TrainingDiverged(f"{what}; {cause}; {kept}")

    def _end_epoch(self, epoch, seconds):
        with np.errstate(all="ignore"):
            val_loss = self.validation_loss()
        if not math.isfinite(val_loss):
            raise self._diverged(f"the validation loss became {val_loss} after epoch {epoch + 1}",
                                 self.data["val_features"][self.data["val_image_idxs"][self.val_idx]])
        n = self.iterations_per_epoch
        train_losses = self.history["train_loss"][epoch * n:(epoch + 1) * n]
        self.history["epoch_train_loss"].append(float(np.mean(train_losses)))
        self.history["epoch_val_loss"].append(val_loss)
        self.history["epoch_seconds"].append(seconds)
        if val_loss < self.best_val_loss:
            self.best_val_loss, self.best_epoch = val_loss, epoch
            self.best_params = self.updater.snapshot()
            self._save("best")
        self._save("last")
        self._write_history()
        if self.config.progress:
            name, sign = self.metric.name, self.metric.sign
            tqdm.write(f"epoch {epoch + 1}/{self.config.epochs}: train {name} "
                       f"{sign * self.history['epoch_train_loss'][-1]:.4f}  val {name} {sign * val_loss:.4f}  "
                       f"({seconds:.1f} s)")

    def validation_loss(self):
        """Mean loss over the fixed validation subset, batch by batch (weighted by batch size)."""
        total = 0.0
        for start in range(0, len(self.val_idx), self.config.batch_size):
            idx = self.val_idx[start:start + self.config.batch_size]
            if len(self.group.shard(idx)):
                features, captions, share = self._shard("val", idx)
                total += self.updater.eval_loss(features, captions) * share * len(idx)
        return self.group.sum(total) / len(self.val_idx)

    def _shard(self, split, idx):
        """This rank's part of the minibatch ``idx``: (features, captions, share), ``share`` its part of the
        loss's units. A rank left without rows (a last minibatch smaller than the group) computes on one row with
        share 0, as every rank takes part in the step's all-reduce."""
        if not self.group.distributed:
            return (*self._batch(split, idx), 1.0)
        local = self.group.shard(idx)
        features, captions = self._batch(split, local if len(local) else idx[:1])
        if not len(local):
            return features, captions, 0.0
        units = self.updater.loss_units
        return features, captions, units(captions) / units(self.data[f"{split}_captions"][idx])

    def _batch(self, split, idx):
        captions = self.data[f"{split}_captions"][idx]
        features = self.data[f"{split}_features"][self.data[f"{split}_image_idxs"][idx]]
        return features, captions

    def _save(self, name):
        """Write checkpoint ``name``, "last" or "best", when this process writes."""
        if not self.writes:
            return
        path = self.out_dir / checkpoint_file(name, self.suffix)
        meta = checkpoint_meta(self.meta, self.step, self.config.batch_size, self.num_train, self.best_val_loss,
                               self.best_epoch, self.history)
        with self._saving:  # a second Ctrl-C now waits for the file to be complete
            save_training_state(path, meta, self.updater.state())
            if name == "last":
                self._saved_at, self.last_saved_step = time.perf_counter(), self.step

    def _write_history(self, final=False):
        """history.json, and the loss plot at most every PLOT_SECONDS, always at the run's end (``final``)."""
        if not self.writes:
            return
        history = dict(self.history, best_val_loss=self.best_val_loss, best_epoch=self.best_epoch,
                       stopped_early=self.stopped_early)
        atomic_write_text(self.out_dir / HISTORY_FILE, json.dumps(history, indent=1))
        # Redrawing costs up to seconds: at most every PLOT_SECONDS during a run, always at its end.
        now = time.perf_counter()
        if final or self.step == self.total_steps or now - self._plotted_at > PLOT_SECONDS:
            plot_loss(self.history, self.out_dir / LOSS_PLOT, title=self.meta.get("title"))
            self._plotted_at = now

