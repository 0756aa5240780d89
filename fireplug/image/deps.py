"""The project's own dependencies: what they are (a requirements file, pyproject.toml, fp's
config) and the words and hash of the layer that installs them.

The layer sits between fp's base image and the project's code, as image ``fp-deps-<hash>``,
so editing code never reinstalls packages. Its hash covers everything that decides what it
holds: the base image's id, the apt packages, the requirement lines and every project file
they reference, and the installer's options with any credential taken out of index URLs
(a new password installs the same packages). The layer is built by build.ensure_deps_image.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit, urlunsplit

from fireplug.config import Config, toml_library
from fireplug.errors import ConfigError

REQUIREMENTS = "requirements.txt"
PYPROJECT = "pyproject.toml"
GENERATED = ".fp-requirements.txt"  # the requirement lines fp gathered (pyproject, [build] pip)
DEPS_PREFIX = "fp-deps-"  # the dependency layers' image names
VENV = "/opt/fp-venv"
STAGING = "/tmp/fp-deps"  # the files the install reads, removed before the layer is kept
DEPS_FORMAT = "fireplug-deps-1"
_FILE_OPTIONS = {"-r": "requirements", "--requirement": "requirements", "-c": "constraints", "--constraint": "constraints"}
_PATH_OPTIONS = ("-e", "--editable", "-f", "--find-links")
_ARCHIVE_SUFFIXES = (".whl", ".tar.gz", ".tgz", ".zip", ".tar.bz2")
_SKIPPED_FOLDERS = {".git", "__pycache__", ".venv", ".mypy_cache", ".pytest_cache"}
_KEY = "build.requirements"
_PIP_SETTINGS = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_TRUSTED_HOST")


@dataclass(frozen=True)
class IndexSettings:
    """Where pip looks for packages. URLs may carry credentials: they reach the install on its
    standard input only (see build.ensure_deps_image), and are shown and hashed redacted."""

    index_url: str = ""
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    trusted_hosts: tuple[str, ...] = ()

    def environment(self) -> list[tuple[str, str]]:
        """pip's own variables for these settings (lists are space-separated)."""
        values = (self.index_url, " ".join(self.extra_index_urls), " ".join(self.find_links), " ".join(self.trusted_hosts))
        return [(name, value) for name, value in zip(_PIP_SETTINGS, values, strict=True) if value]

    def redacted(self) -> list[str]:
        return [f"{name}={' '.join(redact_url(word) for word in value.split(' '))}" for name, value in self.environment()]

    def secrets(self) -> list[str]:
        """The credential parts of the URLs, to be blanked out of any output shown."""
        found = []
        for url in (self.index_url, *self.extra_index_urls, *self.find_links):
            userinfo = urlsplit(url).netloc.rpartition("@")[0] if "@" in url else ""
            found += [part for part in userinfo.split(":") if len(part) >= 4]
        return found


@dataclass(frozen=True)
class Dependencies:
    """What the dependency layer installs, and from which project files."""

    source: str  # in words: "requirements.txt", "pyproject.toml [project.dependencies]", ...
    requirement_files: tuple[str, ...]  # given to pip -r, relative to the project
    files: tuple[tuple[str, bytes], ...]  # project files the install reads, by relative path
    apt: tuple[str, ...] = ()
    index: IndexSettings = IndexSettings()
    network: str = ""
    notes: tuple[str, ...] = ()
    requirement_count: int = 0  # lines that name a package, nested requirement files included

    @property
    def has_pip(self) -> bool:
        return bool(self.requirement_files)

    def summary(self) -> str:
        parts = [f"{self.requirement_count} requirements from {self.source}"] if self.has_pip else []
        if self.apt:
            parts.append(f"apt: {' '.join(self.apt)}")
        return "; ".join(parts)

    def inputs_digest(self) -> str:
        """A hash of everything but the base image: what the layer holds on any host."""
        digest = hashlib.sha256(DEPS_FORMAT.encode())
        for part in (install_script(self), *self.index.redacted()):
            digest.update(b"\0" + part.encode())
        for name, data in self.files:
            digest.update(b"\0" + name.encode(errors="surrogateescape") + b"\0" + hashlib.sha256(data).digest())
        return digest.hexdigest()


def layer_tag(deps: Dependencies, base_id: str) -> str:
    """The dependency layer's image name on a host whose base image has id ``base_id``."""
    digest = hashlib.sha256(f"{deps.inputs_digest()}\0{base_id}".encode()).hexdigest()
    return f"{DEPS_PREFIX}{digest[:16]}"


