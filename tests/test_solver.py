"""The one training loop: exact resume after an interruption, best-model tracking, NaN handling, outputs."""
import json
import math

import numpy as np
import pytest
import torch

from core.coco_utils import load_coco_data
from core.model.registry import model_kind
from core.runtime.checkpoint import load_training_state
from core.training.recipes import OptimConfig, recipe
from core.training.solver import Solver, SolverConfig, TrainingDiverged

SMALL = {"rnn": {"wordvec_dim": 8, "hidden_dim": 16}, "lstm": {"wordvec_dim": 8, "hidden_dim": 16},
         "transformer": {"wordvec_dim": 16, "num_heads": 2, "num_layers": 1, "dim_feedforward": 32}}


def make_solver(model_type, data, out_dir, epochs=3):
    torch.manual_seed(0)
    kind = model_kind(model_type)
    config = kind.make_config(SMALL[model_type]).for_data(data["train_features"])
    model = kind.build(data["word_to_idx"], config, seed=0, device=torch.device("cpu"))
    optim_config = OptimConfig(lr=1e-2, warmup_steps=2)
    updater = recipe(kind).make_updater(model, optim_config, torch.device("cpu"))
    meta = {"model_type": model_type, "model_config": model.config(), "idx_to_word": data["idx_to_word"]}
    config = SolverConfig(epochs=epochs, batch_size=10, seed=3, progress=False)
    return Solver(updater, data, config, out_dir, meta, kind.checkpoint_suffix)


class StopAt:
    """Wraps an updater and asks the solver to stop (as Ctrl-C does) after a given number of steps."""

    def __init__(self, updater, solver_ref, step):
        self.updater, self.solver_ref, self.step, self.count = updater, solver_ref, step, 0

    def __getattr__(self, name):
        return getattr(self.updater, name)

    def train_step(self, *args):
        loss = self.updater.train_step(*args)
        self.count += 1
        if self.count == self.step:
            self.on_step()
        return loss

    def on_step(self):
        self.solver_ref[0].request_stop()


def final_params(solver):
    return {k: np.asarray(v, dtype=np.float64) for k, v in solver.updater.snapshot().items()}


@pytest.mark.parametrize("model_type", ["lstm", "transformer"])
def test_interrupted_and_resumed_run_equals_uninterrupted(model_type, tiny_dataset, tmp_path):
    data = load_coco_data(tiny_dataset)
    straight = make_solver(model_type, data, tmp_path / "straight")
    straight.train()

    interrupted = make_solver(model_type, data, tmp_path / "resumed")
    interrupted.updater = StopAt(interrupted.updater, [interrupted], step=7)  # mid second epoch (5 steps/epoch)
    with pytest.raises(KeyboardInterrupt):
        interrupted.train()
    assert interrupted.step == 7
    resumed = make_solver(model_type, data, tmp_path / "resumed")
    resumed.resume()
    assert resumed.step == 7
    resumed.train()

    a, b = final_params(straight), final_params(resumed)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    for key in ("train_loss", "epoch_train_loss", "epoch_val_loss"):
        assert straight.history[key] == resumed.history[key], key


def test_outputs_best_model_and_history(tiny_dataset, tmp_path):
    data = load_coco_data(tiny_dataset)
    solver = make_solver("rnn", data, tmp_path)
    history = solver.train()
    assert len(history["epoch_val_loss"]) == 3 and len(history["train_loss"]) == 15
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["best_epoch"] == int(np.argmin(history["epoch_val_loss"]))
    assert (tmp_path / "loss.png").stat().st_size > 1000
    meta, state = load_training_state(tmp_path / "best.npz")
    assert meta["run"]["best_epoch"] == saved["best_epoch"]
    assert meta["model_type"] == "rnn" and meta["idx_to_word"] == data["idx_to_word"]
    assert set(state["optim"]["W_embed"]) >= {"m", "v", "t"}


class NanAfter:
    def __init__(self, updater, step):
        self.updater, self.step, self.count = updater, step, 0

    def __getattr__(self, name):
        return getattr(self.updater, name)

    def train_step(self, *args):
        self.count += 1
        return math.nan if self.count > self.step else self.updater.train_step(*args)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_dataset, tmp_path):
    data = load_coco_data(tiny_dataset)
    solver = make_solver("rnn", data, tmp_path)
    solver.updater = NanAfter(solver.updater, step=7)
    with pytest.raises(TrainingDiverged, match="lower --lr"):
        solver.train()
    meta, _ = load_training_state(tmp_path / "last.npz")
    assert meta["run"]["step"] == 5  # the end of the first epoch, the last good state


def test_resume_refuses_another_model(tiny_dataset, tmp_path):
    from core.runtime.errors import UserError

    data = load_coco_data(tiny_dataset)
    make_solver("rnn", data, tmp_path, epochs=1).train()
    other = make_solver("rnn", data, tmp_path)
    other.meta = dict(other.meta, model_type="lstm")
    with pytest.raises(UserError, match="model_type"):
        other.resume()


def test_a_run_that_diverges_before_any_checkpoint_leaves_no_record(tiny_dataset, tmp_path, monkeypatch):
    """A NaN at the first step: one line, and the run folder holds no config.json (nothing was trained)."""
    from core.training.engine import TrainSettings, run_training
    from core.training.optim import NumpyUpdater

    monkeypatch.setattr(NumpyUpdater, "train_step", lambda self, *args, **kwargs: math.nan)
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="no checkpoint had been written yet"):
        run_training(TrainSettings(model="rnn", data_dir=str(tiny_dataset), out=str(out), progress=False))
    assert not (out / "config.json").exists()
