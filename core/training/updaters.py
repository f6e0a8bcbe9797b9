"""The two ways to update a model inside the one training loop.

``NumpyUpdater`` drives the numpy models: ``loss -> (loss, grads)``, clipping by global norm, an update rule from
``core.optim``. ``TorchUpdater`` drives the Transformer: autograd, AdamW, clipping, mixed precision on CUDA.
In a process group (``core.distributed.Group``) each rank's minibatch is its shard of the global one and
``share`` its part of the loss's ``loss_units``: the gradients summed over ranks with those weights are the
single-process gradients, and every rank takes the same step. ``train_step`` also takes per-caption ``weights`` (N,) (self-critical training's advantages); ``rng`` (an
``np.random.Generator`` the solver draws from ``(seed, step)``) serves updaters that sample, such as
``core.training.scst.SCSTUpdater``, which wraps one of these two. Both expose the same methods, so ``core.training.solver.Solver`` never asks which one it holds:

    loss = updater.train_step(features, captions, lr, rng, share)  # features (N, D), captions (N, T): numpy
    units = updater.loss_units(captions)                    # what the loss averages over (captions, words)
    loss = updater.eval_loss(features, captions)
    model = updater.decoder()                               # the model ready to decode (eval mode)
    state = updater.state(); updater.load_state(state)      # parameters + optimizer state, for checkpoints
    params = updater.snapshot()                             # a copy of the parameters, for the best model
"""
import math
from dataclasses import dataclass

import numpy as np

from core import optim
from core.distributed import SINGLE


@dataclass(frozen=True)
class Metric:
    """What an updater's "loss" is, for people: its name and the sign that turns it into that quantity."""
    name: str
    sign: float = 1.0


LOSS = Metric("loss")


@dataclass(frozen=True)
class OptimConfig:
    """How parameters are updated; each model kind's defaults are in ``core.model.registry``."""
    update_rule: str = "adam"  # numpy: sgd, sgd_momentum, rmsprop, adam; the Transformer always uses AdamW
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.0  # AdamW's decoupled decay (Transformer only)
    grad_clip: float = 5.0  # max global gradient norm; 0 turns clipping off
    warmup_steps: int = 0  # linear warm-up, then cosine decay to min_lr_ratio * lr at the last step
    min_lr_ratio: float = 0.05
    betas: tuple = (0.9, 0.98)  # AdamW's (Transformer only)


def learning_rate(config, step, total_steps):
    """The learning rate at a global step: linear warm-up, then cosine decay to ``min_lr_ratio * lr``."""
    warmup = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    progress = min(1.0, max(0, step - config.warmup_steps) / max(1, total_steps - config.warmup_steps))
    decay = config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return config.lr * warmup * decay


def _weighted(weights):
    """The loss's keyword arguments: none for plain cross-entropy, so models without weights still train."""
    return {} if weights is None else {"weights": weights}


class NumpyUpdater:
    """Updates a numpy model (``params`` dict, ``loss -> (loss, grads)``) with a rule from ``core.optim``."""

    def __init__(self, model, config, group=SINGLE):
        if config.update_rule not in optim.UPDATE_RULES:
            raise ValueError(f"unknown update rule {config.update_rule!r}: use one of {sorted(optim.UPDATE_RULES)}")
        self.model, self.config = model, config
        self.rule = optim.UPDATE_RULES[config.update_rule]
        self.optim_state = {name: {} for name in model.params}
        self.group = group

    metric = LOSS

    def loss_units(self, captions):
        return len(captions)  # the loss is per caption

    def train_step(self, features, captions, lr, rng=None, share=1.0, weights=None):
        loss, grads = self.model.loss(features, captions, **_weighted(weights))
        if self.group.distributed:  # the loss rides along, so every rank sees the same finite or not
            loss, grads = self.group.reduce_gradients(loss, grads, share)
        if not np.isfinite(loss):
            return float(loss)
        if self.config.grad_clip > 0:
            norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
            if norm > self.config.grad_clip:
                scale = self.config.grad_clip / (norm + 1e-6)
                grads = {name: g * scale for name, g in grads.items()}
        for name, w in self.model.params.items():
            state = self.optim_state[name]
            state["learning_rate"] = lr
            self.model.params[name], self.optim_state[name] = self.rule(w, grads[name], state)
        return float(loss)

    def eval_loss(self, features, captions):
        return float(self.model.loss(features, captions)[0])

    def decoder(self):
        return self.model

    def snapshot(self):
        return {name: w.copy() for name, w in self.model.params.items()}

    def state(self):
        return {"params": self.snapshot(), "optim": self.optim_state}

    def load_state(self, state):
        self.model.params.update({name: np.asarray(w) for name, w in state["params"].items()})
        self.optim_state = {name: dict(state["optim"].get(name, {})) for name in self.model.params}


