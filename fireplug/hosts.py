"""Using hosts: connecting to one, probing them all in parallel, and choosing an idle one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from fireplug import labels
from fireplug.engine import DEFAULT_TIMEOUT, Engine
from fireplug.errors import FireplugError
from fireplug.inventory import LOCAL, Host, Inventory
from fireplug.locks import Leases
from fireplug.options import has_gpus
from fireplug.ssh import SshConnection, SshSettings
from fireplug.transport import connector_for

LOCAL_START_HINT = "start it (`sudo systemctl start docker`, or `sudo dockerd &`) or point DOCKER_HOST at a running engine"
DEFAULT_PROBE_TIMEOUT = 5.0
UNREACHABLE_MEMORY_SECONDS = 60.0


@dataclass
class Connection:
    """An open host: its engine client and, when it has one, the ssh connection to its shell."""

    host: Host
    engine: Engine
    shell: SshConnection | None


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


@dataclass(frozen=True)
class Node:
    """A node of a swarm host, as `fp hosts` shows it."""

    id: str
    hostname: str
    role: str
    state: str  # ready, down, unknown, disconnected
    version: str
    cpus: float
    memory: int
    gpus: str  # its generic resources ("NVIDIA-GPU=2"), "" for none
    tasks: int  # fp runs' tasks running on it


def swarm_nodes(engine: Engine) -> tuple[Node, ...]:
    running: dict[str, int] = {}
    services = engine.services([labels.kind_is("run")]) + engine.services([labels.kind_is("sweep")])  # (a map's workers: a task each)
    for task in engine.tasks(str(service.get("ID", "")) for service in services):
        if (task.get("Status") or {}).get("State") == "running":
            node = str(task.get("NodeID") or "")
            running[node] = running.get(node, 0) + 1
    return tuple(_node(node, running) for node in engine.nodes())


def _node(node: Mapping[str, Any], running: Mapping[str, int]) -> Node:
    description = node.get("Description") or {}
    resources = description.get("Resources") or {}
    generic = [item.get("DiscreteResourceSpec") or {} for item in resources.get("GenericResources") or []]
    node_id = str(node.get("ID", ""))
    return Node(
        id=node_id,
        hostname=str(description.get("Hostname") or "?"),
        role=str((node.get("Spec") or {}).get("Role") or ""),
        state=str((node.get("Status") or {}).get("State") or ""),
        version=str((description.get("Engine") or {}).get("EngineVersion") or ""),
        cpus=int(resources.get("NanoCPUs") or 0) / 1e9,
        memory=int(resources.get("MemoryBytes") or 0),
        gpus=", ".join(f"{item.get('Kind')}={item.get('Value')}" for item in generic if item),
        tasks=running.get(node_id, 0),
    )


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


def connect(host: Host, settings: SshSettings, *, timeout: float = DEFAULT_TIMEOUT, verbose: bool = False) -> Connection:
    """Open ``host``: an engine client that has answered, and the ssh connection if any.

    Raises:
        EngineUnreachable: nothing answers at the host's URL.
        SshError: ssh to the host failed.
        TlsSetupError: its TLS files are missing or unusable.
    """
    shell = SshConnection(host.name, host.ssh, settings, verbose=verbose) if host.ssh is not None and not host.local else None
    connector = shell.engine_connector() if host.engine_over_ssh and shell is not None else connector_for(host.name, host.url, host.tls)
    hint = LOCAL_START_HINT if host.local else ""
    engine = Engine(host.name, host.url, connector=connector, timeout=timeout, unreachable_hint=hint)
    engine.negotiate()
    return Connection(host, engine, shell)


def running_jobs(engine: Engine) -> frozenset[str]:
    """The fp runs going on ``engine``: each as the fp process that started it (or its container)."""
    found = engine.containers([labels.kind_is("run")])
    return frozenset(str((container.get("Labels") or {}).get(labels.OWNER) or container.get("Id", "")) for container in found)


def probe(host: Host, settings: SshSettings, *, timeout: float, local_folder: str | None = ".") -> Probe:
    """Reach ``host`` and read its resources; an unreachable host is a result, not an error.

    ``local_folder`` None skips the free-disk reading (a remote command: not needed to choose).
    """
    try:
        connection = connect(host, settings, timeout=timeout)
        info = connection.engine.info()
        if host.swarm:
            return _swarm_probe(host, info, swarm_nodes(connection.engine))
        jobs = running_jobs(connection.engine)
        free = free_space(connection, local_folder, timeout) if local_folder is not None else None
    except FireplugError as e:
        return Probe(host, False, reason=_short_reason(e))
    return Probe(
        host,
        True,
        version=str(info.get("ServerVersion", "")),
        cpus=int(info.get("NCPU") or 0),
        memory=int(info.get("MemTotal") or 0),
        jobs=jobs,
        free_bytes=free,
        gpus=has_gpus(info),
    )


def _swarm_probe(host: Host, info: Mapping[str, Any], nodes: tuple[Node, ...]) -> Probe:
    """A swarm as one host: the resources of its ready nodes together."""
    ready = [node for node in nodes if node.state == "ready"]
    return Probe(
        host,
        True,
        version=str(info.get("ServerVersion", "")),
        cpus=int(sum(node.cpus for node in ready)),
        memory=sum(node.memory for node in ready),
        jobs=frozenset(f"{node.id}:{number}" for node in nodes for number in range(node.tasks)),
        gpus=any(node.gpus for node in ready),
        nodes=nodes,
    )


def free_space(connection: Connection, local_folder: str, timeout: float) -> int | None:
    """Free bytes where the host keeps fp's data (its data root; here: the local folder)."""
    if connection.host.local:
        return shutil.disk_usage(local_folder).free
    if connection.shell is None:
        return None  # only the Docker API reaches this host
    script = 'd="$1"; while [ ! -e "$d" ]; do d=$(dirname "$d"); done; df -Pk "$d"'
    completed = connection.shell.run(["sh", "-c", script, "sh", connection.host.data_root], what="df", timeout=timeout)
    return parse_df_available(completed.stdout.decode(errors="replace")) if completed.returncode == 0 else None


def parse_df_available(output: str) -> int | None:
    """Available bytes from `df -Pk` output (POSIX format: the 4th field, in KiB)."""
    lines = output.strip().splitlines()
    if len(lines) < 2:
        return None
    fields = lines[-1].split()
    return int(fields[3]) * 1024 if len(fields) >= 4 and fields[3].isdigit() else None


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
        host, why = pick_idle_host(probes, choice)
        if host is None:
            raise FireplugError(f"no host of the pool is reachable ({why})", hint="see `fp hosts`, or run here with --host local")
        if choice.leases is not None:
            choice.leases.take(host.name)
    return host, why


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


def container_data_source(host: Host, project: str, data_folder: str, local_data: str) -> str:
    """Where the data folder lives on ``host``: the local folder itself, or under its data root."""
    if host.local:
        return local_data
    return str(PurePosixPath(host.data_root) / project / data_folder)


def _short_reason(error: FireplugError) -> str:
    cause = getattr(error, "cause", "")
    return cause or str(error)
