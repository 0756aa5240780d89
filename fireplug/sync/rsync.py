"""Sync with rsync over ssh: plain subprocess, list argv, riding on the host's ssh master.

In: ``rsync -a --partial`` (size + mtime quick check; an interrupted large file resumes).
After one complete sync, later ones list only the files changed here since (see
``state.py``), so an unchanged folder costs one short rsync session whatever its size.
Out: ``-a --partial --update``, so a local file newer than the host's copy is kept; rsync
names each one ("X is newer"), and fp reports them. Neither direction passes --delete.
The remote folder is created, and the host's sync marker written or checked, by the same
ssh session that starts rsync there (``--rsync-path``), which also tells a missing rsync apart.
"""

from __future__ import annotations

import os
import re
import shlex
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from fireplug import console, proc
from fireplug.ssh import SshConnection
from fireplug.sync import SyncError, SyncReport
from fireplug.sync.state import SyncRecord, changed_since, forget, load_record, marker_path, new_token, record_path, save_record, snapshot

STALE_MARK = "FP_SYNC_RECORD_STALE"
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


def rsync_path(make_folders: Sequence[str], *, marker: tuple[str, str] | None = None) -> str:
    """The remote command that starts rsync, creating ``make_folders`` first (and writing ``marker``: path, token)."""
    command = f"mkdir -p -- {' '.join(shlex.quote(folder) for folder in make_folders)}"
    if marker:
        command += f" && printf %s {shlex.quote(marker[1])} > {shlex.quote(marker[0])}"
    return f"{command} && rsync"


def token_check(remote: str, token: str) -> str:
    """A shell test that the host still has the folder and the last complete sync's token."""
    return f'test -d {shlex.quote(remote)} && test "$(cat -- {shlex.quote(marker_path(remote))} 2>/dev/null)" = {shlex.quote(token)}'


def checked_rsync_path(remote: str, token: str) -> str:
    """The remote command that starts rsync only if the host passes ``token_check``."""
    return f"{{ {token_check(remote, token)} || {{ echo {STALE_MARK} >&2; exit 97; }}; }} && rsync"


def sync_in_argv(shell: str, destination: str, local: Path, remote: str, *, progress: bool, token: str = "") -> list[str]:
    """A complete sync of ``local`` to ``remote`` (writing ``token`` into the host's marker when given)."""
    path = rsync_path([remote], marker=(marker_path(remote), token) if token else None)
    return [*base_argv(shell, progress=progress), "--rsync-path", path, f"{local}/", f"{destination}:{remote}/"]


def listed_sync_in_argv(shell: str, destination: str, local: Path, remote: str, list_file: Path, token: str, *, progress: bool) -> list[str]:
    """A sync of only the files in ``list_file`` (NUL-separated, relative to ``local``)."""
    path = checked_rsync_path(remote, token)
    listing = ["--from0", f"--files-from={list_file}"]
    return [*base_argv(shell, progress=progress), *listing, "--rsync-path", path, f"{local}/", f"{destination}:{remote}/"]


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


class _StaleRecord(Exception):
    """The host no longer holds what the local sync record says it got."""


class RsyncSyncer:
    def __init__(self, shell: SshConnection, *, state_dir: Path | None = None, verbose: bool = False) -> None:
        """``state_dir`` keeps sync records (None: every sync in is complete)."""
        self.shell = shell
        self.state_dir = state_dir
        self.verbose = verbose

    def sync_in(self, local: Path, remote: str) -> SyncReport:
        current = snapshot(local, time.time_ns())
        record_file = record_path(self.state_dir, local, str(self.shell.target), remote) if self.state_dir else None
        record = load_record(record_file) if record_file else None
        if record_file is not None and record is not None:
            try:
                report = self._listed_sync_in(local, remote, changed_since(current, record), record.token)
                if current != record.files:
                    save_record(record_file, SyncRecord(record.token, current))
                return report
            except _StaleRecord:
                forget(record_file)
        token = new_token() if record_file else ""
        shell, address = self.shell.rsync_shell(), self.shell.target.address
        report = self._rsync("in", lambda progress: sync_in_argv(shell, address, local, remote, progress=progress, token=token))
        if record_file is not None:
            save_record(record_file, SyncRecord(token, current))
        return report

    def _listed_sync_in(self, local: Path, remote: str, changed: list[str], token: str) -> SyncReport:
        if not changed:  # nothing to send: only make sure the host still has what it got
            started = time.monotonic()
            self.shell.ensure_master()
            if self.shell.run(["sh", "-c", token_check(remote, token)], what="checking the synced data", timeout=60).returncode != 0:
                raise _StaleRecord()
            return SyncReport("in", 0, 0, 0, (), time.monotonic() - started)
        shell, address = self.shell.rsync_shell(), self.shell.target.address
        with tempfile.NamedTemporaryFile(prefix="fp-sync-", suffix=".list") as listing:
            listing.write(b"".join(os.fsencode(path) + b"\0" for path in changed))
            listing.flush()
            list_file = Path(listing.name)
            return self._rsync("in", lambda progress: listed_sync_in_argv(shell, address, local, remote, list_file, token, progress=progress))

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
        show = console.stderr_is_terminal()
        output = bytearray()
        with console.Progress(f"syncing data {'to' if direction == 'in' else 'from'} host '{self.shell.host}'", enabled=show) as progress:

            def collect(block: bytes) -> None:
                output.extend(block)
                if show and (latest := _latest_progress(block)):
                    progress.update(latest)

            started = time.monotonic()
            completed = proc.run(make_argv(show), timeout=None, what="rsync", verbose=self.verbose, on_output=collect)
        if completed.returncode not in (0, VANISHED):
            if STALE_MARK.encode() in completed.stderr:
                raise _StaleRecord()
            raise rsync_failure(self.shell.host, direction, completed)
        return parse_report(direction, bytes(output), time.monotonic() - started)


def rsync_failure(host: str, direction: str, completed: proc.Completed) -> SyncError:
    """One line for a failed rsync: its own last words, with a hint for the usual causes."""
    tail = completed.stderr_tail()
    if re.search(r"rsync: (command )?not found|rsync: No such file or directory", tail):
        return SyncError(host, direction, "rsync is not installed on the host", hint="install it there (apt-get install rsync)")
    hint = "set data_root in [hosts.NAME] to a folder the ssh user can write to" if "Permission denied" in tail else ""
    return SyncError(host, direction, f"rsync exited with status {completed.returncode}: {tail or 'no message'}", hint=hint)


def _latest_progress(block: bytes) -> str:
    pieces = [piece for piece in re.split(rb"[\r\n]", block) if _PROGRESS_RE.match(piece)]
    return pieces[-1].decode(errors="replace").strip() if pieces else ""
