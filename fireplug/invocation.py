"""What one fp command works with: the local process, its settings, the hosts it knows, and
the connections to them.

cli builds one per command; the pipelines (one run, a map, ps/logs/pull/stop/gc, the host
list) take it instead of each reading the environment, the inventory and the ssh settings
again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from fireplug import hosts
from fireplug.config import Config, discover
from fireplug.hosts.address import DEFAULT_CONNECT_TIMEOUT, SshSettings
from fireplug.hosts.engine import DEFAULT_TIMEOUT
from fireplug.hosts.inventory import Host, Inventory, load_inventory
from fireplug.run.records import RunBook
from fireplug.run.spec import Stdio
from fireplug.support import events
from fireplug.support.state import state_home


@dataclass(frozen=True)
class LocalSide:
    """The local process's situation, passed in rather than read from globals."""

    cwd: Path
    environ: Mapping[str, str]
    home: Path
    uid: int
    gid: int
    stdio: Stdio
    stdin_is_terminal: bool
    stdout_is_terminal: bool


class Invocation:
    """One command's local side and configuration, its host inventory (read once, when first
    needed) and its ssh settings."""

    def __init__(self, local: LocalSide, config: Config, *, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
        self.local = local
        self.config = config
        self.settings = SshSettings.from_env(local.environ, local.uid, connect_timeout=connect_timeout)
        self._inventory: Inventory | None = None
        self._opening: dict[str, hosts.Opening] = {}

    @property
    def inventory(self) -> Inventory:
        """Every known host; each source that could not be read is one warning ("skipped ..."), once."""
        if self._inventory is None:
            self._inventory = load_inventory(self.config, self.local.environ, self.local.home)
            for problem in self._inventory.problems:
                events.warn(f"skipped {problem}")
        return self._inventory

    def for_project(self, root: Path) -> Invocation:
        """The same local process, working on the project at ``root`` (as if fp ran there).

        Raises:
            ConfigError, ProjectError: that project's settings cannot be read.
        """
        local = replace(self.local, cwd=root)
        config = discover(root, local.environ, local.home, {})
        other = Invocation(local, config)
        other.settings = self.settings
        return other

    def host(self, name: str) -> Host:
        """Raises: FireplugError: no host has that name."""
        return hosts.resolve(name, self.inventory)

    def open_soon(self, host: Host) -> None:
        """Begin opening ``host``'s engine (when it has one) while this process goes on; the
        next ``connect`` to it takes that connection."""
        if host.url and host.name not in self._opening:
            self._opening[host.name] = hosts.Opening(host, self.settings)

    def connect(self, host: Host, *, timeout: float = DEFAULT_TIMEOUT) -> hosts.Connection:
        """Raises: EngineUnreachable, SshError, TlsSetupError: see ``hosts.connect``."""
        opening = self._opening.pop(host.name, None)
        if opening is not None and timeout == DEFAULT_TIMEOUT:
            return opening.connection()
        return hosts.connect(host, self.settings, timeout=timeout)

    @property
    def state(self) -> Path:
        """fp's state folder: sync records, trash, locks, leases, the records of runs."""
        return state_home(self.local.environ, self.local.home)

    @property
    def runs(self) -> RunBook:
        """The records of the runs started from this machine."""
        return RunBook(self.state / "runs")

    @property
    def locks(self) -> Path:
        """Where fp's processes on this machine keep their build and sync locks."""
        return self.state / "locks"
