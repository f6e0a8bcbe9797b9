"""Where a run stands, as its checkpoints record it beside the updater's state (step, batch size, training-set size,
best epoch and validation loss, history), and taking a ``last`` checkpoint back into a run once it is shown to
continue that run exactly: the same model, vocabulary, batch size and training captions."""
import math

from core.runtime.checkpoint import FORMAT_VERSION, load_training_state, params_problem, run_problem
from core.runtime.errors import UserError


def new_history(iterations_per_epoch, metric):
    """The run's curves. Values are what the loop minimises; ``metric`` and ``metric_sign`` say what they are
    (self-critical runs minimise minus the CIDEr-D reward)."""
    return {"train_loss": [], "epoch_train_loss": [], "epoch_val_loss": [], "epoch_seconds": [],
            "iterations_per_epoch": iterations_per_epoch, "metric": metric.name, "metric_sign": metric.sign}


def checkpoint_meta(meta, step, batch_size, num_train, best_val_loss, best_epoch, history):
    """``meta`` (model type, config, vocabulary, data settings) with the run's position as its ``run`` record."""
    best = None if math.isinf(best_val_loss) else best_val_loss  # JSON has no infinity
    run = {"step": step, "batch_size": batch_size, "num_train": num_train, "best_val_loss": best,
           "best_epoch": best_epoch, "history": history}
    return dict(meta, format_version=FORMAT_VERSION, run=run)


def load_run(path, meta, batch_size, num_train, updater):
    """The position recorded in checkpoint ``path``, as (step, history, best epoch, best validation loss), with
    its parameters and optimizer state loaded into ``updater``; a UserError naming the file and what to do when it
    cannot continue the run of ``meta`` with ``batch_size`` on ``num_train`` captions."""
    saved, state = load_training_state(path)
    for key in ("model_type", "model_config", "idx_to_word"):
        if saved.get(key) != meta.get(key):
            raise UserError(f"checkpoint {path} differs from this run in its {key}: resume with the options "
                            "it was trained with, or write to another --out")
    run = saved.get("run")
    problem = run_problem(run)
    if problem:
        raise UserError(f"checkpoint {path} {problem}; it cannot be resumed: start afresh with --overwrite, or "
                        "write to another --out")
    if run.get("batch_size") != batch_size or run.get("num_train") != num_train:
        raise UserError(f"checkpoint {path} was trained with batch size {run.get('batch_size')} on "
                        f"{run.get('num_train')} captions; resume with the same --batch-size and --num_samples")
    problem = params_problem(state["params"], updater.snapshot())
    if not problem:
        try:
            updater.load_state(state)
        except ValueError as err:  # optimizer state that does not fit the parameters
            problem = str(err)
    if problem:
        raise UserError(f"checkpoint {path} {problem}; it cannot be resumed: start afresh with --overwrite, or "
                        "write to another --out")
    best = math.inf if run["best_val_loss"] is None else run["best_val_loss"]
    return run["step"], run["history"], run["best_epoch"], best
