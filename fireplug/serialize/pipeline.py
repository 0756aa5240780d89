"""Chunk work on all cores, with results handed back in order to the calling thread.

PyTables is not thread-safe, so every HDF5 call stays on the thread that opened the file;
what runs on the workers (Blosc with its GIL released, checksums, NumPy copies) releases the
GIL, so two cores do two chunks at once. At most ``depth`` jobs are in flight, which bounds
the memory they hold.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class Pool:
    def __init__(self, depth_per_worker: float = 1.5) -> None:
        """``depth_per_worker``: jobs in flight per worker (at least one more than the workers)."""
        self.workers = os.cpu_count() or 1
        self.depth = max(self.workers + 1, round(self.workers * depth_per_worker))
        self._executor: ThreadPoolExecutor | None = None
        self._pending: deque[tuple[Future[Any], Callable[[Any], None] | None]] = deque()

    def submit(self, work: Callable[[], Any], then: Callable[[Any], None] | None = None) -> None:
        """Run ``work`` on a worker; ``then(result)`` runs on this thread, in submission order.

        A ``then`` runs only after every job submitted before it has finished, so it can
        depend on all of them (a job's exception is raised here, or by ``drain``).
        """
        self._pending.append((self._started().submit(work), then))
        while len(self._pending) > self.depth:
            self._finish_oldest()

    def map(self, work: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        """``[work(item) for item in items]``, run on the workers (after the jobs in flight)."""
        self.drain()
        return list(self._started().map(work, items))

    def drain(self) -> None:
        while self._pending:
            self._finish_oldest()

    def close(self) -> None:
        """Stop: jobs not started are dropped, running ones finish (they may hold buffers)."""
        self._pending.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def _started(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="fp-serialize")
        return self._executor

    def _finish_oldest(self) -> None:
        future, then = self._pending.popleft()
        result = future.result()
        if then is not None:
            then(result)
