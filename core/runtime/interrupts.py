"""Ctrl-C while a script starts (its imports load torch, numpy, h5py for seconds): one line and exit code 130,
no traceback. A script calls ``exit_on_interrupt`` before its other imports; ``core.runtime.cli.run`` gives
Ctrl-C back to Python (KeyboardInterrupt) once ``main`` starts, where runs save and clean up on it."""
import signal
import sys

INTERRUPTED_EXIT = 130  # 128 + SIGINT, what shells report for a process Ctrl-C ended


def exit_on_interrupt():
    """Until ``restore_interrupt``, Ctrl-C exits at once with one line and code 130."""
    signal.signal(signal.SIGINT, _exit_interrupted)


def restore_interrupt():
    """Ctrl-C raises KeyboardInterrupt again (Python's default)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _exit_interrupted(signum, frame):
    sys.stderr.write("interrupted\n")
    raise SystemExit(INTERRUPTED_EXIT)
