"""fp map's board: the queue of runs, the hosts still usable, the runs going on, and the tally,
behind one lock; hosts take runs from it, give back those their host lost, and finish the rest.
A run enters the board's running set through its gate just before it starts, so that a signal
reaches it, and cannot once the map stops."""

from __future__ import annotations

import collections
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from fireplug.backends.base import NotStarted, Signallable
from fireplug.map.params import MapRun, Outcome, Tally


@dataclass
class Pending:
    run: MapRun
    tries: int = 0
    avoid: set[str] = field(default_factory=set)  # hosts it failed on (tried elsewhere when possible)
    taken: bool = False  # a worker has it (until it finishes it or gives it back)


class Board:
    """The queue, the hosts still usable, the running runs, and the tally, behind one lock."""

    def __init__(self, runs: Sequence[MapRun]) -> None:
        self.cond = threading.Condition()
        self.queue: collections.deque[Pending] = collections.deque(Pending(run) for run in runs)
        self.live: set[str] = set()
        self.preparing = 0
        self.in_flight = 0
        self.stopping = False
        # container (a sweep's run: its id) -> (what signals it, the signal sent)
        self.running: dict[str, tuple[Signallable, int]] = {}
        self.tally = Tally(queued=len(runs))

    def take(self, host: str) -> Pending | None:
        """The next run for ``host``; None when there is none left for it (or the map stops)."""
        with self.cond:
            while True:
                if self.stopping or host not in self.live:
                    return None
                chosen = next((item for item in self.queue if host not in item.avoid), None)
                if chosen is None and self.queue and not (self.live - set().union(*(item.avoid for item in self.queue))):
                    chosen = self.queue[0]  # it failed everywhere still usable: here again
                if chosen is not None:
                    self.queue.remove(chosen)
                    chosen.taken = True
                    self.in_flight += 1
                    self.tally.queued -= 1
                    self.tally.running += 1
                    return chosen
                if not self.queue and self.in_flight == 0:
                    return None
                self.cond.wait()

    def give_back(self, item: Pending, *, front: bool) -> None:
        with self.cond:
            item.taken = False
            self.in_flight -= 1
            self.tally.running -= 1
            self.tally.queued += 1
            (self.queue.appendleft if front else self.queue.append)(item)
            self.cond.notify_all()

    def finish(self, item: Pending, outcome: Outcome) -> None:
        with self.cond:
            item.taken = False
            self.in_flight -= 1
            self.tally.running -= 1
            self.tally.outcomes[outcome.seq] = outcome
            if outcome.succeeded:
                self.tally.done += 1
            else:
                self.tally.failed += 1
            self.cond.notify_all()

    def lose(self, host: str) -> None:
        with self.cond:
            self.live.discard(host)
            self.cond.notify_all()

    def finished(self) -> bool:
        with self.cond:
            return self.preparing == 0 and self.in_flight == 0 and (not self.queue or not self.live or self.stopping)


class RunGate:
    """One run's entry on the board: registered as running just before its start (so that a
    signal reaches it), refused once the map stops."""

    def __init__(self, board: Board) -> None:
        self.board = board
        self.key = ""

    def enter(self, key: str, signaller: Signallable) -> None:
        with self.board.cond:
            if self.board.stopping:
                raise NotStarted
            self.board.running[key] = (signaller, 0)
            self.key = key

    def leave(self) -> int:
        """The signal fp sent the run (0: none)."""
        with self.board.cond:
            return self.board.running.pop(self.key, (None, 0))[1] if self.key else 0
