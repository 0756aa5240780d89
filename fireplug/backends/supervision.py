"""One supervision of a started run to its end, for every backend and every way a run is
watched: an attached run (``Place.run``), a map's run (``Lane.execute``), on an engine or a
swarm.

Each backend says how to reach its run (a ``Watched``, in ``base.py``: its output, its end, a
signal to it, a stop); the supervision streams the output, waits for the end, and, given the
process's held signals, forwards the first SIGINT/SIGTERM/SIGHUP to the command and stops the
run at a second.
A map's runs are signalled by the map's board instead (``signals`` None). Signals reach the
loop through a self-pipe (``HeldSignals``): no lock is ever taken in a signal handler.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from fireplug.errors import FireplugError
from fireplug.support import events
from fireplug.support.signals import EXITED, FORWARDED_SIGNALS, HeldSignals

if TYPE_CHECKING:
    from fireplug.backends.base import Watched, Write  # (the protocols' module: not imported by a local run)

OUTPUT_DRAIN_SECONDS = 10.0  # how long the output may lag behind the run's end
STOPPED = 128 + signal.SIGKILL  # the status of a run fp stopped (see Watched.wait)


def supervise(
    watched: Watched,
    write: Write,
    *,
    signals: HeldSignals | None = None,
    on_window_change: Callable[[], None] | None = None,
    drain_seconds: float = OUTPUT_DRAIN_SECONDS,
) -> int:
    """Stream ``watched``'s output to ``write`` until it ended; its exit status, or 128 + the
    first signal when fp had to stop it.

    ``signals``: the held signals of fp's process (the first forwarded, a second stops the run);
    ``on_window_change``: the terminal's size changed (SIGWINCH, held with a terminal).

    Raises:
        FireplugError: what ``wait`` raised (the place lost, the run refused).
    """
    supervision = _Supervision(watched, signals, on_window_change)
    output = threading.Thread(target=_pump, args=(watched, write), name="fp-output", daemon=True)
    output.start()
    waiter = threading.Thread(target=supervision.wait, name="fp-wait", daemon=True)
    waiter.start()
    if signals is None:
        waiter.join()
    else:
        supervision.loop(signals)
    if supervision.failure is not None:
        raise supervision.failure
    output.join(drain_seconds)  # the rest of the output is on its way
    return supervision.result()


def _pump(watched: Watched, write: Write) -> None:
    try:
        for stream, data in watched.output():
            write(stream, data)
    except (OSError, ValueError, FireplugError):
        pass  # the stream broke or closed: the waiter says how the run ended


class _Supervision:
    def __init__(self, watched: Watched, signals: HeldSignals | None, on_window_change: Callable[[], None] | None) -> None:
        self.watched = watched
        self.signals = signals
        self.on_window_change = on_window_change
        self.status: int | None = None
        self.failure: BaseException | None = None
        self.received: list[int] = []
        self.stopped = False

    def wait(self) -> None:
        try:
            self.status = self.watched.wait()
        except BaseException as e:  # handed to the supervising thread, which raises it
            self.failure = e
        if self.signals is not None:
            self.signals.notify_exited()

    def loop(self, signals: HeldSignals) -> None:
        """The signals that come until the run ended."""
        while True:
            for byte in signals.read():
                if byte == EXITED:
                    return
                if self.status is None:
                    self._on_signal(signals, byte)
                elif byte in FORWARDED_SIGNALS:
                    signals.seen.append(byte)
                    events.note(f"{signal.Signals(byte).name} came after the command had exited (status {self.status})")

    def result(self) -> int:
        assert self.status is not None
        if self.stopped and self.status == STOPPED:
            return 128 + self.received[0]
        return self.status  # a signal that crossed the command's exit changes nothing

    def _on_signal(self, signals: HeldSignals, signum: int) -> None:
        if signum == signal.SIGWINCH:
            if self.on_window_change is not None:
                self.on_window_change()
            return
        self.received.append(signum)
        signals.seen.append(signum)
        name = signal.Signals(signum).name
        if len(self.received) == 1:
            self.watched.forward(name)
            again = "Ctrl-C" if signum == signal.SIGINT else name
            events.note(f"{name} forwarded to the command; {again} again stops {self.watched.stopping_words}")
        elif not self.stopped:
            self.stopped = True
            events.note(f"second {name}: stopping {self.watched.stopping_words}")
            self.watched.stop()
