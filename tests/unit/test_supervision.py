"""The one supervision of a run to its end (backends/supervision.py), on a fake run: output,
status, the first signal forwarded and a second stopping the run, failures, the output's lag."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from fireplug.backends.supervision import STOPPED, supervise
from fireplug.errors import EngineUnreachable
from fireplug.support import events
from fireplug.support.signals import HeldSignals


class FakeRun:
    """Ends with ``status`` once ``ended`` is set; ``on_forward``: what a forwarded signal does."""

    stopping_words = "the fake run"

    def __init__(self, lines: list[tuple[int, bytes]], status: int = 0, *, lag: float = 0.0, failure: Exception | None = None) -> None:
        self.lines = lines
        self.status = status
        self.lag = lag
        self.failure = failure
        self.ended = threading.Event()
        self.asked: list[str] = []
        self.on_forward = lambda: None

    def output(self) -> Iterator[tuple[int, bytes]]:
        for line in self.lines:
            time.sleep(self.lag)
            yield line

    def wait(self) -> int:
        assert self.ended.wait(10)
        if self.failure is not None:
            raise self.failure
        return self.status

    def forward(self, signal_name: str) -> None:
        self.asked.append(signal_name)
        self.on_forward()

    def stop(self) -> None:
        self.asked.append("stop")
        self.status = STOPPED
        self.ended.set()


def test_the_output_goes_to_write_in_order_and_the_status_is_the_runs() -> None:
    run = FakeRun([(1, b"a\n"), (2, b"oops\n"), (1, b"b\n")], status=3)
    run.ended.set()
    written: list[tuple[int, bytes]] = []
    assert supervise(run, lambda stream, data: written.append((stream, data))) == 3
    assert written == run.lines and run.asked == []


def test_output_that_lags_behind_the_end_still_comes_within_the_drain() -> None:
    run = FakeRun([(1, b"%d\n" % i) for i in range(5)], lag=0.05)
    run.ended.set()  # (it ended before any of its output came through)
    written: list[bytes] = []
    assert supervise(run, lambda stream, data: written.append(data)) == 0
    assert written == [b"%d\n" % i for i in range(5)]


def test_output_lagging_past_the_drain_is_left_and_the_status_still_comes() -> None:
    run = FakeRun([(1, b"late\n")], status=4, lag=2.0)
    run.ended.set()
    written: list[bytes] = []
    started = time.monotonic()
    assert supervise(run, lambda stream, data: written.append(data), drain_seconds=0.1) == 4
    assert time.monotonic() - started < 1.5 and written == []


def test_the_first_signal_is_forwarded_and_a_second_stops_the_run_with_128_plus_the_first(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "_sink", [events.LoggingSink()])  # (whatever sink an earlier test installed)
    caplog.set_level("INFO", logger="fireplug")
    run = FakeRun([])
    run.on_forward = lambda: os.kill(os.getpid(), signal.SIGTERM)  # (the second, while the run goes on)
    with HeldSignals(tty=False) as held:
        os.kill(os.getpid(), signal.SIGINT)
        status = supervise(run, lambda stream, data: None, signals=held)
    assert (status, run.asked) == (128 + signal.SIGINT, ["SIGINT", "stop"])
    assert held.seen == [signal.SIGINT, signal.SIGTERM]
    err = caplog.text  # (no sink installed: the notes go to fp's logger)
    assert "SIGINT forwarded to the command; Ctrl-C again stops the fake run" in err and "second SIGTERM: stopping the fake run" in err


def test_a_forwarded_signal_the_command_handles_leaves_its_own_status() -> None:
    run = FakeRun([], status=5)
    run.on_forward = run.ended.set  # (it saved its work and exited 5)
    with HeldSignals(tty=False) as held:
        os.kill(os.getpid(), signal.SIGHUP)
        assert supervise(run, lambda stream, data: None, signals=held) == 5
    assert run.asked == ["SIGHUP"]


def test_what_the_wait_raised_is_raised_with_or_without_signals() -> None:
    for signals in (False, True):
        run = FakeRun([(1, b"x\n")], failure=EngineUnreachable("box", "ssh://box", "connection reset"))
        run.ended.set()
        with HeldSignals(tty=False) as held, pytest.raises(EngineUnreachable):
            supervise(run, lambda stream, data: None, signals=held if signals else None)
