"""Landing one entry in a local folder without ever leaving it half-written: a file or link is
made under a temporary name in a scratch folder beside the data, then renamed over what was
there, which first goes to the trash; never through a parent that is not a real folder.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from fireplug.errors import HelperFailed as HelperFailed
from fireplug.sync import SyncError
from fireplug.sync.tree import DIR, LINK, PARTIAL_DIR, keep_aside, lstat_entry, safe_parent


def land_entry(
    root: Path, name: str, kind: str, mode: int, mtime_ns: int, target: str, backup: Path, scratch: Path, write: Callable[[BinaryIO], None] | None = None
) -> bool:
    """Put one entry at ``root/name``: a folder is made when missing; a file (``write`` fills it)
    or a link is made under a temporary name in ``scratch``, then renamed over what was there
    (which moves under ``backup`` first). False: refused, because a parent is not a real
    folder, or a folder stands where a file goes (or a file where a folder goes)."""
    if not safe_parent(str(root), name):
        return False
    full = root / name
    existing = lstat_entry(str(root), name)
    full.parent.mkdir(parents=True, exist_ok=True)
    if kind == DIR:
        if existing is None:
            full.mkdir(mode=0o700)
            os.chmod(full, mode & 0o777)
        return existing is None or existing.kind == DIR
    if existing is not None and existing.kind == DIR:
        return False
    handle, temporary = tempfile.mkstemp(dir=scratch, prefix=".fp-")
    try:
        if kind == LINK:
            os.close(handle)
            os.unlink(temporary)
            os.symlink(target, temporary)
        else:
            with os.fdopen(handle, "wb") as out:
                if write is not None:
                    write(out)
            os.chmod(temporary, mode & 0o777)
        os.utime(temporary, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
        if existing is not None:
            keep_aside(str(full), str(backup / name))
        os.replace(temporary, full)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return True


def scratch_folder(root: Path) -> Path:
    """Where files are written before their rename: in the data folder (same filesystem), never synced."""
    scratch = root / PARTIAL_DIR
    scratch.mkdir(exist_ok=True)
    if scratch.is_symlink() or not scratch.is_dir():
        raise SyncError("", f"{scratch} is not a folder", hint="remove it")
    return scratch


def remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()
