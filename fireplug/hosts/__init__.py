"""Using hosts: connecting to one, probing them all in parallel, and choosing an idle one."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fireplug.errors import FireplugError
from fireplug.hosts.address import SshSettings
from fireplug.hosts.engine import DEFAULT_TIMEOUT, Engine
from fireplug.hosts.inventory import LOCAL, Host, Inventory
from fireplug.hosts.transport import connector_for
from fireplug.support.locks import Leases

if TYPE_CHECKING:
    from fireplug.backends.base import Node
    from fireplug.hosts.ssh import SshConnection

LOCAL_START_HINT = "start it (`sudo systemctl start docker`, or `sudo dockerd &`) or point DOCKER_HOST at a running engine"
DEFAULT_PROBE_TIMEOUT = 5.0
UNREACHABLE_MEMORY_SECONDS = 60.0


@dataclass
class Connection:
    """An open host: its engine client and, when it has one, the ssh connection to its shell."""

    host: Host
    engine: Engine
    shell: SshConnection | None
    _info: dict[str, Any] | None = field(default=None, repr=False)

    def info(self) -> dict[str, Any]:
        """The engine's /info (resources, runtimes, swarm state), read once per connection.

        Raises:
            EngineUnreachable, EngineError.
        """
        if self._info is None:
            self._info = self.engine.info()
        return self._info


class Opening:
    """A connection being opened (and the engine's /info read) on a thread of its own, while
    this process does its local work: imports, the project's scan (~10-20 ms of a warm run).
    ``connection`` waits for it and raises what opening it raised."""

    def __init__(self, host: Host, settings: SshSettings, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._result: Connection | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._open, args=(host, settings, timeout), name=f"fp-open-{host.name}", daemon=True)
        self._thread.start()

    def _open(self, host: Host, settings: SshSettings, timeout: float) -> None:
        try:
            self._result = connect(host, settings, timeout=timeout)
        except BaseException as e:  # handed to the thread that asks for the connection
            self._error = e
            return
        with contextlib.suppress(FireplugError):  # asked again when needed, and then its error is raised
            self._result.info()

    def connection(self) -> Connection:
        """Raises: what ``connect`` raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


@dataclass(frozen=True)
class Probe:
    """What `fp hosts` and the idle-host choice know about a host."""

    host: Host
    reachable: bool
    reason: str = ""
    version: str = ""
    cpus: int = 0
    memory: int = 0
    jobs: frozenset[str] = frozenset()  # running fp jobs: the fp process that started each (or its container id)
    free_bytes: int | None = None
    gpus: bool = False  # the engine reports an NVIDIA runtime
    nodes: tuple[Node, ...] = ()  # a swarm's
    skipped: bool = False  # not asked (remembered unreachable), or not waited for (another host was chosen)

    @property
    def running_jobs(self) -> int:
        return len(self.jobs)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.host.name,
            "source": self.host.source,
            "url": self.host.url,
            "reachable": self.reachable,
            "reason": self.reason,
            "version": self.version,
            "cpus": self.cpus,
            "memory": self.memory,
            "running_jobs": self.running_jobs,
            "free_bytes": self.free_bytes,
            "gpus": self.gpus,
            "data_root": None if self.host.local else self.host.data_root,
            "labels": dict(self.host.labels),
            "pool": self.host.pool,
            "kind": self.host.kind,
            "nodes": [node.__dict__ for node in self.nodes],
        }


def resolve(name: str, inventory: Inventory) -> Host:
    """The host called ``name``.

    Raises:
        FireplugError: no host has that name (the message lists the known ones).
    """
    host = inventory.get(name)
    if host is None:
        problems = f"; unreadable: {' / '.join(inventory.problems)}" if inventory.problems else ""
        raise FireplugError(f"unknown host '{name}' (known hosts: {', '.join(inventory.names)}){problems}", hint="see `fp hosts`")
    return host


