"""Locks between fp processes of one machine: flock on a file that names its holder.

A sync holds one per (project, host); a build one per (host, image), so that concurrent cold
runs build an image once and the others wait for it. flock locks go away with their process,
so a killed fp never leaves one behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def exclusive(path: Path, on_wait: Callable[[str], None]) -> Iterator[None]:
    """Hold the lock file ``path``; ``on_wait`` is told once, with the holder, if another fp has it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            handle.seek(0)
            on_wait(handle.read().strip() or "another fp")
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"fp (pid {os.getpid()})")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_lock_path(folder: Path, host: str, tag: str) -> Path:
    return folder / ("build-" + hashlib.sha256(f"{host}\0{tag}".encode()).hexdigest()[:24])
