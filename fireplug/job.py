"""One `fp COMMAND`: scan the project, make sure its image exists on the host, run the command.

Everything about the local process (folder, environment, user, terminals) comes in as a
``LocalSide`` value, so this module reads no globals.
"""

from __future__ import annotations

import os
import posixpath
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from fireplug import console, hosts
from fireplug.build import (
    GENERATED_DOCKERFILE,
    LABEL,
    Recipe,
    base_files,
    base_image_tag,
    ensure_base,
    ensure_project_image,
    generated_recipe,
    own_recipe,
    scan_rules,
)
from fireplug.config import Config
from fireplug.context import Context, human_bytes
from fireplug.errors import UsageError
from fireplug.run import ContainerSpec, Mount, Stdio, run_container
from fireplug.scancache import cache_dir, load_context

COMMAND_LABEL_LIMIT = 512


@dataclass(frozen=True)
class RunRequest:
    command: tuple[str, ...]
    env: tuple[str, ...] = ()
    host: str | None = None
    dry_run: bool = False
    verbose: bool = False


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


def run(config: Config, request: RunRequest, local: LocalSide) -> int:
    """Build as needed and run ``request.command``; the command's exit status.

    Raises:
        FireplugError: any failure of fp itself (engine, build, configuration).
    """
    started = time.perf_counter()
    host = hosts.resolve(request.host, config, local.environ)
    spec = container_spec(config, "", request, local, local_engine=host.local)  # usage errors before any work
    own = own_recipe(config)
    context = scan(config, local, own)
    if request.verbose:
        how = "unchanged files known from the last scan" if context.from_record else "scanned"
        console.detail(f"context: {context.file_count} files, {human_bytes(context.total_bytes)}, hash {context.digest[:12]}, {how} ({_ms(started)})")
    engine = hosts.connect(host)
    base = ensure_base(engine, config.build.base_image, verbose=request.verbose) if own is None or own.needs_base else None
    chosen = own or generated_recipe(config, base.tag if base else "")
    image = ensure_project_image(engine, config, context, chosen, base, verbose=request.verbose)
    spec = replace(spec, image=image.tag)
    ensure_data_folder(config.root / config.project.data)
    if request.verbose:
        action = "built" if image.built else "up to date"
        console.detail(f"image {image.tag} {action} on host '{host.name}'; starting {spec.name} ({_ms(started)})")
    return run_container(engine, spec, local.stdio)


def ensure_data_folder(folder: Path) -> None:
    """Create a missing data folder here, so that it is the user's and not made by the engine as root."""
    if not folder.is_dir():
        folder.mkdir(parents=True)
        console.note(f"created the data folder {folder} (mounted into the container)")


def scan(config: Config, local: LocalSide, own: Recipe | None, *, full: bool = False) -> Context:
    """The project's context for ``own`` Dockerfile (None: fp generates one)."""
    rules = scan_rules(config, own.name if own else GENERATED_DOCKERFILE, generated=own is None)
    return load_context(config.root, rules, cache_dir(local.environ, local.home), full=full)


def container_spec(config: Config, image: str, request: RunRequest, local: LocalSide, *, local_engine: bool) -> ContainerSpec:
    """What the container looks like: same relative folder, data mounted, asked-for env only.

    Raises:
        UsageError: an ``-e NAME`` names a variable that is not set locally.
    """
    project_in_container = config.container_root()
    user = container_user(config.run.user, local.uid, local.gid, local_engine=local_engine)
    env = [("PYTHONUNBUFFERED", "1")]
    if user not in ("", "0", "0:0"):
        env.append(("HOME", "/tmp"))  # an arbitrary uid has no home in the image
    env += resolve_env([*config.run.env, *request.env], local.environ)
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(3).hex()}"
    return ContainerSpec(
        image=image,
        command=request.command,
        workdir=container_workdir(project_in_container, config.root, local.cwd),
        name=f"fp-{config.project.name}-{run_id}",
        env=tuple(env),
        mounts=(Mount(str(config.root / config.project.data), posixpath.join(project_in_container, config.project.data)),),
        labels={
            f"{LABEL}.kind": "run",
            f"{LABEL}.project": config.project.name,
            f"{LABEL}.run": run_id,
            f"{LABEL}.command": shlex.join(request.command)[:COMMAND_LABEL_LIMIT],
        },
        user=user,
        tty=local.stdin_is_terminal and local.stdout_is_terminal,
        stdin=local.stdio.stdin is not None,
    )


def container_workdir(project_in_container: str, root: Path, cwd: Path) -> str:
    """The container folder matching the local ``cwd`` (the project root when cwd is outside it)."""
    try:
        relative = cwd.resolve().relative_to(root).as_posix()
    except ValueError:
        relative = "."
    return posixpath.normpath(posixpath.join(project_in_container, relative))


def container_user(setting: str, uid: int, gid: int, *, local_engine: bool) -> str:
    """The container's user: by default the local user on the local engine, so data stays theirs."""
    if setting == "auto":
        return f"{uid}:{gid}" if local_engine and uid != 0 else ""
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


def dry_run_report(config: Config, request: RunRequest, local: LocalSide) -> list[str]:
    """What a run would send and do, for `fp --dry-run`; contacts no engine."""
    own = own_recipe(config)
    context = scan(config, local, own, full=True)
    base_tag = base_image_tag(config.build.base_image, base_files())
    spec = container_spec(config, "(one-time image)", request, local, local_engine=True)
    lines = [
        "fp dry run: nothing is built, sent or run.",
        f"project   {config.project.name} at {config.root}",
        f"context   {context.file_count} files, {human_bytes(context.total_bytes)} (content hash {context.digest[:16]})",
    ]
    lines += [f"  largest {human_bytes(entry.size):>9}  {entry.path}" for entry in context.largest()]
    lines += [f"warning   {warning}" for warning in context.size_warnings()]
    lines.append(f"left out  {len(context.exclusions)} paths:")
    for exclusion in context.exclusions:
        shown = exclusion.path + ("/" if exclusion.is_dir else "")
        lines.append(f"  {shown:<40} {exclusion.reason}")
    chosen = own or generated_recipe(config, base_tag)
    source = f"the project's {own.name}" if own else f"generated, on fp's base image {base_tag}"
    lines.append(f"recipe    {source}:")
    lines += [f"  {line}" for line in chosen.text.splitlines()]
    mounts = ", ".join(f"{mount.source} -> {mount.target}" for mount in spec.mounts)
    lines += [
        f"command   {shlex.join(request.command)}",
        f"  in {spec.workdir} as {spec.user or 'the image user (root)'}; data: {mounts}",
        f"  environment: {', '.join(name for name, _ in spec.env)}",
    ]
    return lines


def _ms(started: float) -> str:
    return f"{(time.perf_counter() - started) * 1000:.0f} ms"
