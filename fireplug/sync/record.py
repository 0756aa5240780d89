"""What both sides of a (project, host) pair held after their last completed sync, and the lock around a sync.

The record is the common ancestor of a three-way comparison (Unison's archive): per path its
kind, size, link target, content digest when known, and each side's stat signature as fp
left it. A side whose entry still has that signature is unchanged; anything else changed,
or may have (``plan.py`` decides which). A lost or unreadable record only costs a first
sync, which deletes nothing.

Kept under fp's state folder (``$XDG_STATE_HOME/fireplug``), never inside the data folder.
"""

from __future__ import annotations

import hashlib
import marshal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fireplug.support.state import save_bytes
from fireplug.sync import DIR, FILE, LINK, SyncError
from fireplug.sync.tree import Tree, parse_listing

RECORD_FORMAT = 2
RECORD_MAGIC = b"fireplug sync record 2\n"  # then the SHA-256 of the marshal payload, then the payload
RACY = -1  # a signature's ctime when it was too recent to trust (see fireplug.support.signature)

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


@dataclass(frozen=True)
class State:
    """What a pair's record file holds."""

    record: Record
    host_listing: str = ""  # the SHA-256 of the host listing the record was made from ("" if none)
    # Paths a sync began to copy and did not see arrive (it was interrupted, or failed as a
    # whole): until a sync completes, a side lacking one of them has not deleted it, it just
    # has not received it yet.
    unconfirmed: frozenset[str] = frozenset()
    made_for: str = ""  # the project folder whose data the record describes ("" when not known)


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
        """The record; its mtime is when this pair last completed a sync."""
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
    return load_state(path).record


def load_state(path: Path) -> State:
    """The record at ``path`` with what it says of the host listing and of unfinished copies;
    empty when missing, unreadable or of another format (which only costs a first sync)."""
    try:
        data: Any = marshal.loads(_checked(path.read_bytes()))
    except (OSError, ValueError, EOFError, TypeError, RecursionError):
        return State({})
    if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT or not isinstance(data.get("paths"), dict):
        return State({})
    listing, unconfirmed, made_for = data.get("host_listing", ""), data.get("unconfirmed", []), data.get("made_for", "")
    if (
        not isinstance(listing, str)
        or not isinstance(made_for, str)
        or not isinstance(unconfirmed, list)
        or not all(isinstance(name, str) for name in unconfirmed)
        or not all(isinstance(name, str) and _fields_ok(fields) for name, fields in data["paths"].items())
    ):
        return State({})
    return State({name: Common(*fields) for name, fields in data["paths"].items()}, listing, frozenset(unconfirmed), made_for)


def _fields_ok(fields: Any) -> bool:
    """Whether ``fields`` are what ``save_record`` writes for one path (a record is fp's own file, but disposable)."""
    if not isinstance(fields, tuple) or len(fields) != 6:
        return False
    kind, size, target, digest, here, there = fields
    return (
        kind in (FILE, DIR, LINK)
        and type(size) is int
        and isinstance(target, str)
        and isinstance(digest, str)
        and all(side is None or (isinstance(side, tuple) and len(side) == 3 and all(type(number) is int for number in side)) for side in (here, there))
    )


def save_record(path: Path, state: State) -> None:
    """Write ``state`` atomically (a temporary name of this process's own, then a rename)."""
    paths = {name: (c.kind, c.size, c.target, c.digest, c.here, c.there) for name, c in state.record.items()}
    document: dict[str, Any] = {"format": RECORD_FORMAT, "paths": paths, "host_listing": state.host_listing, "made_for": state.made_for}
    if state.unconfirmed:
        document["unconfirmed"] = sorted(state.unconfirmed)
    payload = marshal.dumps(document)
    save_bytes(path, RECORD_MAGIC + hashlib.sha256(payload).digest() + payload)


def _checked(data: bytes) -> bytes:
    """The marshal payload of a record file, once its checksum matches.

    marshal trusts its input (a few hostile bytes can ask it for gigabytes), so no byte of a
    file that is not exactly what ``save_record`` wrote ever reaches it.

    Raises:
        ValueError: not a record file, or damaged.
    """
    header = len(RECORD_MAGIC) + hashlib.sha256().digest_size
    payload = data[header:]
    if not data.startswith(RECORD_MAGIC) or hashlib.sha256(payload).digest() != data[len(RECORD_MAGIC) : header]:
        raise ValueError("not a sync record, or a damaged one")
    return payload


def parse_saved_listing(host: str, previous: bytes) -> Tree:
    try:
        return parse_listing(previous)
    except (ValueError, UnicodeDecodeError) as e:
        raise SyncError(host, f"fp's copy of the host listing is damaged ({e})", hint="run fp again") from e


def saved_listing(pair: PairFiles, recorded_sha256: str) -> bytes:
    """The host listing saved at the last sync, when it is the one the record was made from; else b""."""
    previous = _read(pair.host_listing)
    return previous if previous and hashlib.sha256(previous).hexdigest() == recorded_sha256 else b""


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
