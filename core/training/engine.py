"""A training run from settings to files: data, model, updater, the loop, outputs. ``training.py`` is its CLI.

    settings -> data (core.data) -> model kind (core.model.registry) -> Solver (core.training.solver)
             -> <out>/best, last, config.json, history.json, loss.png

The run's record (every setting, the model's config, the device that ran it) is written once, to
``config.json``, and every checkpoint carries the same record.
"""
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from core.data.grid import has_grid_files, model_inputs
from core.data.layout import CONFIG_FILE, DRY_RUN_DIR, PROTOCOLS, SPLITS, checkpoint_file, default_run_dir
from core.data.loader import load_coco_data
from core.datasets.resolve import resolve_data_dir
from core.model.registry import input_shape, load_model, model_kind
from core.runtime.checkpoint import load_training_state
from core.runtime.cli import seed_everything
from core.runtime.distributed import fingerprint, process_group
from core.runtime.errors import UserError
from core.runtime.fileio import FolderLock, atomic_write_text, writable_dir
from core.runtime.gradient_reduction import REDUCE_DTYPES
from core.training.recipes import recipe
from core.training.scst import SCSTConfig, SCSTUpdater, image_rows, training_document_frequency
from core.training.solver import Solver, SolverConfig

OBJECTIVES = ("xe", "scst")
SCST_LR_SCALE = 0.1  # a self-critical run's default learning rate, as a share of the kind's cross-entropy rate


@dataclass(frozen=True)
class TrainSettings:
    """Every setting of a training run; ``training.py``'s flags take their defaults from here."""
    model: str
    num_samples: int | None = None  # training captions (the classic meaning); None: all
    dataset: str = "shapes"
    data_dir: str | None = None  # overrides dataset
    protocol: str = PROTOCOLS[0]  # which images make train/val/test: "cs231n" (the files') or "karpathy" (COCO papers')
    epochs: int | None = None  # None: the model kind's default, more when that would be under min_steps
    min_steps: int = 600  # so that `--num_samples 300` trains long enough to overfit
    batch_size: int = 128
    lr: float | None = None  # None: the model kind's default
    seed: int = 0
    device: str = "auto"
    backend: str = "numpy"  # the hand-written kinds' arrays: numpy, torch (tensors, no autograd) or cupy
    out: str | None = None  # None: runs/<model>
    resume: bool = False
    overwrite: bool = False  # start afresh in a folder that holds a trained run, replacing it
    dry_run: bool = False  # one step and one validation pass, never over a trained run's files
    save_every: int = SolverConfig.save_every  # steps between checkpoints within an epoch; 0: every 10 minutes
    patience: int = SolverConfig.patience  # epochs without a better validation loss (reward) before stopping; 0: never
    min_improvement: float = SolverConfig.min_improvement  # the share of the best loss an epoch must gain to count
    objective: str = "xe"  # "xe": cross-entropy; "scst": self-critical CIDEr-D training from an XE checkpoint
    init_from: str | None = None  # scst: the checkpoint to start from; None: runs/<model>/best
    scst_samples: int = SCSTConfig.samples
    scst_baseline: str = SCSTConfig.baseline
    shuffle_features: bool = False  # the blind baseline: captions paired with other images' features
    reduce_dtype: str = REDUCE_DTYPES[0]  # under torchrun: the dtype gradients are all-reduced in; alone: no effect
    progress: bool = True
    model_config: dict = field(default_factory=dict)  # architecture options, e.g. {"hidden_dim": 256}


def run_training(settings, data=None):
    """Train as ``settings`` say; returns a summary dict, with the trained model (its best state) under "model".

    ``data`` is the dataset already loaded as the settings say (``load_coco_data``), to train several models on
    one load; None loads it.
    """
    seed_everything(settings.seed)
    kind = model_kind(settings.model)
    kind.make_config(settings.model_config)  # bad options fail before any data is read
    scst = _scst_config(settings)
    device = kind.device(settings.device, settings.backend)
    # Under torchrun, one process of a group (core.runtime.distributed); rank 0 decides the folder and holds its lock.
    with process_group(getattr(device, "type", device), reduce_dtype=settings.reduce_dtype) as group:
        device = group.place(device)
        if settings.batch_size % group.world_size:
            raise group.error(f"--batch-size {settings.batch_size} (the global minibatch) does not divide among "
                              f"{group.world_size} processes: pass a multiple of {group.world_size}")
        out_dir = group.main_decides(lambda: _out_dir(settings, kind, restarted=group.restart_count > 0))
        with group.main_holds(FolderLock(out_dir, "--out")):
            return _train(settings, kind, scst, device, out_dir, data, group)


