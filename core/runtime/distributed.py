"""One job as several processes on torch.distributed, launched by ``torchrun`` (gloo on CPUs, nccl on GPUs).

A ``Group`` says who this process is (rank, world size) and carries the few collective operations the training
loop, the evaluation and the feature extraction need: this rank's shard of an index array, a sum over ranks,
the gradients of a step reduced while its backward pass runs (in ``core.runtime.gradient_reduction``, in their own
dtype or a 16-bit one), objects gathered on rank 0, rank 0's decisions broadcast, and a check that every rank was
launched with the same settings. Outside torchrun (no ``WORLD_SIZE`` in the environment) the group is a single
process, every operation is the identity, and torch is never imported.

Errors every rank meets alike are printed once: rank 0 raises the ``UserError``, the other ranks exit with the
same code silently (``Group.error``).
"""
import hashlib
import math
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta

import numpy as np

from core.runtime.errors import UserError
from core.runtime.gradient_reduction import REDUCE_DTYPES, OverlappedGradients, data_parallel

RENDEZVOUS_TIMEOUT_ENV = "CAPTION_RENDEZVOUS_TIMEOUT"  # seconds a process waits to reach the rendezvous
RENDEZVOUS_SECONDS = 60.0
# How long a rank waits for the others at a collective: rank 0 alone building a dataset or writing a large
# checkpoint keeps them waiting that long at most.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)
FINGERPRINT_ROWS = 16  # rows hashed at each end of an array read lazily (features files of tens of GB)


@dataclass(frozen=True)
class Group:
    """This process's place in the job. ``backend`` None: a plain single-process run, no process group."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    restart_count: int = 0  # torchelastic's restarts of the group so far (--max-restarts)
    backend: str | None = None
    reduce_dtype: str = REDUCE_DTYPES[0]  # what the gradients are all-reduced in (core.runtime.gradient_reduction)

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.backend is not None

    def shard(self, indices):
        """This rank's contiguous share of ``indices``: the shards are disjoint, cover them, in rank order, and
        differ in length by at most one."""
        n = len(indices)
        return indices[self.rank * n // self.world_size:(self.rank + 1) * n // self.world_size]

    def stream(self, *key):
        """A seed key for ``np.random.default_rng``: ``key`` itself in one process; with several, the rank too,
        so that ranks draw independently."""
        return [*key, self.rank] if self.world_size > 1 else list(key)

    def sum(self, value):
        """``value`` (a float) summed over ranks, in float64."""
        if not self.distributed:
            return value
        import torch

        total = torch.tensor([value], dtype=torch.float64)
        torch.distributed.all_reduce(total)
        return float(total[0])

    def gradient_reducer(self, share):
        """A dict for a hand-written model's ``loss(..., grads=...)`` that starts the all-reduce of each gradient,
        times ``share``, in ``reduce_dtype``, as soon as the backward pass sets it; ``finish(loss)`` waits for them
        (see ``OverlappedGradients``)."""
        return OverlappedGradients(self, share, self.reduce_dtype)

    def gather(self, value):
        """Every rank's ``value`` (any picklable object), as a list by rank on rank 0; None on the others."""
        if not self.distributed:
            return [value]
        import torch

        gathered = [None] * self.world_size if self.is_main else None
        torch.distributed.gather_object(value, gathered, dst=0)
        return gathered

    def broadcast(self, value):
        """Rank 0's ``value`` on every rank."""
        if not self.distributed:
            return value
        import torch

        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self):
        if self.distributed:
            import torch

            torch.distributed.barrier()

    def error(self, message):
        """The exception for a problem every rank meets alike: a UserError (one line) on rank 0, a silent exit
        with the same code on the others."""
        return UserError(message) if self.is_main else SystemExit(2)

    def main_decides(self, decide):
        """``decide()`` run on rank 0 alone, its result (or its UserError) on every rank."""
        if not self.distributed:
            return decide()
        outcome = None
        if self.is_main:
            try:
                outcome = (True, decide())
            except UserError as err:
                outcome = (False, str(err))
        ok, value = self.broadcast(outcome)
        if not ok:
            raise self.error(value)
        return value

    @contextmanager
    def main_holds(self, context):
        """Rank 0 alone enters ``context`` (a lock on the output folder) for the block; when it cannot, every
        rank stops with its error instead of waiting for rank 0 at the next collective."""
        if not self.distributed:
            with context:
                yield
            return
        self.main_decides(lambda: _enter(context))
        try:
            yield
        finally:
            if self.is_main:
                context.__exit__(None, None, None)

    @contextmanager
    def main_first(self):
        """Rank 0 runs the block, then the other ranks do: one of them builds what all of them read (a dataset
        made on first use), instead of every rank racing to write it."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def check_same(self, describe):
        """Raise on every rank when any rank's ``describe()`` (a dict of comparable values: its settings, its
        data's fingerprint; not computed in a single process) differs from rank 0's, naming the keys."""
        if not self.distributed:
            return
        import torch

        everyone = [None] * self.world_size
        torch.distributed.all_gather_object(everyone, describe())
        for rank, other in enumerate(everyone[1:], start=1):
            differ = sorted(key for key in everyone[0].keys() | other.keys() if other.get(key) != everyone[0].get(key))
            if differ:
                raise self.error(f"rank {rank} was launched with another {', '.join(differ)} than rank 0: start every "
                                 "process with the same flags and the same data")

    def data_parallel_loss(self, model, device):
        """``model.loss`` in DistributedDataParallel, its gradients all-reduced in ``reduce_dtype`` (see
        ``core.runtime.gradient_reduction.data_parallel``)."""
        return data_parallel(model, device, self.reduce_dtype)

    def place(self, device, gpu_count=None):
        """The device this rank computes on: ``device`` itself, except that CUDA gives each local rank its own GPU.

        ``gpu_count``: the GPUs of this machine (default: what torch sees)."""
        if not self.distributed or getattr(device, "type", device) != "cuda":
            return device
        import torch

        if device.index is not None and self.local_world_size > 1:
            raise UserError(f"--device {device} under torchrun: pass --device cuda, each process takes the GPU of "
                            "its local rank")
        gpu_count = torch.cuda.device_count() if gpu_count is None else gpu_count
        if self.local_world_size > gpu_count:
            raise self.error(f"--nproc_per_node {self.local_world_size} is more than the {gpu_count} GPUs of this "
                             f"machine with --device cuda: launch at most {gpu_count} processes per machine, or use "
                             "--device cpu")
        placed = torch.device("cuda", self.local_rank if device.index is None else device.index)
        if torch.cuda.is_available():  # nccl's object collectives use the current device: this rank's own
            torch.cuda.set_device(placed)
        return placed


SINGLE = Group()


def _enter(context):
    context.__enter__()  # what it returns stays on rank 0: only the success travels


def launched_group(env, backend):
    """The Group torchrun's environment variables describe; None when this process was not launched by it."""
    if "WORLD_SIZE" not in env:
        return None
    try:
        return Group(rank=int(env["RANK"]), world_size=int(env["WORLD_SIZE"]),
                     local_rank=int(env.get("LOCAL_RANK", 0)), local_world_size=int(env.get("LOCAL_WORLD_SIZE", 1)),
                     restart_count=int(env.get("TORCHELASTIC_RESTART_COUNT", 0)), backend=backend)
    except (KeyError, ValueError) as err:
        raise UserError(f"the torch.distributed environment is incomplete ({err}): launch with torchrun") from None


