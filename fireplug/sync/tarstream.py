"""Tar streams both ways, in bounded memory: a tar of local paths to send, hashed as it is
read (``tar_chunks``), and a tar from the host whose wanted entries land here under
temporary names, then renamed (``extract``), refusing anything but files, folders and
symlinks, and any path whose parent is not a real folder inside the data folder.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from fireplug.errors import HelperFailed as HelperFailed
from fireplug.support import events
from fireplug.sync import SyncError
from fireplug.sync.landing import land_entry, remove_if_empty, scratch_folder
from fireplug.sync.side import Transferred
from fireplug.sync.tree import DIR, FILE, LINK, Entry, Tree, lstat_entry

TAR_CHUNK = 1 << 20


class Chunks(io.RawIOBase):
    """An iterator of byte chunks as a readable stream, counting what passed."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.pending = memoryview(b"")
        self.total = 0

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self.pending:
            chunk = next(self.chunks, b"")
            if not chunk:
                return 0
            self.total += len(chunk)
            self.pending = memoryview(chunk)
        size = min(len(target), len(self.pending))
        target[:size] = self.pending[:size]
        self.pending = self.pending[size:]
        return size


@dataclass(frozen=True)
class Extraction:
    root: Path  # the local data folder
    wanted: set[str]  # the only names taken from the archive
    backup: Path  # where a replaced local file or link goes
    prefix: str  # the archive's names start with it (the staging folder)
    listed: Tree  # the host's entries as listed: their exact mtimes
    digests: dict[str, str] = field(default_factory=dict)  # filled in: SHA-256 of each file written
    transfer: events.Transfer | None = None  # told the bytes written so far


def extract(stream: io.RawIOBase, into: Extraction, transferred: Transferred) -> None:
    """Write the wanted entries of a tar stream under ``into.root``: temporary name, then rename.

    Refused: other names, other kinds (devices, FIFOs, hard links), and paths whose parent
    is not a real folder inside the root (a symlink planted on the host is never followed).
    """
    root = into.root
    scratch = scratch_folder(root)
    try:
        with tarfile.open(fileobj=io.BufferedReader(stream, TAR_CHUNK), mode="r|") as archive:
            for item in archive:
                name = item.name.removeprefix(into.prefix)
                wanted_kind = name in into.wanted and (item.isfile() or item.isdir() or item.issym())
                if wanted_kind and _place(archive, item, name, into, scratch) and item.isfile():
                    transferred.files += 1
                    transferred.file_bytes += item.size
                    if into.transfer is not None:
                        into.transfer.moved(transferred.file_bytes)
    finally:
        remove_if_empty(scratch)


def _place(archive: tarfile.TarFile, item: tarfile.TarInfo, name: str, into: Extraction, scratch: Path) -> bool:
    def write(out: BinaryIO) -> None:
        source = archive.extractfile(item)
        assert source is not None
        digest = hashlib.sha256()
        while block := source.read(TAR_CHUNK):
            digest.update(block)
            out.write(block)
        into.digests[name] = digest.hexdigest()  # spares the record a second read of what just arrived

    kind = DIR if item.isdir() else LINK if item.issym() else FILE
    return land_entry(into.root, name, kind, item.mode, _mtime_ns(item, into.listed.get(name)), item.linkname, into.backup, scratch, write)


def _mtime_ns(item: tarfile.TarInfo, listed: Entry | None) -> int:
    """The entry's exact mtime: the engine's archive rounds it to the second, the listing has it
    (used when the archived entry is the listed one: same size, same second)."""
    exact = item.pax_headers.get("mtime", "")
    whole, _, fraction = exact.partition(".")
    archived = int(whole) * 1_000_000_000 + int((fraction + "000000000")[:9]) if whole.isdigit() else int(item.mtime * 1_000_000_000)
    if listed is not None and listed.size == item.size and listed.mtime_ns // 1_000_000_000 == archived // 1_000_000_000:
        return listed.mtime_ns
    return archived


def member(path: str, kind: str, size: int, mtime_ns: int, mode: int, target: str) -> tarfile.TarInfo:
    """A tar member with the exact nanosecond mtime in its PAX header (tarfile's float would round it)."""
    info = tarfile.TarInfo(path)
    info.type = {FILE: tarfile.REGTYPE, DIR: tarfile.DIRTYPE, LINK: tarfile.SYMTYPE}[kind]
    info.size = size if kind == FILE else 0
    info.mode = mode & 0o777
    info.mtime = mtime_ns // 1_000_000_000
    info.linkname = target
    info.pax_headers = {"mtime": f"{mtime_ns // 1_000_000_000}.{mtime_ns % 1_000_000_000:09d}"}
    return info


def count_files(root: Path, paths: Sequence[str]) -> tuple[int, int]:
    entries = [lstat_entry(str(root), path) for path in paths]
    files = [entry for entry in entries if entry is not None and entry.kind == FILE]
    return len(files), sum(entry.size for entry in files)


def tar_chunks(root: Path, paths: Sequence[str], prefix: str, host: str, digests: dict[str, str]) -> Iterator[bytes]:
    """A tar of ``paths`` under ``root`` (names under ``prefix``), in chunks: memory stays bounded.
    ``digests`` receives the SHA-256 of each file sent that did not change while it was read
    (the host's copies land racy: the record needs them, and the bytes are at hand now).

    Raises:
        SyncError: a file shrank while it was being sent.
    """
    for path in paths:
        entry = lstat_entry(str(root), path)
        if entry is None or entry.kind not in (FILE, DIR, LINK):
            continue
        info = member(prefix + path, entry.kind, entry.size, entry.mtime_ns, entry.mode, entry.target)
        yield info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        if entry.kind != FILE:
            continue
        sent, digest = 0, hashlib.sha256()
        with open(root / path, "rb") as source:
            while sent < info.size and (block := source.read(min(TAR_CHUNK, info.size - sent))):
                sent += len(block)
                digest.update(block)
                yield block
        if sent < info.size:
            raise SyncError(host, f"{root / path} shrank while it was being sent", hint="run fp again")
        if lstat_entry(str(root), path) == entry:
            digests[path] = digest.hexdigest()
        yield b"\0" * (-info.size % tarfile.BLOCKSIZE)
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


def coalesced(chunks: Iterator[bytes], size: int = TAR_CHUNK) -> Iterator[bytes]:
    """``chunks`` regrouped into pieces of about ``size`` bytes: a tar of small files is mostly
    512-byte headers, and each piece sent is one HTTP chunk and one TLS record for the engine."""
    pending = bytearray()
    for chunk in chunks:
        pending += chunk
        if len(pending) >= size:
            yield bytes(pending)
            pending.clear()
    if pending:
        yield bytes(pending)


class SentCounter:
    def __init__(self, transfer: events.Transfer) -> None:
        self.total = 0
        self.transfer = transfer

    def count(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.total += len(chunk)
            self.transfer.moved(self.total)
            yield chunk


def single_file_tar(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = int(time.time())
        archive.addfile(info, io.BytesIO(data))
    return out.getvalue()
