"""A backend without Docker, for the scheduler's and the management verbs' unit tests.

``FakeBackend`` implements ``backends.base.Backend`` over a ``World`` kept in memory: each run's
exit status comes from its command (``exit N``, ``sleep`` until signalled, ``write PATH``), a
host can be lost after a number of starts, and every start, signal and removal is recorded,
so a test asserts on what the scheduler and control.py asked of the place. It is registered
as kind "fake" by the ``fake_world`` fixture (one line in the registry, like a real backend).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from fireplug.backends.base import Found, Garbage, Gate, Pulling, Reading, RunState, Write
from fireplug.errors import EngineUnreachable
from fireplug.hosts import Connection
from fireplug.hosts.engine import Engine
from fireplug.hosts.inventory import Host
from fireplug.invocation import Invocation
from fireplug.run.records import RunRecord, new_id, run_record
from fireplug.run.request import Placement, RunRequest, container_spec
from fireplug.run.spec import ContainerSpec
from fireplug.sync.report import SyncReport
from fireplug.sync.results import Landed


@dataclass
class FakeRun:
    handle: str
    host: str
    spec: ContainerSpec
    output: bytes = b""
    state: str = "running"
    exit_code: int | None = None
    signals: list[str] = field(default_factory=list)
    ended: threading.Event = field(default_factory=threading.Event)

    def end(self, code: int) -> None:
        self.state, self.exit_code = "exited", code
        self.ended.set()


@dataclass
class World:
    """Everything the fake places hold, shared by every FakeBackend instance."""

    lose_after: dict[str, int] = field(default_factory=dict)  # host -> starts after which it is lost
    fail_first_on: dict[str, set[str]] = field(default_factory=dict)  # host -> commands whose first try there exits 1
    runs: dict[str, FakeRun] = field(default_factory=dict)
    started: list[tuple[str, str]] = field(default_factory=list)  # (host, the command's first words)
    running_per_host: dict[str, int] = field(default_factory=dict)
    most_at_once: dict[str, int] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    results: dict[str, dict[str, bytes]] = field(default_factory=dict)  # host -> files its runs wrote (path -> bytes)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def lost(self, host: str) -> bool:
        limit = self.lose_after.get(host)
        return limit is not None and sum(1 for where, _ in self.started if where == host) >= limit

    def start(self, host: str, spec: ContainerSpec) -> FakeRun:
        """Raises: EngineUnreachable: the host is lost."""
        with self.lock:
            if self.lost(host):
                raise EngineUnreachable(host, "fake://", "lost (the fake world says so)")
            run = FakeRun(f"{host}-{len(self.runs)}", host, spec)
            self.runs[run.handle] = run
            self.started.append((host, " ".join(spec.command)))
            now = self.running_per_host.get(host, 0) + 1
            self.running_per_host[host] = now
            self.most_at_once[host] = max(self.most_at_once.get(host, 0), now)
            return run

    def play(self, run: FakeRun) -> int:
        """The command: ``exit N``, ``write PATH TEXT`` (then exit 0), ``sleep`` (until a signal)."""
        words = list(run.spec.command)
        key = " ".join(words)
        failing = self.fail_first_on.get(run.host, set())
        if key in failing:
            failing.discard(key)
            code = 1
        elif words[:1] == ["exit"]:
            code = int(words[1])
        elif words[:1] == ["write"]:
            with self.lock:
                self.results.setdefault(run.host, {})[words[1]] = " ".join(words[2:]).encode()
            code = 0
        elif words[:1] == ["sleep"]:
            run.output = b"waiting\n"
            run.ended.wait(10)
            return run.exit_code if run.exit_code is not None else 0
        else:
            code = 0
        run.output = f"ran {key}\n".encode()
        time.sleep(0.05)  # long enough for runs on one host to overlap when they may
        with self.lock:
            self.running_per_host[run.host] -= 1
        run.end(code)
        return code


class FakeBackend:
    kind = "fake"
    world = World()

    def prepare(self, invocation: Invocation, request: RunRequest, host: Host, started: float) -> FakePlace:
        spec = container_spec(invocation.config, request, invocation.local, Placement(f"/fake/{host.name}"), new_id(), image="fake-image")
        return FakePlace(self.world, invocation, host, spec)

    def connect(self, invocation: Invocation, host: Host, *, timeout: float) -> Connection:
        if self.world.lost(host.name):
            raise EngineUnreachable(host.name, host.url, "lost (the fake world says so)")
        return Connection(host, cast(Engine, None), None)  # (no engine: the fake executor stands for it)

    def executor(self, invocation: Invocation, connection: Connection) -> FakeExecutor:
        return FakeExecutor(self.world, connection.host.name)

    def pull(self, pulling: Pulling) -> None:
        data = pulling.project.config.root / pulling.project.config.project.data
        for path, body in self.world.results.get(pulling.connection.host.name, {}).items():
            (data / path).parent.mkdir(parents=True, exist_ok=True)
            (data / path).write_bytes(body)
        for handle, record in pulling.ended:
            pulling.done_with(handle, record)

    def garbage(self, invocation: Invocation, connection: Connection, records: Mapping[str, RunRecord], keep: int) -> Found:
        return Found()

    def remove_garbage(self, invocation: Invocation, connection: Connection, item: Garbage) -> bool:
        return False

    def trash_left(self, connection: Connection, base_image: str) -> list[tuple[int, str]]:
        return []

    def read(self, connection: Connection, info: Mapping[str, Any], local_folder: str | None, timeout: float) -> Reading:
        return Reading(cpus=2, memory=2**30, jobs=frozenset(), gpus=False)

    def data_words(self, invocation: Invocation, host: Host) -> str | None:
        return "in memory"

    def placement(self, invocation: Invocation, host: Host) -> Placement:
        return Placement(f"/fake/{host.name}")


@dataclass
class FakePlace:
    world: World
    invocation: Invocation
    where: Host
    spec: ContainerSpec
    synced_in: bool = False

    @property
    def host(self) -> str:
        return self.where.name

    def sync_in(self) -> None:
        self.synced_in = True

    def ready_for_run(self) -> None:
        pass

    def run(self, *, last_step: bool) -> int:
        return self.world.play(self.world.start(self.host, self.spec))

    def start_detached(self) -> str:
        run = self.world.start(self.host, self.spec)
        threading.Thread(target=self.world.play, args=(run,), daemon=True).start()
        record = replace(run_record(self.invocation, self.spec, self.host), container=run.handle, detached=True)
        self.invocation.runs.save(record)
        return record.id

    def sync_out(self, status: int | None) -> None:
        pass

    def collect_left(self) -> None:
        pass

    def check_command(self, program: str) -> None:
        pass

    def open_lane(self, map_id: str, runs: int, *, per_host: int, retries: int, live: Callable[[], bool]) -> FakeLane:
        return FakeLane(self, per_host or 1)


class FakeLane:
    def __init__(self, place: FakePlace, slots: int) -> None:
        self.place = place
        self.slots = slots
        self.ready_words = f"fake host '{place.host}' ready: {slots} at a time"

    def execute(self, spec: ContainerSpec, record: RunRecord, write: Write, gate: Gate) -> int:
        world, book = self.place.world, self.place.invocation.runs
        run = world.start(self.place.host, spec)
        gate.enter(run.handle, FakeExecutor(world, self.place.host))
        book.save(replace(record, container=run.handle))
        status = world.play(run)
        write(1, run.output)
        book.save(record.with_end(status))
        return status

    def land(self, record: RunRecord, status: int) -> Landed | None:
        return None

    def pull(self) -> SyncReport | None:
        return None

    def close(self) -> list[str]:
        return []


class FakeExecutor:
    def __init__(self, world: World, host: str) -> None:
        self.world = world
        self.host = host

    def signal(self, handle: str, signal_name: str) -> None:
        run = self.world.runs[handle]
        run.signals.append(signal_name)
        if run.state == "running":
            with self.world.lock:
                self.world.running_per_host[run.host] -= 1
            run.end(130 if signal_name == "SIGINT" else 137)

    def signal_run(self, run_id: str, signal_name: str) -> None:
        pass

    def remove(self, handle: str) -> None:
        self.world.removed.append(handle)
        self.world.runs.pop(handle, None)

    def find(self, wanted: Iterable[str], *, running_only: bool = True) -> list[RunState]:
        pairs = [item.partition("=") for item in wanted]
        found = []
        for run in list(self.world.runs.values()):
            if run.host != self.host or (running_only and run.state != "running"):
                continue
            if all(run.spec.labels.get(key) == value for key, _, value in pairs if value) and all(key in run.spec.labels for key, _, _ in pairs):
                found.append(self._state(run))
        return found

    def state(self, handle: str) -> RunState | None:
        run = self.world.runs.get(handle)
        return self._state(run) if run is not None else None

    def logs(self, handle: str, *, follow: bool) -> Iterator[tuple[int, bytes]]:
        run = self.world.runs[handle]
        if follow:
            run.ended.wait(10)
        yield 1, run.output

    def _state(self, run: FakeRun) -> RunState:
        return RunState(run.handle, run.spec.name, run.spec.labels, run.state, run.exit_code, started_at=time.time())


def fake_hosts(*names: str) -> tuple[Host, ...]:
    return tuple(Host(name, f"fake://{name}", "test", kind="fake", pool=True) for name in names)


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