def find_dependencies(config: Config) -> Dependencies | None:
    """The project's dependencies, or None when it has none (or ``[build] requirements = false``).

    The pip requirements come from ``[build] requirements`` (a file), else ``requirements.txt``
    at the project's root, else ``[project.dependencies]`` of ``pyproject.toml`` with the
    ``[build] extras`` groups; ``[build] pip`` adds lines, ``[build] apt`` names Debian packages.
    A line that installs the project itself (``-e .``) is left out: its code is in the one-time
    image, and its pyproject dependencies are installed instead.

    Raises:
        ConfigError: a named file is missing or unreadable, a reference leaves the project,
            a pyproject.toml is not valid or lacks a named group.
    """
    build = config.build
    if not build.use_requirements:
        return None
    root = config.root
    gathering = _Gathering(root)
    requirement_files: list[str] = []
    generated: list[str] = []
    sources: list[str] = []
    named = build.requirements or (REQUIREMENTS if (root / REQUIREMENTS).is_file() else "")
    if named:
        gathering.file(named, "build.requirements")
        requirement_files.append(named)
        sources.append(named)
    if (not named or gathering.project_itself) and (root / PYPROJECT).is_file():
        listed, where = pyproject_requirements(root / PYPROJECT, build.extras)
        generated += listed
        sources += [where] if listed else []
    if build.pip:
        generated += build.pip
        sources.append("[build] pip")
    generated = [line for line in generated if not gathering.installs_project(GENERATED, line)]
    if generated:
        gathering.files[GENERATED] = ("\n".join(generated) + "\n").encode()
        requirement_files.append(GENERATED)
        for line in generated:
            gathering.references(GENERATED, line)
    if not requirement_files and not build.apt:
        return None
    index = IndexSettings(build.pip_index_url, build.pip_extra_index_url, build.pip_find_links, build.pip_trusted_host)
    return Dependencies(
        source=" + ".join(sources) or "[build] apt",
        requirement_files=tuple(requirement_files),
        files=tuple(sorted(gathering.files.items())),
        apt=build.apt,
        index=index,
        network=build.network,
        notes=tuple(dict.fromkeys(gathering.notes)),
        requirement_count=gathering.count + len(generated),
    )


def pyproject_requirements(path: Path, extras: tuple[str, ...]) -> tuple[list[str], str]:
    """``[project.dependencies]`` and the named optional groups, and where they came from in words.

    Raises:
        ConfigError: not valid TOML, or a named group is missing.
    """
    tomllib = toml_library()
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8")).get("project", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read the dependencies of {PYPROJECT}: {e}", hint="fix it, or set [build] requirements = false", key=_KEY) from e
    listed = [str(item) for item in table.get("dependencies", []) if isinstance(item, str)]
    optional = table.get("optional-dependencies", {})
    for group in extras:
        if group not in optional:
            known = ", ".join(sorted(optional)) or "none"
            raise ConfigError(f"build.extras: {PYPROJECT} has no optional-dependencies group {group!r} (it has: {known})", key="build.extras")
        listed += [str(item) for item in optional[group] if isinstance(item, str)]
    where = f"{PYPROJECT} [project.dependencies]" + "".join(f" [{group}]" for group in extras)
    if "dependencies" in table.get("dynamic", []) and not listed:
        raise ConfigError(
            f"{PYPROJECT} declares its dependencies dynamic, so fp cannot read them",
            hint="list them in requirements.txt (pip freeze > requirements.txt), or set [build] requirements = false",
            key=_KEY,
        )
    return listed, where


