"""fp's own handling of the signals it forwards (SIGINT, SIGTERM, SIGHUP): held while a run
is created or supervised, so that no lock is ever taken inside a handler and nothing is left
half made on an engine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from fireplug.errors import FireplugError, Interrupted

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
EXITED = 0  # byte written to the wake-up pipe when the supervised run stopped
T = TypeVar("T")


def made_uninterrupted(make: Callable[[], T], undo: Callable[[T], object]) -> T:
    """``make()`` one thing on the engine (a container) with the forwarded signals held: one
    that comes meanwhile takes effect once the engine answered, by ``undo(thing)`` and then
    Interrupted. An interruption in the middle of the request would leave the thing there
    unknown. Off the main thread, ``make()`` alone.

    Raises:
        Interrupted: a signal came during the request (the thing is undone).
    """
    if threading.current_thread() is not threading.main_thread():
        return make()
    received: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: received.append(signum)) for signum in FORWARDED_SIGNALS}
    try:
        thing = make()
    except FireplugError as e:
        if received:
            raise Interrupted(received[0]) from e
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        with contextlib.suppress(FireplugError):
            undo(thing)
        raise Interrupted(received[0])
    return thing


def ignore_late_signals() -> None:
    """The command's status is final and its results are back: a signal now could only turn
    that status into an interruption, so none is acted on (cli restores the handlers)."""
    if threading.current_thread() is threading.main_thread():
        for signum in FORWARDED_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


class HeldSignals:
    """Record-only handlers for the forwarded signals (and SIGWINCH with a terminal), whose
    numbers arrive on a self-pipe (``signal.set_wakeup_fd``); off the main thread, none."""

    def __init__(self, *, tty: bool, then_ignore: bool = False) -> None:
        self.then_ignore = then_ignore
        self.handled = (*FORWARDED_SIGNALS, *((signal.SIGWINCH,) if tty else ()))
        self.read_fd, self.write_fd = os.pipe()
        self.lock = threading.Lock()
        self.closed = False
        self.seen: list[int] = []
        self._previous: dict[int, Any] = {}
        self._previous_fd = -1

    def __enter__(self) -> HeldSignals:
        os.set_blocking(self.write_fd, False)
        if threading.current_thread() is threading.main_thread():
            self._previous_fd = signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)
            self._previous = {signum: signal.signal(signum, _record_only) for signum in self.handled}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, signal.SIG_IGN if self.then_ignore and signum in FORWARDED_SIGNALS and exc_info[0] is None else handler)
        if self._previous:
            signal.set_wakeup_fd(self._previous_fd)
        with self.lock:
            self.closed = True
            os.close(self.read_fd)
            os.close(self.write_fd)

    def notify_exited(self) -> None:
        """From the waiting thread: wake the main loop (safe after the pipe closed)."""
        with self.lock:
            if not self.closed:
                with contextlib.suppress(BlockingIOError):
                    os.write(self.write_fd, bytes([EXITED]))

    def read(self) -> bytes:
        """Block until signals (or a waiter's EXITED) arrive; their numbers."""
        return os.read(self.read_fd, 64)

    def take(self) -> list[int]:
        """The forwarded signals received and not yet read, without waiting."""
        os.set_blocking(self.read_fd, False)
        try:
            data = os.read(self.read_fd, 4096)
        except BlockingIOError:
            data = b""
        finally:
            os.set_blocking(self.read_fd, True)
        got = [byte for byte in data if byte in FORWARDED_SIGNALS]
        self.seen += got
        return got


def _record_only(signum: int, frame: Any) -> None:
    """The C-level handler already wrote ``signum`` to the wake-up pipe; nothing else to do."""
