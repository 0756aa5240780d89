"""What a run looks like: the container spec, the engine's create body for it, and the
equivalent `docker run` command line (what -v shows)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from fireplug.run.options import ContainerOptions


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class ContainerSpec:
    image: str
    command: tuple[str, ...]
    workdir: str
    name: str
    env: tuple[tuple[str, str], ...] = ()
    mounts: tuple[Mount, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    user: str = ""
    tty: bool = False
    stdin: bool = False
    options: ContainerOptions = field(default_factory=ContainerOptions)
    host_memory: int = 0  # the engine's MemTotal: the default /dev/shm size follows it


@dataclass(frozen=True)
class Stdio:
    """File descriptors fp's own process uses for the command's standard streams."""

    stdin: int | None = 0
    stdout: int = 1
    stderr: int = 2


def container_config(spec: ContainerSpec) -> dict[str, Any]:
    """The engine's create-container body for ``spec``; under an init process, never auto-removed."""
    return {
        "Image": spec.image,
        "Cmd": list(spec.command),
        "WorkingDir": spec.workdir,
        "Env": [f"{name}={value}" for name, value in spec.env],
        "Labels": dict(spec.labels),
        "User": spec.user,
        "Tty": spec.tty,
        "OpenStdin": spec.stdin,
        "StdinOnce": spec.stdin,
        "AttachStdin": spec.stdin,
        "AttachStdout": True,
        "AttachStderr": True,
        "ExposedPorts": spec.options.exposed_ports(),
        "HostConfig": {
            "Init": True,
            "AutoRemove": False,
            # Mounts, not Binds: a path may hold ':' or ',' (Binds would split it there).
            "Mounts": [{"Type": "bind", "Source": mount.source, "Target": mount.target, "ReadOnly": mount.read_only} for mount in spec.mounts],
            **spec.options.host_config(spec.host_memory),
        },
    }


def docker_run_argv(spec: ContainerSpec) -> list[str]:
    """The `docker run` command equivalent to ``spec`` (what verbose mode shows, redacted)."""
    argv = ["docker", "run", "--rm", "--init", "--name", spec.name, "-w", spec.workdir]
    argv += ["-i"] * spec.stdin + ["-t"] * spec.tty + (["-u", spec.user] if spec.user else [])
    for name, value in spec.env:
        argv += ["-e", f"{name}={value}"]
    for mount in spec.mounts:
        argv += ["-v", f"{mount.source}:{mount.target}{':ro' if mount.read_only else ''}"]
    options = replace(spec.options, shm_size=spec.options.shm_bytes(spec.host_memory))
    return [*argv, *options.run_flags(), spec.image, *spec.command]
