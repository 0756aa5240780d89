"""Where a host's shell is and how fp reaches it: ssh targets and machine-wide ssh settings.

Plain values, read by the inventory and the configuration on every run; ``ssh.py`` (imported
only when a host is reached over ssh) makes the connections.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fireplug.errors import FireplugError

DEFAULT_CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class SshTarget:
    """Where ssh connects: a host name or ssh-config alias, and what overrides the config."""

    address: str
    user: str = ""
    port: int = 0  # 0: the ssh config (or 22) decides
    key: str = ""

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{user}{self.address}{port}"


@dataclass(frozen=True)
class SshSettings:
    """Machine-wide ssh choices, from the environment (passed in, not read here)."""

    config_file: str = ""  # FP_SSH_CONFIG: an ssh config used instead of ~/.ssh/config
    control_dir: str = ""
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT

    @classmethod
    def from_env(cls, env: Mapping[str, str], uid: int, *, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> SshSettings:
        runtime = env.get("XDG_RUNTIME_DIR")
        control = Path(runtime) / "fireplug-ssh" if runtime else Path("/tmp") / f"fireplug-ssh-{uid}"
        return cls(env.get("FP_SSH_CONFIG", ""), str(control), connect_timeout)


def parse_ssh_url(url: str, *, key: str = "") -> SshTarget:
    """``ssh://[user@]host[:port]`` as a target.

    Raises:
        FireplugError: the URL is not a usable ssh URL.
    """
    parsed = urllib.parse.urlsplit(url)
    try:
        port = parsed.port or 0
    except ValueError as e:
        raise FireplugError(f"bad port in {url!r}") from e
    if parsed.scheme != "ssh" or not parsed.hostname:
        raise FireplugError(f"{url!r} is not an ssh://[user@]host[:port] URL")
    return SshTarget(parsed.hostname, urllib.parse.unquote(parsed.username or ""), port, key)
