"""Ctrl-C during training: the first press stops the loop after its current step (which then saves a resumable
checkpoint), a second one interrupts at once, except during a checkpoint write, which it lets finish first."""
import signal
import threading


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


def install_sigint(stop, saving):
    """Ctrl-C sets ``stop`` instead of raising mid-update; a second Ctrl-C interrupts at once, except during a
    checkpoint write, which it lets finish first."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        if not stop.is_set():
            stop.set()  # the first press, also during a write: stop after the step, saving last
        elif saving.active:
            saving.interrupted = True
        else:
            raise KeyboardInterrupt

    return signal.signal(signal.SIGINT, handler)


def restore_sigint(previous):
    """Put back the handler ``install_sigint`` replaced (None: it replaced none)."""
    if previous is not None:
        signal.signal(signal.SIGINT, previous)