class _Gathering:
    """The project files an install reads, found by following requirement lines."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[str, bytes] = {}
        self.notes: list[str] = []
        self.project_itself = False
        self.count = 0  # requirement lines that name something to install

    def file(self, relative: str, key: str, *, constraints: bool = False) -> None:
        """Read a requirements or constraints file, and every project file it references; its
        lines that install the project itself are commented out in the copy the install reads.

        Raises:
            ConfigError: missing, unreadable, or outside the project.
        """
        relative = _inside(self.root, relative, key)
        if relative in self.files:
            return
        text = _read_inside(self.root, relative, key).decode(errors="surrogateescape")
        kept = []
        for raw in text.splitlines():
            line = _strip_comment(raw)
            if self.installs_project(relative, line):
                kept.append(f"# left out by fp: {raw}")
                continue
            kept.append(raw)
        self.files[relative] = ("\n".join(kept) + "\n").encode(errors="surrogateescape")
        for line in _logical_lines(text):
            if not self.installs_project(relative, line, say=False):
                self.count += bool(line) and not line.startswith("-") and not constraints
                self.references(relative, line)

    def installs_project(self, within: str, line: str, *, say: bool = True) -> bool:
        words = _words(line)
        target = words[1] if len(words) == 2 and words[0] in ("-e", "--editable") else words[0] if len(words) == 1 else ""
        if not target or not _looks_local(target) or os.path.normpath(self.root / target.removeprefix("file://")) != str(self.root):
            return False
        self.project_itself = True
        if say:
            self.notes.append(f"{within}: {line!r} installs the project itself: left out of the dependency layer (its code is in the one-time image)")
        return True

    def references(self, within: str, line: str) -> None:
        words = _words(line)
        if not words:
            return
        option, _, attached = words[0].partition("=")
        argument = attached or (words[1] if len(words) > 1 else "")
        if option in _FILE_OPTIONS and argument:
            # pip reads a nested file relative to the file that names it
            nested = os.path.normpath(PurePosixPath(within).parent / argument)
            self.file(nested, f"{within}: {option} {argument}", constraints=_FILE_OPTIONS[option] == "constraints")
            return
        target = (argument if option in _PATH_OPTIONS else words[0]).removeprefix("file://")
        if not _looks_local(target):
            return
        beside = os.path.normpath(PurePosixPath(within).parent / target)
        if option in ("-f", "--find-links") and (self.root / beside).exists():
            target = beside  # pip takes a find-links folder beside the file that names it first
        for relative, data in _read_tree(self.root, target, f"{within}: {line}"):
            self.files[relative] = data


def _looks_local(word: str) -> bool:
    if "://" in word and not word.startswith("file://"):
        return False
    return word.startswith((".", "/", "file:")) or ("/" in word and "@" not in word) or word.endswith(_ARCHIVE_SUFFIXES)


def _read_tree(root: Path, path: str, key: str) -> Iterator[tuple[str, bytes]]:
    relative = _inside(root, path, key)
    full = root / relative
    if not full.is_dir():
        yield relative, _read_inside(root, relative, key)
        return
    for folder, names, found in os.walk(full):
        names[:] = sorted(name for name in names if name not in _SKIPPED_FOLDERS)
        for name in sorted(found):
            inner = (Path(folder) / name).relative_to(root).as_posix()
            yield inner, _read_inside(root, inner, key)


def _inside(root: Path, path: str, key: str) -> str:
    """``path`` relative to the project, refused when it leaves it.

    Raises:
        ConfigError: outside the project.
    """
    absolute = Path(os.path.normpath(root / path))
    try:
        return absolute.relative_to(root).as_posix()
    except ValueError:
        raise ConfigError(f"{key}: {path} is outside the project, and fp ships only the project", hint="move it into the project", key=_KEY) from None


def _read_inside(root: Path, relative: str, key: str) -> bytes:
    relative = _inside(root, relative, key)
    try:
        return (root / relative).read_bytes()
    except OSError as e:
        raise ConfigError(f"{key}: cannot read {relative}: {e.strerror}", hint="fix the name, or set [build] requirements = false", key=_KEY) from e


def _logical_lines(text: str) -> Iterator[str]:
    """Requirement lines as pip reads them: continuations joined, comments dropped."""
    pending = ""
    for raw in text.splitlines():
        if raw.endswith("\\"):
            pending += raw[:-1]
            continue
        line = _strip_comment(pending + raw)
        pending = ""
        yield line


def _words(line: str) -> list[str]:
    """A requirement line's words, as pip splits them (quotes honoured when they pair up)."""
    try:
        return shlex.split(line)
    except ValueError:
        return line.split()


def _strip_comment(line: str) -> str:
    return re.sub(r"(^|\s)#.*$", "", line).strip()


def redact_url(url: str) -> str:
    """``url`` with any user and password replaced by ``****`` (a token often sits in the user part)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="****@" + parts.netloc.rpartition("@")[2]))


def install_script(deps: Dependencies) -> str:
    """The shell script the install container runs: pip's settings (with any credential) come
    on its standard input as NAME=value lines, never in its command or environment."""
    lines = ["set -eu", 'while IFS= read -r setting; do export "$setting"; done']
    if deps.apt:
        packages = " ".join(shlex.quote(package) for package in deps.apt)
        lines.append(f"apt-get update -qq && apt-get install -y --no-install-recommends {packages} && rm -rf /var/lib/apt/lists/*")
    if deps.has_pip:
        requirement_args = " ".join(f"-r {shlex.quote(name)}" for name in deps.requirement_files)
        lines += [
            f"python3 -m venv --system-site-packages {VENV}",
            f"cd {STAGING}",
            f"{VENV}/bin/pip install --no-cache-dir --disable-pip-version-check --no-input --progress-bar off {requirement_args}",
        ]
    lines.append(f"cd / && rm -rf {STAGING}")
    return "\n".join(lines) + "\n"


def stdin_settings(deps: Dependencies) -> bytes:
    """The NAME=value lines the install script reads first (its standard input then ends)."""
    return "".join(f"{name}={value}\n" for name, value in deps.index.environment()).encode()


@dataclass
class Redactor:
    """Blanks credentials out of a line of install output before it is shown or kept."""

    secrets: list[str] = field(default_factory=list)

    def __call__(self, line: str) -> str:
        for secret in self.secrets:
            line = line.replace(secret, "****")
        return line
