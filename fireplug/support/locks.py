"""Locks and leases between fp processes of one machine.

Locks are flock on a file that names its holder. A sync holds one per (project, host); a build
one per (host, image), so that concurrent cold runs build an image once and the others wait
for it. flock locks go away with their process, so a killed fp never leaves one behind.

A lease says that an fp process has chosen a host for a run that has not started yet (or
is running): concurrent auto-choices count it, so that they spread out. It is a file named
after its process; one whose process has ended counts for nothing and is removed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import socket
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


def this_process() -> str:
    """This fp process, as machine:pid:start time (what owner labels and leases carry)."""
    return f"{socket.gethostname()}:{os.getpid()}:{start_time(os.getpid())}"


def start_time(pid: int) -> int:
    """When a process started, in whole seconds since the epoch, as psutil's create_time says:
    from /proc on Linux (importing psutil took 13 ms of every run), else from psutil."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat, open("/proc/stat", "rb") as system:
            ticks = int(stat.read().rsplit(b")", 1)[1].split()[19])  # field 22, starttime
            boot = next(float(line.split()[1]) for line in system if line.startswith(b"btime "))
        return int(ticks / os.sysconf("SC_CLK_TCK") + boot)
    except (OSError, ValueError, IndexError, StopIteration):
        import psutil

        return int(psutil.Process(pid).create_time())


def process_gone(owner: str) -> bool:
    """Whether the fp process named by ``owner`` is known to have ended (it ran on this machine)."""
    import psutil

    machine, _, rest = owner.partition(":")
    pid, _, started = rest.partition(":")
    if machine != socket.gethostname() or not pid.isdigit() or not started.isdigit():
        return False
    try:
        return int(psutil.Process(int(pid)).create_time()) != int(started)
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


class Leases:
    """The hosts that this machine's fp processes have chosen: ``folder/HOST/OWNER`` files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.owner = this_process()

    @contextlib.contextmanager
    def choosing(self) -> Iterator[None]:
        """Held while one fp reads the leases, picks a host and takes its lease."""
        with exclusive(self.folder / "choosing", lambda holder: None):
            yield

    def owners(self, host: str) -> frozenset[str]:
        """The live processes holding a lease on ``host``; leases of ended ones are removed."""
        try:
            names = os.listdir(self.folder / host)
        except OSError:
            return frozenset()
        live = set()
        for name in names:
            if process_gone(name):
                with contextlib.suppress(OSError):
                    os.unlink(self.folder / host / name)
            else:
                live.add(name)
        return frozenset(live)

    def take(self, host: str) -> None:
        """Best effort: without the file, a concurrent choice just does not see this one."""
        with contextlib.suppress(OSError):
            (self.folder / host).mkdir(parents=True, exist_ok=True)
            (self.folder / host / self.owner).touch()

    def release(self, host: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.folder / host / self.owner)
