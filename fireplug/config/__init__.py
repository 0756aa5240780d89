"""Settings: frozen dataclasses and one pure merge of every source.

Priority, lowest first: defaults < user config < project ``fireplug.toml`` < ``FP_*``
environment variables < command-line overrides. ``load`` does no I/O; ``discover``
finds and reads the files.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from fireplug.backends import REGISTRY, REQUIRED_SETTINGS
from fireplug.errors import ConfigError, ProjectError
from fireplug.support.secrets import credential_in

PROJECT_FILE = "fireplug.toml"
DEFAULT_BASE_IMAGE = "debian:bookworm-slim"


@dataclass(frozen=True)
class Source:
    """A configuration file's path and text, read by the caller so that ``load`` stays pure."""

    path: str
    text: str
    shipped: bool = False  # the project's fireplug.toml: it goes into the image with the code, so no value may hold a credential


@dataclass(frozen=True)
class ProjectSettings:
    name: str
    data: str = "data"
    results: tuple[str, ...] = ()
    workdir: str = ""
    id: str = ""  # from fireplug.toml (`fp init` writes one), else derived from the project's path

    @property
    def key(self) -> str:
        """What no two projects share: names its host folder, images and sync records."""
        return f"{self.name}-{self.id}"

    @property
    def result_folders(self) -> tuple[str, ...]:
        """Folders that come back after a run; the whole data folder unless configured."""
        return self.results or (self.data,)


@dataclass(frozen=True)
class BuildSettings:
    base_image: str = DEFAULT_BASE_IMAGE
    dockerfile: str = ""
    use_dockerfile: bool = True  # false: a project Dockerfile is ignored, fp generates its own
    allow: tuple[str, ...] = ()  # secret-looking paths to ship anyway (globs, relative to the project)
    requirements: str = ""  # the pip requirements file; "" finds one (see deps.find_dependencies)
    use_requirements: bool = True  # false: no dependency layer at all
    extras: tuple[str, ...] = ()  # [project.optional-dependencies] groups of pyproject.toml to install
    pip: tuple[str, ...] = ()  # more pip requirements
    apt: tuple[str, ...] = ()  # Debian packages
    pip_index_url: str = ""
    pip_extra_index_url: tuple[str, ...] = ()
    pip_find_links: tuple[str, ...] = ()
    pip_trusted_host: tuple[str, ...] = ()
    network: str = ""  # the dependency install's network: "" (the engine's default) or "host"


CONTAINER_OPTIONS = ("shm_size", "memory", "cpus", "gpus", "network", "publish")  # [run] keys with docker's names


@dataclass(frozen=True)
class RunSettings:
    env: tuple[str, ...] = ()
    user: str = "auto"
    container: Mapping[str, Any] = field(default_factory=dict)  # CONTAINER_OPTIONS given (see options.parse_options)


@dataclass(frozen=True)
class HostSettings:
    """A ``[hosts.NAME]`` table. Empty values are unset: they leave the docker-machine or
    docker-context value of a host with the same name (or fp's default) in place."""

    name: str
    url: str = ""
    ssh_user: str = ""
    ssh_port: int = 0
    ssh_key: str = ""
    cert_path: str = ""  # folder with ca.pem, cert.pem, key.pem for a tcp:// engine with TLS
    data_root: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    pool: bool | None = None  # whether fp may choose it without --host; None: by its source (see inventory)
    kind: str = ""  # "swarm": the engine is a swarm manager, runs are services (see swarm.py); "": docker
    registry: str = ""  # a swarm's registry for one-time images: "registry.example:5000/team"


@dataclass(frozen=True)
class PoolSettings:
    """``[pool]``: the hosts fp may choose by itself, and the one it takes without --host."""

    hosts: tuple[str, ...] | None = None  # None: config hosts and docker-machine machines
    default_host: str = ""


SYNC_MODES = ("auto", "rsync", "api", "s3")
CHECKSUM_WHEN = ("when_supported", "when_required")


