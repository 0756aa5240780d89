"""A swarm run's results, brought back by a three-way comparison of manifests.

A swarm task starts from the input manifest fp staged for it (``base``) and publishes its data
folder when it ends (``result``). What the run changed is what differs between the two; each
change lands here with the two-way sync's rules:

- the local entry is still as the run found it (or already as the run left it): the run's
  version lands, and what it replaces goes to the local trash;
- it changed here meanwhile: a conflict; the run's version lands under a conflict name, both kept;
- the run deleted it: it goes to the local trash, unless it changed here meanwhile (kept).

Entries land as the API sync lands them (``land_entry``: temporary names, never a half-written
file under its real name, never through a link, never outside the data folder).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from fireplug.remote.s3_layout import Manifest, ManifestEntry, is_plain_path
from fireplug.sync.landing import land_entry, remove_if_empty, scratch_folder
from fireplug.sync.plan import conflict_name
from fireplug.sync.tree import DIR, FILE, LINK, Entry, file_sha256, keep_aside, lstat_entry, safe_parent

Download = Callable[[str, int, BinaryIO], None]  # (digest, size, out)


@dataclass
class Landed:
    files: int = 0
    file_bytes: int = 0
    changed: list[str] = field(default_factory=list)  # paths the run's version now holds
    trashed: list[str] = field(default_factory=list)  # deleted by the run, moved to the local trash
    conflicts: list[tuple[str, str]] = field(default_factory=list)  # path, the conflict copy holding the run's version
    kept: list[str] = field(default_factory=list)  # deleted by the run, but changed here meanwhile
    refused: list[str] = field(default_factory=list)  # a parent here is not a real folder


def changes(base: Manifest, result: Manifest) -> list[str]:
    """Paths the run changed, parents before children (deletions: children before parents, last)."""
    changed = [path for path in set(base) | set(result) if not same(base.get(path), result.get(path))]
    landed = sorted(path for path in changed if path in result)
    deleted = sorted((path for path in changed if path not in result), reverse=True)
    return landed + deleted


def same(first: ManifestEntry | None, second: ManifestEntry | None) -> bool:
    if first is None or second is None:
        return first is second
    if first["kind"] != second["kind"]:
        return False
    if first["kind"] == FILE:
        return bool(first.get("digest")) and first.get("digest") == second.get("digest") and (first["mode"] & 0o111) == (second["mode"] & 0o111)
    if first["kind"] == LINK:
        return bool(first.get("target") == second.get("target"))
    return True


def matches(local: Path, path: str, entry: Entry | None, wanted: ManifestEntry | None) -> bool:
    """The local entry is ``wanted`` (None: there is none)."""
    if entry is None or wanted is None:
        return entry is None and wanted is None
    if entry.kind != wanted["kind"]:
        return False
    if entry.kind == FILE:
        return entry.size == wanted["size"] and file_sha256(str(local / path)) == wanted.get("digest")
    if entry.kind == LINK:
        return entry.target == wanted.get("target")
    return True


def land(base: Manifest, result: Manifest, local: Path, trash: Path, download: Download, *, side: str, stamp: str) -> Landed:
    """Bring what the run changed (``base`` -> ``result``) into the data folder ``local``."""
    landed = Landed()
    scratch = scratch_folder(local)
    try:
        for path in changes(base, result):
            if not is_plain_path(path) or not safe_parent(str(local), path):
                landed.refused.append(path)
                continue
            _land_one(path, base.get(path), result.get(path), local, trash, download, landed, side=side, stamp=stamp)
    finally:
        remove_if_empty(scratch)
    return landed


def _land_one(
    path: str, before: ManifestEntry | None, after: ManifestEntry | None, local: Path, trash: Path, download: Download, landed: Landed, *, side: str, stamp: str
) -> None:
    here = lstat_entry(str(local), path)
    if matches(local, path, here, after):
        return  # already as the run left it
    untouched = matches(local, path, here, before) or (before is not None and before["kind"] == DIR and here is not None and here.kind == DIR)
    if after is None:
        if here is None:
            return
        if not untouched or (here.kind == DIR and os.listdir(local / path)):
            landed.kept.append(path)
            return
        keep_aside(str(local / path), str(trash / path))
        landed.trashed.append(path)
        return
    target = path if untouched or here is None else _free_conflict_name(local, path, side, stamp)
    if target != path:
        landed.conflicts.append((path, target))
    if _write(local, target, after, trash, download):
        landed.changed.append(target)
        if after["kind"] == FILE:
            landed.files += 1
            landed.file_bytes += after["size"]
    else:
        landed.refused.append(path)


def _free_conflict_name(local: Path, path: str, side: str, stamp: str) -> str:
    name = conflict_name(path, side, stamp)
    number = 1
    while lstat_entry(str(local), name) is not None:
        stem, ext = posixpath.splitext(conflict_name(path, side, stamp))
        name, number = f"{stem}-{number}{ext}", number + 1
    return name


def _write(local: Path, path: str, entry: ManifestEntry, trash: Path, download: Download) -> bool:
    scratch = scratch_folder(local)

    def fill(out: BinaryIO) -> None:
        download(entry["digest"], entry["size"], out)

    writer = fill if entry["kind"] == FILE else None
    if entry["kind"] not in (FILE, DIR, LINK):
        return False
    return land_entry(local, path, entry["kind"], entry["mode"], entry["mtime_ns"], entry.get("target", ""), trash, scratch, writer)
