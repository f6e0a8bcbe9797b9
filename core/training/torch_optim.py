"""The torch update: ``TorchUpdater`` trains a torch model with autograd, AdamW, clipping by global norm and
bf16/fp16 autocast on CUDA; in a process group the model runs in DistributedDataParallel. It has
``core.training.optim.NumpyUpdater``'s methods, so the solver never asks which one it holds."""
import numpy as np

from core.runtime.distributed import SINGLE
from core.training.solver import LOSS


class TorchUpdater:
    """Updates a torch model with AdamW, clipping by global norm, bf16/fp16 autocast on CUDA."""

    def __init__(self, model, config, device, group=SINGLE):
        import torch

        self.torch, self.model, self.optim_config, self.device, self.group = torch, model, config, device, group
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
        if self.optim_config.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.optim_config.grad_clip)
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
        """Take a ``state()``; ValueError (before changing anything) when its optimizer state does not fit."""
        if state.get("optim"):
            problem = self._optim_problem(state["optim"])
            if problem:
                raise ValueError(problem)
        self.model.load_state_dict(state["params"])
        if state.get("optim"):
            self.optimizer.load_state_dict(state["optim"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if "rng" in state:
            self.torch.set_rng_state(state["rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            self.torch.cuda.set_rng_state(state["cuda_rng"], self.device)

    def _optim_problem(self, saved):
        """Why a saved optimizer state_dict does not fit this optimizer's parameters (torch only finds out at the
        first step), or None. Saved parameters are positions, in the order of this optimizer's groups."""
        current = [p for group in self.optimizer.param_groups for p in group["params"]]
        try:
            ids = [i for group in saved["param_groups"] for i in group["params"]]
            entries = [(i, key, value) for i in ids for key, value in saved["state"].get(i, {}).items()]
        except (KeyError, TypeError, AttributeError):
            return "has an optimizer state without its parameter groups"
        if len(ids) != len(current):
            return f"has optimizer state for {len(ids)} parameters where the model has {len(current)}"
        shapes = dict(zip(ids, (tuple(p.shape) for p in current)))
        for i, key, value in entries:
            if not self.torch.is_tensor(value) or (value.ndim and tuple(value.shape) != shapes[i]):
                return f"has optimizer state {key} of parameter {i} that does not fit its shape {shapes[i]}"
        return None