@dataclass(frozen=True)
class SyncSettings:
    """``[sync]``: how the data folder reaches a remote host.

    ``auto``: rsync over the host's ssh, else the Docker API; ``s3``: staged in the bucket
    ``s3`` names, which the host pulls from and pushes to. Region, profile and endpoint
    follow boto3's own chain (AWS_PROFILE, AWS_ENDPOINT_URL_S3, ~/.aws/config) unless set."""

    mode: str = "auto"
    s3: str = ""  # s3://bucket[/prefix]
    region: str = ""
    profile: str = ""
    endpoint: str = ""
    # botocore >= 1.36 adds CRC checksums to every PUT, which many S3-compatible stores reject
    request_checksum_calculation: str = ""
    response_checksum_validation: str = ""

    @property
    def bucket_and_prefix(self) -> tuple[str, str]:
        rest = self.s3.removeprefix("s3://")
        bucket, _, prefix = rest.partition("/")
        return bucket, prefix.strip("/")


@dataclass(frozen=True)
class Config:
    root: Path
    project: ProjectSettings
    build: BuildSettings
    run: RunSettings
    hosts: Mapping[str, HostSettings] = field(default_factory=dict)
    pool: PoolSettings = PoolSettings()
    sync: SyncSettings = SyncSettings()

    def container_root(self) -> str:
        """Where the project lives inside the container: the same absolute path by default."""
        return self.project.workdir or self.root.as_posix()


# section -> key -> type; list means a list of strings.
SCHEMA: dict[str, dict[str, Any]] = {
    "project": {"name": str, "id": str, "data": str, "results": list, "workdir": str},
    "build": {
        "base_image": str,
        "dockerfile": (str, bool),
        "allow": list,
        "requirements": (str, bool),
        "extras": list,
        "pip": list,
        "apt": list,
        "pip_index_url": str,
        "pip_extra_index_url": list,
        "pip_find_links": list,
        "pip_trusted_host": list,
        "network": str,
    },
    "run": {"env": list, "user": str, "shm_size": str, "memory": str, "cpus": str, "gpus": str, "network": str, "publish": list},
    "pool": {"hosts": list, "default_host": str},
    "sync": {
        "mode": str,
        "s3": str,
        "region": str,
        "profile": str,
        "endpoint": str,
        "request_checksum_calculation": str,
        "response_checksum_validation": str,
    },
}
HOST_SCHEMA: dict[str, type] = {
    "url": str,
    "ssh_user": str,
    "ssh_port": int,
    "ssh_key": str,
    "cert_path": str,
    "data_root": str,
    "labels": dict,
    "pool": bool,
    "kind": str,
    "registry": str,
}
HOST_KINDS = tuple(REGISTRY)  # the kinds a backend serves (backends/__init__.py)
_TYPE_NAMES: dict[Any, str] = {
    (str, bool): "a path or false",
    bool: "true or false",
    str: "a string",
    int: "an integer",
    list: "a list of strings",
    dict: "a table",
}
# Patterns compiled when first used (re caches them): most runs use few of them.
_NAME_RE = r"^[a-z0-9][a-z0-9_.-]*$"
_ID_RE = r"^[a-z0-9]{4,32}$"
_HOST_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_IMAGE_RE = r"(?:[A-Za-z0-9.-]+(?::[0-9]{1,5})?/)?[a-z0-9][a-z0-9._/-]{0,254}(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?"
_APT_PACKAGE_RE = r"[a-z0-9][a-z0-9+.-]+(?:=[A-Za-z0-9.+~:-]+)?"
_BUCKET_RE = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
_TOML_LINE_RE = r"\(at line (\d+), column \d+\)"


def load(
    sources: Sequence[Source],
    env: Mapping[str, str],
    overrides: Mapping[str, Mapping[str, Any]],
    *,
    root: Path,
) -> Config:
    """Merge defaults, ``sources`` (lowest priority first), ``FP_*`` variables and overrides.

    Raises:
        ConfigError: a file is not valid TOML, has an unknown key or a value of the wrong type.
    """
    merged: dict[str, dict[str, Any]] = {section: {} for section in SCHEMA}
    hosts: dict[str, dict[str, Any]] = {}
    for source in sources:
        parsed = _parse(source)
        for section, values in parsed.items():
            if section == "hosts":
                for name, table in values.items():
                    hosts.setdefault(name, {}).update(table)
            else:
                merged[section].update(values)
    for section, values in _from_env(env).items():
        merged[section].update(values)
    for section, values in overrides.items():
        _check_table(section, values, Source("command line", ""))
        merged[section].update(values)
    return _build_config(root, merged, hosts)


