"""Where hosts come from: the docker-machine store, Docker CLI contexts, fp's config, and local.

Every source is read directly from its files (the docker-machine binary is not needed). Hosts
are merged by name; fp's config wins on a clash, field by field, and the host records where
each part came from. ``local`` (DOCKER_HOST or the default socket) is always there, last.
A source that cannot be read is reported as a problem, never a crash: the other hosts stay usable.

The pool (the hosts fp may choose without --host) is fp's config hosts and docker-machine
machines, as in the original tool; a Docker context (a production server, say) only when the
config says so (``pool = true`` in its ``[hosts.NAME]``). ``[pool] hosts = [...]`` names the
pool outright; ``pool = false`` takes one host out.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from fireplug.backends import DEFAULT_KIND, kind_of
from fireplug.config import Config, HostSettings
from fireplug.errors import FireplugError
from fireplug.hosts.address import SshTarget, parse_ssh_url
from fireplug.hosts.transport import TlsFiles

LOCAL = "local"
DEFAULT_LOCAL_URL = "unix:///var/run/docker.sock"
DEFAULT_DATA_ROOT = "/data"
MACHINE_SOURCE = "docker-machine"
CONTEXT_SOURCE = "docker context"
CONFIG_SOURCE = "config"


@dataclass(frozen=True)
class Host:
    """A Docker host fp can run on."""

    name: str
    url: str
    source: str
    local: bool = False  # the engine sees this machine's files: the data folder is bind-mounted as is
    tls: TlsFiles | None = None
    ssh: SshTarget | None = None  # a shell on the host, for rsync; None: sync through the Docker API
    data_root: str = DEFAULT_DATA_ROOT
    labels: Mapping[str, str] = field(default_factory=dict)
    pool: bool = False  # fp may choose it without --host
    kind: str = DEFAULT_KIND  # which backend runs there (backends/__init__.py's KINDS)
    registry: str = ""  # where one-time images go for nodes to pull (a kind that needs one)

    @property
    def engine_over_ssh(self) -> bool:
        return self.url.startswith("ssh://")


@dataclass(frozen=True)
class Inventory:
    hosts: tuple[Host, ...]
    problems: tuple[str, ...] = ()  # sources that could not be read, one line each

    @property
    def names(self) -> list[str]:
        return [host.name for host in self.hosts]

    def get(self, name: str) -> Host | None:
        return next((host for host in self.hosts if host.name == name), None)

    @property
    def pool(self) -> list[Host]:
        """The hosts fp may choose by itself, in inventory order."""
        return [host for host in self.hosts if host.pool]


class HostSource(Protocol):
    """One provider of hosts (docker-machine's store, Docker contexts; a cloud provider's
    created hosts would be one more): it reads its own files, and says what it could not read
    in ``problems`` instead of failing."""

    def hosts(self, env: Mapping[str, str], home: Path, problems: list[str]) -> list[Host]: ...


class MachineStore:
    def hosts(self, env: Mapping[str, str], home: Path, problems: list[str]) -> list[Host]:
        return machine_hosts(machine_store(env, home), problems)


class DockerContexts:
    def hosts(self, env: Mapping[str, str], home: Path, problems: list[str]) -> list[Host]:
        return context_hosts(docker_config_dir(env, home), problems)


SOURCES: tuple[HostSource, ...] = (MachineStore(), DockerContexts())  # earlier ones win a name; fp's config goes on top


def load_inventory(config: Config, env: Mapping[str, str], home: Path, sources: Sequence[HostSource] = SOURCES) -> Inventory:
    """Every known host, merged by name (``sources`` in order, then fp's config on top, field
    by field); ``local`` last."""
    problems: list[str] = []
    found: dict[str, Host] = {}
    for host in [host for source in sources for host in source.hosts(env, home, problems)]:
        if host.name != LOCAL:
            found.setdefault(host.name, host)
    for settings in config.hosts.values():
        try:
            found[settings.name] = apply_settings(found.get(settings.name), settings)
        except (ValueError, FireplugError) as e:
            problems.append(f"[hosts.{settings.name}]: {e}")
            found.pop(settings.name, None)
    hosts = [*found.values(), local_host(env, home)]
    if config.pool.hosts is not None:
        problems += [f"[pool] hosts: no host is called '{name}'" for name in config.pool.hosts if name not in {host.name for host in hosts}]
        hosts = [replace(host, pool=host.name in config.pool.hosts) for host in hosts]
    return Inventory(tuple(hosts), tuple(problems))


def machine_store(env: Mapping[str, str], home: Path) -> Path:
    return Path(env.get("MACHINE_STORAGE_PATH") or home / ".docker" / "machine")


def docker_config_dir(env: Mapping[str, str], home: Path) -> Path:
    return Path(env.get("DOCKER_CONFIG") or home / ".docker")


def local_host(env: Mapping[str, str], home: Path) -> Host:
    """The engine DOCKER_HOST names (with DOCKER_TLS_VERIFY / DOCKER_CERT_PATH), else the default socket."""
    url = env.get("DOCKER_HOST") or DEFAULT_LOCAL_URL
    source = "DOCKER_HOST" if env.get("DOCKER_HOST") else "default socket"
    tls = None
    if env.get("DOCKER_TLS_VERIFY") not in (None, "", "0"):
        tls = TlsFiles.in_folder(env.get("DOCKER_CERT_PATH") or str(docker_config_dir(env, home)))
    ssh = parse_ssh_url(url) if url.startswith("ssh://") else None
    return Host(LOCAL, url, source, local=url.startswith("unix://"), tls=tls, ssh=ssh)


# -- docker-machine ------------------------------------------------------------------------


def machine_hosts(store: Path, problems: list[str]) -> list[Host]:
    """Hosts from a docker-machine store: machines/NAME/config.json (ConfigVersion 3)."""
    hosts = []
    for config_file in sorted((store / "machines").glob("*/config.json")):
        try:
            hosts.append(machine_host(config_file.parent.name, _read_json(config_file), config_file.parent))
        except (OSError, ValueError) as e:
            problems.append(f"{config_file}: unreadable docker-machine config ({e})")
    return hosts


def machine_host(name: str, config: Any, folder: Path) -> Host:
    """One docker-machine machine: a TLS engine on tcp://IP:EnginePort and ssh to the same address.

    Raises:
        ValueError: ``config`` is not a usable machine (wrong shape, no address, bad port).
    """
    config = _table(config, "the file")
    driver = _table(config.get("Driver"), "Driver")
    address = _text(driver, "IPAddress", "Driver")
    if not address:
        raise ValueError("no Driver.IPAddress (is the machine created and running?)")
    if not _ADDRESS_RE.fullmatch(address):
        raise ValueError(f"Driver.IPAddress {address[:60]!r} is not a host address")
    auth = _table(_table(config.get("HostOptions"), "HostOptions").get("AuthOptions"), "HostOptions.AuthOptions")
    tls = TlsFiles(
        _text(auth, "CaCertPath", "AuthOptions") or str(folder / "ca.pem"),
        _text(auth, "ClientCertPath", "AuthOptions") or str(folder / "cert.pem"),
        _text(auth, "ClientKeyPath", "AuthOptions") or str(folder / "key.pem"),
    )
    port = _port(driver, "EnginePort", 2376)
    ssh_user = _text(driver, "SSHUser", "Driver")
    ssh = None
    if ssh_user and ssh_user != "none":
        ssh = SshTarget(address, ssh_user, _port(driver, "SSHPort", 22), _text(driver, "SSHKeyPath", "Driver"))
    return Host(_text(config, "Name", "the file") or name, f"tcp://{address}:{port}", MACHINE_SOURCE, tls=tls, ssh=ssh, pool=True)


# -- docker contexts -----------------------------------------------------------------------


def context_hosts(docker_config: Path, problems: list[str]) -> list[Host]:
    """Hosts from Docker CLI contexts: contexts/meta/<sha256 of name>/meta.json."""
    hosts = []
    for meta_file in sorted((docker_config / "contexts" / "meta").glob("*/meta.json")):
        try:
            host = context_host(_read_json(meta_file), docker_config)
        except (OSError, ValueError, FireplugError) as e:
            problems.append(f"{meta_file}: unreadable docker context ({e})")
            continue
        if host is not None:
            hosts.append(host)
    return hosts


def context_host(meta: Any, docker_config: Path) -> Host | None:
    """One Docker CLI context; None when it has no docker endpoint.

    Raises:
        ValueError: ``meta`` is not a usable context (wrong shape, no name).
        FireplugError: its ssh:// URL is unusable.
    """
    meta = _table(meta, "the file")
    name = _text(meta, "Name", "the file")
    if not name:
        raise ValueError("no Name")
    endpoint = _table(_table(meta.get("Endpoints"), "Endpoints").get("docker"), "Endpoints.docker")
    url = _text(endpoint, "Host", "Endpoints.docker")
    if not url:
        return None
    tls_folder = docker_config / "contexts" / "tls" / hashlib.sha256(name.encode(errors="surrogateescape")).hexdigest() / "docker"
    tls = TlsFiles.in_folder(str(tls_folder)) if (tls_folder / "ca.pem").exists() else None
    ssh = parse_ssh_url(url) if url.startswith("ssh://") else None
    return Host(name, url, CONTEXT_SOURCE, local=url.startswith("unix://"), tls=tls, ssh=ssh)


# -- reading other programs' JSON ------------------------------------------------------------

MAX_JSON_BYTES = 1 << 20  # a machine's config or a context's meta is a few KiB
_ADDRESS_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:_-]{0,252}")


def _read_json(path: Path) -> Any:
    """Raises: OSError; ValueError: too big, not UTF-8, not JSON or nested too deep."""
    with path.open("rb") as source:
        data = source.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        raise ValueError(f"larger than {MAX_JSON_BYTES} bytes")
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except ValueError as e:
        raise ValueError(f"not JSON: {e}") from None


def _table(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{what} is a {type(value).__name__}, not an object")
    return value


def _text(table: dict[str, Any], key: str, what: str) -> str:
    value = table.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{what}.{key} is a {type(value).__name__}, not a string")
    return value


def _port(table: dict[str, Any], key: str, default: int) -> int:
    value = table.get(key)
    if value in (None, "", 0):
        return default
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit() or not 0 < int(value) < 65536:
        raise ValueError(f"{key} {str(value)[:20]!r} is not a port number")
    return int(value)


# -- fp's config ---------------------------------------------------------------------------


def apply_settings(found: Host | None, settings: HostSettings) -> Host:
    """A ``[hosts.NAME]`` table on top of the host of that name found elsewhere (if any).

    Raises:
        ValueError: the result has no engine URL, or the URL is unusable.
    """
    url = settings.url or (found.url if found else "")
    if not url:
        raise ValueError('no url (e.g. url = "ssh://user@host")')
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("ssh", "tcp", "unix"):
        raise ValueError(f"url {url!r}: unsupported scheme (use ssh://, tcp:// or unix://)")
    source = f"{found.source} + {CONFIG_SOURCE}" if found else CONFIG_SOURCE
    base = found if found and found.url == url else Host(settings.name, url, source)
    tls = TlsFiles.in_folder(settings.cert_path) if settings.cert_path else base.tls
    kind = kind_of(settings.kind or base.kind)
    return replace(
        base,
        source=source,
        local=scheme == "unix" and kind.sees_local_files,
        tls=tls if scheme == "tcp" else None,
        ssh=ssh_target(url, base.ssh, settings),
        data_root=settings.data_root or base.data_root,
        labels={**base.labels, **settings.labels},
        pool=settings.pool if settings.pool is not None else (found.pool if found else True) and kind.pooled,
        kind=settings.kind or base.kind,
        registry=settings.registry or base.registry,
    )


def ssh_target(url: str, found: SshTarget | None, settings: HostSettings) -> SshTarget | None:
    """How to reach the host's shell: the ssh:// URL itself, or (for tcp://) the ssh settings."""
    if url.startswith("ssh://"):
        target = parse_ssh_url(url)
    elif found is not None:
        target = found
    elif settings.ssh_user:
        target = SshTarget(urllib.parse.urlsplit(url).hostname or "")
    else:
        return None
    return SshTarget(
        target.address,
        settings.ssh_user or target.user,
        settings.ssh_port or target.port,
        settings.ssh_key or target.key,
    )
