"""The host side of a sync through the Docker API; runs as `python3 -m fireplug.remote.sync_helper`.

It runs in a short-lived container on fp's base image with the host's project folder mounted
(the data folder, the trash and the staging folders side by side in it), using nothing but
the standard library and ``fireplug.sync.tree``:

    list DATA TRASH [SHA256]         print the clock and DATA's tree (tree.LISTING_FORMAT), or "same"
                                     when the tree's SHA-256 is the one given; prune old trash and
                                     staging folders left by an interrupted sync
    digest DATA PATHS                print ``sha256sum -z`` lines for the files named in PATHS
    move DATA TRASH BATCH OPS        conflict renames and moves into TRASH/BATCH; print failures
    remove STAGE                     remove a staging folder
    stage DATA STAGE PATHS           lay out the named entries under STAGE for the engine's archive
                                     API: files hard-linked (copied when changed in the last
                                     seconds, so the archive sees a still file), links and folders made
    trash ROOT DAYS [remove]         the trash batches older than DAYS of every project under ROOT
                                     (a host's data root): ``BYTES PATH`` lines; ``remove``: remove them,
                                     then print those left
    install DATA STAGE BACKUP TRASH  move what an upload put in STAGE into DATA (what it replaces
                                     goes under BACKUP); name refusals on stderr; then list as `list`

PATHS and OPS are NUL-separated files. No symlink is ever followed when writing: every
parent of a target must be a real folder inside DATA, or the entry is refused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from collections.abc import Iterator

from fireplug.sync.tree import (
    DIR,
    FILE,
    LINK,
    TRASH_FOLDER,
    clock_line,
    file_sha256,
    format_entry,
    keep_aside,
    lstat_entry,
    old_batches,
    prune_batches,
    safe_parent,
    scan,
    tree_bytes,
)

STAGING_PREFIX = ".fp-staging-"
STILL_NS = 5_000_000_000  # a file changed more recently may still be growing


def list_tree(data: str, trash: str, out: object, known: str = "-") -> None:
    """The clock, then ``same`` when the listing's SHA-256 is ``known``, else ``listing`` and the listing."""
    os.makedirs(data, exist_ok=True)
    os.makedirs(trash, exist_ok=True)
    clock = clock_line(data, os.path.join(trash, f".clock.{os.urandom(6).hex()}"))
    listing = b"".join(format_entry(path, entry) for path, entry in scan(data).items())
    same = hashlib.sha256(listing).hexdigest() == known
    out.write(clock + b"\n" + (b"same\n" if same else b"listing\n" + listing))  # type: ignore[attr-defined]
    _prune(trash, os.path.dirname(os.path.abspath(data)))


def _prune(trash: str, project: str) -> None:
    prune_batches(trash)
    for name in os.listdir(project):
        if name.startswith(STAGING_PREFIX):  # syncs of one project and host are serialized: this one is stale
            shutil.rmtree(os.path.join(project, name), ignore_errors=True)


def digest_files(data: str, paths: list[str], out: object) -> None:
    for path in paths:
        digest = file_sha256(os.path.join(data, path))
        if digest:
            out.write(f"{digest}  ".encode() + os.fsencode(path) + b"\0")  # type: ignore[attr-defined]


def move(data: str, trash: str, batch: str, operations: list[str], out: object) -> None:
    items = iter(operations)
    for kind in items:
        source = next(items)
        target = next(items) if kind == "r" else os.path.join(trash, batch, source)
        try:
            if kind != "r":
                os.makedirs(os.path.dirname(target), exist_ok=True)
            if not safe_parent(data, source):
                raise OSError("a parent is not a real folder")
            os.rename(os.path.join(data, source), target if kind != "r" else os.path.join(data, target))
        except FileNotFoundError:
            continue
        except OSError:
            out.write(b"failed " + os.fsencode(source) + b"\0")  # type: ignore[attr-defined]


