"""The results of `fp map`'s runs coming back here: as runs end (one host at a time, and never
two syncs of the local data folder at once), and once more at the end for a host that could not
be reached meanwhile. Two runs of the map that wrote one file on one host keep both versions.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fireplug.errors import FireplugError
from fireplug.map.board import Board
from fireplug.support import events
from fireplug.sync.plan import conflict_name
from fireplug.sync.project import local_data_folder

if TYPE_CHECKING:
    from fireplug.backends.base import Lane
    from fireplug.invocation import Invocation
    from fireplug.run.records import RunRecord
    from fireplug.sync.report import SyncReport
    from fireplug.sync.results import Landed

WAIT_SECONDS = 0.5  # how often the collector looks again while hosts are still being prepared


class Results:
    def __init__(self, invocation: Invocation, board: Board, lane_of: Callable[[str], Lane | None]) -> None:
        self.invocation = invocation
        self.board = board
        self.lane_of = lane_of  # a host's lane, once it is prepared
        self.local_sync = threading.Lock()  # one sync of the local data folder at a time
        self.wanted: set[str] = set()  # hosts whose ended runs' results are to come back
        self.cond = threading.Condition()
        self.done = False
        self.not_back: set[str] = set()  # hosts whose results could not be brought back
        self.brought: dict[str, str] = {}  # paths this map's syncs brought back -> from which host
        self.conflicts: list[tuple[str, str]] = []  # (path, conflict copy): results two runs wrote

    def want(self, host: str) -> None:
        """A run ended on ``host``: its results are to come back."""
        with self.cond:
            self.wanted.add(host)
            self.cond.notify_all()

    def collect(self) -> None:
        """(A thread's body.) Bring results back as runs end, once every host synced in, one
        host at a time; until ``finish``."""
        while True:
            with self.cond:
                while not self.wanted and not self.done:
                    self.cond.wait(WAIT_SECONDS)
                if not self.wanted and self.done:
                    return
                with self.board.cond:
                    preparing = self.board.preparing
                if preparing:
                    self.cond.wait(WAIT_SECONDS)
                    continue
                host = self.wanted.pop()
            self.pull(host)

    def finish(self) -> None:
        """No run is left: the collector ends once it brought back what is wanted."""
        with self.cond:
            self.done = True
            self.cond.notify_all()  # (the collector, waiting for a pull to want, looks again at once)

    def pull(self, host: str) -> None:
        lane = self.lane_of(host)
        if lane is None:
            return
        try:
            with self.local_sync:
                report = lane.pull()
                if report is None:
                    return  # results in place, or landed run by run
                self._keep_both(host, report)
            self.not_back.discard(host)
        except (FireplugError, OSError) as e:
            self.not_back.add(host)
            events.warn(f"results of host '{host}' could not be brought back now ({e}); fp tries again at the end")

    def land(self, lane: Lane, record: RunRecord, status: int) -> Landed | None:
        """One run's results, where its place lands them run by run.

        Raises:
            FireplugError: they could not come back now (its host is tried again at the end).
        """
        try:
            with self.local_sync:
                landed = lane.land(record, status)
        except FireplugError:
            self.not_back.add(record.host)
            raise
        self.conflicts += landed.conflicts if landed else []
        return landed

    def final_pulls(self) -> None:
        """After the collector: a host it could not reach is tried again."""
        for host in sorted(self.not_back | self.wanted):
            self.pull(host)

    def _keep_both(self, host: str, report: SyncReport) -> None:
        """Two runs of the map wrote the same file on one host (the second over the first there):
        the version that came back first, which this copy replaced here (it went to the local
        trash), is put back beside it under a conflict name, and the conflict is said. (Runs on
        two hosts writing one path are a conflict of the sync itself.)"""
        for path in report.replaced_here:
            earlier = self.brought.get(path)
            if earlier is None:
                continue
            local = local_data_folder(self.invocation.config)
            copy = conflict_name(path, earlier, time.strftime("%Y%m%dT%H%M%S"))
            with contextlib.suppress(OSError):
                os.rename(Path(report.local_trash) / path, local / copy)
                self.conflicts.append((path, copy))
                events.warn(f"conflict: two runs of the map wrote {path}; kept the one from host '{host}', the earlier one (from host '{earlier}') is {copy}")
        self.brought.update({path: host for path in report.pulled_paths})
        self.conflicts += [(path, copy) for path, copy in report.conflicts]
