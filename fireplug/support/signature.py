"""When a stat signature may be trusted: one rule for the build-context scan and the data sync.

A file changed within ``RACY_NS`` of the moment it was looked at may change again within the
same timestamp tick without its signature changing (git's "racily clean" case): such entries
are never trusted as unchanged later. 2 s is the coarsest granularity in use (FAT).

Standard library only (the sync helper container imports it).
"""

from __future__ import annotations

import os

RACY_NS = 2_000_000_000


def stat_signature(info: os.stat_result) -> tuple[int, ...]:
    """What tells that a file may have changed: like git's index, ctime included (utime cannot fake it)."""
    return (info.st_mode, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)


def is_racy(mtime_ns: int, ctime_ns: int, looked_at_ns: int, racy_ns: int = RACY_NS) -> bool:
    """Whether a change at ``mtime_ns``/``ctime_ns`` is too close to ``looked_at_ns`` to trust."""
    return max(mtime_ns, ctime_ns) >= looked_at_ns - racy_ns
