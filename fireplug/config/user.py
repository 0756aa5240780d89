"""Editing ``[hosts.NAME]`` tables in the user's config file (`fp hosts add` / `fp hosts rm`).

The file is edited as text, so the user's comments and layout survive; every edit is parsed
back and checked before it replaces the file (atomically), so a failed edit changes nothing.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

from fireplug.config import Source, load
from fireplug.errors import ConfigError, UsageError

_HEADER_RE = re.compile(r"^\s*\[")


def host_table(name: str, values: Mapping[str, str | int]) -> str:
    """The TOML text of a ``[hosts.NAME]`` table (strings as JSON strings, valid TOML basic strings)."""
    lines = [f"[hosts.{json.dumps(name)}]"]
    for key, value in values.items():
        lines.append(f"{key} = {value}" if isinstance(value, int) else f"{key} = {json.dumps(value, ensure_ascii=False)}")
    return "\n".join(lines) + "\n"


def add_host(path: Path, name: str, values: Mapping[str, str | int]) -> None:
    """Append a ``[hosts.NAME]`` table to the config at ``path`` (created if missing).

    Raises:
        UsageError: a host of that name is already in the file.
        ConfigError: the file is not valid, or the new table would not be.
    """
    text = _read(path)
    if name in _hosts_in(path, text):
        raise UsageError(f"host '{name}' is already in {path}", hint=f"remove it first: fp hosts rm {name}")
    separator = "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
    updated = text + separator + host_table(name, values)
    if name not in _hosts_in(path, updated):
        raise ConfigError(f"could not add host '{name}'", path=str(path))
    _replace(path, updated)


def remove_host(path: Path, name: str) -> None:
    """Remove the ``[hosts.NAME]`` table (and its sub-tables) from the config at ``path``.

    Raises:
        UsageError: the file has no such host.
        ConfigError: the file is not valid, or the edit would break it.
    """
    text = _read(path)
    before = _hosts_in(path, text)
    if name not in before:
        raise UsageError(f"no host '{name}' in {path}", hint="`fp hosts` lists every host and where it comes from")
    updated = _without_table(text, name)
    if _hosts_in(path, updated) != before - {name}:
        raise ConfigError(f"could not remove host '{name}' cleanly; edit the file by hand", path=str(path))
    _replace(path, updated)


def _without_table(text: str, name: str) -> str:
    kept: list[str] = []
    skipping = False
    for line in text.splitlines(keepends=True):
        if _HEADER_RE.match(line):
            skipping = _names_host(line, name)
        if not skipping:
            kept.append(line)
    return re.sub(r"\n{3,}", "\n\n", "".join(kept))


def _names_host(header: str, name: str) -> bool:
    """Whether a table header is ``[hosts.NAME]`` or one of its sub-tables, however NAME is quoted."""
    found = re.match(r"^\s*\[+\s*(.*?)\s*\]+", header)
    inside = found.group(1) if found else ""
    return any(re.fullmatch(rf"hosts\s*\.\s*{re.escape(spelled)}(\s*\..*)?", inside) for spelled in (name, json.dumps(name), f"'{name}'"))


def _hosts_in(path: Path, text: str) -> set[str]:
    return set(load([Source(str(path), text)], {}, {}, root=Path("/")).hosts)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read: {e}", path=str(path)) from e


def _replace(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        if path.exists():
            os.chmod(temporary, path.stat().st_mode & 0o777)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
