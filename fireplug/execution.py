"""Where runs execute, behind one small interface: what the run supervisor, detached runs,
`fp ps` / `logs` / `stop` / `pull`, and `fp map` need of a backend (as fabric's ``Remote``
sits beneath invoke's ``Runner``). Policy (signal escalation, output, scheduling) stays
above it. ``DockerExecutor`` is the one backend today: a run is one container on one engine.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from fireplug.engine import Attached, Engine, engine_time
from fireplug.spec import ContainerSpec, container_config

_EXITED_STATUS = re.compile(r"Exited \((-?\d+)\)")


@dataclass(frozen=True)
class RunState:
    """A run as its backend sees it now."""

    handle: str  # the backend's id for it (a container id)
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    state: str = ""  # created, running, paused, restarting, exited, dead, removing
    exit_code: int | None = None  # once it ended
    started_at: float | None = None  # seconds since the epoch
    finished_at: float | None = None
    image_id: str = ""

    @property
    def running(self) -> bool:
        return self.state in ("running", "paused", "restarting")

    @property
    def ended(self) -> bool:
        return self.state in ("exited", "dead")


class Executor(Protocol):
    """The primitives of running a command somewhere (each may raise EngineUnreachable or EngineError)."""

    host: str

    def create(self, spec: ContainerSpec) -> str:
        """A run of ``spec``, not started yet; its handle."""

    def attach(self, handle: str, *, stdin: bool) -> Attached:
        """The run's stdio (before the start, so that nothing is missed)."""

    def start(self, handle: str) -> None: ...

    def signal(self, handle: str, signal_name: str) -> None:
        """Send a signal to the command; one that already ended is not an error."""

    def resize(self, handle: str, rows: int, columns: int) -> None: ...

    def wait(self, handle: str) -> int:
        """Block until the run ends; its exit status."""

    def remove(self, handle: str) -> None:
        """Remove the run (stopping it first if it still runs); a missing one is not an error."""

    def find(self, labels: Iterable[str], *, running_only: bool = True) -> list[RunState]:
        """The runs carrying every label in ``labels`` (``key=value``)."""

    def state(self, handle: str) -> RunState | None:
        """One run in detail (exit status, times); None when it is gone."""

    def logs(self, handle: str, *, follow: bool) -> Iterator[tuple[int, bytes]]:
        """Its output so far as (stream, bytes): 1 stdout, 2 stderr; ``follow``: until it ends."""

    def published_ports(self, handle: str) -> dict[str, int]:
        """The host port of each published port ("8888/tcp" -> 49153), once it started."""


class DockerExecutor:
    """Runs as containers on one Docker engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def host(self) -> str:
        return self.engine.host

    def create(self, spec: ContainerSpec) -> str:
        return self.engine.create_container(container_config(spec), spec.name)

    def attach(self, handle: str, *, stdin: bool) -> Attached:
        return self.engine.attach(handle, stdin=stdin)

    def start(self, handle: str) -> None:
        self.engine.start(handle)

    def signal(self, handle: str, signal_name: str) -> None:
        self.engine.kill(handle, signal_name)

    def resize(self, handle: str, rows: int, columns: int) -> None:
        self.engine.resize(handle, rows, columns)

    def wait(self, handle: str) -> int:
        return self.engine.wait(handle)

    def remove(self, handle: str) -> None:
        self.engine.remove_container(handle)

    def find(self, labels: Iterable[str], *, running_only: bool = True) -> list[RunState]:
        return [listed_state(found) for found in self.engine.containers(labels, running_only=running_only)]

    def state(self, handle: str) -> RunState | None:
        inspected = self.engine.inspect_container(handle)
        return inspected_state(inspected) if inspected is not None else None

    def logs(self, handle: str, *, follow: bool) -> Iterator[tuple[int, bytes]]:
        return self.engine.logs(handle, follow=follow)

    def published_ports(self, handle: str) -> dict[str, int]:
        return self.engine.published_ports(handle)


def listed_state(found: Mapping[str, Any]) -> RunState:
    """A run from the engine's container list (exit status from its status text)."""
    names = found.get("Names") or ["?"]
    status = str(found.get("Status") or "")
    exited = _EXITED_STATUS.match(status)
    created = found.get("Created")
    return RunState(
        handle=str(found.get("Id", "")),
        name=str(names[0]).lstrip("/") if isinstance(names, list) and names else "?",
        labels=_labels(found.get("Labels")),
        state=str(found.get("State") or ""),
        exit_code=int(exited.group(1)) if exited else None,
        started_at=float(created) if isinstance(created, (int, float)) and not isinstance(created, bool) else None,
        image_id=str(found.get("ImageID") or ""),
    )


def inspected_state(inspected: Mapping[str, Any]) -> RunState:
    """A run from the engine's inspection of its container."""
    state = inspected.get("State") if isinstance(inspected.get("State"), dict) else {}
    config = inspected.get("Config") if isinstance(inspected.get("Config"), dict) else {}
    status = str(state.get("Status") or "")
    code = state.get("ExitCode")
    ended = status in ("exited", "dead")
    return RunState(
        handle=str(inspected.get("Id", "")),
        name=str(inspected.get("Name") or "?").lstrip("/"),
        labels=_labels(config.get("Labels")),
        state=status,
        exit_code=code if ended and isinstance(code, int) and not isinstance(code, bool) else None,
        started_at=engine_time(str(state.get("StartedAt") or "")),
        finished_at=engine_time(str(state.get("FinishedAt") or "")) if ended else None,
        image_id=str(inspected.get("Image") or ""),
    )


def _labels(value: Any) -> dict[str, str]:
    return {str(key): str(item) for key, item in value.items()} if isinstance(value, dict) else {}
