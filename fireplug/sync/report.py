"""What one sync did, for the report line and the callers that act on it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SyncReport:
    pushed: int = 0  # files copied to the host
    pushed_bytes: int = 0
    pulled: int = 0  # files copied from the host
    pulled_bytes: int = 0
    wire_bytes: int = 0  # bytes that crossed the connection, both ways
    trashed_here: tuple[str, ...] = ()  # local paths moved into the local trash (deleted on the host)
    trashed_there: tuple[str, ...] = ()  # host paths moved into the host's trash (deleted here)
    local_trash: str = ""
    host_trash: str = ""
    conflicts: tuple[tuple[str, str], ...] = ()  # (path, the host version's conflict copy)
    kept: tuple[str, ...] = ()  # deleted on one side but changed on the other: kept on both
    outside_links: tuple[str, ...] = ()  # symlinks that point outside the data folder
    unsyncable: tuple[str, ...] = ()  # device nodes, FIFOs, sockets: never synced
    unsafe: tuple[str, ...] = ()  # copies refused: the local path passes through a symlink, or changed meanwhile
    restored: tuple[str, ...] = ()  # files the host lost en masse, sent again rather than deleted here
    pulled_paths: tuple[str, ...] = ()  # what came from the host (files, links, folders)
    replaced_here: tuple[str, ...] = ()  # local files a copy from the host replaced (each is in local_trash now)
    seconds: float = 0.0

    @property
    def changed_anything(self) -> bool:
        return bool(self.pushed or self.pulled or self.trashed_here or self.trashed_there or self.conflicts)
