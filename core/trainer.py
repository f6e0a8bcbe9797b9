"""A training run from settings to files: data, model, updater, solver, outputs. ``training.py`` is its CLI."""
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from core.fileio import atomic_write_text
from core.cli import seed_everything
from core.coco_utils import load_coco_data
from core.datasets.resolve import resolve_data_dir
from core.devices import pick_device
from core.errors import UserError
from core.model.registry import build_model, checkpoint_suffix, is_torch_model
from core.solver import Solver, SolverConfig
from core.updaters import NumpyUpdater, OptimConfig, TorchUpdater

# Per model: what trains a good captioner on the default dataset in minutes on 2 CPU cores. ``min_steps``
# lengthens runs on few captions, so that `--num_samples 300` trains long enough to overfit.
TRAINING_DEFAULTS = {
    "rnn": {"epochs": 6, "min_steps": 600, "lr": 2e-3, "update_rule": "adam", "grad_clip": 5.0},
    "lstm": {"epochs": 5, "min_steps": 600, "lr": 2e-3, "update_rule": "adam", "grad_clip": 5.0},
    "transformer": {"epochs": 6, "min_steps": 600, "lr": 1e-3, "weight_decay": 0.01, "warmup_steps": 100,
                    "grad_clip": 1.0},
}


@dataclass
class TrainSettings:
    model: str
    num_samples: int | None = None  # training captions (the classic meaning); None: all
    dataset: str = "shapes"
    data_dir: str | None = None
    epochs: int | None = None  # None: the model's default (see TRAINING_DEFAULTS)
    batch_size: int = 128
    lr: float | None = None
    seed: int = 0
    device: str = "auto"
    out: str | None = None  # default runs/<model>
    resume: bool = False
    dry_run: bool = False
    shuffle_features: bool = False  # the blind baseline: captions paired with other images' features
    progress: bool = True
    model_config: dict = field(default_factory=dict)


def run_training(settings):
    """Train as ``settings`` say; returns a summary dict (also written to ``config.json`` beside the outputs)."""
    seed_everything(settings.seed)
    out_dir = _writable_dir(Path(settings.out or f"runs/{settings.model}"))
    data_dir = resolve_data_dir(settings.dataset, settings.data_dir, progress=settings.progress)
    data = load_coco_data(data_dir, max_train=settings.num_samples, seed=settings.seed)
    if settings.shuffle_features:
        data = _blind(data, settings.seed)
    device = pick_device(settings.device)
    model_config = dict(settings.model_config, seed=settings.seed)
    if not is_torch_model(settings.model):
        model_config.setdefault("feature_scale", feature_scale(data["train_features"]))
    model = build_model(settings.model, data["word_to_idx"], data["train_features"].shape[1], model_config, device)
    solver_config, optim_config = _configs(settings, data["train_captions"].shape[0])
    if is_torch_model(settings.model):
        updater = TorchUpdater(model, optim_config, device)
    else:
        updater = NumpyUpdater(model, optim_config)
    meta = {"model_type": settings.model, "model_config": model.config(), "idx_to_word": list(data["idx_to_word"]),
            "data": {"dir": str(Path(data_dir).resolve()), "dataset": settings.dataset if settings.data_dir is None
                     else "custom", "num_samples": settings.num_samples, "shuffle_features": settings.shuffle_features},
            "title": f"{settings.model} on {Path(data_dir).name}" + (" (shuffled features)" if settings.shuffle_features
                                                                     else "")}
    solver = Solver(updater, data, solver_config, optim_config, out_dir, meta, checkpoint_suffix(settings.model))
    if settings.resume:
        if not solver.last_path.is_file():
            raise UserError(f"--resume: no checkpoint {solver.last_path} to resume from; drop --resume to start afresh")
        solver.resume()
    config = {"settings": asdict(settings), "solver": asdict(solver_config), "optim": asdict(optim_config),
              "model_config": model.config(), "data_dir": meta["data"]["dir"], "device": str(device)}
    atomic_write_text(out_dir / "config.json", json.dumps(config, indent=1))
    start = time.perf_counter()
    try:
        history = solver.train()
    except KeyboardInterrupt:
        print(f"interrupted at step {solver.step}: resumable checkpoint {solver.last_path}; continue with the same "
              "command plus --resume", file=sys.stderr)
        raise
    return {"out_dir": str(out_dir), "best": str(solver.best_path), "last": str(solver.last_path),
            "seconds": time.perf_counter() - start, "best_val_loss": solver.best_val_loss,
            "final_train_loss": history["epoch_train_loss"][-1] if history["epoch_train_loss"] else math.nan,
            "steps": solver.step, "device": str(device)}


def feature_scale(features, rows=4096):
    """The typical norm of a feature row over sqrt(width), from the first ``rows`` rows (any (M, D)
    array or LazyFeatures): dividing by it gives rows of norm about sqrt(D), entries of unit scale."""
    sample = np.asarray(features[:rows], dtype=np.float64)
    scale = float(np.linalg.norm(sample, axis=1).mean() / np.sqrt(sample.shape[1]))
    return scale if np.isfinite(scale) and scale > 0 else 1.0


def _configs(settings, num_train):
    """Solver and optimizer configs: the model's defaults, overridden by the settings."""
    defaults = dict(TRAINING_DEFAULTS[settings.model])
    min_steps = defaults.pop("min_steps")
    default_epochs = defaults.pop("epochs")
    iterations = math.ceil(num_train / settings.batch_size)
    epochs = settings.epochs or max(default_epochs, math.ceil(min_steps / iterations))
    optim_config = OptimConfig(**defaults)
    if settings.lr is not None:
        optim_config = replace(optim_config, lr=settings.lr)
    solver_config = SolverConfig(epochs=epochs, batch_size=settings.batch_size, seed=settings.seed,
                                 max_iterations=1 if settings.dry_run else 0, progress=settings.progress)
    return solver_config, optim_config


def _blind(data, seed):
    """Pair every training caption with a random other image's features: a model that cannot see."""
    rng = np.random.default_rng([seed, 2])
    idxs = data["train_image_idxs"]
    return dict(data, train_image_idxs=rng.permutation(len(data["train_features"]))[idxs])


def _writable_dir(path):
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise UserError(f"--out {path} is not writable ({err.strerror}); choose another directory") from None
    return path
