"""What `fp map` is asked (``MapRequest``: its runs, hosts, slots, retries) and what it returns
(``MapResult``: every run's outcome, what was left where); which hosts and which id a map gets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fireplug.invocation import Invocation
from fireplug.map.params import MapRun, Outcome
from fireplug.run.records import RUN_ID, new_id
from fireplug.run.request import RunRequest

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class MapRequest:
    map_id: str
    runs: tuple[MapRun, ...]
    hosts: tuple[str, ...]  # host names; () the pool (local when it is empty)
    per_host: int  # 0: as many as the host has CPUs for (CPUs / --cpus)
    retries: int
    joblog: Path
    run: RunRequest  # what every run shares: environment, container options, steps, verbosity


@dataclass
class MapResult:
    map_id: str
    runs: tuple[MapRun, ...]
    outcomes: dict[int, Outcome]
    joblog: Path
    interrupted: int = 0  # the signal that stopped the map (0: none)
    not_back: list[str] = field(default_factory=list)  # hosts whose results could not be brought back
    left: list[str] = field(default_factory=list)  # what fp could not remove from lost hosts, one line each
    conflicts: list[tuple[str, str]] = field(default_factory=list)  # (path, conflict copy): results two runs wrote

    @property
    def failed(self) -> list[MapRun]:
        return [run for run in self.runs if run.seq in self.outcomes and not self.outcomes[run.seq].succeeded]

    @property
    def not_run(self) -> list[MapRun]:
        return [run for run in self.runs if run.seq not in self.outcomes]


def map_hosts(invocation: Invocation, wanted: Sequence[str]) -> tuple[str, ...]:
    """The hosts of a map: those named, else the pool, else local.

    Raises:
        FireplugError: a named host is unknown.
    """
    if wanted:
        return tuple(dict.fromkeys(invocation.host(name).name for name in wanted))
    pool = [host.name for host in invocation.inventory.pool]
    return tuple(pool) or ("local",)


def map_id_from(environ: Mapping[str, str]) -> str:
    """The map's id: the one a detaching `fp map -d` gave its background process, else a new one."""
    given = environ.get("FP_MAP_ID", "")
    return given if RUN_ID.fullmatch(given) and given.startswith("map-") else new_id("map-")
