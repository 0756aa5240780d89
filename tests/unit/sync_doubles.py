"""A host side backed by a second local folder, for running the real sync session without services.

It lists, hashes, moves and copies with the same rules a real transport follows (temporary
name then rename, links copied as links, never through a link), and can be told to stop
after N copied entries, as a Ctrl-C would, or to fail to copy some paths, as rsync's
partial failure (exit 23) does.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from fireplug.sync.side import Moved, Transferred
from fireplug.sync.tree import DIR, FILE, LINK, Listing, clock_line, file_sha256, format_entry, keep_aside, lstat_entry, parse_clock, safe_parent, scan


class FolderHost:
    host = "box"

    def __init__(self, folder: Path, trash: Path, *, stop_after: int | None = None, fail: set[str] | frozenset[str] = frozenset()) -> None:
        self.folder = folder
        self.trash = trash
        self.trash_folder = str(trash)
        self.stop_after = stop_after
        self.fail = fail
        self.copied = 0
        self.digested: list[str] = []  # every path hashed on this side

    def list(self, previous: bytes = b"") -> tuple[Listing, str]:
        """The folder's tree; like the ssh host, just "same" when its listing is ``previous``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.trash.mkdir(parents=True, exist_ok=True)
        now_ns, racy_ns = parse_clock(clock_line(str(self.folder), str(self.trash / ".clock")))
        tree = scan(str(self.folder))
        raw = b"".join(format_entry(path, entry) for path, entry in sorted(tree.items()))
        if previous and raw == previous:
            return Listing({}, now_ns, previous, same=True, racy_ns=racy_ns), ""
        return Listing(tree, now_ns, raw, racy_ns=racy_ns), ""

    def digests(self, paths: Sequence[str]) -> dict[str, str]:
        self.digested += paths
        return {path: digest for path in paths if (digest := file_sha256(str(self.folder / path)))}

    def move(self, renames: Sequence[tuple[str, str]], trash: Sequence[str], batch: str) -> Moved:
        failed = set()
        for path, copy in renames:
            try:
                os.rename(self.folder / path, self.folder / copy)
            except OSError:
                failed.add(path)
        for path in trash:
            target = self.trash / batch / path
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(self.folder / path, target)
            except FileNotFoundError:
                continue
        return Moved(frozenset(failed))

    def pull(self, paths: Sequence[str], local: Path, backup: Path, fresh: set[str]) -> Transferred:
        return self._copy(self.folder, local, paths, backup)

    def push(self, local: Path, paths: Sequence[str], batch: str, fresh: set[str]) -> Transferred:
        return self._copy(local, self.folder, paths, self.trash / batch)

    def _copy(self, source: Path, target: Path, paths: Sequence[str], backup: Path) -> Transferred:
        done = Transferred()
        for path in sorted(paths):
            if self.stop_after is not None and self.copied >= self.stop_after:
                raise KeyboardInterrupt
            entry = lstat_entry(str(source), path)
            if entry is None or not safe_parent(str(target), path):
                continue
            if path in self.fail:
                done.problem = f"could not copy {path}"
                continue
            destination = target / path
            destination.parent.mkdir(parents=True, exist_ok=True)
            if entry.kind == DIR:
                if lstat_entry(str(target), path) is None:
                    destination.mkdir()
                continue
            existing = lstat_entry(str(target), path)
            if existing is not None and existing.kind == DIR:
                continue
            handle, temporary = tempfile.mkstemp(dir=destination.parent, prefix=".fp-partial-")
            os.close(handle)
            if entry.kind == LINK:
                os.unlink(temporary)
                os.symlink(entry.target, temporary)
            else:
                shutil.copyfile(source / path, temporary)
            os.utime(temporary, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)
            if existing is not None:
                keep_aside(str(destination), str(backup / path))
            os.replace(temporary, destination)
            self.copied += 1
            if entry.kind == FILE:
                done.files += 1
                done.file_bytes += entry.size
        return done
