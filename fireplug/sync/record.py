"""What both sides of a (project, host) pair held after their last completed sync, and the lock around a sync.

The record is the common ancestor of a three-way comparison (Unison's archive): per path its
kind, size, link target, content digest when known, and each side's stat signature as fp
left it. A side whose entry still has that signature is unchanged; anything else changed,
or may have (``plan.py`` decides which). A lost or unreadable record only costs a first
sync, which deletes nothing.

Kept under fp's state folder (``$XDG_STATE_HOME/fireplug``), never inside the data folder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import marshal
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RECORD_FORMAT = 2
RACY = -1  # a signature's ctime when it was too recent to trust (see fireplug.signature)

Signature = tuple[int, int, int]  # mtime_ns, ctime_ns (RACY when untrusted), inode


@dataclass(frozen=True, slots=True)
class Common:
    """One path as both sides held it after the last completed sync."""

    kind: str
    size: int = 0
    target: str = ""
    digest: str = ""  # SHA-256 of the content, "" when unknown
    here: Signature | None = None  # the local side's signature (None for folders and links)
    there: Signature | None = None  # the host's


Record = dict[str, Common]


def state_home(env: Mapping[str, str], home: Path) -> Path:
    return Path(env.get("XDG_STATE_HOME") or home / ".local" / "state") / "fireplug"


@dataclass(frozen=True)
class PairFiles:
    """Where the record, lock and local trash of one (project, host) pair live."""

    folder: Path
    trash: Path

    @classmethod
    def of(cls, state: Path, project_key: str, host: str) -> PairFiles:
        return cls(state / "sync" / project_key / host, state / "trash" / project_key / host)

    @property
    def record(self) -> Path:
        return self.folder / "record"

    @property
    def lock(self) -> Path:
        return self.folder / "lock"

    @property
    def host_listing(self) -> Path:
        """The host's raw listing after the last completed sync (the host may answer "same")."""
        return self.folder / "host-listing"


def load_record(path: Path) -> Record:
    """The record at ``path``; empty when missing, unreadable or of another format."""
    return load_state(path)[0]


def load_state(path: Path) -> tuple[Record, str]:
    """The record at ``path`` and the SHA-256 of the host listing it was made from ("" if none)."""
    try:
        data: dict[str, Any] = marshal.loads(path.read_bytes())
        if data.get("format") != RECORD_FORMAT:
            return {}, ""
        return {name: Common(*fields) for name, fields in data["paths"].items()}, str(data.get("host_listing", ""))
    except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError):
        return {}, ""


def save_record(path: Path, record: Record, host_listing: str = "") -> None:
    """Write ``record`` atomically (a temporary name of this process's own, then a rename);
    ``host_listing``: the SHA-256 of the host listing the record's host side comes from."""
    paths = {name: (c.kind, c.size, c.target, c.digest, c.here, c.there) for name, c in record.items()}
    save_bytes(path, marshal.dumps({"format": RECORD_FORMAT, "paths": paths, "host_listing": host_listing}))


def save_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a temporary name of this process's own, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        partial.write_bytes(data)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


@contextlib.contextmanager
def pair_lock(path: Path, on_wait: Callable[[str], None]) -> Iterator[None]:
    """Hold the (project, host) sync lock; ``on_wait`` is told once, with the holder, if another fp has it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            handle.seek(0)
            on_wait(handle.read().strip() or "another fp")
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"fp (pid {os.getpid()})")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def last_host_path(state: Path, project_key: str) -> Path:
    return state / "sync" / project_key / "last-host"


def remember_host(state: Path, project_key: str, host: str) -> None:
    save_bytes(last_host_path(state, project_key), f"{host}\n".encode())


def last_host(state: Path, project_key: str) -> str | None:
    try:
        return last_host_path(state, project_key).read_text().strip() or None
    except OSError:
        return None