def connect(host: Host, settings: SshSettings, *, timeout: float = DEFAULT_TIMEOUT) -> Connection:
    """Open ``host``: an engine client that has answered, and the ssh connection if any.

    Raises:
        EngineUnreachable: nothing answers at the host's URL.
        SshError: ssh to the host failed.
        TlsSetupError: its TLS files are missing or unusable.
    """
    shell = None
    if host.ssh is not None and not host.local:
        from fireplug.hosts.ssh import SshConnection

        shell = SshConnection(host.name, host.ssh, settings)
    connector = shell.engine_connector() if host.engine_over_ssh and shell is not None else connector_for(host.name, host.url, host.tls)
    hint = LOCAL_START_HINT if host.local else ""
    engine = Engine(host.name, host.url, connector=connector, timeout=timeout, unreachable_hint=hint)
    engine.negotiate()
    return Connection(host, engine, shell)


def probe(host: Host, settings: SshSettings, *, timeout: float, local_folder: str | None = ".") -> Probe:
    """Reach ``host`` and read its resources; an unreachable host is a result, not an error.

    ``local_folder`` None skips the free-disk reading (a remote command: not needed to choose).
    """
    from fireplug.backends import backend_for

    try:
        connection = connect(host, settings, timeout=timeout)
        info = connection.info()
        reading = backend_for(host).read(connection, info, local_folder, timeout)
    except FireplugError as e:
        return Probe(host, False, reason=_short_reason(e))
    return Probe(
        host,
        True,
        version=str(info.get("ServerVersion", "")),
        cpus=reading.cpus,
        memory=reading.memory,
        jobs=reading.jobs,
        free_bytes=reading.free_bytes,
        gpus=reading.gpus,
        nodes=reading.nodes,
    )


def probe_all(
    hosts: Sequence[Host],
    settings: SshSettings,
    *,
    timeout: float,
    local_folder: str | None = ".",
    enough: Callable[[Mapping[str, Probe]], bool] = lambda answered: False,
) -> list[Probe]:
    """Probe every host at once; one that has not answered after ``timeout`` is unreachable.

    ``enough``: told the answers so far after each one; True stops waiting for the rest
    (they come back ``skipped``).
    """
    results: dict[str, Probe] = {}
    answer = threading.Condition()

    def work(host: Host) -> None:
        found = probe(host, settings, timeout=timeout, local_folder=local_folder)
        with answer:
            results[host.name] = found
            answer.notify_all()

    for host in hosts:
        threading.Thread(target=work, args=(host,), daemon=True).start()
    deadline = time.monotonic() + timeout + 0.5
    with answer:
        while len(results) < len(hosts) and not enough(results) and (left := deadline - time.monotonic()) > 0:
            answer.wait(left)
        answered = dict(results)
        stopped_early = len(answered) < len(hosts) and time.monotonic() < deadline
    if stopped_early:
        return [answered.get(host.name) or Probe(host, False, reason="not waited for", skipped=True) for host in hosts]
    return [answered.get(host.name) or Probe(host, False, reason=f"no answer within {timeout:g} s") for host in hosts]


@dataclass(frozen=True)
class Choice:
    """What an automatic choice weighs besides the probes."""

    leases: Leases | None = None  # hosts that this machine's other fp processes have chosen
    holds_data: Callable[[str], bool] = lambda host: False  # the project's data is there already
    memory: UnreachableMemory | None = None

    def claimed(self, host: str) -> frozenset[str]:
        return self.leases.owners(host) if self.leases is not None else frozenset()


def pick_idle_host(probes: Sequence[Probe], choice: Choice = Choice()) -> tuple[Host | None, str]:
    """The least loaded reachable host (fp jobs, counting the leases of other fp processes, per
    CPU); among equals one that holds the project's data, then the first.

    Returns the host (None when none is reachable) and why, in words.
    """
    reachable = [found for found in probes if found.reachable]
    if not reachable:
        return None, "; ".join(f"{found.host.name}: {found.reason}" for found in probes)
    jobs = {found.host.name: len(found.jobs | choice.claimed(found.host.name)) for found in reachable}
    holds = {found.host.name: choice.holds_data(found.host.name) for found in reachable}
    best = min(reachable, key=lambda found: (jobs[found.host.name] / max(found.cpus, 1), not holds[found.host.name]))
    name = best.host.name
    data = ", holds this project's data" if holds[name] else ""
    if jobs[name] == 0:
        return best.host, f"idle: no fp job running, {best.cpus} CPUs{data}"
    return best.host, f"least loaded: {jobs[name]} fp jobs on {best.cpus} CPUs{data}, every host is busy"


