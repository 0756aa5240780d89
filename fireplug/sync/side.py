"""What a sync asks of the host's side (``HostSide``: list, hash, move, pull, push), whatever
the transport (rsync over ssh, the Docker API, a bucket), and the values that cross it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from fireplug.sync.record import PairFiles
from fireplug.sync.tree import Listing


@dataclass(frozen=True)
class Moved:
    """What the host did with the moves it was asked for."""

    failed: frozenset[str] = frozenset()  # paths it could not move (left as they were)


@dataclass
class Transferred:
    files: int = 0
    file_bytes: int = 0
    wire_bytes: int = 0
    problem: str = ""  # a transfer that failed for some paths: the tool's own words
    digests: dict[str, str] = field(default_factory=dict)  # SHA-256 of files received here, made while writing them


class HostSide(Protocol):
    """What a transport does on the host; paths are relative to the host's data folder."""

    @property
    def host(self) -> str: ...

    @property
    def trash_folder(self) -> str:
        """Where the host's trash lives (beside the data folder, never inside)."""

    def list(self, previous: bytes = b"") -> tuple[Listing, str]:
        """The host's tree (the data folder is created when missing), and any listing problem.

        ``previous``: the raw listing of the last completed sync; a transport may answer with
        it (``Listing.raw``) rather than send the same bytes again."""

    def digests(self, paths: Sequence[str]) -> dict[str, str]:
        """SHA-256 of each file (files that vanished are left out)."""

    def move(self, renames: Sequence[tuple[str, str]], trash: Sequence[str], batch: str) -> Moved:
        """Rename conflict copies, then move ``trash`` into ``trash_folder/batch``."""

    def pull(self, paths: Sequence[str], local: Path, backup: Path, fresh: set[str]) -> Transferred:
        """Copy ``paths`` (files, links, folders) from the host into ``local``; a local entry
        that a copy replaces is moved under ``backup`` first (same relative path). ``fresh``:
        the paths this side does not have (no delta transfer can help them)."""

    def push(self, local: Path, paths: Sequence[str], batch: str, fresh: set[str]) -> Transferred:
        """Copy ``paths`` from ``local`` to the host; what a copy replaces there goes to
        ``trash_folder/batch``. ``fresh``: the paths the host does not have."""


@dataclass(frozen=True)
class Owner:
    """The project folder a sync is for. Its record says which folder it was made for: two
    copies of one project (a copied folder keeps ``project.id``) would share the host's copy
    and the record, and each sync would move the other's files to the trash."""

    folder: str
    is_copy: Callable[[str], bool]  # whether this other folder, the record's, is a live copy of the same project


@dataclass(frozen=True)
class SyncRequest:
    local: Path  # the local data folder (exists)
    pair: PairFiles
    host_name: str
    full: bool = False  # hash every file on both sides
    pull_scope: tuple[str, ...] = ()  # folders (relative to the data folder) host changes come back from; () = all
    accept_deletions: bool = False  # repeat here even a mass deletion on the host (see plan.host_lost_data)
    push: bool = True  # False: bring changes back only (see plan.make_plan)
    on_wait: Callable[[str], None] = lambda holder: None
    owner: Owner | None = None  # None: the record's folder is not checked (nor noted)
