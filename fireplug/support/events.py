"""What fp's library has to say while it works, as events; one sink renders them.

Library code (pipeline, backends, sync, build, scheduler...) calls ``note``, ``warn``,
``detail``, ``progress``, ``steps`` and the map's ``status`` here and never prints. The command
line installs its sink (``cli/render.py``: fp's lines on stderr, spinners on a terminal) with
``use``; without one (fireplug used as a library), notes and warnings go to the ``fireplug``
logger and details at DEBUG, and progress is silent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from fireplug.sync.report import SyncReport
    from fireplug.sync.results import Landed


class Progress(Protocol):
    """A long step's one-line status (a copy: bytes moved so far)."""

    def update(self, text: str) -> None: ...

    def __enter__(self) -> Progress: ...

    def __exit__(self, *exc: Any) -> None: ...


class Steps(Protocol):
    """A long step whose output comes line by line (a build)."""

    def update(self, line: str, *, milestone: bool = False) -> None: ...

    def __enter__(self) -> Steps: ...

    def __exit__(self, *exc: Any) -> None: ...


class Transfer(Protocol):
    def moved(self, done: int) -> None:
        """``done``: bytes moved so far."""


class Sink(Protocol):
    """Where events go."""

    def note(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...

    def detail(self, message: str) -> None: ...

    def progress(self, title: str) -> Progress: ...

    def steps(self, title: str, *, label: str) -> Steps:
        """Its milestones shown; its other lines too in verbose mode."""

    def transfer(self, progress: Progress, total: int) -> Transfer: ...

    def status(self, text: str | None) -> None:
        """A status line kept below the output (None: hide it)."""

    def above_status(self) -> contextlib.AbstractContextManager[None]:
        """Around writing output: the status line is cleared, then drawn again."""

    def interactive(self) -> bool:
        """Whether a person watches (fp's stderr is a terminal)."""

    def synced(self, host: str, report: SyncReport) -> None:
        """A sync of the data folder with ``host`` ended (``verbose``: every path may be named)."""

    def landed(self, host: str, landed: Landed) -> None:
        """A run's results came back from ``host`` (a swarm's, through the bucket)."""


class _Quiet:
    """Progress, steps and transfers nobody watches."""

    def update(self, text: str, *, milestone: bool = False) -> None:
        pass

    def moved(self, done: int) -> None:
        pass

    def __enter__(self) -> _Quiet:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


class LoggingSink:
    """The default sink: the ``fireplug`` logger (details at DEBUG), progress silent."""

    def _log(self, level: int, message: str) -> None:
        import logging

        logging.getLogger("fireplug").log(level, message)

    def note(self, message: str) -> None:
        self._log(20, message)

    def warn(self, message: str) -> None:
        self._log(30, message)

    def detail(self, message: str) -> None:
        self._log(10, message)

    def progress(self, title: str) -> Progress:
        return _Quiet()

    def steps(self, title: str, *, label: str) -> Steps:
        self.note(title)
        return _Quiet()

    def transfer(self, progress: Progress, total: int) -> Transfer:
        return _Quiet()

    def status(self, text: str | None) -> None:
        pass

    def above_status(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def interactive(self) -> bool:
        return False

    def synced(self, host: str, report: SyncReport) -> None:
        self.note(f"synced with host '{host}': {report.pushed} files sent, {report.pulled} brought back, {len(report.conflicts)} conflicts")
        for path, copy in report.conflicts:
            self.warn(f"conflict: {path} changed here and on host '{host}'; kept yours, the host's version is {copy}")

    def landed(self, host: str, landed: Landed) -> None:
        self.note(f"results from '{host}': {landed.files} files changed, {len(landed.trashed)} deleted, {len(landed.conflicts)} conflicts")


_sink: list[Sink] = [LoggingSink()]


def use(sink: Sink) -> None:
    """Send every event from now on to ``sink`` (the command line's)."""
    _sink[0] = sink


def note(message: str) -> None:
    """An informational line from fp itself."""
    _sink[0].note(message)


def warn(message: str) -> None:
    _sink[0].warn(message)


def detail(message: str) -> None:
    """A line for verbose mode (the sink shows it only then: the caller need not know)."""
    _sink[0].detail(message)


def progress(title: str) -> Progress:
    return _sink[0].progress(title)


def steps(title: str, *, label: str = "") -> Steps:
    return _sink[0].steps(title, label=label)


def transfer(progress: Progress, total: int) -> Transfer:
    return _sink[0].transfer(progress, total)


def status(text: str | None) -> None:
    _sink[0].status(text)


@contextlib.contextmanager
def above_status() -> Iterator[None]:
    with _sink[0].above_status():
        yield


def interactive() -> bool:
    return _sink[0].interactive()


def synced(host: str, report: SyncReport) -> None:
    _sink[0].synced(host, report)


def landed(host: str, landed: Landed) -> None:
    _sink[0].landed(host, landed)
