"""The container side of syncing through the Docker API; runs as `python3 -m fireplug.sync.helper`.

It runs in a helper container on fp's base image with the host's data folder mounted, and
uses nothing but the standard library:

    manifest ROOT                      print {path: [size, mtime]} of ROOT's files as JSON
    pack ROOT MANIFEST FOLDER...       write a tar of the files under ROOT/FOLDER... that differ
                                       from MANIFEST (the local side's files) to stdout; name
                                       on stderr ("kept PATH") each one whose local copy is
                                       as new or newer
"""

from __future__ import annotations

import json
import os
import sys
import tarfile
from collections.abc import Iterator


def walk_files(root: str, folder: str = ".") -> Iterator[tuple[str, os.stat_result]]:
    """(path relative to ``root``, lstat) of every regular file under ``root/folder``."""
    start = os.path.normpath(os.path.join(root, folder))
    for current, directories, files in os.walk(start):
        directories.sort()
        for name in sorted(files):
            path = os.path.join(current, name)
            status = os.lstat(path)
            if not os.path.islink(path) and os.path.isfile(path):
                yield os.path.relpath(path, root), status


def manifest(root: str, folders: list[str] | None = None) -> dict[str, list[int]]:
    return {path: [status.st_size, int(status.st_mtime)] for folder in folders or ["."] for path, status in walk_files(root, folder)}


def differs(local: list[int] | None, size: int, mtime: int) -> bool:
    return local is None or local[0] != size or local[1] != mtime


def keep_local(local: list[int] | None, mtime: int) -> bool:
    """A differing local copy changed at the same second as the host's, or later: it wins (whole
    seconds are all both sides are sure to share; when in doubt, the user's own file is kept)."""
    return local is not None and local[1] >= mtime


def pack(root: str, local_manifest: dict[str, list[int]], folders: list[str]) -> None:
    with tarfile.open(fileobj=sys.stdout.buffer, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        for folder in folders:
            for path, status in walk_files(root, folder):
                local = local_manifest.get(path)
                if not differs(local, status.st_size, int(status.st_mtime)):
                    continue
                if keep_local(local, int(status.st_mtime)):
                    print(f"kept {path}", file=sys.stderr)
                    continue
                archive.add(os.path.join(root, path), arcname=path, recursive=False)


def main(argv: list[str]) -> int:
    if argv[:1] == ["manifest"] and len(argv) == 2:
        json.dump(manifest(argv[1]), sys.stdout)
        return 0
    if argv[:1] == ["pack"] and len(argv) >= 4:
        with open(argv[2]) as source:
            pack(argv[1], json.load(source), argv[3:])
        return 0
    print("usage: helper manifest ROOT | pack ROOT MANIFEST FOLDER...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
