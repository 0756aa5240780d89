"""Images on a host: fp's base image, the project's dependency layer and its one-time image,
each tagged by a hash.

The base image is Dockerfile.base built FROM ``build.base_image`` with the fireplug package
bundled; its tag hashes exactly that input. The dependency layer (deps.py says what it holds)
installs the project's packages on the base. The one-time image layers the project's code on
the layer, or on the base; its tag hashes the shipped files, the Dockerfile text and the ID of
the image below, so an unchanged project is never rebuilt and a changed byte always is. fp's
generated recipe is assembled (``_assemble``) rather than built; a project's own Dockerfile is
built by the engine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from fireplug import __version__
from fireplug.config import Config
from fireplug.errors import BuildError, ConfigError, FireplugError
from fireplug.hosts.engine import Engine, frames
from fireplug.image.context import Context, ScanRules, tar_stream
from fireplug.image.deps import DEPS_PREFIX, STAGING, VENV, Dependencies, Redactor, install_script, layer_tag, stdin_settings
from fireplug.image.lookup import search_path
from fireplug.support import events, labels
from fireplug.support.locks import build_lock_path, exclusive
from fireplug.support.signals import made_uninterrupted
from fireplug.support.units import human_bytes

GENERATED_DOCKERFILE = ".fireplug.Dockerfile"
BASE_ARG = "FP_BASE"  # build argument naming the base image, for a project's own Dockerfile
OUTPUT_TAIL_LINES = 25


@dataclass(frozen=True)
class Image:
    tag: str
    id: str
    built: bool
    same_commands_as: str = ""  # an image whose PATH holds the same programs (what fp's generated recipe builds FROM)


@dataclass(frozen=True)
class Recipe:
    """How the one-time image is built: the Dockerfile's name and text, and whether fp wrote it."""

    name: str
    text: str
    generated: bool

    @property
    def needs_base(self) -> bool:
        return self.generated or BASE_ARG in self.text


def scan_rules(config: Config, recipe_name: str, generated: bool) -> ScanRules:
    """What decides the context: data folder and .dockerignore.

    A project's own Dockerfile is always shipped, as the Docker CLI does it: an exception rule
    after the user's (the engine itself drops it from COPY when .dockerignore names it).
    """
    ignore = config.root / ".dockerignore"
    text = ignore.read_text(encoding="utf-8", errors="replace") if ignore.is_file() else ""
    return ScanRules(
        data_folder=config.project.data,
        ignore_text=text if generated else f"{text}\n!{recipe_name}\n",
        ship_dockerignore=not generated,
        allow=config.build.allow,
    )


def project_dockerfile(config: Config) -> str:
    """The project's own Dockerfile (relative path), or "" when fp generates one."""
    if not config.build.use_dockerfile:
        return ""
    if config.build.dockerfile:
        return config.build.dockerfile
    return "Dockerfile" if (config.root / "Dockerfile").is_file() else ""


def own_recipe(config: Config) -> Recipe | None:
    """The project's own Dockerfile, used as is, or None."""
    own = project_dockerfile(config)
    if not own:
        return None
    try:
        text = (config.root / own).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the project's Dockerfile {own}: {getattr(e, 'strerror', None) or e}", key="build.dockerfile") from e
    return Recipe(own, text, generated=False)


def generated_recipe(config: Config, base_tag: str) -> Recipe:
    """FROM fp's base, COPY the context to the project's folder in the container, WORKDIR there,
    one LABEL line: the image's identity (its text is hashed into the tag) and what ``_assemble``
    makes without a build.
    """
    target = config.container_root()
    label_line = " ".join(f"{key}={json.dumps(value)}" for key, value in project_labels(config, base_tag).items())
    text = f"FROM {base_tag}\nCOPY {json.dumps(['.', target + '/'])}\nWORKDIR {json.dumps(target)}\nLABEL {label_line}\n"
    return Recipe(GENERATED_DOCKERFILE, text, generated=True)


def project_labels(config: Config, base_tag: str) -> dict[str, str]:
    """The one-time image's labels; built on a dependency layer, its name (`fp gc` keeps the layers in use)."""
    found = {
        labels.KIND: "project",
        labels.PROJECT: config.project.name,
        labels.PROJECT_KEY: config.project.key,
        labels.VERSION: __version__,
    }
    return {**found, labels.DEPS: base_tag} if base_tag.startswith(DEPS_PREFIX) else found