def _train(settings, kind, scst, device, out_dir, data, group):
    """The run itself, holding the lock on ``out_dir``: the objective's setup, then the one shared tail."""
    settings = replace(settings, progress=settings.progress and group.is_main)
    with group.main_first():  # a dataset made on first use is made once
        data_dir = data["base_dir"] if data is not None else resolve_data_dir(
            settings.dataset, settings.data_dir, progress=settings.progress, protocol=settings.protocol)
    if scst is None:
        model, updater, data = _cross_entropy_setup(settings, kind, device, data_dir, data, group)
    else:
        model, updater, data = _self_critical_setup(settings, kind, scst, device, out_dir, data_dir, data, group)
    return _solve(settings, kind, model, updater, data, device, out_dir, group)


def _cross_entropy_setup(settings, kind, device, data_dir, data, group):
    """A fresh model of the run's architecture, fitted to the data; its updater; the data it reads."""
    has_grid = "train_grid" in data if data is not None else has_grid_files(data_dir, SPLITS)
    model_config = kind.make_config(settings.model_config, has_grid=has_grid)
    data = _model_data(settings, data_dir, data, model_config.reads_grid)
    model_config = model_config.for_data(data["train_features"])
    kind.check_size(model_config, len(data["idx_to_word"]))
    model = kind.build(data["word_to_idx"], model_config, seed=settings.seed, device=device, backend=settings.backend)
    return model, recipe(kind).make_updater(model, _optim_config(settings, kind), device, group), data


def _self_critical_setup(settings, kind, scst, device, out_dir, data_dir, data, group):
    """The cross-entropy model to fine-tune; its self-critical updater; the data as rows of images with all their
    reference captions."""
    model = _initial_model(settings, kind, device, out_dir)
    model_config = kind.model_class.Config(**model.config())
    data = _model_data(settings, data_dir, data, model_config.reads_grid)
    _check_initial_model(settings, model, model_config, data)
    data = image_rows(data)
    with group.main_first():  # rank 0 writes the cache the others read
        df = training_document_frequency(data["base_dir"], data["train_captions"], model.start_idx, model.null_idx)
    base = recipe(kind).make_updater(model, _optim_config(settings, kind), device, group)
    return model, SCSTUpdater(base, scst, df), data


def _model_data(settings, data_dir, data, reads_grid):
    """The dataset as the model reads it (pooled or grid features), loaded unless given; with --shuffle-features,
    captions paired with other images."""
    if data is None:
        data = load_coco_data(data_dir, max_train=settings.num_samples, seed=settings.seed, grid=reads_grid,
                              protocol=settings.protocol)
    data = model_inputs(data, reads_grid)
    return _blind(data, settings.seed) if settings.shuffle_features else data


