"""Gradients summed over ranks, in their own dtype or rounded to a 16-bit one on the way (fewer bytes to send)."""
from core.runtime.arrays import as_torch, contiguous

# What gradients are all-reduced in. float32, the default: each in its own dtype, untouched. bfloat16 and float16
# round each one to 8 and 11 significant bits before the sum and cast the sum back to the gradient's dtype.
REDUCE_DTYPES = ("float32", "bfloat16", "float16")
# torch's DistributedDataParallel communication hooks that reduce in each 16-bit dtype.
DDP_HOOKS = {"bfloat16": "bf16_compress_hook", "float16": "fp16_compress_hook"}


def _wire_dtype(reduce_dtype):
    """The torch dtype the all-reduce runs in; None: the gradient's own."""
    import torch

    return getattr(torch, reduce_dtype) if reduce_dtype in DDP_HOOKS else None


class OverlappedGradients(dict):
    """Gradients summed over ranks while the backward pass goes on, as DistributedDataParallel's buckets are.

    Each gradient set (``grads[name] = g``, or ``update``) is multiplied by this rank's ``share`` of the loss into a
    buffer of its own, whose asynchronous all-reduce starts at once; the dict holds the buffers. Every rank sets the
    same names in the same order (one code path), so the collectives pair up. ``finish(loss)`` waits for the
    all-reduces and returns the loss times ``share``, summed over ranks: then the dict holds the step's gradients,
    the same on every rank, in the namespace and dtype of the backward's arrays (numpy, torch, CuPy).

    ``reduce_dtype`` (one of ``REDUCE_DTYPES``) other than float32: each buffer, already times ``share`` so that the
    sum stays in range, is all-reduced as a copy in that dtype, and the sum is written back into the buffer."""

    def __init__(self, group, share, reduce_dtype):
        super().__init__()
        self.group, self.share, self._pending = group, share, []
        self._wire = _wire_dtype(reduce_dtype)

    def __setitem__(self, name, grad):
        import torch

        buffer = contiguous(grad * self.share)
        tensor = as_torch(buffer)
        wire = tensor if self._wire is None else tensor.to(self._wire)
        self._pending.append((tensor, wire, torch.distributed.all_reduce(wire, async_op=True)))
        super().__setitem__(name, buffer)

    def update(self, grads=(), **more):
        for name, grad in dict(grads, **more).items():
            self[name] = grad

    def finish(self, loss):
        """The loss times ``share`` summed over ranks, once every gradient's all-reduce is done."""
        total = self.group.sum(float(loss) * self.share)
        for tensor, wire, work in self._pending:
            work.wait()
            if wire is not tensor:
                tensor.copy_(wire)  # tensor shares the buffer's memory: the dict's arrays get the sum
        self._pending = []
        return total


def data_parallel(model, device, reduce_dtype):
    """``model.loss`` in DistributedDataParallel: called like it, its backward all-reduces (averages) the gradients
    over ranks, in ``reduce_dtype`` through torch's compression hook unless float32. Buffers are not synced before
    each forward: they are built alike on every rank."""
    import inspect

    import torch
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    class Loss(torch.nn.Module):  # DDP reduces what goes through a module's forward
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *args, **kwargs):
            return self.model.loss(*args, **kwargs)

    ids = [device.index] if getattr(device, "type", device) == "cuda" else None
    ddp = torch.nn.parallel.DistributedDataParallel
    # torch 2.13 names the option forward_sync_buffers and warns on the old name, which is all earlier ones know.
    no_sync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp).parameters
               else "broadcast_buffers")
    trainer = ddp(Loss(), device_ids=ids, **{no_sync: False})
    if reduce_dtype in DDP_HOOKS:
        hook = getattr(default_hooks, DDP_HOOKS[reduce_dtype])
        # Registered under another name: DDP refuses bf16_compress_hook by name without CUDA and NCCL, yet gloo
        # all-reduces bfloat16 on CPUs as well.
        trainer.register_comm_hook(None, lambda state, bucket: hook(state, bucket))
    return trainer