@contextmanager
def process_group(device_type="cpu", env=None, reduce_dtype=REDUCE_DTYPES[0]):
    """The Group of this process for the block: single outside torchrun; under it, a member of the process group
    (nccl for ``device_type`` "cuda", else gloo), left at the end, that all-reduces gradients in ``reduce_dtype``
    (checked in a single process too, where it has no effect). The rendezvous must answer within
    ``$CAPTION_RENDEZVOUS_TIMEOUT`` seconds (default 60), else one line says what to check."""
    if reduce_dtype not in REDUCE_DTYPES:
        raise UserError(f"--reduce-dtype {reduce_dtype!r}: use one of {', '.join(REDUCE_DTYPES)}")
    env = os.environ if env is None else env
    group = launched_group(env, "nccl" if device_type == "cuda" else "gloo")
    if group is None:
        yield SINGLE
        return
    group = replace(group, reduce_dtype=reduce_dtype)
    host, port = env.get("MASTER_ADDR", "127.0.0.1"), int(_env_number(env, "MASTER_PORT", 29500, 1, 65535))
    hosting = group.is_main and env.get("TORCHELASTIC_USE_AGENT_STORE") != "True"  # else torchrun's agent hosts
    if not hosting:
        _reach(host, port, _env_number(env, RENDEZVOUS_TIMEOUT_ENV, RENDEZVOUS_SECONDS, 0.1, 86400))
    import torch.distributed as dist

    store = dist.TCPStore(host, port, group.world_size, is_master=hosting, timeout=COLLECTIVE_TIMEOUT)
    # Keys of one attempt only: after a torchelastic restart, the ranks must not find the killed group's addresses.
    store = dist.PrefixStore(f"captioning/attempt_{group.restart_count}", store)
    # On GPUs the float64 loss sums and the gradients of numpy-backed models are CPU tensors, which nccl cannot
    # reduce: gloo takes those, nccl the CUDA tensors.
    backends = "cpu:gloo,cuda:nccl" if group.backend == "nccl" else group.backend
    dist.init_process_group(backends, store=store, rank=group.rank, world_size=group.world_size,
                            timeout=COLLECTIVE_TIMEOUT)
    try:
        yield group
        dist.barrier()  # the group ends together: rank 0's last writes are done when the job is
    finally:
        dist.destroy_process_group()


def _env_number(env, name, default, low, high):
    """The number environment variable ``name`` holds (``default`` when unset); UserError unless in low..high."""
    text = env.get(name, str(default))
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not low <= value <= high:
        raise UserError(f"${name}={text!r}: set it to a number in {low:g}..{high:g}, or unset it")
    return value


def _reach(host, port, seconds):
    """Return once ``host:port`` accepts a connection; UserError after ``seconds`` of trying (not a hang)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection((host, port), timeout=max(0.1, min(5.0, deadline - time.monotonic()))).close()
            return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise UserError(f"cannot reach the rendezvous {host}:{port} within {seconds:g} s "
                                f"({err.strerror or err}): start the first machine's torchrun, check --rdzv-endpoint "
                                f"and the firewall, or raise ${RENDEZVOUS_TIMEOUT_ENV}") from None
            time.sleep(0.2)


def fingerprint(arrays):
    """A digest of ``arrays`` (a dict name -> array or lazily read (N, ...) sequence), to compare data across
    ranks: in-memory arrays whole, lazy ones by shape and their first and last rows."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        value = arrays[name]
        if not isinstance(value, np.ndarray):
            ends = (value[:FINGERPRINT_ROWS], value[max(0, len(value) - FINGERPRINT_ROWS):])
            value = np.concatenate([np.asarray(end) for end in ends])
            digest.update(repr(tuple(arrays[name].shape)).encode())
        digest.update(name.encode() + repr((value.dtype.str, value.shape)).encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()
