"""The ssh transport of a sync: one remote command lists or changes the host, rsync copies.

- Listing: ``find -printf`` in one ssh session (which also creates the folders and prunes
  old trash), so host-side edits, deletions and runs fp never saw are always seen.
- Digests: ``sha256sum -z`` over the paths the planner names, in one session.
- Moves: one ``sh`` script of ``mv -T`` lines (rename within the host's filesystem).
- Copies: rsync with exactly the planned paths (``--files-from``), ``--ignore-times`` (the
  planner already knows they differ, also when size and mtime agree), ``--partial-dir`` (an
  interrupted file waits there, never under its final name, and is resumed next time), and
  nothing but files, folders and symlinks, without setuid/setgid bits or foreign owners.
  rsync runs in a process group of its own, stopped as a whole on Ctrl-C.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import re
import shlex
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from fireplug.hosts.ssh import SshConnection
from fireplug.support import events, proc
from fireplug.support.units import human_bytes
from fireplug.sync import SyncError
from fireplug.sync.side import Moved, Transferred
from fireplug.sync.tree import LISTING_FORMAT, PARTIAL_DIR, TRASH_DAYS, Listing, parse_digests, parse_listing, split_answer

IO_TIMEOUT_SECONDS = 300  # rsync gives up when no data moves for this long
LIST_TIMEOUT_SECONDS = 600
VANISHED = 24  # rsync: some source files vanished while it ran (not an error for fp)
PARTIAL = 23  # rsync: some files could not be transferred
# rsync's progress2 prints a line per file: read in batches, the shown figure lags by 50 ms
# and the thousands of wake-ups that took CPU from rsync and ssh on a small machine are gone.
OUTPUT_PACE = 0.05
PROGRESS_TAIL = 1024  # the last progress line of a batch lies in its tail
_STAT_RES = {
    "files": re.compile(rb"^Number of regular files transferred: (\d+)", re.MULTILINE),
    "file_bytes": re.compile(rb"^Total transferred file size: (\d+)", re.MULTILINE),
    "sent": re.compile(rb"^Total bytes sent: (\d+)", re.MULTILINE),
    "received": re.compile(rb"^Total bytes received: (\d+)", re.MULTILINE),
}
_PROGRESS_RE = re.compile(rb"\s*([\d,.]+)\s+(\d+)%\s+([\d.]+)([kMGT]?B)/s\s+(\d+:\d\d:\d\d)")
_RATE_UNITS = {b"B": 1, b"kB": 1 << 10, b"MB": 1 << 20, b"GB": 1 << 30, b"TB": 1 << 40}  # rsync's are binary

# $3: the SHA-256 of the listing fp already has; when the host's is the same, it says so
# instead of sending it again. The clock is tree.clock_line's: the new listing file's ctime
# when it lies on the data folder's filesystem, else the wall clock.
LIST_SCRIPT = f"""\
mkdir -p -- "$1" "$2" && cd -- "$1" && listing=$(mktemp "$2/.listing.XXXXXX") || exit 1
marker=$(find "$listing" -maxdepth 0 -printf '%D %C@') && here=$(find . -maxdepth 0 -printf %D) || exit 1
if [ "${{marker%% *}}" = "$here" ]; then echo "fs ${{marker#* }}"; else date +%s%N; fi
find . -mindepth 1 -name {PARTIAL_DIR} -prune -o -printf '{LISTING_FORMAT}' > "$listing"
status=$?
if [ "$(sha256sum < "$listing" | cut -c1-64)" = "$3" ]; then echo same; else echo listing; cat "$listing"; fi
rm -f -- "$listing"
find "$2" -mindepth 1 -maxdepth 1 -mtime +{TRASH_DAYS} -exec rm -rf -- {{}} + 2>/dev/null
exit $status
"""
DIGEST_SCRIPT = 'cd -- "$1" && xargs -0 -r sha256sum -z -- 2>/dev/null; exit 0'


def copy_options(shell: str, *, progress: bool, whole: bool = False) -> list[str]:
    """``whole``: files the receiver lacks, sent without the delta algorithm (which cannot help them)."""
    info = "stats2,progress2" if progress else "stats2"
    return [
        "rsync",
        "-a",
        "--whole-file" if whole else "--no-whole-file",
        "--no-owner",
        "--no-group",
        "--no-devices",
        "--no-specials",
        "--chmod=ug-s",
        "--ignore-times",
        f"--partial-dir={PARTIAL_DIR}",
        "--no-human-readable",
        f"--timeout={IO_TIMEOUT_SECONDS}",
        f"--info={info}",
        "-e",
        shell,
        "--from0",
    ]


def pull_argv(shell: str, address: str, remote: str, local: Path, list_file: Path, backup: Path, *, progress: bool, whole: bool = False) -> list[str]:
    """Copy the listed paths here; what they replace goes under ``backup`` (the local trash)."""
    backups = ["--backup", f"--backup-dir={backup}"]
    return [*copy_options(shell, progress=progress, whole=whole), *backups, f"--files-from={list_file}", f"{address}:{remote}/", f"{local}/"]


def push_argv(shell: str, address: str, local: Path, remote: str, list_file: Path, backup: str, *, progress: bool, whole: bool = False) -> list[str]:
    """Copy the listed paths to the host; what they replace goes under ``backup`` there."""
    make_folder = f"mkdir -p -- {shlex.quote(remote)} && rsync"
    backups = ["--backup", f"--backup-dir={backup}"]
    return [
        *copy_options(shell, progress=progress, whole=whole),
        *backups,
        f"--files-from={list_file}",
        "--rsync-path",
        make_folder,
        f"{local}/",
        f"{address}:{remote}/",
    ]


def move_script(remote: str, renames: Sequence[tuple[str, str]], trash: Sequence[str], batch_folder: str) -> str:
    """A shell script doing the moves; it prints ``failed PATH`` (NUL-terminated) for each one it could not do."""
    lines = [f"cd -- {shlex.quote(remote)} || exit 1", "failed() { printf 'failed %s\\0' \"$1\"; }"]
    for path, copy in renames:
        lines.append(f"mv -T -- {shlex.quote(path)} {shlex.quote(copy)} || failed {shlex.quote(path)}")
    for path in trash:
        target = f"{batch_folder}/{path}"
        parent = target.rsplit("/", 1)[0]
        lines.append(f"{{ mkdir -p -- {shlex.quote(parent)} && mv -T -- {shlex.quote(path)} {shlex.quote(target)}; }} || failed {shlex.quote(path)}")
    return "\n".join(lines) + "\n"


def parse_stats(output: bytes) -> Transferred:
    def number(key: str) -> int:
        found = _STAT_RES[key].search(output)
        return int(found.group(1)) if found else 0

    return Transferred(number("files"), number("file_bytes"), number("sent") + number("received"))


class RsyncHost:
    """The host side of a sync over ssh (``session.HostSide``)."""

    def __init__(self, shell: SshConnection, remote: str, trash_folder: str) -> None:
        self.shell = shell
        self.remote = remote
        self.trash_folder = trash_folder

    @property
    def host(self) -> str:
        return self.shell.host

    def list(self, previous: bytes = b"") -> tuple[Listing, str]:
        known = hashlib.sha256(previous).hexdigest() if previous else "-"
        argv = ["sh", "-c", LIST_SCRIPT, "sh", self.remote, self.trash_folder, known]
        completed = self._remote(argv, "listing the data folder", LIST_TIMEOUT_SECONDS)
        try:
            (clock, racy_ns), answer, listing = split_answer(completed.stdout)
        except ValueError:
            missing_tool = "not found" in completed.stderr_tail()
            hint = (
                "fp needs sh, date, mktemp, find, mv and sha256sum there (coreutils, findutils)"
                if missing_tool
                else "set data_root in [hosts.NAME] to a folder the ssh user can write to"
            )
            raise SyncError(self.host, f"cannot list {self.remote}: {completed.stderr_tail() or 'no answer'}", hint=hint) from None
        problem = completed.stderr_tail() if completed.returncode != 0 else ""
        events.detail(f"host listing: {len(completed.stdout)} bytes" + (" (unchanged since the last sync)" if answer == b"same" else ""))
        if answer == b"same":
            return Listing({}, clock, previous, same=True, racy_ns=racy_ns), problem
        try:
            return Listing(parse_listing(listing), clock, listing, racy_ns=racy_ns), problem
        except (ValueError, UnicodeDecodeError) as e:
            raise SyncError(self.host, f"the listing of {self.remote} is damaged ({e})", hint="run fp again") from e

    def digests(self, paths: Sequence[str]) -> dict[str, str]:
        listing = b"".join(os.fsencode(path) + b"\0" for path in paths)
        completed = self._remote(["sh", "-c", DIGEST_SCRIPT, "sh", self.remote], "hashing files", LIST_TIMEOUT_SECONDS, listing)
        return parse_digests(completed.stdout)

    def move(self, renames: Sequence[tuple[str, str]], trash: Sequence[str], batch: str) -> Moved:
        script = move_script(self.remote, renames, trash, f"{self.trash_folder}/{batch}")
        completed = self._remote(["sh", "-s"], "moving files aside", LIST_TIMEOUT_SECONDS, script.encode())
        failed = {os.fsdecode(item[7:]) for item in completed.stdout.split(b"\0") if item.startswith(b"failed ")}
        return Moved(frozenset(failed))

    def pull(self, paths: Sequence[str], local: Path, backup: Path, fresh: set[str]) -> Transferred:
        address, shell = self.shell.target.address, self.shell.rsync_shell()
        return self._copy(
            "from",
            paths,
            fresh,
            lambda listing, progress, whole: pull_argv(shell, address, self.remote, local, listing, backup, progress=progress, whole=whole),
        )

    def push(self, local: Path, paths: Sequence[str], batch: str, fresh: set[str]) -> Transferred:
        address, shell, backup = self.shell.target.address, self.shell.rsync_shell(), f"{self.trash_folder}/{batch}"
        return self._copy(
            "to", paths, fresh, lambda listing, progress, whole: push_argv(shell, address, local, self.remote, listing, backup, progress=progress, whole=whole)
        )

    def _remote(self, words: builtins.list[str], what: str, timeout: float, input: bytes | None = None) -> proc.Completed:
        self.shell.ensure_master()
        return self.shell.run(words, what=what, timeout=timeout, input=input)

    def _copy(self, way: str, paths: Sequence[str], fresh: set[str], make_argv: Callable[[Path, bool, bool], builtins.list[str]]) -> Transferred:
        """rsync ``paths``: those the receiving side lacks (``fresh``) as whole files, in one run (no
        delta algorithm can help them, and skipping it makes rsync as fast as tar over ssh), the
        others with rsync's delta transfer, in another.

        Raises:
            SyncError: rsync failed as a whole (a partial failure is returned as ``problem``).
        """
        total = Transferred()
        for group, whole in (([path for path in paths if path in fresh], True), ([path for path in paths if path not in fresh], False)):
            if group:

                def argv_for(listing: Path, progress: bool, whole: bool = whole) -> builtins.list[str]:
                    return make_argv(listing, progress, whole)

                done = self._rsync(way, group, argv_for)
                total = Transferred(
                    total.files + done.files, total.file_bytes + done.file_bytes, total.wire_bytes + done.wire_bytes, total.problem or done.problem
                )
        return total

    def _rsync(self, way: str, paths: Sequence[str], make_argv: Callable[[Path, bool], builtins.list[str]]) -> Transferred:
        """Run rsync over ``paths``, showing its progress on a terminal.

        Raises:
            SyncError: rsync failed as a whole (a partial failure is returned as ``problem``).
        """
        self.shell.ensure_master()
        output = bytearray()
        with tempfile.NamedTemporaryFile(prefix="fp-sync-", suffix=".list") as listing:
            listing.write(b"".join(os.fsencode(path) + b"\0" for path in paths))
            listing.flush()
            with events.progress(f"syncing data {way} host '{self.host}'") as progress:

                def collect(block: bytes) -> None:
                    output.extend(block)
                    if latest := _latest_progress(block):
                        progress.update(latest)

                argv = make_argv(Path(listing.name), True)
                completed = proc.run(argv, timeout=None, what="rsync", on_output=collect, own_group=True, output_pace=OUTPUT_PACE)
        result = parse_stats(bytes(output))
        if completed.returncode in (0, VANISHED):
            return result
        detail, hint = rsync_failure(completed)
        if completed.returncode == PARTIAL:  # what could be copied was: recorded, then reported
            result.problem = detail
            return result
        raise SyncError(self.host, detail, hint=hint)


def rsync_failure(completed: proc.Completed) -> tuple[str, str]:
    """A failed rsync in one line (its own last words), and a hint for the usual causes."""
    tail = completed.stderr_tail()
    if re.search(r"rsync: (command )?not found|rsync: No such file or directory", tail):
        return "rsync is not installed on the host", "install it there (apt-get install rsync)"
    hint = "set data_root in [hosts.NAME] to a folder the ssh user can write to" if "Permission denied" in tail else ""
    return f"rsync exited with status {completed.returncode}: {tail or 'no message'}", hint


def _latest_progress(block: bytes) -> str:
    """rsync's last --info=progress2 line in ``block``, in human units: "1.2 GB (45%), 43.0 MB/s, 0:00:20 left"."""
    found = [match for piece in re.split(rb"[\r\n]", block[-PROGRESS_TAIL:]) if (match := _PROGRESS_RE.match(piece))]
    if not found:
        return ""
    done, percent, rate, unit, left = found[-1].groups()
    speed = human_bytes(float(rate) * _RATE_UNITS.get(unit, 1))
    return f"{human_bytes(int(done.replace(b',', b'').replace(b'.', b'')))} ({int(percent)}%), {speed}/s, {left.decode()} left"