def image_hash(context: Context, recipe: Recipe, base_id: str) -> str:
    """The one-time image's identity: shipped files, Dockerfile, base image ID."""
    digest = hashlib.sha256(b"fireplug-image-1")
    for part in (context.digest, recipe.name, recipe.text, base_id):
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()


def project_image_tag(project: str, digest: str) -> str:
    return f"fp-{project}:{digest[:16]}"


def ensure_project_image(engine: Engine, config: Config, context: Context, recipe: Recipe, base: Image | None, *, locks: Path | None = None) -> Image:
    """The project's one-time image on ``engine``, built only when its tag is absent; with
    ``locks`` (a folder), by one fp of this machine at a time: the others wait and use it.

    Raises:
        BuildError, BaseImageMissing, ContextChanged, EngineError, EngineUnreachable.
    """
    digest = image_hash(context, recipe, base.id if base else "")
    tag = project_image_tag(config.project.key, digest)
    parent = base.id if base and recipe.generated else ""  # (the generated recipe only copies the project into its folder)
    existing = engine.image_id(tag)
    if existing:
        return Image(tag, existing, built=False, same_commands_as=parent)
    with one_builder(locks, engine, tag):
        existing = engine.image_id(tag)  # built meanwhile by the fp we waited for
        if existing:
            return Image(tag, existing, built=False, same_commands_as=parent)
        return replace(_build_project_image(engine, config, context, recipe, base, tag), same_commands_as=parent)


def _build_project_image(engine: Engine, config: Config, context: Context, recipe: Recipe, base: Image | None, tag: str) -> Image:
    if context.secrets:
        others = f" and {len(context.secrets) - 1} more" if len(context.secrets) > 1 else ""
        events.note(
            f"kept secret-looking {context.secrets[0]}{others} out of the image; fp never ships them "
            "(`fp --dry-run` lists them; naming them in .dockerignore silences this)"
        )
    for warning in context.size_warnings():
        events.warn(f"{warning}; add large or generated folders to .dockerignore (`fp --dry-run` shows the largest files)")
    recipe_name = "" if recipe.generated else f" from the project's {recipe.name} (build.dockerfile = false ignores it)"
    kept_out = f"; {len(context.secrets)} kept out as secrets" if context.secrets else ""
    title = f"building image {tag}{recipe_name} on host '{engine.host}' ({context.file_count} files, {human_bytes(context.total_bytes)}{kept_out})"
    if recipe.generated:
        if base is None:
            raise BuildError(engine.host, tag, "fp's generated recipe builds on fp's base image, and there is none", ())
        return Image(tag, _assemble(engine, config, context, base, tag, title), built=True)
    image_labels = project_labels(config, base.tag if base else "")
    buildargs = {BASE_ARG: base.tag} if base else {}
    image_id = build_image(engine, tar_stream(context), tag=tag, dockerfile=recipe.name, buildargs=buildargs, image_labels=image_labels, title=title)
    return Image(tag, image_id, built=True)


def _assemble(engine: Engine, config: Config, context: Context, base: Image, tag: str, title: str) -> str:
    """What the generated recipe describes, made without a Dockerfile build: the context unpacked
    at the project's folder in a created (never started) container of ``base``, committed with
    that folder as working directory and fp's labels; the image's id.

    The same files, folder, configuration and labels as the recipe's build (its text stays the
    image's identity; tests compare the two), in one step where the classic builder takes three
    (COPY, WORKDIR, LABEL: each a container and a commit), ~150 ms of every code change's run.

    Raises:
        ContextChanged: a file changed since the scan (nothing is kept).
        EngineError, EngineUnreachable.
    """
    import uuid

    root = config.container_root()
    repository, _, version = tag.rpartition(":")
    image_config = assembled_config(engine.image_config(base.id), root, project_labels(config, base.tag))
    with events.steps(title, label=engine.host) as progress:
        create = {"Image": base.id, "Labels": {labels.KIND: "assembly"}}
        container = made_uninterrupted(lambda: engine.create_container(create, f"fp-assembly-{uuid.uuid4().hex[:12]}"), engine.remove_container)
        try:
            progress.update(f"copying the project's files to {root}", milestone=True)
            engine.put_archive(container, "/", tar_stream(context, prefix=root.strip("/")))
            progress.update(f"keeping them as image {tag}", milestone=True)
            return engine.commit(container, repository, image_config, f"fp: the project's files in {root}", tag=version)
        finally:
            with contextlib.suppress(FireplugError):  # the failure or interruption is what to report
                engine.remove_container(container)


