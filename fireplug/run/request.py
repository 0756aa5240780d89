"""The run request (what `fp CMD` asks for) and the container spec it makes: pure values.

Everything about the local process (folder, environment, user, terminals) comes in as a
``LocalSide`` value and the run's id, the data folder's place and its owner come in as
inputs, so nothing here reads a global, draws a random number or asks a host.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fireplug.errors import ProjectError, UsageError
from fireplug.run.options import ContainerOptions, parse_options
from fireplug.run.spec import ContainerSpec, Mount
from fireplug.support import labels
from fireplug.support.locks import this_process
from fireplug.support.secrets import display

if TYPE_CHECKING:
    from fireplug.config import Config
    from fireplug.invocation import LocalSide

COMMAND_LABEL_LIMIT = 512


@dataclass(frozen=True)
class Steps:
    """Which of build, sync in, run and sync out a request asks for (the original tool's flags)."""

    build: bool = True
    sync_in: bool = True
    run: bool = True
    sync_out: bool = True

    @classmethod
    def from_flags(cls, *, no_build: bool, no_sync: bool, sync_in_only: bool, sync_out_only: bool, no_run: bool) -> Steps:
        """Raises: UsageError: flags that contradict each other."""
        if sum([sync_in_only, sync_out_only, no_run]) > 1:
            raise UsageError("--sync-in-only, --sync-out-only and --no-run exclude each other")
        if no_sync and (sync_in_only or sync_out_only):
            raise UsageError("--no-sync contradicts --sync-in-only and --sync-out-only")
        if sync_in_only:
            return cls(build=False, sync_in=True, run=False, sync_out=False)
        if sync_out_only:
            return cls(build=False, sync_in=False, run=False, sync_out=True)
        return cls(build=not no_build, sync_in=not no_sync, run=not no_run, sync_out=not no_sync and not no_run)


@dataclass(frozen=True)
class RunRequest:
    command: tuple[str, ...]
    env: tuple[str, ...] = ()
    host: str | None = None
    dry_run: bool = False
    verbose: bool = False
    steps: Steps = Steps()
    full_sync: bool = False  # compare every file's content on both sides, whatever the metadata says
    accept_deletions: bool = False  # repeat a mass deletion on the host here too
    container: Mapping[str, Any] = field(default_factory=dict)  # container options from the command line (see options.py)
    yes: bool = False  # ship a folder without fireplug.toml however big its code is
    detach: bool = False  # start the command and return (no sync out: fp pull brings the results)


def in_image_workdir(spec: ContainerSpec, config: Config, local: LocalSide, image_config: Mapping[str, Any]) -> ContainerSpec:
    """With the project's own Dockerfile, the project sits where its WORKDIR says (unless
    project.workdir is set): the command runs there and the data folder is mounted under it."""
    workdir = str(image_config.get("WorkingDir") or "")
    if not workdir.startswith("/"):
        return spec
    return rooted(spec, config, local, workdir)


def rooted(spec: ContainerSpec, config: Config, local: LocalSide, project_in_container: str) -> ContainerSpec:
    """``spec`` with the project at ``project_in_container``: its working folder and data mount."""
    data = Mount(spec.mounts[0].source, posixpath.join(project_in_container, config.project.data))
    return replace(spec, workdir=container_workdir(project_in_container, config.root, local.cwd), mounts=(data, *spec.mounts[1:]))


@dataclass(frozen=True)
class Placement:
    """What the place of a run decides about its container: where the data folder is as its
    engine mounts it, and who should own what the command writes there (None: the image's user)."""

    data_source: str
    owner: tuple[int, int] | None = None


def container_spec(config: Config, request: RunRequest, local: LocalSide, placement: Placement, run_id: str, *, image: str = "") -> ContainerSpec:
    """What the container looks like: same relative folder, data mounted, asked-for env only.

    Raises:
        UsageError: an ``-e NAME`` names a variable that is not set locally.
    """
    project_in_container = config.container_root()
    _refuse_what_json_cannot_carry(config, request)
    user = container_user(config.run.user, placement.owner)
    env = [("PYTHONUNBUFFERED", "1")]
    if user not in ("", "0", "0:0"):
        env.append(("HOME", "/tmp"))  # an arbitrary uid has no home in the image
    env += resolve_env([*config.run.env, *request.env], local.environ)
    return ContainerSpec(
        image=image,
        command=request.command,
        workdir=container_workdir(project_in_container, config.root, local.cwd),
        name=f"fp-{config.project.name}-{run_id}",
        env=tuple(env),
        mounts=(Mount(placement.data_source, posixpath.join(project_in_container, config.project.data)),),
        labels={
            labels.KIND: "run",
            labels.PROJECT: config.project.name,
            labels.PROJECT_KEY: config.project.key,
            labels.RUN: run_id,
            labels.OWNER: this_process(),
            labels.COMMAND: display(request.command)[:COMMAND_LABEL_LIMIT],  # anyone with Docker access there reads labels
        },
        user=user,
        tty=local.stdin_is_terminal and local.stdout_is_terminal,
        stdin=local.stdio.stdin is not None,
        options=container_options(config, request),
    )


def container_options(config: Config, request: RunRequest) -> ContainerOptions:
    """[run] settings, with the command line's flags on top.

    Raises:
        UsageError: a value docker would not accept.
    """
    return parse_options({**config.run.container, **request.container})


def _refuse_what_json_cannot_carry(config: Config, request: RunRequest) -> None:
    """The engine API is JSON (UTF-8): bytes that are not UTF-8 would arrive as U+FFFD, or as
    another path, so they are refused rather than passed on changed.

    Raises:
        UsageError: a command word or -e value is not UTF-8.
        ProjectError: the project's path is not UTF-8.
    """
    for position, word in enumerate(request.command):
        if not _is_utf8(word):
            raise UsageError(f"word {position + 1} of the command ({word!r}) is not valid UTF-8, which the Docker API cannot pass on unchanged")
    for entry in request.env:
        if not _is_utf8(entry):
            raise UsageError(f"-e {entry!r} is not valid UTF-8, which the Docker API cannot pass on unchanged")
    if not _is_utf8(str(config.root)):
        raise ProjectError(f"the project folder {str(config.root)!r} is not named in valid UTF-8, which the Docker engine cannot mount", hint="rename it")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # surrogate escapes: bytes the OS gave that are not UTF-8
        return False
    return True


def container_workdir(project_in_container: str, root: Path, cwd: Path) -> str:
    """The container folder matching the local ``cwd`` (the project root when cwd is outside it)."""
    try:
        relative = cwd.resolve().relative_to(root).as_posix()
    except ValueError:
        relative = "."
    return posixpath.normpath(posixpath.join(project_in_container, relative))


def container_user(setting: str, owner: tuple[int, int] | None) -> str:
    """The container's user: by default ``owner``, who then owns what it writes (root when None or 0)."""
    if setting == "auto":
        return f"{owner[0]}:{owner[1]}" if owner and owner[0] != 0 else ""
    if setting == "root":
        return "0:0"
    return setting


def resolve_env(entries: list[str], environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """``NAME=value`` entries as given, ``NAME`` entries with their local value.

    Raises:
        UsageError: an entry is malformed or names a variable that is not set locally.
    """
    resolved = []
    for entry in entries:
        name, has_value, value = entry.partition("=")
        if not name or any(character.isspace() for character in name):
            raise UsageError(f"-e {entry!r}: expected NAME or NAME=value")
        if not has_value:
            if name not in environ:
                raise UsageError(f"-e {name}: {name} is not set in your environment", hint=f"set it, or pass -e {name}=VALUE")
            value = environ[name]
        resolved.append((name, value))
    return resolved
