"""Where fp keeps its state on this machine (``$XDG_STATE_HOME/fireplug``), how it writes a file
there (whole or not at all), and the one fact every run leaves: the host a project last ran on.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path

HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def state_home(env: Mapping[str, str], home: Path) -> Path:
    return Path(env.get("XDG_STATE_HOME") or home / ".local" / "state") / "fireplug"


def save_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a temporary name of this process's own, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        partial.write_bytes(data)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def last_host_path(state: Path, project_key: str) -> Path:
    return state / "sync" / project_key / "last-host"


def remember_host(state: Path, project_key: str, host: str) -> None:
    """Best effort: without it, a later --sync-out-only just needs --host."""
    with contextlib.suppress(OSError):
        save_bytes(last_host_path(state, project_key), f"{host}\n".encode())


def last_host(state: Path, project_key: str) -> str | None:
    try:
        name = last_host_path(state, project_key).read_text().strip()
    except (OSError, ValueError):
        return None
    return name if HOST_NAME.fullmatch(name) else None