def _solve(settings, kind, model, updater, data, device, out_dir, group):
    """The shared tail: the run's record, the solver (resumed when asked), training, the best parameters."""
    solver_config = _solver_config(settings, kind, data["train_captions"].shape[0])
    optim_config = updater.optim_config
    record = dict(_record(settings, model, solver_config, optim_config, data, device),
                  world_size=group.world_size, backend=group.backend)
    group.check_same(lambda: {**{f"settings.{key}": value for key, value in asdict(settings).items()},
                              "data": fingerprint({f"{split}_{part}": data[f"{split}_{part}"] for split in SPLITS
                                                   for part in ("captions", "image_idxs", "features")}),
                              "vocabulary": list(data["idx_to_word"]), "model config": model.config()})
    meta = dict(record, idx_to_word=list(data["idx_to_word"]), title=_title(settings, data))
    solver = Solver(updater, data, solver_config, out_dir, meta, kind.checkpoint_suffix, group)
    # A group torchelastic restarted (--max-restarts) goes on from the last checkpoint, as --resume does.
    if settings.resume or group.main_decides(lambda: group.restart_count > 0 and solver.last_path.is_file()):
        if not solver.last_path.is_file():
            raise UserError(f"--resume: no checkpoint {solver.last_path} to resume from; drop --resume to start afresh")
        solver.resume()
    if group.is_main:
        atomic_write_text(out_dir / CONFIG_FILE, json.dumps(record, indent=1))
    start = time.perf_counter()
    try:
        history = solver.train()
    except (KeyboardInterrupt, UserError) as stop:
        if group.is_main and not (solver.last_path.is_file() or solver.best_path.is_file()):
            (out_dir / CONFIG_FILE).unlink(missing_ok=True)  # nothing was trained: no record of a run stays
        if isinstance(stop, KeyboardInterrupt):
            _say_interrupted(solver)
        raise
    best = solver.best_params or load_training_state(solver.best_path)[1]["params"]
    kind.load_params(model, best, solver.best_path)
    return {"out_dir": str(out_dir), "best": str(solver.best_path), "last": str(solver.last_path),
            "seconds": time.perf_counter() - start, "best_val_loss": solver.best_val_loss,
            "final_train_loss": history["epoch_train_loss"][-1] if history["epoch_train_loss"] else math.nan,
            "steps": solver.step, "epochs": len(history["epoch_val_loss"]), "device": str(device), "model": model,
            "metric": updater.metric, "main": group.is_main}


def _say_interrupted(solver):
    if solver.last_saved_step is None:
        print(f"interrupted at step {solver.step}, before any checkpoint was written", file=sys.stderr)
    else:
        print(f"interrupted at step {solver.step}: resumable checkpoint {solver.last_path} (step "
              f"{solver.last_saved_step}); continue with the same command plus --resume", file=sys.stderr)


def _scst_config(settings):
    """The SCSTConfig of a self-critical run, None for cross-entropy; UserError for options that do not fit."""
    if settings.objective not in OBJECTIVES:
        raise UserError(f"--objective {settings.objective!r}: use one of {', '.join(OBJECTIVES)}")
    if settings.objective == "xe":
        _refuse_scst_flags(settings)
        return None
    if settings.model_config:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in sorted(settings.model_config))
        raise UserError(f"{flags} cannot be set with --objective scst: the architecture is --init-from's; drop them")
    if settings.shuffle_features:
        raise UserError("--shuffle-features cannot be combined with --objective scst: train the blind baseline "
                        "with cross-entropy")
    try:
        return SCSTConfig(samples=settings.scst_samples, baseline=settings.scst_baseline)
    except ValueError as err:
        raise UserError(f"--scst-samples/--scst-baseline: {err}") from None


def _refuse_scst_flags(settings):
    """UserError for self-critical flags set on a cross-entropy run, which would ignore them."""
    defaults = {"init_from": None, "scst_samples": SCSTConfig.samples, "scst_baseline": SCSTConfig.baseline}
    given = [f"--{name.replace('_', '-')}" for name, default in defaults.items()
             if getattr(settings, name) != default]
    if given:
        raise UserError(f"{', '.join(given)} only apply to --objective scst: add --objective scst or drop them")


def _initial_model(settings, kind, device, out_dir):
    """The cross-entropy checkpoint a self-critical run starts from, checked against the run's model kind."""
    best = checkpoint_file("best", kind.checkpoint_suffix)
    path = Path(settings.init_from or default_run_dir(settings.model) / best)
    written = {(out_dir / checkpoint_file(name, kind.checkpoint_suffix)).resolve() for name in ("best", "last")}
    if path.resolve() in written:
        raise UserError(f"--out {out_dir} would overwrite --init-from {path}: write the self-critical run to "
                        "another --out")
    if not path.is_file():
        raise UserError(f"--init-from {path}: no checkpoint there; train the cross-entropy model first (python "
                        f"training.py --model {settings.model}) or pass --init-from PATH")
    model, meta = load_model(path, device=device, backend=settings.backend)
    if meta["model_type"] != settings.model:
        raise UserError(f"--init-from {path} holds a {meta['model_type']!r} model, not {settings.model!r}: pass "
                        f"--model {meta['model_type']} or another --init-from")
    return model


