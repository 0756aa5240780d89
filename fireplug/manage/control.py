"""Runs after their start, found from any shell and any fp process: `fp ps` lists them, and
`fp logs` (``logs.py``), `fp stop` (``stop.py``) and `fp pull` (``pull.py``) take what is found here.

A run is found through this machine's records of the runs it started (``run/records.py``: they
know the host, and outlive the container) and through the labels of the containers on the hosts
(runs started elsewhere, or records lost). Hosts are asked in parallel; one that does not
answer is a warning, and its runs show as "unknown".
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from fireplug import hosts
from fireplug.backends import backend_for
from fireplug.backends.base import Executor, RunState
from fireplug.errors import FireplugError, UsageError
from fireplug.invocation import Invocation
from fireplug.run.records import SHARED_RUN, RunBook, RunRecord, matching
from fireplug.support import events, labels
from fireplug.support.proc import alive

T = TypeVar("T")


@dataclass(frozen=True)
class Located:
    """One run: what this machine recorded of it, and what its host says now."""

    run_id: str
    host: str
    record: RunRecord | None = None
    state: RunState | None = None  # None: its container is gone, or the host did not answer
    answered: bool = True  # the host answered
    in_live_map: bool = False  # no container of its own (a swarm sweep's run), and its map's fp process says it runs

    @property
    def map_id(self) -> str:
        return self.record.map_id if self.record else (self.state.labels.get(labels.MAP, "") if self.state else "")

    @property
    def params(self) -> dict[str, str]:
        if self.record is not None:
            return dict(self.record.params)
        return _json_params(self.state.labels.get(labels.PARAMS, "")) if self.state else {}

    @property
    def project_key(self) -> str:
        return self.record.project_key if self.record else (self.state.labels.get(labels.PROJECT_KEY, "") if self.state else "")

    @property
    def running(self) -> bool:
        return (self.state is not None and self.state.running) or self.in_live_map

    @property
    def status(self) -> str:
        """running, exited, lost, removed (its container is gone) or unknown (no answer)."""
        if self.state is not None:
            return "running" if self.state.running else "exited" if self.state.ended else self.state.state
        if self.in_live_map:
            return "running"
        if not self.answered:
            return "unknown"
        if self.record is not None and self.record.state == "lost":
            return "lost"
        return "removed"

    @property
    def exit_code(self) -> int | None:
        if self.state is not None and self.state.exit_code is not None:
            return self.state.exit_code
        return self.record.exit_code if self.record else None

    @property
    def started(self) -> float | None:
        if self.state is not None and self.state.started_at is not None:
            return self.state.started_at
        return self.record.started if self.record else None

    @property
    def ended(self) -> float | None:
        if self.state is not None:
            return self.state.finished_at
        return self.record.ended if self.record else None


class Hosts:
    """The hosts one command talks to: connected once each, asked in parallel."""

    def __init__(self, invocation: Invocation) -> None:
        self.invocation = invocation
        self._connections: dict[str, hosts.Connection] = {}
        self._lock = threading.Lock()

    def executor(self, name: str) -> Executor:
        """Raises: FireplugError: unknown host, or it cannot be reached."""
        connection = self.connection(name)
        return backend_for(connection.host).executor(self.invocation, connection)

    def connection(self, name: str) -> hosts.Connection:
        with self._lock:
            if name in self._connections:
                return self._connections[name]
        host = self.invocation.host(name)
        connection = backend_for(host).connect(self.invocation, host, timeout=hosts.DEFAULT_PROBE_TIMEOUT * 2)
        with self._lock:
            return self._connections.setdefault(name, connection)

    def each(self, names: Iterable[str], ask: Callable[[Executor], T]) -> dict[str, T | FireplugError]:
        """``ask`` of every host in ``names``, in parallel; a host that failed gives its error."""
        answers: dict[str, T | FireplugError] = {}

        def work(name: str) -> None:
            try:
                answers[name] = ask(self.executor(name))
            except FireplugError as e:
                answers[name] = e

        threads = [threading.Thread(target=work, args=(name,), daemon=True) for name in dict.fromkeys(names)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return answers


def hosts_to_ask(invocation: Invocation, book: RunBook, only: str | None) -> list[str]:
    """``only``, else the pool, local, and every host this machine started a run on."""
    if only:
        return [invocation.host(only).name]
    inventory = invocation.inventory
    named = [host.name for host in inventory.pool] + [record.host for record in book.all()] + ["local"]
    return [name for name in dict.fromkeys(named) if inventory.get(name) is not None]


def list_runs(invocation: Invocation, peers: Hosts, *, only: str | None = None, everything: bool = False) -> list[Located]:
    """The runs of fp on the hosts asked: running ones, or (``everything``) all that ended too,
    and those this machine recorded whose containers are gone. Oldest first."""
    book = invocation.runs
    names = hosts_to_ask(invocation, book, only)
    answers = peers.each(names, lambda executor: executor.find([labels.kind_is("run")], running_only=not everything))
    records = {record.id: record for record in book.all()}
    listed: dict[str, Located] = {}  # by container: one engine may be known under two host names
    for name, answer in answers.items():
        if isinstance(answer, FireplugError):
            events.warn(f"host '{name}' did not answer ({answer.message}): its runs are not listed")
            continue
        for state in answer:
            run_id = state.labels.get(labels.RUN, "")
            record = records.get(run_id)
            if state.handle in listed and (record is None or record.host != name):
                continue  # listed under the first name, unless this machine's record names this one
            listed[state.handle] = Located(run_id, name, record, _detailed(peers, name, state) if not state.running else state)
    found = list(listed.values())
    for located in found:
        records.pop(located.run_id, None)
    live = sorted(run_id for run_id, record in records.items() if record.host in names and in_live_map(book, record))
    found += [Located(run_id, records[run_id].host, records.pop(run_id), None, in_live_map=True) for run_id in live]
    if everything:
        unanswered = {name for name, answer in answers.items() if isinstance(answer, FireplugError)}
        found += [Located(record.id, record.host, record, None, record.host not in unanswered) for record in records.values() if record.host in names]
    return sorted(found, key=lambda located: located.started or 0.0)


def locate(invocation: Invocation, peers: Hosts, wanted: str, *, only: str | None = None) -> list[Located]:
    """The runs ``wanted`` names (a run or map id, a unique prefix, or the six hex digits).

    Raises:
        UsageError: it names no run, or runs of several ids.
    """
    book = invocation.runs
    records = [record for record in matching(book.all(), wanted) if not only or record.host == only]
    if records:
        reached = peers.each({record.host for record in records}, lambda executor: executor)
        return [_located_from_record(peers, record, reached.get(record.host)) for record in records]
    answers = peers.each(hosts_to_ask(invocation, book, only), lambda executor: executor.find([labels.kind_is("run")], running_only=False))
    found = []
    for name, answer in answers.items():
        if isinstance(answer, FireplugError):
            events.warn(f"host '{name}' did not answer ({answer.message}): its runs were not searched")
            continue
        found += [Located(state.labels.get(labels.RUN, ""), name, None, _detailed(peers, name, state)) for state in answer]
    chosen = _matching_located(found, wanted)
    if not chosen:
        raise UsageError(f"no run {wanted!r} on the hosts asked", hint="see `fp ps --all` (and --host for a host outside the pool)")
    return chosen


def _located_from_record(peers: Hosts, record: RunRecord, answer: Executor | FireplugError | None) -> Located:
    if in_live_map(peers.invocation.runs, record):
        return Located(record.id, record.host, record, None, in_live_map=True)
    if answer is None or isinstance(answer, FireplugError):
        return Located(record.id, record.host, record, None, answered=False)
    return Located(record.id, record.host, record, answer.state(record.container))


def in_live_map(book: RunBook, record: RunRecord) -> bool:
    """A run recorded as running, of a map whose fp process is alive, on a swarm: a sweep's run
    (no container or service of its own: the map's process knows it, and keeps its record)."""
    if record.state != "running" or not record.map_id or not record.container.startswith(SHARED_RUN):
        return False
    try:
        return alive(int((book.folder / f"{record.map_id}.pid").read_text()))
    except (OSError, ValueError):
        return False


def _matching_located(found: list[Located], wanted: str) -> list[Located]:
    """The runs of ``found`` that ``wanted`` names, by their labels (as ``runs.matching`` does records)."""
    stand_ins = {located.run_id: RunRecord(located.run_id, located.host, "", "", "", "", "", 0.0, map_id=located.map_id) for located in found if located.run_id}
    ids = {record.id for record in matching(stand_ins.values(), wanted)}
    return [located for located in found if located.run_id in ids]


def _detailed(peers: Hosts, host: str, state: RunState) -> RunState:
    """An ended run's exact exit status and times (the list gives them only roughly)."""
    with contextlib.suppress(FireplugError):
        return peers.executor(host).state(state.handle) or state
    return state


def record_of(located: Located) -> RunRecord:
    """A record for a run this machine has none of, from its labels."""
    assert located.state is not None
    return RunRecord(
        located.run_id,
        located.host,
        located.state.labels.get(labels.PROJECT, ""),
        located.project_key,
        "",
        located.state.name,
        located.state.labels.get(labels.COMMAND, ""),
        located.started or time.time(),
        map_id=located.map_id,
        params=located.params,
    )


def _json_params(text: str) -> dict[str, str]:
    import json

    try:
        value = json.loads(text) if text else {}
    except (ValueError, RecursionError):
        return {}
    return {str(key): str(item) for key, item in value.items()} if isinstance(value, dict) else {}
