"""A sweep's workers as the engine and their log show them: how many a map gets, their tasks'
states and failures, and the run each line of their output belongs to.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from fireplug.backends.base import Node
from fireplug.backends.swarm.service import ENDED
from fireplug.errors import Withdrawn as Withdrawn
from fireplug.remote.task import OUTPUT_TAG
from fireplug.run.spec import ContainerSpec

TAGGED = re.compile(re.escape(OUTPUT_TAG) + rb"([0-9a-z-]{1,64})([ +.])")  # then the line (see task.py)


def untag(line: bytes) -> tuple[str, bytes | None] | None:
    """A line of a sweep's log (see task.py): (its run's id, the run's output it holds, None
    for the mark of the run's end); None for a line of no run's."""
    tagged = TAGGED.match(line)
    if tagged is None:
        return None
    kind, rest = tagged.group(2), line[tagged.end() :]
    return tagged.group(1).decode(), rest if kind == b" " else rest[:-1] if kind == b"+" else None


def workers_for(nodes: Iterable[Node], spec: ContainerSpec, runs: int) -> int:
    """How many workers ``runs`` runs of ``spec`` get: as many as the ready nodes hold at once by
    the runs' reservations of CPUs and memory (more would only wait), at most one per run."""
    options = spec.options
    cpus, memory = (options.nano_cpus or 0) / 1e9, options.memory or 0
    room = 0
    for node in nodes:
        if node.state == "ready":
            room += min([runs] + ([int(node.cpus / cpus + 1e-9)] if cpus else []) + ([node.memory // memory] if memory else []))
    return max(1, min(runs, room))


def status_in(body: bytes | None) -> int:
    """The exit status a worker wrote for a run (-1 when unreadable: the command may have written it)."""
    try:
        status = json.loads(body or b"{}").get("status")
    except (ValueError, AttributeError):
        return -1
    return status if isinstance(status, int) and not isinstance(status, bool) else -1


def task_state(task: dict[str, Any]) -> str:
    return str((task.get("Status") or {}).get("State") or "")


def task_failed(task: dict[str, Any]) -> bool:
    return task_state(task) in ENDED and task_state(task) != "complete"


def task_error(task: dict[str, Any]) -> str:
    status = task.get("Status") or {}
    code = (status.get("ContainerStatus") or {}).get("ExitCode")
    return str(status.get("Err") or (f"exit status {code}" if code else "no reason given"))
