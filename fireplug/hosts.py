"""Using hosts: connecting to one, probing them all in parallel, and choosing an idle one."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from fireplug.engine import DEFAULT_TIMEOUT, Engine
from fireplug.errors import FireplugError
from fireplug.inventory import LOCAL, Host, Inventory
from fireplug.ssh import SshConnection, SshSettings
from fireplug.transport import connector_for

LOCAL_START_HINT = "start it (`sudo systemctl start docker`, or `sudo dockerd &`) or point DOCKER_HOST at a running engine"
RUN_LABEL = "io.fireplug.kind=run"
DEFAULT_PROBE_TIMEOUT = 5.0


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
    running_jobs: int = 0
    free_bytes: int | None = None

    @property
    def load(self) -> float:
        """fp jobs per CPU."""
        return self.running_jobs / max(self.cpus, 1)

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
            "data_root": None if self.host.local else self.host.data_root,
            "labels": dict(self.host.labels),
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


def running_jobs(engine: Engine) -> int:
    return len(engine.containers([RUN_LABEL]))


def probe(host: Host, settings: SshSettings, *, timeout: float, local_folder: str | None = ".") -> Probe:
    """Reach ``host`` and read its resources; an unreachable host is a result, not an error.

    ``local_folder`` None skips the free-disk reading (a remote command: not needed to choose).
    """
    try:
        connection = connect(host, settings, timeout=timeout)
        info = connection.engine.info()
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
        running_jobs=jobs,
        free_bytes=free,
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


def probe_all(hosts: Sequence[Host], settings: SshSettings, *, timeout: float, local_folder: str | None = ".") -> list[Probe]:
    """Probe every host at once; one that has not answered after ``timeout`` is unreachable."""
    results: dict[str, Probe] = {}

    def work(host: Host) -> None:
        results[host.name] = probe(host, settings, timeout=timeout, local_folder=local_folder)

    threads = [threading.Thread(target=work, args=(host,), daemon=True) for host in hosts]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout + 0.5
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [results.get(host.name) or Probe(host, False, reason=f"no answer within {timeout:g} s") for host in hosts]


def pick_idle_host(probes: Sequence[Probe]) -> tuple[Host | None, str]:
    """The first reachable host with no fp job running, else the least loaded (jobs per CPU).

    Returns the host (None when none is reachable) and why, in words.
    """
    reachable = [found for found in probes if found.reachable]
    for found in reachable:
        if found.running_jobs == 0:
            return found.host, f"idle: no fp job running, {found.cpus} CPUs"
    if reachable:
        least = min(reachable, key=lambda found: found.load)
        return least.host, f"least loaded: {least.running_jobs} fp jobs on {least.cpus} CPUs, every host is busy"
    return None, "; ".join(f"{found.host.name}: {found.reason}" for found in probes)


def choose(
    requested: str | None,
    inventory: Inventory,
    settings: SshSettings,
    *,
    timeout: float = DEFAULT_PROBE_TIMEOUT,
    prober: Callable[..., list[Probe]] = probe_all,
) -> tuple[Host, str]:
    """The host to run on, and why it was chosen (one line).

    Raises:
        FireplugError: ``requested`` is unknown, or no remote host is reachable.
    """
    if requested:
        return resolve(requested, inventory), "asked for with --host"
    remote = inventory.remote
    if not remote:
        return resolve(LOCAL, inventory), "no remote host configured"
    host, why = pick_idle_host(prober(remote, settings, timeout=timeout, local_folder=None))
    if host is None:
        raise FireplugError(f"no remote host is reachable ({why})", hint="see `fp hosts`, or run here with --host local")
    return host, why


def container_data_source(host: Host, project: str, data_folder: str, local_data: str) -> str:
    """Where the data folder lives on ``host``: the local folder itself, or under its data root."""
    if host.local:
        return local_data
    return str(PurePosixPath(host.data_root) / project / data_folder)


def _short_reason(error: FireplugError) -> str:
    cause = getattr(error, "cause", "")
    return cause or str(error)
