"""One rank of a torchrun group gone wrong, for tests/test_distributed.py: training.py's main with a fault.

    torchrun ... -m tests.distributed_helpers kill RANK N training.py-flags...   # SIGKILL rank RANK at its N-th step
    torchrun ... -m tests.distributed_helpers seed RANK training.py-flags...     # rank RANK gets --seed 1

``kill`` strikes in the group's first attempt only, so a torchelastic restart (--max-restarts) runs clean.
Run from the repository root (``-m`` puts the root on ``sys.path``).
"""
import os
import sys

from tests.fault_helpers import kill_at_step


def main(argv):
    fault, rank, flags = argv[0], int(argv[1]), argv[2:]
    mine = int(os.environ["RANK"]) == rank
    if fault == "kill":
        if mine and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
            kill_at_step(int(flags[0]))
        flags = flags[1:]
    elif fault == "seed" and mine:
        flags = [*flags, "--seed", "1"]
    import training
    from core.runtime import cli

    cli.run(lambda: training.main(flags))


if __name__ == "__main__":
    main(sys.argv[1:])
