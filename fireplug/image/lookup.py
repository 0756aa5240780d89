"""Whether the command is in the image, asked before any data moves: a typo then costs a
fraction of a second, not a whole sync in followed by tini's "exec ... failed".

The image's files are looked at through a created, never started, container: each folder of
the image's PATH is asked for the name over the engine API, so nothing runs and the image
needs no shell. An image with an entrypoint takes the command as its arguments, and a name
with a '/' may live in the data folder (mounted only at run time): neither is checked. A name
found once in an image is remembered (an image never changes).
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fireplug.errors import CommandNotFound as CommandNotFound
from fireplug.errors import FireplugError
from fireplug.hosts.engine import Engine
from fireplug.support.signals import made_uninterrupted

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_GO_DIR = 1 << 31  # the engine reports Go's file mode bits
_GO_SYMLINK = 1 << 27


def ensure_command(engine: Engine, image: str, image_id: str, name: str, labels: Mapping[str, str], remembered: Path, *, apart_from: str = "") -> None:
    """Raise unless ``name`` can be run in ``image``.

    ``apart_from``: ``image_id`` is the image a one-time image was built FROM, whose only change
    is this folder (the project's): its answer holds for both, so a code change costs no new
    lookup, unless a folder of its PATH lies in that folder (then nothing is checked, as for a
    name with a '/').

    Raises:
        CommandNotFound: no folder of the image's PATH holds an executable ``name``.
        EngineError, EngineUnreachable.
    """
    if not name or "/" in name:
        return
    mark = remembered / hashlib.sha256(f"{image_id}\0{name}\0{apart_from}".encode(errors="surrogateescape")).hexdigest()[:32]
    if mark.exists():
        return
    config = engine.image_config(image_id)
    if config.get("Entrypoint"):
        return
    search = search_path(config.get("Env"))
    if apart_from and any(folder == apart_from or folder.startswith(apart_from.rstrip("/") + "/") for folder in search.split(":")):
        return
    probe_config = {"Image": image_id, "Cmd": [name], "Labels": dict(labels), "NetworkDisabled": True}
    import uuid

    probe = made_uninterrupted(lambda: engine.create_container(probe_config, f"fp-lookup-{uuid.uuid4().hex[:12]}"), engine.remove_container)
    try:
        found = any(_runnable(engine.path_kind(probe, posixpath.join(folder, name))) for folder in search.split(":") if folder.startswith("/"))
    finally:
        with contextlib.suppress(FireplugError):
            engine.remove_container(probe)
    if not found:
        raise CommandNotFound(name, image, search)
    with contextlib.suppress(OSError):
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.touch()


def search_path(env: Any) -> str:
    """The PATH an image's environment sets (a list of NAME=value), or the engine's default."""
    for entry in env if isinstance(env, list) else []:
        if isinstance(entry, str) and entry.startswith("PATH="):
            return entry[len("PATH=") :]
    return DEFAULT_PATH


def _runnable(found: tuple[int, str] | None) -> bool:
    if found is None:
        return False
    mode, _ = found
    return bool(mode & _GO_SYMLINK) or (not mode & _GO_DIR and bool(mode & 0o111))