class TorchUpdater:
    """Updates a torch model with AdamW, clipping by global norm, bf16/fp16 autocast on CUDA."""

    def __init__(self, model, config, device, group=SINGLE):
        import torch

        self.torch, self.model, self.config, self.device, self.group = torch, model, config, device, group
        # What a training step's loss goes through: the model's loss, in DistributedDataParallel in a group.
        self.trainer = group.data_parallel_loss(model, device) if group.distributed else model.loss
        # The model says which of its parameters decay (nanoGPT's configure_optimizers).
        self.optimizer = model.configure_optimizers(config.weight_decay, config.lr, tuple(config.betas))
        self.amp_dtype = None
        if device.type == "cuda":
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        # Self-critical training turns dropout off: its captions are sampled without it, and the policy gradient
        # is exact only for the distribution the samples came from.
        self.dropout = True

    def _tensors(self, features, captions):
        torch = self.torch
        features = torch.as_tensor(np.asarray(features, dtype=np.float32), device=self.device)
        captions = torch.as_tensor(np.asarray(captions, dtype=np.int64), device=self.device)
        return features, captions

    def _loss(self, features, captions, weights=None, through=None):
        options = {} if weights is None else {"weights": self.torch.as_tensor(weights, device=self.device)}
        with self.torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            return (through or self.model.loss)(*self._tensors(features, captions), **options)

    metric = LOSS

    def loss_units(self, captions):
        return max(1, int(np.count_nonzero(np.asarray(captions)[:, 1:] != self.model.null_idx)))  # per word

    def train_step(self, features, captions, lr, rng=None, share=1.0, weights=None):
        self.model.train(self.dropout)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.group.distributed and rng is not None:  # dropout masks drawn per rank and step: exact resume
            self.torch.manual_seed(int(rng.integers(2 ** 63)))
        loss = self._loss(features, captions, weights, self.trainer)
        reduced = None
        if self.group.distributed:
            # The reduced loss decides for every rank alike; DDP averages gradients, so each rank's loss counts
            # share * world_size.
            reduced = self.group.sum(float(loss.detach()) * share)
            if not np.isfinite(reduced):
                return reduced
            loss = loss * (share * self.group.world_size)
        elif not self.torch.isfinite(loss):
            return float(loss.detach())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach()) if reduced is None else reduced

    def eval_loss(self, features, captions):
        self.model.eval()
        with self.torch.no_grad():
            return float(self._loss(features, captions))

    def decoder(self):
        self.model.eval()
        return self.model

    def snapshot(self):
        return {name: t.detach().to("cpu", copy=True) for name, t in self.model.state_dict().items()}

    def state(self):
        # The generator state makes dropout after a resume identical to an uninterrupted run.
        state = {"params": self.snapshot(), "optim": self.optimizer.state_dict(),
                 "scaler": self.scaler.state_dict(), "rng": self.torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda_rng"] = self.torch.cuda.get_rng_state(self.device)
        return state

    def load_state(self, state):
        self.model.load_state_dict(state["params"])
        if state.get("optim"):
            self.optimizer.load_state_dict(state["optim"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if "rng" in state:
            self.torch.set_rng_state(state["rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            self.torch.cuda.set_rng_state(state["cuda_rng"], self.device)