def _check_initial_model(settings, model, config, data):
    """UserError unless the self-critical run's starting model reads this data: its vocabulary, its inputs."""
    path = settings.init_from or "(the default)"
    if list(model.idx_to_word) != list(data["idx_to_word"]):
        raise UserError(f"--init-from {path} was trained with another vocabulary than {data['base_dir']}: start from "
                        "a checkpoint trained on this dataset")
    expected, shape = input_shape(config), tuple(data["train_features"].shape[1:])
    if expected != shape:
        raise UserError(f"--init-from {path} takes features of shape {expected}, {data['base_dir']} has {shape}: "
                        "start from a checkpoint trained on these features")


def _optim_config(settings, kind):
    """The model kind's optimizer settings; self-critical runs start at a tenth of its rate, without warm-up
    (fine-tuning a trained model: the rate of cross-entropy training from scratch undoes it), unless --lr."""
    optim = recipe(kind).optim
    if settings.objective == "xe":
        return optim if settings.lr is None else replace(optim, lr=settings.lr)
    return replace(optim, lr=settings.lr or optim.lr * SCST_LR_SCALE, warmup_steps=0)


def _solver_config(settings, kind, num_rows):
    """The loop's settings; ``num_rows`` captions (images, in self-critical runs) make an epoch."""
    iterations = math.ceil(num_rows / settings.batch_size)
    epochs = settings.epochs or max(recipe(kind).epochs, math.ceil(settings.min_steps / iterations))
    return SolverConfig(epochs=epochs, batch_size=settings.batch_size, seed=settings.seed,
                        max_iterations=1 if settings.dry_run else 0, progress=settings.progress,
                        save_every=settings.save_every, patience=settings.patience,
                        min_improvement=settings.min_improvement)


def _record(settings, model, solver_config, optim_config, data, device):
    """The run's record: what config.json holds and every checkpoint carries."""
    custom = settings.data_dir is not None
    return {"model_type": settings.model, "model_config": model.config(), "settings": asdict(settings),
            "solver": asdict(solver_config), "optim": asdict(optim_config), "device": str(device),
            "data": {"dir": str(Path(data["base_dir"]).resolve()), "dataset": "custom" if custom else settings.dataset,
                     "num_samples": settings.num_samples, "shuffle_features": settings.shuffle_features,
                     "protocol": data.get("protocol", settings.protocol)}}


def _title(settings, data):
    blind = " (shuffled features)" if settings.shuffle_features else ""
    return f"{settings.model} on {Path(data['base_dir']).name}{blind}"


def _blind(data, seed):
    """Pair every training caption with a random other image's features: a model that cannot see."""
    rng = np.random.default_rng([seed, 2])
    idxs = data["train_image_idxs"]
    return dict(data, train_image_idxs=rng.permutation(len(data["train_features"]))[idxs])


def _out_dir(settings, kind, restarted=False):
    """The run's folder, checked writable. A folder holding a trained run is refused unless the run resumes it
    (--resume, or a group torchelastic ``restarted``) or replaces it (--overwrite). A dry run next to a trained
    run's checkpoints goes into a subfolder, so that a smoke test never replaces the model ``inference.py`` loads."""
    out_dir = Path(settings.out or default_run_dir(settings.model, settings.objective))
    trained = [name for name in (checkpoint_file(stage, kind.checkpoint_suffix) for stage in ("best", "last"))
               if (out_dir / name).is_file()]
    if settings.resume and settings.overwrite:
        raise UserError("--resume continues a run and --overwrite starts it over: pass one of them")
    if settings.dry_run and trained:
        out_dir = out_dir / DRY_RUN_DIR
        print(f"--dry-run: {out_dir.parent} holds a trained run; writing to {out_dir} instead", file=sys.stderr)
    elif trained and not (settings.resume or settings.overwrite or restarted):
        raise UserError(f"--out {out_dir} holds a trained run ({', '.join(trained)}): pass --resume to continue it, "
                        "--overwrite to start over (replacing it), or another --out")
    return writable_dir(out_dir, "--out")
