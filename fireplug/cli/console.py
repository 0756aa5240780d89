"""The one rich Console (on stderr) and the progress helpers built on it.

rich is imported only when stderr is a terminal and something is printed: to a pipe or a
file, messages are the same plain lines without it (rich would print no styling there
either), which saves its ~50 ms of start-up in scripts and CI.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from rich.console import Console
    from rich.status import Status


@lru_cache(maxsize=1)
def console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class StatusLine:
    """One line kept at the bottom of the terminal (fp map's summary): everything else printed
    meanwhile goes above it (``above``). Off a terminal it is never drawn."""

    def __init__(self) -> None:
        self.text = ""
        self.lock = threading.RLock()

    def show(self, text: str) -> None:
        with self.lock:
            self._clear()
            self.text = text
            self._draw()

    def hide(self) -> None:
        with self.lock:
            self._clear()
            self.text = ""

    @contextlib.contextmanager
    def above(self) -> Iterator[None]:
        """Around a write to the terminal: the status line is taken away, then drawn again below it."""
        with self.lock:
            self._clear()
            try:
                yield
            finally:
                self._draw()

    def _clear(self) -> None:
        if self.text:
            _raw_stderr(b"\r\x1b[K")

    def _draw(self) -> None:
        if self.text:
            _raw_stderr(self.text.encode(errors="replace")[:400])


status_line = StatusLine()


def _raw_stderr(data: bytes) -> None:
    with contextlib.suppress(OSError):
        os.write(2, data)


def _say(markup: str, prefix: str, message: str) -> None:
    """``prefix + message`` on stderr; on a terminal styled as ``markup`` (``{}``: the message).

    A stderr that went away (a closed terminal, a reader that quit) loses the line: fp's own
    messages must never stop what fp is doing, least of all cleaning up.
    """
    try:
        if stderr_is_terminal():
            with status_line.above():
                console().print(markup.format(_escape(message)))
        else:
            sys.stderr.write(f"{prefix}{message}\n")
            sys.stderr.flush()
    except (OSError, ValueError):
        pass


def note(message: str) -> None:
    """An informational line from fp itself."""
    _say("[dim]fp:[/] {}", "fp: ", message)


def warn(message: str) -> None:
    _say("[yellow]fp: warning:[/] {}", "fp: warning: ", message)


def error(message: str) -> None:
    _say("[bold red]fp: error:[/] {}", "fp: error: ", message)


def detail(message: str) -> None:
    """A line shown only in verbose mode (the caller decides)."""
    _say("[dim]fp: {}[/]", "fp: ", message)


def plain(text: str) -> None:
    """Text printed as is (tables, listings)."""
    _say("{}", "", text)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


_live = threading.Lock()  # rich allows one live display at a time; the others print plain lines
_steps_going = [0]  # StepProgress blocks open now (fp map builds on several hosts at once)
_steps_lock = threading.Lock()


def _live_status(title: str) -> Status | None:
    """A spinner on a terminal, unless another one is showing (then None)."""
    if not stderr_is_terminal() or not _live.acquire(blocking=False):
        return None
    return console().status(title, spinner="dots")


def _end_live(status: Status | None, exc: tuple[Any, ...]) -> None:
    if status is not None:
        status.__exit__(*exc)
        _live.release()


class StepProgress:
    """A live spinner for a long step (a build), with its output lines scrolling above it.

    Without a terminal on stderr the lines are printed plainly, which keeps CI logs readable.
    While several run at once (fp map), each line says whose it is (``label``).
    """

    def __init__(self, title: str, *, show_output: bool, label: str = "") -> None:
        self.title = title
        self.show_output = show_output
        self.label = label
        self.started = time.monotonic()
        self._status: Status | None = None

    def __enter__(self) -> StepProgress:
        with _steps_lock:
            _steps_going[0] += 1
        self._status = _live_status(self.title)
        if self._status is not None:
            self._status.__enter__()
        else:
            note(self.title)
        return self

    def update(self, line: str, *, milestone: bool = False) -> None:
        """A line of output; milestones (build steps) are always shown, the rest in verbose mode."""
        if milestone or self.show_output:
            whose = f"[{self.label}] " if self.label and _steps_going[0] > 1 else ""
            _say("[dim]  {}[/]", "  ", whose + line)
        if self._status is not None:
            elapsed = time.monotonic() - self.started
            self._status.update(f"{self.title} [dim]({elapsed:.0f} s) {_escape(line[:60])}[/]")

    def __exit__(self, *exc: Any) -> None:
        with _steps_lock:
            _steps_going[0] -= 1
        _end_live(self._status, exc)


PLAIN_PROGRESS_SECONDS = 5.0


class Progress:
    """A transient one-line status (rsync's progress, say) on a terminal; elsewhere (a log, CI)
    a plain line every few seconds, so that a long copy is never silent."""

    def __init__(self, title: str, *, every: float = PLAIN_PROGRESS_SECONDS) -> None:
        self.title = title
        self.every = every
        self._last_plain = time.monotonic()
        self._status: Status | None = None

    def __enter__(self) -> Progress:
        self._status = _live_status(self.title)
        if self._status is not None:
            self._status.__enter__()
        return self

    def update(self, text: str) -> None:
        if self._status is not None:
            self._status.update(f"{self.title} [dim]{_escape(text)}[/]")
        elif time.monotonic() - self._last_plain >= self.every:
            self._last_plain = time.monotonic()
            note(f"{self.title}: {text}")

    def __exit__(self, *exc: Any) -> None:
        _end_live(self._status, exc)


class _Updated(Protocol):
    def update(self, text: str) -> None: ...


class Transfer:
    """Bytes moved of a known total, told to a Progress as "1.2 GB of 2.0 GB (60%), 45.0 MB/s, 0:00:20 left"."""

    def __init__(self, progress: _Updated, total: int) -> None:
        self.progress = progress
        self.total = total
        self.started = time.monotonic()
        self._shown = 0.0

    def moved(self, done: int) -> None:
        """``done``: bytes moved so far (a tar stream's headers may take it a little past the total)."""
        from fireplug.support.units import human_bytes

        now = time.monotonic()
        if now - self._shown < 0.25:
            return
        self._shown = now
        done = min(done, self.total)
        elapsed = max(now - self.started, 1e-6)
        rate = done / elapsed
        percent = 100 * done // self.total if self.total else 100
        left = int((self.total - done) / rate) if rate > 0 and self.total > done else 0
        eta = f"{left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}"
        self.progress.update(f"{human_bytes(done)} of {human_bytes(self.total)} ({percent}%), {human_bytes(rate)}/s, {eta} left")


def print_table(columns: Sequence[str], rows: Sequence[Sequence[str]], *, stderr: bool = False) -> None:
    """A table on stdout (it is the command's output, not a message), or on ``stderr`` (fp's report
    after the command's own output, as fp map's)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_escape(cell) for cell in row))
    out = Console(highlight=False, soft_wrap=False, stderr=stderr)
    if not out.is_terminal:
        out = Console(highlight=False, soft_wrap=False, width=1000, stderr=stderr)  # a pipe or file: never fold cells
    out.print(table)
