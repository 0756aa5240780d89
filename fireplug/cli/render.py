"""The command line's sink for the library's events (``events.py``): fp's lines on stderr,
spinners and the status line on a terminal (``console.py``)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from fireplug.cli import console, reports

if TYPE_CHECKING:
    from fireplug.support.events import Progress, Steps, Transfer
    from fireplug.sync.report import SyncReport
    from fireplug.sync.results import Landed


class ConsoleSink:
    def __init__(self, *, verbose: bool = False) -> None:
        self.verbose = verbose  # -v: details, every build line, every path a sync names

    def note(self, message: str) -> None:
        console.note(message)

    def warn(self, message: str) -> None:
        console.warn(message)

    def detail(self, message: str) -> None:
        if self.verbose:
            console.detail(message)

    def progress(self, title: str) -> Progress:
        return console.Progress(title)

    def steps(self, title: str, *, label: str) -> Steps:
        return console.StepProgress(title, show_output=self.verbose, label=label)

    def transfer(self, progress: Progress, total: int) -> Transfer:
        return console.Transfer(progress, total)

    def status(self, text: str | None) -> None:
        if text is None:
            console.status_line.hide()
        else:
            console.status_line.show(text)

    def above_status(self) -> contextlib.AbstractContextManager[None]:
        return console.status_line.above()

    def interactive(self) -> bool:
        return console.stderr_is_terminal()

    def synced(self, host: str, report: SyncReport) -> None:
        reports.report_sync(host, report, verbose=self.verbose)

    def landed(self, host: str, landed: Landed) -> None:
        reports.report_landed(host, landed)


def verbose_from(options: object) -> None:
    """A verb's own -v (``fp pull -v``, ``fp map -v``, ``fp base build -v``) turns details on."""
    if getattr(options, "verbose", False):
        from fireplug.support import events

        events.use(ConsoleSink(verbose=True))
