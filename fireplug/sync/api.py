"""The Docker API transport of a sync, for engines fp reaches without ssh (a tcp:// TLS engine).

Each step is one short-lived helper container on fp's base image (``helper.py``), with the
host's project folder mounted (data folder, trash and staging side by side) and no network.
Copies to the host are uploaded (PUT archive) into a staging folder beside the data folder
and then moved into place by the helper, so an interrupted upload never leaves a partial
file under its final name; copies from the host arrive as a tar stream that fp writes to
temporary names and renames, refusing anything but files, folders and symlinks, and any
path whose parent is not a real folder inside the data folder.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import io
import os
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from fireplug.errors import EngineError, EngineUnreachable
from fireplug.errors import HelperFailed as HelperFailed
from fireplug.hosts.engine import Engine, frames
from fireplug.remote.sync_helper import STAGING_PREFIX
from fireplug.support import events, labels
from fireplug.support.locks import process_gone, this_process
from fireplug.support.signals import made_uninterrupted
from fireplug.sync import SyncError
from fireplug.sync.side import Moved, Transferred
from fireplug.sync.tree import (
    DIR,
    FILE,
    LINK,
    PARTIAL_DIR,
    TRASH_FOLDER,
    Entry,
    Listing,
    Tree,
    keep_aside,
    lstat_entry,
    parse_digests,
    parse_listing,
    safe_parent,
    split_answer,
)

MOUNT = "/fp-sync"
STDOUT, STDERR = 1, 2
TAR_CHUNK = 1 << 20


class ApiHost:
    """The host side of a sync through the Docker API (``session.HostSide``)."""

    def __init__(self, engine: Engine, image: str, project_labels: dict[str, str], project_folder: str, data: str, *, user: str = "") -> None:
        """``project_folder`` on the host holds the data folder (``data``, relative) and the trash;
        ``user`` (uid:gid, "" for the image's) owns what the helpers write, as runs do."""
        self.engine = engine
        self.user = user
        self.image = image
        self.labels = {**project_labels, labels.KIND: "sync", labels.SYNC_OWNER: this_process()}
        self.swept = False
        self.project_folder = project_folder
        self.data = f"{MOUNT}/{data}"
        self.trash = f"{MOUNT}/{TRASH_FOLDER}"
        self.trash_folder = f"{project_folder}/{TRASH_FOLDER}"
        self.listed: Tree | bytes = {}  # the last listing (raw when the host said "same"): exact mtimes, which the engine's archives round
        self.after_push: Listing | None = None

    @property
    def host(self) -> str:
        return self.engine.host

    def list(self, previous: bytes = b"") -> tuple[Listing, str]:
        if not self.swept:  # the session holds the project's lock for this host: no helper of ours is busy
            self.swept = True
            self._sweep_helpers()
        if self.after_push is not None:  # what the host holds now, listed by the push's own helper
            listing, self.after_push = self.after_push, None
            return listing, ""
        known = hashlib.sha256(previous).hexdigest() if previous else "-"
        return self._parse_listing(self._helper(["list", self.data, self.trash, known]).stdout, previous), ""

    def _sweep_helpers(self) -> None:
        """Remove helpers that an fp of this machine left when it lost the engine (it could not remove them then)."""
        wanted = [labels.kind_is("sync"), f"{labels.PROJECT_KEY}={self.labels.get(labels.PROJECT_KEY, '')}"]
        for found in self.engine.containers(wanted, running_only=False):
            owner = str((found.get("Labels") or {}).get(labels.SYNC_OWNER, ""))
            if owner != self.labels[labels.SYNC_OWNER] and process_gone(owner):
                with contextlib.suppress(EngineError):
                    self.engine.remove_container(str(found.get("Id", "")))

    def _parse_listing(self, output: bytes, previous: bytes = b"") -> Listing:
        try:
            (clock, racy_ns), answer, listing = split_answer(output)
            if answer == b"same":  # the listing fp sent the digest of: parsed only if the sync needs it
                self.listed = previous
                return Listing({}, clock, previous, same=True, racy_ns=racy_ns)
            self.listed = parse_listing(listing)
            return Listing(self.listed, clock, listing, racy_ns=racy_ns)
        except (ValueError, UnicodeDecodeError) as e:
            raise SyncError(self.host, f"the sync helper's listing is damaged ({e})", hint="run fp again") from e

    def digests(self, paths: Sequence[str]) -> dict[str, str]:
        return parse_digests(self._helper(["digest", self.data, "/tmp/fp-paths"], upload=_nul_list(paths)).stdout)

    def move(self, renames: Sequence[tuple[str, str]], trash: Sequence[str], batch: str) -> Moved:
        operations = [word for path, copy in renames for word in ("r", path, copy)] + [word for path in trash for word in ("t", path)]
        output = self._helper(["move", self.data, self.trash, batch, "/tmp/fp-paths"], upload=_nul_list(operations)).stdout
        return Moved(frozenset(os.fsdecode(item[7:]) for item in output.split(b"\0") if item.startswith(b"failed ")))

    def pull(self, paths: Sequence[str], local: Path, backup: Path, fresh: set[str]) -> Transferred:
        """The helper lays the entries out in a staging folder (hard links), and the engine's own
        archive endpoint streams them (docker cp's path, several times faster than a container's
        output stream)."""
        wanted = sorted(paths)
        stage = f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
        listed = parse_listing(self.listed) if isinstance(self.listed, bytes) else self.listed
        total = sum(entry.size for path in wanted if (entry := listed.get(path)) is not None and entry.kind == FILE)
        try:
            with events.progress(f"syncing data from host '{self.host}'") as progress:
                into = _Extraction(local, set(wanted), backup, f"{stage}/", listed, transfer=events.transfer(progress, total))
                result = self._helper(["stage", self.data, f"{MOUNT}/{stage}", "/tmp/fp-paths"], upload=_nul_list(wanted), fetch=(f"{MOUNT}/{stage}", into))
        except Exception:
            self._remove_staging(stage)
            raise  # on an interruption the staging folder is left to the next listing, which prunes it
        self._remove_staging(stage)
        result.transferred.digests = into.digests
        return result.transferred

    def _remove_staging(self, stage: str) -> None:
        with contextlib.suppress(SyncError, EngineError, EngineUnreachable):
            self._helper(["remove", f"{MOUNT}/{stage}"])

    def push(self, local: Path, paths: Sequence[str], batch: str, fresh: set[str]) -> Transferred:
        stage = f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
        files, file_bytes = _count_files(local, paths)
        digests: dict[str, str] = {}
        with events.progress(f"syncing data to host '{self.host}'") as progress:
            sent = _Counter(events.transfer(progress, file_bytes))
            chunks = sent.count(_coalesced(_tar_chunks(local, sorted(paths), f"{stage}/", self.host, digests)))
            result = self._helper(["install", self.data, f"{MOUNT}/{stage}", f"{self.trash}/{batch}", self.trash], archive=chunks)
        self.after_push = self._parse_listing(result.stdout)
        refused = [os.fsdecode(item[8:]) for item in result.stderr.split(b"\0") if item.startswith(b"refused ")]
        problem = f"{len(refused)} paths were refused on the host (a parent is not a real folder): {', '.join(refused[:3])}" if refused else ""
        return Transferred(files, file_bytes, sent.total, problem, digests)

    def run_helper(self, arguments: builtins.list[str]) -> bytes:
        """The helper's output for ``arguments`` (``helper.py``'s commands), in the mounted folder.

        Raises:
            SyncError: the helper failed.
        """
        return self._helper(arguments).stdout

    # -- the helper container -------------------------------------------------------------

    def _helper(
        self,
        arguments: builtins.list[str],
        *,
        upload: bytes | None = None,
        archive: Iterator[bytes] | None = None,
        fetch: tuple[str, _Extraction] | None = None,
        module: str = "fireplug.remote.sync_helper",
        host_network: bool = False,
    ) -> _HelperResult:
        """Run the helper to completion: ``upload`` becomes /tmp/fp-paths, ``archive`` is unpacked
        into the mount first; its stdout is collected, then ``fetch`` (a path in the container)
        is extracted as the engine archives it. ``module``: the helper to run; ``host_network``:
        it reaches the network as the host does (else it has none).

        Raises:
            SyncError: the helper failed, or its archive is damaged.
        """
        config: dict[str, Any] = {
            "Image": self.image,
            "Cmd": ["python3", "-m", module, *arguments],
            "Labels": self.labels,
            **({"User": self.user, "Env": ["HOME=/tmp"]} if self.user else {}),
            "AttachStdout": True,
            "AttachStderr": True,
            "NetworkDisabled": not host_network,
            "HostConfig": {"Binds": [f"{self.project_folder}:{MOUNT}:rw"], "AutoRemove": False, **({"NetworkMode": "host"} if host_network else {})},
        }
        container = made_uninterrupted(lambda: self.engine.create_container(config, f"fp-sync-{uuid.uuid4().hex[:12]}"), self.engine.remove_container)
        try:
            if upload is not None:
                self.engine.put_archive(container, "/tmp", [_single_file_tar("fp-paths", upload)])
            if archive is not None:
                self.engine.put_archive(container, MOUNT, archive)
            result, status = self._attach_and_run(container)
            if status != 0:
                detail = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
                raise HelperFailed(self.host, status, detail[0])
            if fetch is not None:
                self._fetch(container, *fetch, result)
        except BaseException:
            with contextlib.suppress(EngineError, EngineUnreachable):  # the failure or interruption is what to report
                self.engine.remove_container(container)
            raise
        self.engine.remove_container(container)
        return result

    def _fetch(self, container: str, path: str, into: _Extraction, result: _HelperResult) -> None:
        chunks = self.engine.get_archive(container, path)
        stream = _Chunks(chunks)
        try:
            extract(stream, into, result)
        except tarfile.TarError as e:
            raise SyncError(self.host, f"the archive of the files to bring back is damaged ({e})", hint="run fp again") from e
        finally:
            chunks.close()  # closes the connection now: the engine stops streaming and frees the container
        result.transferred.wire_bytes = stream.total

    def _attach_and_run(self, container: str) -> tuple[_HelperResult, int]:
        attached = self.engine.attach(container, stdin=False)
        try:
            self.engine.start(container)
            output: dict[int, bytearray] = {STDOUT: bytearray(), STDERR: bytearray()}
            for stream, data in frames(attached):  # the helper's output is small: lists, digests, names
                output[STDERR if stream == STDERR else STDOUT] += data
            result = _HelperResult(stdout=bytes(output[STDOUT]))
            result.stderr = bytes(output[STDERR])
        finally:
            attached.close()
        return result, self.engine.wait(container)


class _HelperResult:
    def __init__(self, stdout: bytes = b"") -> None:
        self.stdout = stdout
        self.stderr = b""
        self.transferred = Transferred()


class _Chunks(io.RawIOBase):
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
class _Extraction:
    root: Path  # the local data folder
    wanted: set[str]  # the only names taken from the archive
    backup: Path  # where a replaced local file or link goes
    prefix: str  # the archive's names start with it (the staging folder)
    listed: Tree  # the host's entries as listed: their exact mtimes
    digests: dict[str, str] = field(default_factory=dict)  # filled in: SHA-256 of each file written
    transfer: events.Transfer | None = None  # told the bytes written so far


def extract(stream: io.RawIOBase, into: _Extraction, result: _HelperResult) -> None:
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
                    result.transferred.files += 1
                    result.transferred.file_bytes += item.size
                    if into.transfer is not None:
                        into.transfer.moved(result.transferred.file_bytes)
    finally:
        remove_if_empty(scratch)


def _place(archive: tarfile.TarFile, item: tarfile.TarInfo, name: str, into: _Extraction, scratch: Path) -> bool:
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


def _count_files(root: Path, paths: Sequence[str]) -> tuple[int, int]:
    entries = [lstat_entry(str(root), path) for path in paths]
    files = [entry for entry in entries if entry is not None and entry.kind == FILE]
    return len(files), sum(entry.size for entry in files)


def _tar_chunks(root: Path, paths: Sequence[str], prefix: str, host: str, digests: dict[str, str]) -> Iterator[bytes]:
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


def _coalesced(chunks: Iterator[bytes], size: int = TAR_CHUNK) -> Iterator[bytes]:
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


class _Counter:
    def __init__(self, transfer: events.Transfer) -> None:
        self.total = 0
        self.transfer = transfer

    def count(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.total += len(chunk)
            self.transfer.moved(self.total)
            yield chunk


def _nul_list(words: Sequence[str]) -> bytes:
    return b"".join(os.fsencode(word) + b"\0" for word in words)


def _single_file_tar(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = int(time.time())
        archive.addfile(info, io.BytesIO(data))
    return out.getvalue()
