"""What a settings source may say: the schema of every section and of a host's table, the
types, and each refusal in one line with its file and line (a credential written into a
settings file is refused too: it belongs in the environment or a credentials file)."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from typing import Any

from fireplug.backends import KINDS
from fireplug.config.settings import PROJECT_FILE, Source
from fireplug.errors import ConfigError
from fireplug.support.secrets import credential_in

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

HOST_KINDS = tuple(KINDS)  # the kinds a backend serves (backends/__init__.py)

_TYPE_NAMES: dict[Any, str] = {
    (str, bool): "a path or false",
    bool: "true or false",
    str: "a string",
    int: "an integer",
    list: "a list of strings",
    dict: "a table",
}

_TOML_LINE_RE = r"\(at line (\d+), column \d+\)"


def toml_library() -> Any:
    """tomllib (tomli before Python 3.11), imported when a TOML file is read: ~3 ms that a run
    of a project without one never pays."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10 only
        import tomli as tomllib
    return tomllib


def parse_source(source: Source) -> dict[str, Any]:
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
            check_table(section, values, source)
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


def check_table(section: str, values: Any, source: Source) -> None:
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
