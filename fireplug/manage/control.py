"""Runs after their start: list them (`fp ps`), read their output (`fp logs`), bring their
results back (`fp pull`) and stop them (`fp stop`), from any shell and any fp process.

A run is found through this machine's records of the runs it started (``runs.py``: they know
the host, and outlive the container) and through the labels of the containers on the hosts
(runs started elsewhere, or records lost). Hosts are asked in parallel; one that does not
answer is a warning, and its runs show as "unknown".
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from fireplug import hosts
from fireplug.backends import backend_for
from fireplug.backends.base import Executor, Pulling, RunState
from fireplug.errors import FireplugError, UsageError
from fireplug.invocation import Invocation
from fireplug.run.records import SHARED_RUN, RunBook, RunRecord, keep_output_and_remove, matching
from fireplug.support import events, labels
from fireplug.support.output import LineWriter, run_prefix
from fireplug.support.proc import alive

STOP_GRACE_SECONDS = 10.0
KILL_WAIT_SECONDS = 10.0
POLL_SECONDS = 0.2
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


# -- fp logs ------------------------------------------------------------------------------------


def show_logs(invocation: Invocation, peers: Hosts, runs: Sequence[Located], *, follow: bool, out: LineWriter) -> None:
    """Each run's output (its container's, else what fp kept), prefixed with its parameters for
    map runs; ``follow``: until the running ones end (several at once, each line whole).

    Raises:
        FireplugError: a run's output is nowhere (its container is gone and nothing was kept).
    """
    book = invocation.runs
    sources = [(located, _output_of(peers, book, located, follow)) for located in runs]
    prefixed = len(runs) > 1 or any(located.map_id for located in runs)
    if not follow or len(sources) == 1:
        for located, chunks in sources:
            _copy_output(chunks, out, run_prefix(located.params, located.host) if prefixed else "", located.run_id)
        return
    threads = [
        threading.Thread(target=_copy_output, args=(chunks, out, run_prefix(located.params, located.host), located.run_id), daemon=True)
        for located, chunks in sources
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _output_of(peers: Hosts, book: RunBook, located: Located, follow: bool) -> Iterator[tuple[int, bytes]]:
    kept = book.log_path(located.run_id)
    if located.state is not None:
        return peers.executor(located.host).logs(located.state.handle, follow=follow)
    record = located.record
    if located.in_live_map and follow and record is not None:
        return _kept_output(kept, lambda: in_live_map(book, book.load(record.id) or record))
    if kept.is_file():
        return _kept_output(kept)
    why = "its host did not answer" if not located.answered else "its container is gone and fp kept none of it"
    raise FireplugError(f"no output of run {located.run_id} on host '{located.host}': {why}")


def _kept_output(path: Path, going: Callable[[], bool] | None = None) -> Iterator[tuple[int, bytes]]:
    """What fp kept of a run's output; ``going``: followed while it says the run goes on (a map's
    process writes the file as the run's output comes)."""
    with contextlib.suppress(FileNotFoundError), open(path, "rb") as source:
        while True:
            still = going is not None and going()
            while block := source.read(65536):
                yield 1, block
            if not still:
                return
            time.sleep(POLL_SECONDS)


def _copy_output(chunks: Iterator[tuple[int, bytes]], out: LineWriter, prefix: str, key: str) -> None:
    for stream, data in chunks:
        out.write(stream, data, prefix=prefix, key=key)
    out.flush(key, prefix)


# -- fp stop --------------------------------------------------------------------------------------


def stop_runs(invocation: Invocation, peers: Hosts, runs: Sequence[Located], *, grace: float = STOP_GRACE_SECONDS) -> list[tuple[Located, int | None]]:
    """SIGINT to each running run, then SIGKILL to those still running after ``grace`` seconds
    (like `docker stop`, with the signal a Ctrl-C sends); each with its exit status. The
    containers stay, for `fp logs` and `fp pull`."""
    running = [located for located in runs if located.running]
    for located in running:
        _signal(peers, located, "SIGINT")
    deadline = time.monotonic() + grace
    results: list[tuple[Located, int | None]] = []
    for located in running:
        code, still = _wait_for_end(invocation, peers, located, deadline)
        if still:
            events.note(f"run {located.run_id} did not end within {grace:g} s of SIGINT: killing it")
            _signal(peers, located, "SIGKILL")
            code, _ = _wait_for_end(invocation, peers, located, time.monotonic() + KILL_WAIT_SECONDS)
        if located.record is not None and not located.in_live_map:  # (a sweep's run: its map's process records its end)
            invocation.runs.save(located.record.with_end(code))
        results.append((located, code))
    return results


