"""One side of a sync as data: every file, folder and symlink under a folder with its stat signature.

Both sides are described the same way: here by ``scan`` (lstat, never following a link), on
an ssh host by ``find -printf`` in ``LISTING_FORMAT``, through the Docker API by the helper
container printing the same format (``format_entry``). Nothing else leaves a host: device
nodes, FIFOs and sockets are listed as ``other`` and never travel.

Standard library only: the helper container imports this module from fp's base image.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import time
from collections.abc import Iterator, Set
from dataclasses import dataclass

from fireplug.support.signature import RACY_NS
from fireplug.sync import DIR, FILE, LINK, OTHER

TRASH_DAYS = 7  # trash batches older than this are removed, on both sides
READ_SIZE = 1 << 20
# rsync keeps an interrupted file here (one per folder) to resume it; fp's API path keeps
# its temporary files under the same name. Never listed, never synced.
PARTIAL_DIR = ".fp-partial"
TRASH_FOLDER = ".fp-trash"  # beside the data folder on a host, outside the container's mount
TICK_WAIT = 0.02  # clock_line waits this long at most for the filesystem's clock to tick
# find's %y letters for what fp syncs; everything else (p, s, b, c, D) is "other".
_FIND_KINDS = {"f": FILE, "d": DIR, "l": LINK}
# type, size, mtime, ctime, inode, mode; then path and link target, each NUL-terminated.
LISTING_FORMAT = r"%y %s %T@ %C@ %i %m\0%P\0%l\0"


@dataclass(frozen=True, slots=True)
class Entry:
    kind: str
    size: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    ino: int = 0
    mode: int = 0o644
    target: str = ""  # a symlink's target, as written


Tree = dict[str, Entry]  # path relative to the synced folder, "/"-separated -> entry


@dataclass(frozen=True)
class Listing:
    """A side's tree and that side's clock when it was listed (for the racy rule)."""

    tree: Tree
    now_ns: int
    raw: bytes = b""  # the listing as the host printed it (kept to spare resending an unchanged one)
    same: bool = False  # the host said its listing is ``raw``, the one fp sent it the digest of (``tree`` left empty)
    racy_ns: int = RACY_NS  # the racy rule's margin: RACY_NS for a wall clock, 0 for a filesystem clock (see clock_line)


def entry_of(status: os.stat_result, target: str = "") -> Entry:
    mode = status.st_mode
    kind = FILE if stat.S_ISREG(mode) else DIR if stat.S_ISDIR(mode) else LINK if stat.S_ISLNK(mode) else OTHER
    size = status.st_size if kind == FILE else 0
    return Entry(kind, size, status.st_mtime_ns, status.st_ctime_ns, status.st_ino, stat.S_IMODE(mode), target)


def scan(root: str) -> Tree:
    """Every entry under ``root`` (which must exist), never following a symlink."""
    found: Tree = {}
    pending = [(root, "")]
    while pending:
        folder, prefix = pending.pop()
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:  # vanished while listed
            continue
        for item in entries:
            if item.name == PARTIAL_DIR:
                continue
            try:
                status = item.stat(follow_symlinks=False)
                target = os.readlink(item.path) if stat.S_ISLNK(status.st_mode) else ""
            except FileNotFoundError:
                continue
            path = prefix + item.name
            found[path] = entry_of(status, target)
            if stat.S_ISDIR(status.st_mode):
                pending.append((item.path, path + "/"))
    return found


def lstat_entry(root: str, path: str) -> Entry | None:
    """The entry at ``root/path`` now (None when absent)."""
    full = os.path.join(root, path)
    try:
        status = os.lstat(full)
        return entry_of(status, os.readlink(full) if stat.S_ISLNK(status.st_mode) else "")
    except (FileNotFoundError, NotADirectoryError):
        return None


def safe_parent(root: str, path: str) -> bool:
    """Whether every folder on the way from ``root`` to ``path`` is a real folder (no symlink);
    missing ones are fine (they are made as real folders)."""
    current = root
    for part in path.split("/")[:-1]:
        current = os.path.join(current, part)
        try:
            if not stat.S_ISDIR(os.lstat(current).st_mode):
                return False
        except FileNotFoundError:
            return True
    return True


def parse_digests(output: bytes) -> dict[str, str]:
    """``sha256sum -z`` output (also the API helper's): ``HEX  PATH`` records, NUL-terminated."""
    found = {}
    for record in output.split(b"\0"):
        if len(record) > 66 and record[64:66] == b"  ":
            found[os.fsdecode(record[66:])] = record[:64].decode()
    return found


def format_entry(path: str, entry: Entry) -> bytes:
    """``entry`` as ``find -printf LISTING_FORMAT`` prints it (for the API helper)."""
    letter = {FILE: "f", DIR: "d", LINK: "l"}.get(entry.kind, "p")
    head = f"{letter} {entry.size} {_seconds(entry.mtime_ns)} {_seconds(entry.ctime_ns)} {entry.ino} {entry.mode:o}"
    return head.encode() + b"\0" + os.fsencode(path) + b"\0" + os.fsencode(entry.target) + b"\0"


def parse_listing(data: bytes) -> Tree:
    """The tree printed in ``LISTING_FORMAT``.

    Raises:
        ValueError: the listing is damaged.
    """
    fields = data.split(b"\0")
    if len(fields) % 3 != 1 or fields[-1]:
        raise ValueError("the listing ends in the middle of an entry")
    found: Tree = {}
    partial = PARTIAL_DIR.encode()
    for head, raw_path, raw_target in zip(fields[0:-1:3], fields[1::3], fields[2::3], strict=True):
        letter, size, mtime, ctime, ino, mode = head.split(b" ")
        parts = raw_path.split(b"/")
        if b"" in parts or b".." in parts or b"." in parts:
            raise ValueError(f"the listing names an unsafe path {raw_path[:80]!r}")
        if partial in parts:
            continue
        kind = _FIND_KINDS.get(letter.decode(), OTHER)
        target = raw_target.decode("utf-8", "surrogateescape") if kind == LINK else ""
        found[raw_path.decode("utf-8", "surrogateescape")] = Entry(
            kind, int(size) if kind == FILE else 0, _nanoseconds(mtime), _nanoseconds(ctime), int(ino), int(mode, 8), target
        )
    return found


def split_answer(output: bytes) -> tuple[tuple[int, int], bytes, bytes]:
    """A host's answer to a listing request: its clock (``parse_clock``), ``same`` or ``listing``,
    and the listing.

    Raises:
        ValueError: the answer has no such form.
    """
    clock, newline, rest = output.partition(b"\n")
    answer, _, listing = rest.partition(b"\n")
    if not newline or answer not in (b"same", b"listing"):
        raise ValueError("no clock and answer")
    return parse_clock(clock), answer, listing


def clock_line(data: str, marker: str) -> bytes:
    """The clock a listing of ``data`` is judged by, taken just before it (``parse_clock`` reads it).

    The racy rule asks whether an entry may still change without its signature changing. A
    fresh ``marker`` file on the data folder's filesystem answers that exactly, whatever that
    filesystem's timestamp granularity, as git's index does: an entry whose timestamps are
    older than the marker's changes, if at all, to timestamps at least the marker's. Its own
    timestamp is then the clock, with no margin ("fs SECONDS.NANOSECONDS"); a marker is made
    again until the filesystem's clock has ticked once (up to ``TICK_WAIT``), so that what was
    written just before, in the same tick, is older than the clock too. On another
    filesystem (or when no marker can be made) the wall clock is given, which the racy
    rule takes with its margin (RACY_NS).
    """
    try:
        first, device = _marker_time(marker)
        if device == os.stat(data).st_dev:
            now, deadline = first, time.monotonic() + TICK_WAIT
            while now == first and time.monotonic() < deadline:
                time.sleep(0.001)
                now = _marker_time(marker)[0]
            return b"fs " + _seconds(now).encode()
    except OSError:
        pass
    return str(time.time_ns()).encode()


def _marker_time(marker: str) -> tuple[int, int]:
    """The timestamp and device of a file made (and removed) at ``marker``."""
    handle = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        made = os.fstat(handle)
    finally:
        os.close(handle)
        os.unlink(marker)
    return max(made.st_mtime_ns, made.st_ctime_ns), made.st_dev


def parse_clock(line: bytes) -> tuple[int, int]:
    """A clock line as (now_ns, racy_ns): ``fs SECONDS.FRACTION``, the data folder's filesystem's
    own timestamp (no margin), or wall-clock nanoseconds (margin RACY_NS).

    Raises:
        ValueError: neither.
    """
    words = line.split()
    if len(words) == 2 and words[0] == b"fs" and re.fullmatch(rb"\d+(\.\d+)?", words[1]):
        return _nanoseconds(words[1]), 0
    if len(words) == 1 and words[0].isdigit():
        return int(words[0]), RACY_NS
    raise ValueError(f"no clock in {line[:40]!r}")


def _seconds(ns: int) -> str:
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


def _nanoseconds(text: bytes) -> int:
    """find's ``%T@`` (seconds with a fraction of up to 10 digits) in whole nanoseconds."""
    if len(text) > 11 and text[-11] == 46:  # GNU find's usual ten digits after the "."
        return int(text.replace(b".", b"")) // 10
    whole, _, fraction = text.partition(b".")
    return int(whole) * 1_000_000_000 + int((fraction + b"000000000")[:9])


def parents(path: str) -> Iterator[str]:
    """``a/b/c`` -> ``a``, ``a/b``."""
    parts = path.split("/")
    for end in range(1, len(parts)):
        yield "/".join(parts[:end])


def within_any(path: str, folders: Set[str]) -> bool:
    """Whether ``path`` is one of ``folders`` or lies inside one."""
    return bool(folders) and (path in folders or any(parent in folders for parent in parents(path)))


def file_sha256(path: str) -> str:
    """SHA-256 of a file's bytes; "" when it cannot be read (the caller then counts it changed)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb", buffering=0) as handle:
            while block := handle.read(READ_SIZE):
                digest.update(block)
    except OSError:
        return ""
    return digest.hexdigest()


def keep_aside(path: str, backup: str) -> None:
    """Move ``path`` (never followed) to ``backup``, making its folders; across filesystems, a copy."""
    os.makedirs(os.path.dirname(backup), exist_ok=True)
    try:
        os.rename(path, backup)
    except OSError as e:
        if e.errno != 18:  # EXDEV
            raise
        shutil.move(path, backup)


def prune_batches(trash: str, days: float = TRASH_DAYS) -> None:
    """Remove the trash batches (folders directly under ``trash``) older than ``days``."""
    for batch in old_batches(trash, days):
        shutil.rmtree(batch, ignore_errors=True)


def old_batches(trash: str, days: float = TRASH_DAYS) -> list[str]:
    """The trash batches (folders directly under ``trash``) older than ``days``."""
    try:
        names = os.listdir(trash)
    except OSError:
        return []
    now = time.time()
    found = []
    for name in names:
        batch = os.path.join(trash, name)
        try:
            if now - os.lstat(batch).st_mtime > days * 86400:
                found.append(batch)
        except OSError:
            continue
    return found


def tree_bytes(path: str) -> int:
    """The bytes of the files under ``path`` (never following a link)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue
    return total


def is_inside(path: str, folder: str) -> bool:
    return path.startswith(folder + "/")


def link_leaves(path: str, target: str) -> bool:
    """Whether a symlink at ``path`` (relative to the synced folder) points outside it."""
    if target.startswith("/"):
        return True
    depth = len(path.split("/")) - 1
    for part in target.split("/"):
        depth += -1 if part == ".." else 0 if part in ("", ".") else 1
        if depth < 0:
            return True
    return False