def assembled_config(base_config: Mapping[str, Any], root: str, image_labels: Mapping[str, str]) -> dict[str, Any]:
    """An image's configuration as a Dockerfile ``FROM`` the base, ``WORKDIR root`` and ``LABEL``
    would leave it: the base's, minus what belongs to one container (and ONBUILD triggers,
    which fp's own base images never hold)."""
    kept = {key: value for key, value in base_config.items() if key not in ("Hostname", "Domainname", "Image", "OnBuild")}
    return {**kept, "WorkingDir": root, "Labels": {**(base_config.get("Labels") or {}), **image_labels}}


@contextlib.contextmanager
def one_builder(locks: Path | None, engine: Engine, tag: str) -> Iterator[None]:
    """The build lock of (host, tag) when fp can keep locks; without one, builds may overlap."""

    def waiting(holder: str) -> None:
        events.note(f"waiting for {holder}, which is building {tag} on host '{engine.host}'")

    with contextlib.ExitStack() as stack:
        if locks is not None:
            with contextlib.suppress(OSError):
                stack.enter_context(exclusive(build_lock_path(locks, engine.host, tag), waiting))
        yield


def build_image(
    engine: Engine,
    chunks: Iterator[bytes],
    *,
    tag: str,
    dockerfile: str,
    buildargs: Mapping[str, str],
    image_labels: Mapping[str, str],
    title: str,
    nocache: bool = False,
) -> str:
    tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
    image_id = ""
    with events.steps(title, label=engine.host) as progress:
        for message in engine.build(chunks, tag=tag, dockerfile=dockerfile, buildargs=buildargs, labels=image_labels, nocache=nocache):
            if "error" in message:
                raise BuildError(engine.host, tag, str(message["error"]).strip(), tuple(tail))
            image_id = message.get("aux", {}).get("ID", image_id)
            for line in str(message.get("stream", "")).splitlines():
                if line.strip():
                    tail.append(line)
                    progress.update(line, milestone=line.startswith("Step "))
    image_id = image_id or engine.image_id(tag) or ""
    if not image_id:
        raise BuildError(engine.host, tag, "the engine reported success but has no such image", tuple(tail))
    return image_id


def ensure_deps_image(engine: Engine, deps: Dependencies, base: Image, *, locks: Path | None = None) -> Image:
    """The project's dependency layer on ``engine`` (image fp-deps-<hash> on fp's base image),
    installed only when absent; with ``locks``, by one fp of this machine at a time.

    Raises:
        BuildError: the install failed (no image is kept).
        EngineError, EngineUnreachable.
    """
    tag = layer_tag(deps, base.id)
    existing = engine.image_id(tag)
    if existing:
        return Image(tag, existing, built=False)
    with one_builder(locks, engine, tag):
        existing = engine.image_id(tag)
        if existing:
            return Image(tag, existing, built=False)
        return _install_deps(engine, deps, base, tag)


def _install_deps(engine: Engine, deps: Dependencies, base: Image, tag: str) -> Image:
    """Install in a container of the base image and keep its filesystem as the layer.

    A container, not a Dockerfile build: pip's settings (an index URL may hold a password) reach
    the install on its standard input, so they are in no build argument, environment, layer or
    history entry; the image's configuration is the base's plus the virtual environment.
    """
    config = {
        "Image": base.id,
        "Cmd": ["sh", "-c", install_script(deps)],
        "Labels": {labels.KIND: "deps-build"},
        "AttachStdin": True,
        "OpenStdin": True,
        "StdinOnce": True,
        "AttachStdout": True,
        "AttachStderr": True,
        "HostConfig": {"NetworkMode": deps.network} if deps.network else {},
    }
    import uuid

    container = made_uninterrupted(lambda: engine.create_container(config, f"fp-deps-build-{uuid.uuid4().hex[:12]}"), engine.remove_container)
    try:
        engine.put_archive(container, "/", [_staging_tar(deps)])
        status, tail = _run_install(engine, container, deps, tag)
        if status != 0:
            raise BuildError(engine.host, tag, f"{install_failure(tail)} (exit status {status})", tuple(tail))
        image_id = engine.commit(container, tag, _layer_config(engine.image_config(base.id), deps, base), f"fp dependency layer: {deps.summary()}")
    finally:
        with contextlib.suppress(FireplugError):  # the failure or interruption is what to report
            engine.remove_container(container)
    return Image(tag, image_id, built=True)