def _signal(peers: Hosts, located: Located, signal_name: str) -> None:
    executor = peers.executor(located.host)
    if located.state is not None:
        executor.signal(located.state.handle, signal_name)
    else:
        executor.signal_run(located.run_id, signal_name)


def _wait_for_end(invocation: Invocation, peers: Hosts, located: Located, deadline: float) -> tuple[int | None, bool]:
    """(The run's exit status, whether it still runs at ``deadline``)."""
    if located.state is not None:
        state = _wait_until_ended(peers.executor(located.host), located.state.handle, deadline)
        return (state.exit_code if state is not None else None), state is not None and state.running
    while True:  # a sweep's run: its map's process records its end
        record = invocation.runs.load(located.run_id)
        if record is None or record.state != "running":
            return (record.exit_code if record is not None else None), False
        if time.monotonic() >= deadline:
            return None, True
        time.sleep(POLL_SECONDS)


def stop_map_process(book: RunBook, wanted: str, *, grace: float = STOP_GRACE_SECONDS) -> str:
    """A map going on in the background (`fp map -d`) that ``wanted`` names: SIGINT to its fp
    process (it stops handing out runs and forwards the signal), a second one after ``grace``
    seconds (it kills them); it removes its runs' containers itself. The map's id ("" when
    ``wanted`` names no such map).

    Raises:
        UsageError: ``wanted`` names several maps.
    """
    going = [path.stem for path in book.folder.glob("map-*.pid")] if book.folder.is_dir() else []
    stand_ins = [RunRecord(map_id, "", "", "", "", "", "", 0.0, map_id=map_id) for map_id in going]
    found = {record.map_id for record in matching(stand_ins, wanted)}
    if not found:
        return ""
    (map_id,) = found
    try:
        pid = int((book.folder / f"{map_id}.pid").read_text())
    except (OSError, ValueError):
        return ""
    for wait in (grace, KILL_WAIT_SECONDS):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and alive(pid):
            time.sleep(POLL_SECONDS)
        if not alive(pid):
            break
    return map_id


def _wait_until_ended(executor: Executor, handle: str, deadline: float) -> RunState | None:
    while True:
        state = executor.state(handle)
        if state is None or not state.running or time.monotonic() >= deadline:
            return state
        time.sleep(POLL_SECONDS)


# -- fp pull ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pulled:
    host: str
    project_root: str
    runs: tuple[Located, ...]
    still_running: tuple[str, ...]


def pull_runs(invocation: Invocation, peers: Hosts, runs: Sequence[Located]) -> list[Pulled]:
    """Bring the results of ``runs`` back, one sync (changes made on the host only) per project
    and host; then each run that has ended is done with: its output is kept here, its
    container removed, its record marked pulled.

    Raises:
        UsageError: a run of another project, not started from this machine.
        FireplugError: a host, a sync or a removal failed (what completed stays done).
    """
    groups: dict[tuple[str, str], list[Located]] = {}
    for located in runs:
        groups.setdefault((_project_root(invocation, located), located.host), []).append(located)
    done = []
    for (root, host), members in groups.items():
        project = invocation if str(invocation.config.root) == root else invocation.for_project(Path(root))
        connection = peers.connection(host)
        ended = tuple(
            (located.state.handle if located.state is not None else "", located.record or _record_of(located)) for located in members if not located.running
        )
        by_id = {located.run_id: located for located in members}

        def done_with(handle: str, record: RunRecord, book: RunBook = project.runs, by_id: dict[str, Located] = by_id) -> None:
            located = by_id[record.id]
            if located.state is not None and not located.state.running:
                _done_with(book, peers, located)

        pulling = Pulling(project, connection, peers.executor(host), ended, done_with)
        backend_for(connection.host).pull(pulling)
        still = tuple(located.run_id for located in members if located.running)
        done.append(Pulled(host, root, tuple(members), still))
    return done


def _project_root(invocation: Invocation, located: Located) -> str:
    if located.record is not None:
        return located.record.root
    if located.project_key == invocation.config.project.key:
        return str(invocation.config.root)
    project = located.state.labels.get(labels.PROJECT, "?") if located.state else "?"
    raise UsageError(
        f"run {located.run_id} belongs to project {project} ({located.project_key}), not this one, and was not started from this machine",
        hint="run fp pull in that project's folder",
    )


def _done_with(book: RunBook, peers: Hosts, located: Located) -> None:
    """Keep an ended run's output here, then remove its container."""
    assert located.state is not None
    keep_output_and_remove(book, peers.executor(located.host), located.state.handle, located.run_id)
    record = located.record or _record_of(located)
    ended = replace(record.with_end(located.state.exit_code, now=located.state.finished_at), pulled=time.time())
    book.save(ended)


def _record_of(located: Located) -> RunRecord:
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
