"""fp map's runs on one Docker engine: a few containers at a time, their ended containers
removed off the slots (the next run starts meanwhile), results brought back by a sync.

On the engine's default network, the runs join the network namespace of one container the
map starts first (an "anchor", removed at the end): a run then starts without a bridge
interface of its own, which took half of a container's start here (0.19-0.25 s against
0.39-0.45 s). Runs on other networks (--network) get their own.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from fireplug.backends.base import Gate, Write
from fireplug.backends.docker.executor import DockerExecutor
from fireplug.backends.docker.watched import WatchedContainer
from fireplug.backends.supervision import supervise
from fireplug.errors import EngineError, EngineUnreachable, FireplugError, SshError
from fireplug.hosts.engine import Attached
from fireplug.support import events, labels
from fireplug.support.locks import this_process

if TYPE_CHECKING:
    from fireplug.backends.docker.place import DockerPlace
    from fireplug.run.records import RunRecord
    from fireplug.run.spec import ContainerSpec
    from fireplug.sync.report import SyncReport
    from fireplug.sync.results import Landed

ANCHOR_SECONDS = 7 * 86400  # an anchor a killed fp left ends by itself (and fp gc removes it sooner)
HOST_LOST = (EngineUnreachable, SshError)


def slots_for(host_cpus: int, nano_cpus: int | None) -> int:
    """``--per-host auto``: as many runs at once as the host's CPUs hold of each run's ``--cpus`` (else one)."""
    per_run = nano_cpus / 1e9 if nano_cpus else 1.0
    return max(1, int(host_cpus // per_run))


class DockerLane:
    def __init__(self, place: DockerPlace, map_id: str, *, per_host: int, live: Callable[[], bool]) -> None:
        self.place = place
        self.executor = DockerExecutor(place.connection.engine)
        self.live = live
        self.slots = per_host if per_host > 0 else slots_for(int(place.connection.info().get("NCPU") or 1), place.spec.options.nano_cpus)
        self.ready_words = f"host '{place.host}' ready: {self.slots} run{'s' if self.slots > 1 else ''} at a time"
        self.anchor = self._start_anchor(map_id)
        self.removals: queue.Queue[str | None] = queue.Queue()  # containers of ended runs, then the anchor
        self.left: list[str] = []
        self.remover = threading.Thread(target=self._remove_ended, name=f"fp-map-{place.host}-remover", daemon=True)
        self.remover.start()

    def execute(self, spec: ContainerSpec, record: RunRecord, write: Write, gate: Gate) -> int:
        if self.anchor:
            spec = replace(spec, options=replace(spec.options, network=f"container:{self.anchor}"))
        executor, book = self.executor, self.place.invocation.runs
        handle = executor.create(spec)
        attached: Attached | None = None
        try:
            attached = executor.attach(handle, stdin=False)
            gate.enter(handle, executor)
            executor.start(handle)
            book.save(record)
            status = supervise(WatchedContainer(executor, handle, attached, name=spec.name), write)  # (the map's board signals it)
            book.save(record.with_end(status))
            return status
        except HOST_LOST:
            book.save(replace(record, state="lost"))
            raise
        finally:
            if attached is not None:
                attached.close()
            self.removals.put(handle)

    def land(self, record: RunRecord, status: int) -> Landed | None:
        return None  # (its results come back with the next pull)

    def pull(self) -> SyncReport | None:
        return self.place.sync_back()

    def close(self) -> list[str]:
        if self.anchor:
            self.removals.put(self.anchor)  # after the runs that share its network
        self.removals.put(None)
        self.remover.join()  # no container of the map is left on this host, however it ended
        return self.left

    def _remove_ended(self) -> None:
        """Remove the containers of ended runs, off their slots, in order."""
        host = self.place.host
        while (handle := self.removals.get()) is not None:
            if not self.live():  # lost: asking it would only wait
                what = "the map's network anchor" if handle == self.anchor else "the container of an ended run"
                self.left.append(f"{what} {handle[:12]} stays on lost host '{host}': fp gc removes it once the host is back")
                continue
            try:
                self.executor.remove(handle)
            except FireplugError as e:
                events.warn(f"container {handle[:12]} on host '{host}' could not be removed ({e}): fp gc removes it")

    def _start_anchor(self, map_id: str) -> str:
        """The anchor container of a host whose runs are on the default network; "" when they are
        not, or when the image cannot run one (it has no `sleep`): each run then has its own network."""
        base = self.place.spec
        if base.options.network not in ("", "bridge", "default"):
            return ""
        config = self.place.invocation.config
        spec = replace(
            base,
            command=("sleep", str(ANCHOR_SECONDS)),
            name=f"fp-{config.project.name}-{map_id}-net",
            env=(),
            tty=False,
            stdin=False,
            labels={labels.KIND: "anchor", labels.PROJECT_KEY: config.project.key, labels.MAP: map_id, labels.OWNER: this_process()},
        )
        handle = ""
        try:
            handle = self.executor.create(spec)
            self.executor.start(handle)
        except EngineError:
            if handle:
                with contextlib.suppress(FireplugError):
                    self.executor.remove(handle)
            return ""
        return handle