def _run_install(engine: Engine, container: str, deps: Dependencies, tag: str) -> tuple[int, list[str]]:
    redact = Redactor(deps.index.secrets())
    tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
    title = f"installing the project's dependencies ({deps.summary()}) as {tag} on host '{engine.host}' (once per host until they change)"
    attached = engine.attach(container, stdin=True)
    try:
        engine.start(container)
        attached.send_all(stdin_settings(deps))
        attached.close_stdin()
        with events.steps(title, label=engine.host) as progress:
            for raw in _lines(frames(attached)):
                line = redact(raw.decode(errors="replace").rstrip())
                if line.strip():
                    tail.append(line)
                    progress.update(line, milestone=line.startswith(_INSTALL_MILESTONES))
    finally:
        attached.close()
    return engine.wait(container), list(tail)


def _lines(frames: Iterator[tuple[int, bytes]]) -> Iterator[bytes]:
    """Whole lines of each stream of a container's output, the last one even without a newline
    (an install's last error may end that way)."""
    pending: dict[int, bytes] = {}
    for stream, data in frames:
        *lines, pending[stream] = (pending.get(stream, b"") + data).split(b"\n")
        yield from lines
    yield from (rest for rest in pending.values() if rest)


_INSTALL_MILESTONES = ("Collecting ", "Installing collected packages", "Successfully installed", "Setting up ")


def install_failure(tail: list[str]) -> str:
    """The one line that says why an install failed: pip's or apt's last error, else the last line."""
    errors = [line for line in tail if re.match(r"(ERROR|E):", line.strip())]
    chosen = errors[-1] if errors else (tail[-1] if tail else "no output")
    return chosen.strip()


def _staging_tar(deps: Dependencies) -> bytes:
    """The files the install reads, under STAGING (relative to /), owned by root."""
    import io
    import tarfile  # only dependency installs need it

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in [(PurePosixPath(STAGING, ".keep").as_posix(), b""), *((PurePosixPath(STAGING, name).as_posix(), data) for name, data in deps.files)]:
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _layer_config(base_config: dict[str, Any], deps: Dependencies, base: Image) -> dict[str, Any]:
    """The layer's run configuration: the base image's, the virtual environment first on PATH.

    Every field is given: the engine fills a missing one from the install container's."""
    env = [entry for entry in base_config.get("Env") or [] if isinstance(entry, str) and not entry.startswith(("PATH=", "VIRTUAL_ENV="))]
    path = search_path(base_config.get("Env"))
    if deps.has_pip:
        env += [f"PATH={VENV}/bin:{path}", f"VIRTUAL_ENV={VENV}"]
    else:
        env.append(f"PATH={path}")
    return {
        "Env": env,
        "Cmd": base_config.get("Cmd") or ["python3"],
        "Entrypoint": base_config.get("Entrypoint") or [],
        "WorkingDir": base_config.get("WorkingDir") or "/",
        "User": base_config.get("User") or "0",
        "Labels": {labels.KIND: "deps", labels.FROM: base.tag, labels.VERSION: __version__},
    }


def latest_project_image(engine: Engine, project_key: str) -> Image:
    """The newest one-time image of the project ``project_key`` (name-id) on ``engine`` (for `fp --no-build`).

    Raises:
        FireplugError: the host has no image of the project yet.
    """
    found = engine.images([labels.kind_is("project"), f"{labels.PROJECT_KEY}={project_key}"])
    tagged = [image for image in found if any(tag != "<none>:<none>" for tag in image.get("RepoTags") or [])]
    if not tagged:
        raise FireplugError(f"host '{engine.host}' has no image of project '{project_key}' yet", hint="run once without --no-build")
    newest = max(tagged, key=lambda image: image.get("Created", 0))
    return Image(newest["RepoTags"][0], newest["Id"], built=False)
