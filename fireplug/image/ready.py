"""The image a run needs on its engine: the project's context scanned, fp's base and
dependency layer below it, the one-time image built as needed (or the newest one with
--no-build), and the command checked to be in it, all before any data moves.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from fireplug.config import PROJECT_FILE, Config
from fireplug.errors import ConfigError, ContextChanged
from fireplug.image.base import base_image_tag, ensure_base, record_file, remembered_digest
from fireplug.image.build import (
    GENERATED_DOCKERFILE,
    Image,
    Recipe,
    ensure_deps_image,
    ensure_project_image,
    generated_recipe,
    image_hash,
    latest_project_image,
    own_recipe,
    project_image_tag,
    scan_rules,
)
from fireplug.image.context import Context, ScanLimit
from fireplug.image.deps import Dependencies, find_dependencies, layer_tag
from fireplug.image.lookup import ensure_command
from fireplug.image.scancache import cache_dir, load_context
from fireplug.image.scancache import forget as forget_scan
from fireplug.support import events, labels

if TYPE_CHECKING:
    from fireplug.hosts.engine import Engine
    from fireplug.invocation import Invocation, LocalSide
    from fireplug.run.request import RunRequest
    from fireplug.run.spec import ContainerSpec


def ready_image(engine: Engine, invocation: Invocation, request: RunRequest, own: Recipe | None, context: Context | None, spec: ContainerSpec) -> Image | None:
    """The image to run, and the command checked to be in it: all before any data moves."""
    local = invocation.local
    cache = cache_dir(local.environ, local.home)
    try:
        image = project_image(engine, invocation, request, own, context)
    except ContextChanged:
        forget_scan(invocation.config.root, cache)  # a digest it trusted was wrong, or the file changed
        raise
    if image is not None and request.steps.run:
        apart_from = invocation.config.container_root() if image.same_commands_as else ""
        _command_in_image(engine, image.tag, image.same_commands_as or image.id, request.command[0], spec, local, apart_from=apart_from)
    return image


def check_command(engine: Engine, spec: ContainerSpec, local: LocalSide, program: str) -> None:
    """``program`` is in the image of ``spec`` (its PATH), as ``ready_image`` checks the command's.

    Raises:
        CommandNotFound: it is not.
    """
    _command_in_image(engine, spec.image, engine.image_id(spec.image) or "", program, spec, local)


def _command_in_image(engine: Engine, tag: str, image_id: str, program: str, spec: ContainerSpec, local: LocalSide, *, apart_from: str = "") -> None:
    """Raises: CommandNotFound: ``program`` is not in the image's PATH (found names are remembered per image)."""
    lookup_labels = {**spec.labels, labels.KIND: "lookup"}
    remembered = cache_dir(local.environ, local.home).parent / "commands"
    ensure_command(engine, tag, image_id, program, lookup_labels, remembered, apart_from=apart_from)


def project_image(engine: Engine, invocation: Invocation, request: RunRequest, own: Recipe | None, context: Context | None) -> Image | None:
    """The image to run: built as needed, the newest one with --no-build, none when nothing runs."""
    config, locks = invocation.config, invocation.locks
    if context is not None:
        record = record_file(invocation.local.environ, invocation.local.home)
        base = ensure_base(engine, config.build.base_image, locks=locks, record=record) if own is None or own.needs_base else None
        deps = layer_dependencies(config, own)
        if deps is not None and base is not None:
            base = ensure_deps_image(engine, deps, base, locks=locks)
        chosen = own or generated_recipe(config, base.tag if base else "")
        image = ensure_project_image(engine, config, context, chosen, base, locks=locks)
        if image.built:
            _say_which_recipe(config, own, deps)
        return image
    if not request.steps.run:
        return None
    latest = latest_project_image(engine, config.project.key)
    if latest.tag != current_image_tag(engine, config, invocation.local):
        events.warn(f"--no-build: the project changed since {latest.tag} was built; running that image anyway (without --no-build, fp rebuilds)")
    return latest


def layer_dependencies(config: Config, own: Recipe | None) -> Dependencies | None:
    """The dependencies fp installs in its layer: none for a project Dockerfile that does not
    build on fp's base (its requirements are its own business, even unreadable ones).

    Raises:
        ConfigError: see find_dependencies.
    """
    if own is not None and not own.needs_base:
        return None
    return find_dependencies(config)


def _say_which_recipe(config: Config, own: Recipe | None, deps: Dependencies | None) -> None:
    """When the project's image was built: what became of its dependencies."""
    for note in deps.notes if deps else ():
        events.note(note)
    if own is not None and deps is not None:
        events.note(f"the project's {own.name} builds FROM ${{FP_BASE}}: fp's dependency layer, with {deps.source} installed")
    elif own is not None and (declared := declared_dependencies(config)):
        events.note(f"the project's {own.name} does not build FROM ${{FP_BASE}}, so fp leaves {declared} to it")


def declared_dependencies(config: Config) -> str:
    """What the project declares as dependencies, in words, without reading it ("" for nothing)."""
    with contextlib.suppress(ConfigError):
        found = find_dependencies(config)
        return found.source if found else ""
    return config.build.requirements or "its requirements"


def current_image_tag(engine: Engine, config: Config, local: LocalSide) -> str:
    """The tag a build of the project as it is now would have (its scan is cached: cheap)."""
    own = own_recipe(config)
    base_tag = base_image_tag(config.build.base_image, remembered_digest(record_file(local.environ, local.home)))
    base_id = (engine.image_id(base_tag) or "") if own is None or own.needs_base else ""
    deps = layer_dependencies(config, own)
    if deps is not None and base_id:
        base_tag = layer_tag(deps, base_id)
        base_id = engine.image_id(base_tag) or ""
    recipe = own or generated_recipe(config, base_tag)
    return project_image_tag(config.project.key, image_hash(scan(config, local, own), recipe, base_id))


def scan(config: Config, local: LocalSide, own: Recipe | None, *, full: bool = False, limit: ScanLimit | None = None) -> Context:
    """The project's context for ``own`` Dockerfile (None: fp generates one); see ``project_limit``."""
    rules = scan_rules(config, own.name if own else GENERATED_DOCKERFILE, generated=own is None)
    return load_context(config.root, rules, cache_dir(local.environ, local.home), full=full, home=local.home, limit=limit)


def project_limit(config: Config) -> ScanLimit | None:
    """A folder without fireplug.toml is refused when its code passes the limit (it is likely
    several projects, or a home folder); with one, it is the project, whatever its size."""
    return None if (config.root / PROJECT_FILE).is_file() else ScanLimit()
