"""Container options with docker's names and semantics: --shm-size, --memory, --cpus, --gpus,
-p/--publish, --network; parsed (pure) into the engine's HostConfig, and checked against a host.

Every value is parsed before any host is probed (a bad one is a usage error), and checked
against the chosen host's engine before anything is built or synced.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from fireplug.errors import FireplugError, UsageError

SHM_CAP_BYTES = 8 << 30  # the default /dev/shm: half the host's memory (or of --memory), at most 8 GiB
MIN_MEMORY_BYTES = 6 << 20  # the engine refuses less
MAX_SIZE_BYTES = (1 << 63) - 1  # the engine's sizes are 64-bit signed numbers: more is refused as JSON it cannot read
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
# Patterns compiled when first used (re caches them): a run uses them only for the options given.
_SIZE_RE = r"(\d{1,30}(?:\.\d{1,30})?)\s*([bkmgt]?)(?:i?b)?"
_PUBLISH_RE = r"(?:(?P<ip>\d{1,3}(?:\.\d{1,3}){3}):)?(?:(?P<host>\d{1,5}):)?(?P<container>\d{1,5})(?:/(?P<proto>tcp|udp))?"
_NETWORK_RE = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
_DEVICE_RE = r"[A-Za-z0-9:_-]{1,64}"


@dataclass(frozen=True)
class Publish:
    """One -p: a container port on a host port (0: one the engine picks), on ``ip`` ("" = docker's default)."""

    container_port: int
    host_port: int = 0
    ip: str = ""
    protocol: str = "tcp"

    @property
    def key(self) -> str:
        return f"{self.container_port}/{self.protocol}"


@dataclass(frozen=True)
class Gpus:
    """--gpus: all of them (count -1), a number, or device ids."""

    count: int = 0
    device_ids: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        if self.device_ids:
            return f"device={','.join(self.device_ids)}"
        return "all" if self.count == -1 else str(self.count)


@dataclass(frozen=True)
class ContainerOptions:
    shm_size: int | None = None  # None: the default above, once the host's memory is known
    memory: int | None = None
    nano_cpus: int | None = None
    gpus: Gpus | None = None
    publish: tuple[Publish, ...] = ()
    network: str = ""  # "": the engine's default bridge

    def host_config(self, host_memory: int) -> dict[str, Any]:
        """The HostConfig fields these options set (``host_memory``: the engine's MemTotal)."""
        config: dict[str, Any] = {"ShmSize": self.shm_bytes(host_memory)}
        if self.memory is not None:
            config["Memory"] = self.memory
        if self.nano_cpus is not None:
            config["NanoCpus"] = self.nano_cpus
        if self.gpus is not None:
            config["DeviceRequests"] = [{"Driver": "", "Count": self.gpus.count, "DeviceIDs": list(self.gpus.device_ids), "Capabilities": [["gpu"]]}]
        if self.publish:
            bindings: dict[str, list[dict[str, str]]] = {}
            for port in self.publish:
                bindings.setdefault(port.key, []).append({"HostIp": port.ip, "HostPort": str(port.host_port or "")})
            config["PortBindings"] = bindings
        if self.network:
            config["NetworkMode"] = self.network
        return config

    def shm_bytes(self, host_memory: int) -> int:
        """The size of /dev/shm: as asked, else the default for ``host_memory``."""
        return self.shm_size if self.shm_size is not None else default_shm_size(host_memory, self.memory)

    def exposed_ports(self) -> dict[str, dict[str, Any]]:
        return {port.key: {} for port in self.publish}

    def run_flags(self) -> list[str]:
        """The same options as `docker run` flags (for the verbose display)."""
        flags = [] if self.shm_size is None else ["--shm-size", str(self.shm_size)]
        flags += [] if self.memory is None else ["--memory", str(self.memory)]
        flags += [] if self.nano_cpus is None else ["--cpus", f"{self.nano_cpus / 1e9:g}"]
        if self.gpus is not None:
            flags += ["--gpus", self.gpus.flag]
        for port in self.publish:
            flags += ["-p", ":".join(part for part in (port.ip, str(port.host_port or "")) if part) + f":{port.container_port}/{port.protocol}"]
        return flags + (["--network", self.network] if self.network else [])


def through_ssh(options: ContainerOptions, host: str) -> ContainerOptions:
    """For an ssh host: each port published on the host's loopback only, on a port its engine
    picks (ssh forwards this machine's port to it), so that nothing opens on the host's network
    and a port taken there does not matter.

    Raises:
        FireplugError: a UDP port (ssh forwards TCP only).
    """
    if any(port.protocol != "tcp" for port in options.publish):
        raise FireplugError(f"-p .../udp: ssh cannot forward UDP from host '{host}'", hint="publish TCP ports only, or use a host reached over tcp://")
    return replace(options, publish=tuple(Publish(port.container_port, 0, "127.0.0.1") for port in options.publish))


def local_port(port: Publish) -> int:
    """The port this machine listens on for a port published on an ssh host (-p 8888 means 8888)."""
    return port.host_port or port.container_port


def default_shm_size(host_memory: int, memory_limit: int | None) -> int:
    """Half of what the container may use (its --memory, else the host's memory), at most 8 GiB;
    at least docker's own 64 MiB."""
    usable = min(value for value in (host_memory, memory_limit) if value) if host_memory or memory_limit else 0
    return max(64 << 20, min(usable // 2, SHM_CAP_BYTES))


def parse_options(values: Mapping[str, Any]) -> ContainerOptions:
    """``values``: shm_size, memory, cpus, gpus, network (strings, "" = unset) and publish (a list).

    Raises:
        UsageError: a value docker would not accept, in one line naming the option.
    """
    memory = _size("--memory", values.get("memory", ""))
    if memory is not None and memory < MIN_MEMORY_BYTES:
        raise UsageError(f"--memory {values['memory']!r}: the engine needs at least 6m")
    return ContainerOptions(
        shm_size=_size("--shm-size", values.get("shm_size", "")),
        memory=memory,
        nano_cpus=_cpus(values.get("cpus", "")),
        gpus=_gpus(values.get("gpus", "")),
        publish=tuple(_publish(value) for value in values.get("publish", ())),
        network=_network(values.get("network", "")),
    )


def _size(option: str, text: str) -> int | None:
    """A size in bytes, exactly (no float: ``99999999999999999999999g`` must not become inf).

    Raises:
        UsageError: not a size, zero, or more than the engine can hold (a 64-bit number of bytes).
    """
    if not text:
        return None
    found = re.fullmatch(_SIZE_RE, text.strip(), re.IGNORECASE)
    if not found:
        raise UsageError(f"{option} {text!r}: expected a size such as 512m or 2g (units b, k, m, g, t)")
    whole, _, fraction = found.group(1).partition(".")
    unit = _UNITS[found.group(2).lower()]
    size = int(whole) * unit + int(fraction or "0") * unit // 10 ** len(fraction)
    if size <= 0:
        raise UsageError(f"{option} {text!r}: expected a size above zero, such as 512m or 2g")
    if size > MAX_SIZE_BYTES:
        raise UsageError(f"{option} {text!r}: more than the engine can hold (at most {MAX_SIZE_BYTES >> 40}t)")
    return size


def _cpus(text: str) -> int | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0.01 <= value <= 4096:
        raise UsageError(f"--cpus {text!r}: expected a number of CPUs such as 4 or 1.5")
    return int(value * 1e9)


def _gpus(text: str) -> Gpus | None:
    if not text:
        return None
    if text == "all":
        return Gpus(count=-1)
    if text.isdigit() and int(text) > 0:
        return Gpus(count=int(text))
    ids = text.removeprefix('"').removesuffix('"').removeprefix("device=").split(",")
    if text.strip('"').startswith("device=") and all(re.fullmatch(_DEVICE_RE, device) for device in ids):
        return Gpus(device_ids=tuple(ids))
    raise UsageError(f"--gpus {text!r}: expected all, a number, or device=ID[,ID...]")


def _publish(text: str) -> Publish:
    found = re.fullmatch(_PUBLISH_RE, text)
    ports = [int(found.group(name)) for name in ("host", "container") if found and found.group(name)] if found else []
    if not found or not all(0 < port < 65536 for port in ports) or (found.group("ip") and not found.group("host")):
        raise UsageError(f"-p {text!r}: expected [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp] or CONTAINER_PORT, ports 1 to 65535")
    return Publish(int(found.group("container")), int(found.group("host") or 0), found.group("ip") or "", found.group("proto") or "tcp")


def _network(text: str) -> str:
    if text and not re.fullmatch(_NETWORK_RE, text):
        raise UsageError(f"--network {text!r}: expected bridge, host, none or a network's name")
    return text


def check_against_host(options: ContainerOptions, host: str, info: Mapping[str, Any], networks: Sequence[str]) -> None:
    """What the host's engine would refuse only at start, refused now, in one line.

    ``info``: the engine's /info; ``networks``: the names of its networks.

    Raises:
        FireplugError: more CPUs or memory than the host has, GPUs without an NVIDIA runtime, an unknown network.
    """
    cpus = int(info.get("NCPU") or 0)
    if options.nano_cpus is not None and cpus and options.nano_cpus > cpus * 1e9:
        raise FireplugError(f"--cpus {options.nano_cpus / 1e9:g}: host '{host}' has {cpus} CPUs")
    memory = int(info.get("MemTotal") or 0)
    if options.memory is not None and memory and options.memory > memory:
        raise FireplugError(f"--memory {options.memory >> 20} MiB: host '{host}' has {memory >> 20} MiB")
    if options.gpus is not None and not has_gpus(info):
        raise FireplugError(f"--gpus: host '{host}' reports no NVIDIA runtime (docker info: Runtimes)", hint="install the NVIDIA container toolkit there")
    if options.network and options.network not in ("bridge", "host", "none", "default", *networks):
        raise FireplugError(f"--network {options.network}: host '{host}' has no such network (it has: {', '.join(sorted(networks))})")


def has_gpus(info: Mapping[str, Any]) -> bool:
    """Whether the engine reports an NVIDIA runtime (what `docker run --gpus` needs)."""
    runtimes = info.get("Runtimes")
    return isinstance(runtimes, dict) and "nvidia" in runtimes
