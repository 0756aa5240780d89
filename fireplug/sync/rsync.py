"""Sync with rsync over ssh: plain subprocess, list argv, riding on the host's ssh master.

In: ``rsync -a --partial`` (size + mtime quick check, so unchanged files cost nothing; an
interrupted large file resumes). Out: the same plus ``--update``, so a local file newer
than the host's copy is kept; rsync names each one ("X is newer"), and fp reports them.
Neither direction passes --delete. The remote folder is created by the same ssh session
that starts rsync there (``--rsync-path``), which also tells a missing rsync apart.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from fireplug import console, proc
from fireplug.ssh import SshConnection
from fireplug.sync import SyncError, SyncReport

IO_TIMEOUT_SECONDS = 300  # rsync gives up when no data moves for this long
VANISHED = 24  # rsync: some source files vanished while it ran (not an error for fp)
_STAT_RES = {
    "files": re.compile(rb"^Number of regular files transferred: (\d+)", re.MULTILINE),
    "file_bytes": re.compile(rb"^Total transferred file size: (\d+)", re.MULTILINE),
    "sent": re.compile(rb"^Total bytes sent: (\d+)", re.MULTILINE),
    "received": re.compile(rb"^Total bytes received: (\d+)", re.MULTILINE),
}
_NEWER_RE = re.compile(rb"^(.+) is newer$", re.MULTILINE)
_PROGRESS_RE = re.compile(rb"\s*[\d,.]+\s+\d+%\s+\S+/s\s+\S+")


def base_argv(shell: str, *, progress: bool) -> list[str]:
    info = "stats2,skip1,progress2" if progress else "stats2,skip1"
    return ["rsync", "-a", "--partial", "--no-human-readable", f"--timeout={IO_TIMEOUT_SECONDS}", f"--info={info}", "-e", shell]


def rsync_path(make_folders: Sequence[str]) -> str:
    """The remote command that starts rsync, creating ``make_folders`` first."""
    return f"mkdir -p -- {' '.join(shlex.quote(folder) for folder in make_folders)} && rsync"


def sync_in_argv(shell: str, destination: str, local: Path, remote: str, *, progress: bool) -> list[str]:
    return [*base_argv(shell, progress=progress), "--rsync-path", rsync_path([remote]), f"{local}/", f"{destination}:{remote}/"]


def sync_out_argv(shell: str, destination: str, remote: str, local: Path, folders: Sequence[str], *, progress: bool) -> list[str]:
    """One rsync for every result folder: ``-R`` with ``/./`` keeps paths relative to ``remote``."""
    remote_folders = [remote if folder == "." else f"{remote}/{folder}" for folder in folders]
    sources = [f"{destination}:{remote}/./{folder}/" if folder != "." else f"{destination}:{remote}/./" for folder in folders]
    return [*base_argv(shell, progress=progress), "--update", "-R", "--rsync-path", rsync_path(remote_folders), *sources, f"{local}/"]


def parse_report(direction: str, output: bytes, seconds: float) -> SyncReport:
    def number(key: str) -> int:
        found = _STAT_RES[key].search(output)
        return int(found.group(1)) if found else 0

    kept = tuple(sorted(match.decode(errors="replace").strip() for match in _NEWER_RE.findall(output)))
    return SyncReport(direction, number("files"), number("file_bytes"), number("sent") + number("received"), kept, seconds)


class RsyncSyncer:
    def __init__(self, shell: SshConnection, *, verbose: bool = False) -> None:
        self.shell = shell
        self.verbose = verbose

    def sync_in(self, local: Path, remote: str) -> SyncReport:
        return self._rsync("in", lambda progress: sync_in_argv(self.shell.rsync_shell(), self.shell.target.address, local, remote, progress=progress))

    def sync_out(self, remote: str, local: Path, folders: Sequence[str]) -> SyncReport:
        local.mkdir(parents=True, exist_ok=True)
        return self._rsync(
            "out",
            lambda progress: sync_out_argv(self.shell.rsync_shell(), self.shell.target.address, remote, local, folders, progress=progress),
        )

    def _rsync(self, direction: str, make_argv: Callable[[bool], list[str]]) -> SyncReport:
        """Run rsync, showing its progress on a terminal; the parsed report.

        Raises:
            SyncError: rsync failed (the message carries its own last words).
            SshError: the master connection could not be made.
        """
        self.shell.ensure_master()
        show = console.console().is_terminal
        output = bytearray()
        with console.Progress(f"syncing data {'to' if direction == 'in' else 'from'} host '{self.shell.host}'", enabled=show) as progress:

            def collect(block: bytes) -> None:
                output.extend(block)
                if show and (latest := _latest_progress(block)):
                    progress.update(latest)

            started = time.monotonic()
            completed = proc.run(make_argv(show), timeout=None, what="rsync", verbose=self.verbose, on_output=collect)
        if completed.returncode not in (0, VANISHED):
            raise self._failure(direction, completed)
        return parse_report(direction, bytes(output), time.monotonic() - started)

    def _failure(self, direction: str, completed: proc.Completed) -> SyncError:
        tail = completed.stderr_tail()
        if re.search(r"rsync: (command )?not found|rsync: No such file or directory", tail):
            return SyncError(self.shell.host, direction, "rsync is not installed on the host", hint="install it there (apt-get install rsync)")
        return SyncError(self.shell.host, direction, f"rsync exited with status {completed.returncode}: {tail or 'no message'}")


def _latest_progress(block: bytes) -> str:
    pieces = [piece for piece in re.split(rb"[\r\n]", block) if _PROGRESS_RE.match(piece)]
    return pieces[-1].decode(errors="replace").strip() if pieces else ""
