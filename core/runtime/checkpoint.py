"""Checkpoint files: parameters, optimizer state and a JSON ``meta`` record, written atomically.

No pickled objects: numpy models go to ``.npz`` (read with ``allow_pickle=False``), the Transformer to ``.pt``
holding only tensors and plain containers (read with ``torch.load(..., weights_only=True)``). ``meta`` carries
everything else as JSON: model type and config, vocabulary, data settings, epoch/iteration/step, best metric,
history and generator states.
"""
import json
import zipfile
from pathlib import Path

import numpy as np

from core.runtime.errors import UserError
from core.runtime.fileio import atomic_write

FORMAT_VERSION = 1
HISTORY_SERIES = ("train_loss", "epoch_train_loss", "epoch_val_loss")  # what a resumed run appends to
NUMPY_SUFFIX = ".npz"
TORCH_SUFFIX = ".pt"


def save_numpy_checkpoint(path, meta, params, optim_state):
    """Save a numpy model. params: name -> array; optim_state: name -> {key: array or number}."""
    arrays = {"meta": np.array(json.dumps(meta))}
    arrays.update({f"param/{name}": value for name, value in params.items()})
    for name, config in optim_state.items():
        arrays.update({f"optim/{name}/{key}": np.asarray(value) for key, value in config.items()})

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def load_numpy_checkpoint(path):
    """Returns (meta, params, optim_state) as saved by ``save_numpy_checkpoint``."""
    path = _existing(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            params, optim_state = {}, {}
            for key in archive.files:
                kind, _, rest = key.partition("/")
                if kind == "param":
                    params[rest] = archive[key]
                elif kind == "optim":
                    name, _, field = rest.rpartition("/")
                    value = archive[key]
                    optim_state.setdefault(name, {})[field] = value.item() if value.ndim == 0 else value
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
        raise UserError(f"checkpoint {path} is corrupt or not a checkpoint of this project ({_short(err)})") from None
    problem = _optim_problem(optim_state, params)
    if problem:
        raise UserError(f"checkpoint {path} {problem}; use another checkpoint, or start afresh with --overwrite")
    return _checked_meta(meta, path), params, optim_state


def save_torch_checkpoint(path, meta, tensors):
    """Save a torch model. tensors: a dict of state_dicts and tensors (model, optimizer, rng states)."""
    import torch

    payload = dict(tensors, meta=json.dumps(meta))
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_torch_checkpoint(path, map_location="cpu"):
    """Returns (meta, tensors) as saved by ``save_torch_checkpoint``; refuses anything but plain weights."""
    import torch

    path = _existing(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
        meta = json.loads(payload.pop("meta"))
    except Exception as err:  # torch raises many types for corrupt or pickled-object files
        raise UserError(f"checkpoint {path} is corrupt or not a weights-only checkpoint of this project "
                        f"({_short(err)})") from None
    if not isinstance(payload.get("params"), dict) or not all(map(torch.is_tensor, payload["params"].values())):
        raise UserError(f"checkpoint {path} has no 'params' record of tensors; use another checkpoint")
    return _checked_meta(meta, path), payload


def save_training_state(path, meta, state):
    """Save an updater's ``state()`` with ``meta``; the suffix of ``path`` picks the format."""
    if Path(path).suffix == NUMPY_SUFFIX:
        save_numpy_checkpoint(path, meta, state["params"], state["optim"])
    else:
        save_torch_checkpoint(path, meta, state)


def load_training_state(path):
    """Returns (meta, state) for ``updater.load_state(state)``, from either kind of checkpoint."""
    path = Path(path)
    if path.suffix == NUMPY_SUFFIX:
        meta, params, optim_state = load_numpy_checkpoint(path)
        return meta, {"params": params, "optim": optim_state}
    if path.suffix == TORCH_SUFFIX:
        return load_torch_checkpoint(path)
    raise UserError(f"checkpoint {path} should end in {NUMPY_SUFFIX} or {TORCH_SUFFIX}")


def params_problem(saved, expected):
    """Why checkpoint parameters ``saved`` (name -> array or tensor) cannot replace ``expected`` ones: names missing
    or extra, shapes that differ, values that are not finite; None when they can."""
    missing, extra = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
    if missing or extra:
        return f"lacks parameter(s) {', '.join(missing) or '-'} and has unknown ones {', '.join(extra) or '-'}"
    shapes = [name for name in expected if tuple(saved[name].shape) != tuple(expected[name].shape)]
    if shapes:
        return (f"has parameter {shapes[0]} of shape {tuple(saved[shapes[0]].shape)} where the model's is "
                f"{tuple(expected[shapes[0]].shape)}")
    bad = sorted(name for name, value in saved.items() if not np.isfinite(np.asarray(value, dtype=np.float64)).all())
    if bad:
        return f"has parameter(s) {', '.join(bad)} holding NaN or infinite values"
    return None


def run_problem(run):
    """Why the training position ``run`` of a ``last`` checkpoint (step, best epoch and loss, history) cannot be
    resumed, or None."""
    if not isinstance(run, dict):
        return "has no training record 'run'"
    step, best_epoch, best = run.get("step"), run.get("best_epoch"), run.get("best_val_loss")
    if not _is_int(step) or step < 0:
        return f"has training step {step!r}, not a count of 0 or more"
    if not _is_int(best_epoch) or best_epoch < -1:
        return f"has best epoch {best_epoch!r}, not an epoch number"
    if best is not None and not (isinstance(best, (int, float)) and not isinstance(best, bool)):
        return f"has best validation loss {best!r}, not a number"
    history = run.get("history")
    if not isinstance(history, dict) or not all(
            isinstance(history.get(key), list) and all(isinstance(v, (int, float)) for v in history[key])
            for key in HISTORY_SERIES):
        return f"has a broken history (it needs lists of numbers {', '.join(HISTORY_SERIES)})"
    return None


def _optim_problem(optim_state, params):
    """Why numpy optimizer state (name -> {field: array or number}) does not go with ``params``, or None; state of
    a name that is no parameter is left to ``params_problem``, which names what is missing."""
    for name, fields in optim_state.items():
        for field, value in fields.items() if name in params else ():
            if np.ndim(value) and np.shape(value) != params[name].shape:
                return (f"has optimizer state {name}/{field} of shape {np.shape(value)} where the parameter's is "
                        f"{params[name].shape}")
    return None


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _existing(path):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found")
    return path


def _checked_meta(meta, path):
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise UserError(f"checkpoint {path} has an unknown format (expected format_version {FORMAT_VERSION})")
    return meta


def _short(err):
    return str(err).splitlines()[0][:160] if str(err) else type(err).__name__
