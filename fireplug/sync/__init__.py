"""Moving the data folder between this machine and a host: one small interface, one module per way.

- ``rsync``: rsync over the host's ssh master connection (incremental, resumable).
- ``api``: through the Docker API, for engines reached without ssh (a helper container
  receives or sends tar streams of the files that differ).

Both follow the same rules: sync in copies the local data folder to the host and deletes
nothing there; sync out brings result folders back, never deletes a local file, and never
replaces a local file that is newer than the host's copy (it reports the ones it kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fireplug.errors import FireplugError


@dataclass(frozen=True)
class SyncReport:
    direction: str  # "in" or "out"
    files: int  # files transferred
    file_bytes: int  # bytes of file content transferred
    wire_bytes: int  # bytes that crossed the connection, both ways
    kept: tuple[str, ...] = ()  # local files kept because they are newer than the host's
    seconds: float = 0.0


class Syncer(Protocol):
    def sync_in(self, local: Path, remote: str) -> SyncReport:
        """Copy the folder ``local`` to ``remote`` on the host (created if missing)."""

    def sync_out(self, remote: str, local: Path, folders: Sequence[str]) -> SyncReport:
        """Bring ``folders`` (relative to both ``remote`` and ``local``; "." for all) back."""


class SyncError(FireplugError):
    def __init__(self, host: str, direction: str, detail: str, *, hint: str = "") -> None:
        where = "to" if direction == "in" else "from"
        super().__init__(f"syncing data {where} host '{host}' failed: {detail}", hint=hint)
        self.host = host
        self.direction = direction