def toml_library() -> Any:
    """tomllib (tomli before Python 3.11), imported when a TOML file is read: ~3 ms that a run
    of a project without one never pays."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10 only
        import tomli as tomllib
    return tomllib


def _parse(source: Source) -> dict[str, Any]:
    tomllib = toml_library()
    try:
        document = tomllib.loads(source.text)
    except RecursionError:
        raise ConfigError("invalid TOML: nested too deeply", path=source.path) from None
    except tomllib.TOMLDecodeError as e:
        found = re.search(_TOML_LINE_RE, str(e))
        message = re.sub(_TOML_LINE_RE, "", str(e)).strip()
        raise ConfigError(f"invalid TOML: {message}", path=source.path, line=int(found.group(1)) if found else None) from e
    for section, values in document.items():
        if section == "hosts":
            _check_hosts(values, source)
        elif section in SCHEMA:
            _check_table(section, values, source)
        else:
            raise ConfigError(
                f"unknown section [{section}] (known: {', '.join([*SCHEMA, 'hosts'])})",
                path=source.path,
                line=_locate(source.text, "", section),
                key=section,
            )
    if source.shipped:
        _refuse_credentials(document, source)
    return document


def _refuse_credentials(document: dict[str, Any], source: Source) -> None:
    """The project's fireplug.toml is shipped with the code: a credential written in any of its
    values (an index URL's password, a token) would be in the image.

    Raises:
        ConfigError: a value holds one (said without showing it).
    """
    for key, value in _values(document):
        reason = credential_in(value)
        if reason:
            section, _, name = key.rpartition(".")
            raise ConfigError(
                f"'{key}' holds {reason}, and {PROJECT_FILE} is shipped with the code",
                path=source.path,
                line=_locate(source.text, section, name),
                key=key,
                hint="move the setting to ~/.config/fireplug/config.toml or an FP_* variable (FP_BUILD_PIP_INDEX_URL...), which stay on this machine",
            )


def _values(table: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """Every string in ``table`` (in lists and sub-tables too), with its dotted key."""
    for name, value in table.items():
        key = f"{prefix}{name}"
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, str):
                yield key, item
            elif isinstance(item, dict):
                yield from _values(item, f"{key}.")


def _check_table(section: str, values: Any, source: Source) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"[{section}] must be a table", path=source.path, line=_locate(source.text, "", section))
    for key, value in values.items():
        expected = SCHEMA[section].get(key)
        if expected is None:
            raise ConfigError(
                f"unknown key '{key}' in [{section}] (known: {', '.join(SCHEMA[section])})",
                path=source.path,
                line=_locate(source.text, section, key),
                key=f"{section}.{key}",
            )
        _check_type(f"{section}.{key}", value, expected, source, _locate(source.text, section, key))


def _check_hosts(values: Any, source: Source) -> None:
    if not isinstance(values, dict):
        raise ConfigError("[hosts] must hold [hosts.NAME] tables", path=source.path, line=_locate(source.text, "", "hosts"))
    for name, table in values.items():
        section = f"hosts.{name}"
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}] must be a table", path=source.path, line=_locate(source.text, "hosts", name))
        for key, value in table.items():
            line = _locate(source.text, section, key)
            if key not in HOST_SCHEMA:
                raise ConfigError(
                    f"unknown key '{key}' in [{section}] (known: {', '.join(HOST_SCHEMA)})",
                    path=source.path,
                    line=line,
                    key=f"{section}.{key}",
                )
            _check_type(f"{section}.{key}", value, HOST_SCHEMA[key], source, line)


def _check_type(key: str, value: Any, expected: Any, source: Source, line: int | None) -> None:
    valid = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if expected is list:
        valid = valid and all(isinstance(item, str) for item in value)
    if not valid:
        raise ConfigError(
            f"'{key}' must be {_TYPE_NAMES[expected]}, not {type(value).__name__} {value!r}",
            path=source.path,
            line=line,
            key=key,
        )


def _locate(text: str, section: str, key: str) -> int | None:
    """Best-effort line number of ``key`` inside ``[section]`` ("" = top level)."""
    current = ""
    key_re = re.compile(rf"""^\s*(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')\s*[=.]""")
    header_re = re.compile(r"^\s*\[+\s*([^\]]+?)\s*\]+")
    for number, line in enumerate(text.splitlines(), start=1):
        header = header_re.match(line)
        if header:
            current = header.group(1).replace(" ", "").replace('"', "")
            if (section and current == f"{section}.{key}") or (not section and current.split(".")[0] == key):
                return number
            continue
        if current == section and key_re.match(line):
            return number
    return None


def _from_env(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """``FP_<SECTION>_<KEY>`` variables; list values are comma-separated."""
    found: dict[str, dict[str, Any]] = {}
    for section, keys in SCHEMA.items():
        for key, expected in keys.items():
            raw = env.get(f"FP_{section}_{key}".upper())
            if raw is None:
                continue
            value: Any = [item.strip() for item in raw.split(",") if item.strip()] if expected is list else raw
            found.setdefault(section, {})[key] = value
    return found


def _build_config(root: Path, merged: dict[str, dict[str, Any]], hosts: dict[str, dict[str, Any]]) -> Config:
    project = merged["project"]
    name = project.get("name") or sanitize_name(root.name)
    if not re.match(_NAME_RE, name):
        raise ConfigError(
            f"project name {name!r} is not usable as an image name",
            hint="use lowercase letters, digits, '.', '_' and '-'",
            key="project.name",
        )
    project_id = project.get("id") or derived_id(root)
    if not re.match(_ID_RE, project_id):
        raise ConfigError(f"project id {project_id!r} must be 4 to 32 lowercase letters and digits", key="project.id")
    data = _relative_folder(project.get("data", "data"), "project.data")
    results = tuple(_relative_folder(item, "project.results") for item in project.get("results", ()))
    for result in results:
        if not _is_within(result, data):
            raise ConfigError(f"result folder {result!r} is not inside the data folder {data!r}", key="project.results")
    workdir = project.get("workdir", "")
    if workdir and not PurePosixPath(workdir).is_absolute():
        raise ConfigError(f"project.workdir {workdir!r} must be an absolute path inside the container", key="project.workdir")
    base_image = merged["build"].get("base_image", DEFAULT_BASE_IMAGE)
    if not re.fullmatch(_IMAGE_RE, base_image):
        raise ConfigError(f"build.base_image {base_image!r} is not an image reference", hint="e.g. debian:bookworm-slim", key="build.base_image")
    user = merged["run"].get("user", "auto")
    if not re.match(r"^(auto|root|\d+(:\d+)?)$", user):
        raise ConfigError(f"run.user {user!r} must be 'auto', 'root' or UID[:GID]", key="run.user")
    return Config(
        root=root,
        project=ProjectSettings(name=name, data=data, results=results, workdir=workdir, id=project_id),
        build=_build_settings(merged["build"]),
        run=RunSettings(
            env=tuple(merged["run"].get("env", ())), user=user, container={key: merged["run"][key] for key in CONTAINER_OPTIONS if key in merged["run"]}
        ),
        hosts={host: _host_settings(host, table) for host, table in hosts.items()},
        pool=_pool_settings(merged["pool"]),
        sync=_sync_settings(merged["sync"]),
    )


def _sync_settings(table: dict[str, Any]) -> SyncSettings:
    """``--sync s3://bucket/prefix`` arrives as ``s3`` alone: it means mode s3."""
    settings = SyncSettings(**table)
    if settings.s3 and "mode" not in table:
        settings = SyncSettings(**{**table, "mode": "s3"})
    if settings.mode not in SYNC_MODES:
        raise ConfigError(f"sync.mode {settings.mode!r} must be one of {', '.join(SYNC_MODES)}", key="sync.mode")
    if settings.s3:
        bucket, prefix = settings.bucket_and_prefix
        if not settings.s3.startswith("s3://") or not re.match(_BUCKET_RE, bucket) or ".." in prefix.split("/"):
            raise ConfigError(f"sync.s3 {settings.s3!r} is not an S3 location", hint="e.g. s3://my-bucket/fireplug", key="sync.s3")
    elif settings.mode == "s3":
        raise ConfigError("sync mode s3 needs a bucket", hint='set s3 = "s3://bucket/prefix" in [sync], or pass --sync s3://bucket/prefix', key="sync.s3")
    for key in ("request_checksum_calculation", "response_checksum_validation"):
        if getattr(settings, key) not in ("", *CHECKSUM_WHEN):
            raise ConfigError(f"sync.{key} must be one of {', '.join(CHECKSUM_WHEN)}", key=f"sync.{key}")
    return settings


def _build_settings(table: dict[str, Any]) -> BuildSettings:
    dockerfile, requirements = table.get("dockerfile", ""), table.get("requirements", "")
    use = dockerfile not in (False, "false")  # `dockerfile = false`, or FP_BUILD_DOCKERFILE=false
    use_requirements = requirements not in (False, "false")
    if isinstance(requirements, str) and use_requirements and requirements and not _is_relative_path(requirements):
        raise ConfigError(f"build.requirements {requirements!r} must be a file inside the project, like 'requirements.txt'", key="build.requirements")
    network = table.get("network", "")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*|", network):
        raise ConfigError(f"build.network {network!r} is not a network name", hint='use "host" to reach an index on the host\'s loopback', key="build.network")
    for package in table.get("apt", ()):
        if not re.fullmatch(_APT_PACKAGE_RE, package):
            raise ConfigError(f"build.apt: {package!r} is not a Debian package name", hint="e.g. libgomp1, or libgomp1=12.2.0-14", key="build.apt")
    lists = ("allow", "extras", "pip", "apt", "pip_extra_index_url", "pip_find_links", "pip_trusted_host")
    return BuildSettings(
        base_image=table.get("base_image", DEFAULT_BASE_IMAGE),
        dockerfile=dockerfile if isinstance(dockerfile, str) and use else "",
        use_dockerfile=use,
        requirements=requirements if isinstance(requirements, str) and use_requirements else "",
        use_requirements=use_requirements,
        pip_index_url=table.get("pip_index_url", ""),
        network=network,
        **{key: tuple(table.get(key, ())) for key in lists},
    )


def _is_relative_path(value: str) -> bool:
    parts = PurePosixPath(value).parts
    return bool(parts) and not PurePosixPath(value).is_absolute() and ".." not in parts


def _pool_settings(table: dict[str, Any]) -> PoolSettings:
    names = table.get("hosts")
    for name in [*(names or ()), table.get("default_host") or "local"]:
        if not re.match(_HOST_NAME_RE, name):
            raise ConfigError(f"pool: {name!r} is not a host name", key="pool")
    return PoolSettings(hosts=None if names is None else tuple(names), default_host=table.get("default_host", ""))


def _host_settings(name: str, table: dict[str, Any]) -> HostSettings:
    if not re.match(_HOST_NAME_RE, name) or name == "local":
        raise ConfigError(f"host name {name!r} is not usable", hint="use letters, digits, '.', '_' and '-'; 'local' is reserved", key=f"hosts.{name}")
    data_root = table.get("data_root", "")
    if data_root and not PurePosixPath(data_root).is_absolute():
        raise ConfigError(f"hosts.{name}.data_root {data_root!r} must be an absolute path on the host", key=f"hosts.{name}.data_root")
    port = table.get("ssh_port", 0)
    if not 0 <= port <= 65535:
        raise ConfigError(f"hosts.{name}.ssh_port {port} is not a port number", key=f"hosts.{name}.ssh_port")
    kind = table.get("kind", "")
    if kind and kind not in HOST_KINDS:
        raise ConfigError(f"hosts.{name}.kind {kind!r} is not one of {', '.join(HOST_KINDS)}", key=f"hosts.{name}.kind")
    for setting, (why, hint) in REQUIRED_SETTINGS.get(kind, {}).items():
        if not table.get(setting):
            raise ConfigError(f"[hosts.{name}] is a {kind}: {why}", hint=hint, key=f"hosts.{name}.{setting}")
    labels = {str(key): str(value) for key, value in table.get("labels", {}).items()}
    return HostSettings(name=name, **{key: value for key, value in table.items() if key != "labels"}, labels=labels)


def _relative_folder(value: str, key: str) -> str:
    path = PurePosixPath(value)
    parts = [part for part in path.parts if part not in ("", ".")]
    if path.is_absolute() or not parts or ".." in parts:
        raise ConfigError(f"{key} {value!r} must be a sub-folder of the project, like 'data'", key=key)
    return "/".join(parts)


def _is_within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder + "/")


def project_key_at(root: Path) -> str:
    """The project key of the project in ``root``, as fp would find it there ("" when ``root``
    holds no fireplug.toml, or one fp cannot use): tells whether another folder is a copy."""
    path = root / PROJECT_FILE
    try:
        return load([Source(str(path), path.read_text(encoding="utf-8"))], {}, {}, root=root).project.key
    except (OSError, UnicodeDecodeError, ConfigError):
        return ""


def derived_id(root: Path) -> str:
    """A project's id when fireplug.toml names none: from its absolute path (moving it makes a new project)."""
    return hashlib.sha256(os.fsencode(root)).hexdigest()[:8]


def new_id() -> str:
    import secrets

    return secrets.token_hex(4)


def sanitize_name(folder_name: str) -> str:
    """An image-name-safe project name derived from a folder name, transliterated to ASCII."""
    ascii_name = transliterate(folder_name).lower()
    cleaned = re.sub(r"[^a-z0-9_.-]+", "-", ascii_name).strip("-._")
    return cleaned or "project"


_CYRILLIC = dict(
    zip(
        "абвгдеёжзийклмнопрстуфхцчшщъыьэюяєіїґ",
        [
            "a",
            "b",
            "v",
            "g",
            "d",
            "e",
            "e",
            "zh",
            "z",
            "i",
            "y",
            "k",
            "l",
            "m",
            "n",
            "o",
            "p",
            "r",
            "s",
            "t",
            "u",
            "f",
            "kh",
            "ts",
            "ch",
            "sh",
            "shch",
            "-",
            "y",
            "-",
            "e",
            "yu",
            "ya",
            "ye",
            "i",
            "yi",
            "g",
        ],
        strict=True,
    )
)
_GREEK = dict(
    zip(
        "αβγδεζηθικλμνξοπρσςτυφχψω",
        ["a", "v", "g", "d", "e", "z", "i", "th", "i", "k", "l", "m", "n", "x", "o", "p", "r", "s", "s", "t", "y", "f", "ch", "ps", "o"],
        strict=True,
    )
)
_LATIN = {"ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "ı": "i"}


def transliterate(text: str) -> str:
    """A readable ASCII rendering: accents dropped, Cyrillic and Greek spelled out, the rest left out."""
    out = []
    for character in text:
        for part in (character,) if _spelled(character) is not None else unicodedata.normalize("NFKD", character):
            spelled = _spelled(part)
            out.append(spelled if spelled is not None else part if part.isascii() else "")
    return "".join(out)


def _spelled(character: str) -> str | None:
    lower = character.lower()
    spelled = _CYRILLIC.get(lower) or _GREEK.get(lower) or _LATIN.get(lower)
    return None if spelled is None else "" if spelled == "-" else spelled


def find_project_root(cwd: Path, home: Path) -> Path:
    """The nearest folder at or above ``cwd`` holding fireplug.toml, else ``cwd`` itself.

    Raises:
        ProjectError: with no fireplug.toml, ``cwd`` is the home folder or the filesystem root,
            which would ship far more than a project.
    """
    for folder in (cwd, *cwd.parents):
        if (folder / PROJECT_FILE).is_file():
            return folder
    if cwd == home or cwd == Path(cwd.anchor):
        raise ProjectError(
            f"{cwd} is your home folder or the filesystem root, not a project",
            hint="cd into a project folder, or create a fireplug.toml here with `fp init`",
        )
    return cwd


def user_config_path(env: Mapping[str, str], home: Path) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(home / ".config")
    return Path(base) / "fireplug" / "config.toml"


def discover(
    cwd: Path,
    env: Mapping[str, str],
    home: Path,
    overrides: Mapping[str, Mapping[str, Any]],
    *,
    project_optional: bool = False,
) -> Config:
    """Find the project root and every config file, read them, and ``load`` the result.

    ``project_optional``: outside any project (even in the home folder), settle for the
    user's config, with ``cwd`` as the root (for commands that ship no project).

    Raises:
        ConfigError, ProjectError: see ``load`` and ``find_project_root``.
    """
    try:
        root = find_project_root(cwd.resolve(), home)
    except ProjectError:
        if not project_optional:
            raise
        root = cwd.resolve()
    user, project = user_config_path(env, home), root / PROJECT_FILE
    sources = [Source(str(path), _read(path), shipped=path == project) for path in (user, project) if path.is_file()]
    return load(sources, env, overrides, root=root)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read: {e}", path=str(path)) from e
