"""Ctrl-C, handled where it lands. While a script starts (its imports load torch, numpy, h5py for seconds): one line
and exit code 130, no traceback; a script calls ``exit_on_interrupt`` before its other imports, and
``core.runtime.cli.run`` gives Ctrl-C back to Python (KeyboardInterrupt) once ``main`` starts. During long work
(``stop_on_sigint``): a first press asks the work to stop at a safe point, a second interrupts at once except while
a file is being written, which it lets finish."""
import os
import signal
import sys
import threading
from contextlib import contextmanager

INTERRUPTED_EXIT = 130  # 128 + SIGINT, what shells report for a process Ctrl-C ended


def exit_on_interrupt():
    """Until ``restore_interrupt``, Ctrl-C exits at once with one line and code 130."""
    signal.signal(signal.SIGINT, _exit_interrupted)


def restore_interrupt():
    """Ctrl-C raises KeyboardInterrupt again (Python's default)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _exit_interrupted(signum, frame):
    # Ends the process on the spot: an exception raised here can land inside an extension's C++ start-up (torch's
    # pybind11 code), which aborts on it. Only imports run meanwhile, so there is nothing to clean up.
    sys.stderr.write("interrupted\n")
    sys.stderr.flush()
    os._exit(INTERRUPTED_EXIT)


class SaveGuard:
    """Marks a checkpoint write in progress; a Ctrl-C during it is held until the write is complete."""

    def __init__(self):
        self.active, self.interrupted = False, False

    def __enter__(self):
        self.active = True

    def __exit__(self, *exc_info):
        self.active = False
        if self.interrupted and exc_info[0] is None:
            self.interrupted = False
            raise KeyboardInterrupt


@contextmanager
def stop_on_sigint(stop, saving):
    """Within it, Ctrl-C sets ``stop`` (a ``threading.Event``) instead of raising mid-update; a second Ctrl-C
    interrupts at once, except during a checkpoint write (``saving``, a SaveGuard), which it lets finish first.
    Outside the main thread, where signals cannot be handled, it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if not stop.is_set():
            stop.set()  # the first press, also during a write: stop after the step, saving last
        elif saving.active:
            saving.interrupted = True
        else:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
