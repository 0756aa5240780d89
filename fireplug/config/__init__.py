"""Settings: one pure merge of every source into the frozen ``Config`` (settings.py).

Priority, lowest first: defaults < user config < project ``fireplug.toml`` < ``FP_*``
environment variables < command-line overrides. ``load`` does no I/O; ``discover``
finds and reads the files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from fireplug.backends import kind_of
from fireplug.config.names import derived_id, new_id, sanitize_name
from fireplug.config.schema import HOST_KINDS, SCHEMA, check_table, parse_source, toml_library
from fireplug.config.settings import (
    CHECKSUM_WHEN,
    CONTAINER_OPTIONS,
    DEFAULT_BASE_IMAGE,
    PROJECT_FILE,
    SYNC_MODES,
    BuildSettings,
    Config,
    HostSettings,
    PoolSettings,
    ProjectSettings,
    RunSettings,
    Source,
    SyncSettings,
)
from fireplug.errors import ConfigError, ProjectError

__all__ = [  # the package's face: the settings (settings.py), names (names.py), and the merge here
    "DEFAULT_BASE_IMAGE",
    "HOST_KINDS",
    "PROJECT_FILE",
    "BuildSettings",
    "Config",
    "HostSettings",
    "PoolSettings",
    "ProjectSettings",
    "RunSettings",
    "Source",
    "SyncSettings",
    "derived_id",
    "discover",
    "find_project_root",
    "load",
    "new_id",
    "project_key_at",
    "sanitize_name",
    "toml_library",
    "user_config_path",
]


# Patterns compiled when first used (re caches them): most runs use few of them.
_NAME_RE = r"^[a-z0-9][a-z0-9_.-]*$"
_ID_RE = r"^[a-z0-9]{4,32}$"
_HOST_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_IMAGE_RE = r"(?:[A-Za-z0-9.-]+(?::[0-9]{1,5})?/)?[a-z0-9][a-z0-9._/-]{0,254}(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?"
_APT_PACKAGE_RE = r"[a-z0-9][a-z0-9+.-]+(?:=[A-Za-z0-9.+~:-]+)?"
_BUCKET_RE = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"


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
        parsed = parse_source(source)
        for section, values in parsed.items():
            if section == "hosts":
                for name, table in values.items():
                    hosts.setdefault(name, {}).update(table)
            else:
                merged[section].update(values)
    for section, values in _from_env(env).items():
        merged[section].update(values)
    for section, values in overrides.items():
        check_table(section, values, Source("command line", ""))
        merged[section].update(values)
    return _build_config(root, merged, hosts)


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
    for setting, (why, hint) in kind_of(kind).required.items():
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
