"""A run as one container on one engine: the primitives beneath the attached supervisor
(``attached.py``), detached runs and fp map's lanes (as fabric's ``Remote`` sits beneath
invoke's ``Runner``), and what the management verbs need (``base.Executor``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from fireplug.hosts.engine import Attached, Engine, engine_time, mapping_of
from fireplug.run.spec import ContainerSpec, container_config

if TYPE_CHECKING:
    from fireplug.backends.base import RunState

_EXITED_STATUS = re.compile(r"Exited \((-?\d+)\)")


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

    def signal_run(self, run_id: str, signal_name: str) -> None:
        """Every run here has a container of its own: nothing to signal by run id."""

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
    from fireplug.backends.base import RunState

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
    from fireplug.backends.base import RunState

    state = mapping_of(inspected.get("State"))
    config = mapping_of(inspected.get("Config"))
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