def stage(data: str, staging: str, paths: list[str]) -> None:
    """``paths`` of ``data`` laid out under ``staging`` (same relative paths), never following a link."""
    os.makedirs(staging)
    recent = time.time_ns() - STILL_NS
    for path in paths:
        entry = lstat_entry(data, path)
        if entry is None or entry.kind not in (FILE, DIR, LINK) or not safe_parent(data, path):
            continue
        source, target = os.path.join(data, path), os.path.join(staging, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if entry.kind == DIR:
            os.makedirs(target, exist_ok=True)
        elif entry.kind == LINK:
            os.symlink(entry.target, target)
        elif max(entry.mtime_ns, entry.ctime_ns) >= recent:
            shutil.copy2(source, target, follow_symlinks=False)  # maybe still being written: a snapshot
        else:
            os.link(source, target, follow_symlinks=False)


def install(data: str, stage: str, backup: str, refusals: object) -> None:
    """Move each staged entry to its place in ``data``: files and links by rename, folders made;
    a file or link replaced is moved under ``backup`` first."""
    for path, is_dir in _staged(stage):
        target = os.path.join(data, path)
        if not safe_parent(data, path):
            refusals.write(b"refused " + os.fsencode(path) + b"\0")  # type: ignore[attr-defined]
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        existing = lstat_entry(data, path)
        if is_dir:
            if existing is None:
                os.mkdir(target)
                shutil.copystat(os.path.join(stage, path), target)
            elif existing.kind != DIR:
                refusals.write(b"refused " + os.fsencode(path) + b"\0")  # type: ignore[attr-defined]
        elif existing is not None and existing.kind == DIR:
            refusals.write(b"refused " + os.fsencode(path) + b"\0")  # type: ignore[attr-defined]
        else:
            if existing is not None:
                keep_aside(target, os.path.join(backup, path))
            os.replace(os.path.join(stage, path), target)
    shutil.rmtree(stage, ignore_errors=True)


def old_trash(root: str, days: int, out: object, *, remove: bool) -> None:
    """Every project's trash batches older than ``days`` under the data root ``root``;
    ``remove``: removed first, so that those printed are those left."""
    for project in sorted(os.listdir(root)) if os.path.isdir(root) else ():
        for batch in old_batches(os.path.join(root, project, TRASH_FOLDER), days):
            if remove:
                shutil.rmtree(batch, ignore_errors=True)
            if os.path.lexists(batch):
                out.write(f"{tree_bytes(batch)} {batch}\n".encode(errors="surrogateescape"))  # type: ignore[attr-defined]


def _staged(stage: str) -> Iterator[tuple[str, bool]]:
    for current, folders, files in os.walk(stage):
        folders.sort()
        relative = os.path.relpath(current, stage)
        prefix = "" if relative == "." else relative + "/"
        for name in sorted(files):
            yield prefix + name, False
        for name in list(folders):
            full = os.path.join(current, name)
            if os.path.islink(full):  # os.walk lists links to folders as folders: a link is moved, not entered
                folders.remove(name)
                yield prefix + name, False
            else:
                yield prefix + name, True


def _read_list(path: str) -> list[str]:
    with open(path, "rb") as source:
        return [os.fsdecode(item) for item in source.read().split(b"\0")[:-1]]


def main(argv: list[str]) -> int:
    out = sys.stdout.buffer
    command, arguments = (argv[0], argv[1:]) if argv else ("", [])
    if command == "list" and len(arguments) in (2, 3):
        list_tree(arguments[0], arguments[1], out, arguments[2] if len(arguments) == 3 else "-")
    elif command == "digest" and len(arguments) == 2:
        digest_files(arguments[0], _read_list(arguments[1]), out)
    elif command == "move" and len(arguments) == 4:
        move(arguments[0], arguments[1], arguments[2], _read_list(arguments[3]), out)
    elif command == "stage" and len(arguments) == 3:
        stage(arguments[0], arguments[1], _read_list(arguments[2]))
    elif command == "remove" and len(arguments) == 1 and os.path.basename(arguments[0]).startswith(STAGING_PREFIX):
        shutil.rmtree(arguments[0], ignore_errors=True)
    elif command == "trash" and len(arguments) in (2, 3) and arguments[1].isdigit():
        old_trash(arguments[0], int(arguments[1]), out, remove=arguments[2:] == ["remove"])
    elif command == "install" and len(arguments) == 4:
        install(arguments[0], arguments[1], arguments[2], sys.stderr.buffer)
        sys.stderr.flush()
        list_tree(arguments[0], arguments[3], out)
    else:
        print("usage: helper list|digest|move|stage|remove|install ...", file=sys.stderr)
        return 2
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
