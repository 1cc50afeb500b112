"""Stopping a run cleanly: Ctrl-C or SIGTERM (a cluster's scheduler, `kill`) asks the loop to stop after its
step, with a checkpoint; a second one stops at once (KeyboardInterrupt)."""

from __future__ import annotations

import contextlib
import signal
import threading


class StopRequest(threading.Event):
    signum: int = signal.SIGINT
    """The signal that asked (the exit code is 128 + it)."""


@contextlib.contextmanager
def stop_requests():
    """A StopRequest that SIGINT and SIGTERM set while the block runs (handlers only in the main thread; the
    previous ones come back after)."""
    stop, previous = StopRequest(), {}

    def request(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.signum = signum
        stop.set()

    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, request) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
