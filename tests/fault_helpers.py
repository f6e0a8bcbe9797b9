"""A crash at a known point, for tests/test_faults.py: training.py's main in a process that kills itself.

    python -m tests.fault_helpers N training.py-flags...

runs ``training.py`` with those flags, and SIGKILLs its own process as its N-th training step of this process
begins (N - 1 steps done): no handler, no ``finally`` and no checkpoint write runs, as with ``kill -9``. Run it
from the repository root (``-m`` puts the root on ``sys.path``).
"""
import os
import signal
import sys


def kill_at_step(n):
    """Make the N-th ``train_step`` call of this process (any updater) SIGKILL the process instead."""
    from core.training.optim import NumpyUpdater
    from core.training.torch_optim import TorchUpdater

    calls = [0]
    for cls in (NumpyUpdater, TorchUpdater):
        real = cls.train_step

        def train_step(self, *args, _real=real):
            calls[0] += 1
            if calls[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
            return _real(self, *args)

        cls.train_step = train_step


def main(argv):
    kill_at_step(int(argv[0]))
    import training
    from core.runtime import cli

    cli.run(lambda: training.main(argv[1:]))


if __name__ == "__main__":
    main(sys.argv[1:])