def choose(
    requested: str | None,
    inventory: Inventory,
    settings: SshSettings,
    *,
    timeout: float = DEFAULT_PROBE_TIMEOUT,
    prober: Callable[..., list[Probe]] = probe_all,
    choice: Choice = Choice(),
) -> tuple[Host, str]:
    """The host to run on, and why it was chosen (one line). The choice takes a lease on it
    (``choice.leases``), held until this process ends or releases it.

    Without ``requested``: the least loaded host of the pool, chosen as soon as an idle one
    answers (hosts that did not answer a moment ago are not asked again at once); local
    when the pool is empty.

    Raises:
        FireplugError: ``requested`` is unknown, or no pool host is reachable.
    """
    if requested:
        host = resolve(requested, inventory)
        if choice.leases is not None:
            choice.leases.take(host.name)
        return host, "asked for"
    pool = inventory.pool
    if not pool:
        return resolve(LOCAL, inventory), "no host in the pool: no host in fp's config, no docker-machine machine"
    remembered = choice.memory.recent() if choice.memory is not None else {}
    asked = [host for host in pool if host.name not in remembered] or pool
    probes = prober(asked, settings, timeout=timeout, local_folder=None, enough=lambda answered: _enough(answered, asked, choice))
    if choice.memory is not None:
        choice.memory.update(probes)
    probes += [Probe(host, False, reason=f"unreachable a moment ago ({remembered[host.name]})", skipped=True) for host in pool if host not in asked]
    with choice.leases.choosing() if choice.leases is not None else contextlib.nullcontext():
        picked, why = pick_idle_host(probes, choice)
        if picked is None:
            raise FireplugError(f"no host of the pool is reachable ({why})", hint="see `fp hosts`, or run here with --host local")
        if choice.leases is not None:
            choice.leases.take(picked.name)
    return picked, why


def _enough(answered: Mapping[str, Probe], asked: Sequence[Host], choice: Choice) -> bool:
    """Whether an idle host has answered that no host still to answer could beat (by holding the data)."""
    idle = [found for found in answered.values() if found.reachable and not found.jobs and not choice.claimed(found.host.name)]
    if not idle:
        return False
    if any(choice.holds_data(found.host.name) for found in idle):
        return True
    return not any(choice.holds_data(host.name) for host in asked if host.name not in answered)


@dataclass
class UnreachableMemory:
    """Hosts that did not answer a probe lately, in a small JSON file: name -> [until, reason]."""

    path: Path
    seconds: float = UNREACHABLE_MEMORY_SECONDS
    clock: Callable[[], float] = field(default=time.time)

    def recent(self) -> dict[str, str]:
        """The hosts remembered as unreachable, with why."""
        now = self.clock()
        return {name: reason for name, (until, reason) in self._read().items() if until > now}

    def update(self, probes: Sequence[Probe]) -> None:
        """Best effort: remember the hosts that did not answer, forget the ones that did."""
        known = {name: entry for name, entry in self._read().items() if entry[0] > self.clock()}
        for found in probes:
            if found.reachable:
                known.pop(found.host.name, None)
            elif not found.skipped:
                known[found.host.name] = (self.clock() + self.seconds, found.reason[:200])
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}")
            temporary.write_text(json.dumps(known))
            os.replace(temporary, self.path)

    def _read(self) -> dict[str, tuple[float, str]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {
            str(name): (float(entry[0]), str(entry[1]))
            for name, entry in data.items()
            if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], (int, float)) and isinstance(entry[1], str)
        }


def _short_reason(error: FireplugError) -> str:
    cause = getattr(error, "cause", "")
    return cause or str(error)
