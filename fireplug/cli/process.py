"""This process's situation, read once: folder, environment, user, terminals; and the command's configuration."""

from __future__ import annotations

import os
from pathlib import Path

from fireplug.config import discover
from fireplug.hosts.address import DEFAULT_CONNECT_TIMEOUT
from fireplug.invocation import Invocation, LocalSide
from fireplug.run.spec import Stdio


def local_side() -> LocalSide:
    stdin = _open_fd(0)
    if stdin is not None and os.isatty(stdin) and not in_foreground(stdin):
        stdin = None  # a background job (`fp cmd &`) reading the terminal would be stopped (SIGTTIN)
    return LocalSide(
        cwd=Path(os.getcwd()),
        environ=dict(os.environ),
        home=Path.home(),
        uid=os.getuid(),
        gid=os.getgid(),
        stdio=Stdio(stdin=stdin, stdout=1, stderr=2),
        stdin_is_terminal=stdin is not None and os.isatty(stdin),
        stdout_is_terminal=os.isatty(1),
    )


def in_foreground(terminal_fd: int) -> bool:
    """Whether this process is in the foreground process group of the terminal ``terminal_fd``."""
    try:
        return os.tcgetpgrp(terminal_fd) == os.getpgrp()
    except OSError:
        return False


def _open_fd(fd: int) -> int | None:
    try:
        os.fstat(fd)
    except OSError:
        return None
    return fd


def load_invocation(*, project_optional: bool = False, sync: str | None = None, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> Invocation:
    """This command's local side and configuration (``sync``: the --sync override)."""
    local = local_side()
    config = discover(local.cwd, local.environ, local.home, sync_override(sync), project_optional=project_optional)
    return Invocation(local, config, connect_timeout=connect_timeout)


def sync_override(given: str | None) -> dict[str, dict[str, str]]:
    """``--sync MODE`` or ``--sync s3://bucket/prefix`` as a [sync] override."""
    if not given:
        return {}
    if given.startswith("s3://"):
        return {"sync": {"mode": "s3", "s3": given}}
    return {"sync": {"mode": given}}
