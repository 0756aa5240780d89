"""Docker hosts fp can run on, and connecting to their engines.

This version knows one host: ``local``, the engine at ``DOCKER_HOST`` or the default socket.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fireplug.config import Config
from fireplug.engine import DEFAULT_TIMEOUT, Engine
from fireplug.errors import FireplugError

LOCAL = "local"
DEFAULT_LOCAL_URL = "unix:///var/run/docker.sock"
LOCAL_START_HINT = "start it (`sudo systemctl start docker`, or `sudo dockerd &`) or point DOCKER_HOST at a running engine"


@dataclass(frozen=True)
class Host:
    name: str
    url: str
    source: str
    local: bool  # the engine sees this machine's files, so the data folder is bind-mounted as is


def local_host(env: Mapping[str, str]) -> Host:
    url = env.get("DOCKER_HOST") or DEFAULT_LOCAL_URL
    return Host(LOCAL, url, "DOCKER_HOST" if env.get("DOCKER_HOST") else "default socket", local=True)


def resolve(name: str | None, config: Config, env: Mapping[str, str]) -> Host:
    """The host called ``name`` (default: local).

    Raises:
        FireplugError: no host has that name, or it is a remote host this version cannot use.
    """
    if name in (None, LOCAL):
        return local_host(env)
    if name in config.hosts:
        raise FireplugError(
            f"host '{name}' is configured, but this version of fp runs on the local engine only",
            hint="use --host local (remote hosts come with issue 3)",
        )
    raise FireplugError(f"unknown host '{name}' (known hosts: {', '.join([LOCAL, *config.hosts])})")


def connect(host: Host, *, timeout: float = DEFAULT_TIMEOUT) -> Engine:
    """An engine client for ``host``, after checking that the engine answers.

    Raises:
        EngineUnreachable: nothing answers at the host's URL.
    """
    hint = LOCAL_START_HINT if host.local else ""
    engine = Engine(host.name, host.url, timeout=timeout, unreachable_hint=hint)
    engine.negotiate()
    return engine
