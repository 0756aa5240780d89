"""Sync through the Docker API, for engines fp reaches without ssh (a tcp:// TLS engine).

A short-lived helper container on fp's base image mounts the host's data folder. Sync in:
the helper lists the host's files (size, mtime), and only files that differ travel, as a tar
stream extracted into the mount (PUT archive). Sync out: the helper receives the local list
and streams back a tar of the host files that differ and are not older than the local copy;
fp extracts it member by member, refusing paths that leave the folder, never deleting.
"""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fireplug.engine import Engine
from fireplug.run import frames
from fireplug.sync import SyncError, SyncReport
from fireplug.sync.helper import differs, keep_local, manifest

MOUNT = "/fp-sync"
HELPER = ["python3", "-m", "fireplug.sync.helper"]  # bundled in fp's base image
STDOUT, STDERR = 1, 2
TAR_CHUNK = 1 << 20


class ApiSyncer:
    def __init__(self, engine: Engine, image: str, labels: dict[str, str]) -> None:
        self.engine = engine
        self.image = image
        self.labels = {**labels, "io.fireplug.kind": "sync"}

    def sync_in(self, local: Path, remote: str) -> SyncReport:
        started = time.monotonic()
        listing = self._helper(remote, [*HELPER, "manifest", MOUNT]).stdout
        try:
            remote_files = json.loads(listing or b"{}")
        except ValueError as e:
            raise SyncError(self.engine.host, "in", f"the sync helper's file list is not JSON ({e})") from e
        local_files = manifest(str(local))
        changed = [path for path, (size, mtime) in local_files.items() if differs(remote_files.get(path), size, mtime)]
        sent = _Counter()
        if changed:
            container = self._create(remote, ["true"])  # never started: the archive lands in its mount
            try:
                self.engine.put_archive(container, MOUNT, sent.count(_tar_chunks(local, changed)))
            finally:
                self.engine.remove_container(container)
        file_bytes = sum(local_files[path][0] for path in changed)
        return SyncReport("in", len(changed), file_bytes, sent.total, (), time.monotonic() - started)

    def sync_out(self, remote: str, local: Path, folders: Sequence[str]) -> SyncReport:
        started = time.monotonic()
        local.mkdir(parents=True, exist_ok=True)
        local_files = manifest(str(local), [folder for folder in folders if (local / folder).is_dir()])
        listing = json.dumps(local_files).encode()
        result = self._helper(remote, [*HELPER, "pack", MOUNT, "/tmp/fp-manifest.json", *folders], upload=("fp-manifest.json", listing), extract_to=local)
        kept = tuple(sorted({line[5:] for line in result.stderr.decode(errors="replace").splitlines() if line.startswith("kept ")} | set(result.kept)))
        return SyncReport("out", result.files, result.file_bytes, result.wire_bytes, kept, time.monotonic() - started)

    # -- the helper container -------------------------------------------------------------

    def _create(self, remote: str, command: list[str]) -> str:
        config: dict[str, Any] = {
            "Image": self.image,
            "Cmd": command,
            "Labels": self.labels,
            "AttachStdout": True,
            "AttachStderr": True,
            "NetworkDisabled": True,
            "HostConfig": {"Binds": [f"{remote}:{MOUNT}:rw"], "AutoRemove": False},
        }
        return self.engine.create_container(config, f"fp-sync-{uuid.uuid4().hex[:12]}")

    def _helper(self, remote: str, command: list[str], *, upload: tuple[str, bytes] | None = None, extract_to: Path | None = None) -> _HelperResult:
        """Run the helper to completion; its output (stdout collected, or extracted as a tar)."""
        container = self._create(remote, command)
        try:
            if upload is not None:
                self.engine.put_archive(container, "/tmp", [_single_file_tar(*upload)])
            attached = self.engine.attach(container, stdin=False)
            damaged: tarfile.TarError | None = None
            try:
                self.engine.start(container)
                stream = _Demultiplexed(frames(attached))
                try:
                    result = _extract(stream, extract_to) if extract_to is not None else _HelperResult(stdout=stream.read_all())
                except tarfile.TarError as e:  # reported below, after the helper's own status
                    result, damaged = _HelperResult(), e
                stream.read_all()  # what follows the tar's end: the rest of stderr
                result.stderr = bytes(stream.stderr)
                result.wire_bytes = stream.total
            finally:
                attached.close()
            status = self.engine.wait(container)
        finally:
            self.engine.remove_container(container)
        direction = "out" if extract_to else "in"
        if status != 0:
            detail = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
            raise SyncError(self.engine.host, direction, f"the sync helper exited with status {status}: {detail[0]}")
        if damaged is not None:
            raise SyncError(self.engine.host, direction, f"the sync helper's archive is damaged ({damaged})")
        return result


class _HelperResult:
    def __init__(self, stdout: bytes = b"") -> None:
        self.stdout = stdout
        self.stderr = b""
        self.files = 0
        self.file_bytes = 0
        self.wire_bytes = 0
        self.kept: list[str] = []


class _Demultiplexed(io.RawIOBase):
    """The helper's stdout as a readable stream; its stderr collected on the side."""

    def __init__(self, source: Iterator[tuple[int, bytes]]) -> None:
        self.source = source
        self.pending = b""
        self.stderr = bytearray()
        self.total = 0

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self.pending:
            try:
                stream, data = next(self.source)
            except StopIteration:
                return 0
            self.total += len(data)
            if stream == STDERR:
                self.stderr += data
            else:
                self.pending = data
        size = min(len(target), len(self.pending))
        target[:size] = self.pending[:size]
        self.pending = self.pending[size:]
        return size

    def read_all(self) -> bytes:
        return self.readall() or b""


def _extract(stream: io.RawIOBase, root: Path) -> _HelperResult:
    """Extract regular files from a tar stream under ``root``: safely, atomically, keeping newer local files."""
    result = _HelperResult()
    with tarfile.open(fileobj=io.BufferedReader(stream, TAR_CHUNK), mode="r|") as archive:
        for member in archive:
            target = _safe_target(root, member.name)
            if not member.isfile() or target is None:
                continue
            if target.exists() and keep_local([0, int(target.stat().st_mtime)], int(member.mtime)):
                result.kept.append(member.name)  # changed here since the listing was made
                continue
            source = archive.extractfile(member)
            assert source is not None
            _write_atomically(target, source, member)
            result.files += 1
            result.file_bytes += member.size
    return result


def _safe_target(root: Path, name: str) -> Path | None:
    """``root/name`` unless the name is absolute or climbs out of ``root``."""
    parts = Path(name).parts
    if not parts or Path(name).is_absolute() or ".." in parts:
        return None
    return root.joinpath(*parts)


def _write_atomically(target: Path, source: io.BufferedReader | Any, member: tarfile.TarInfo) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".fp-partial")
    try:
        with os.fdopen(handle, "wb") as out:
            while block := source.read(TAR_CHUNK):
                out.write(block)
        os.chmod(temporary, member.mode & 0o777)
        os.utime(temporary, (member.mtime, member.mtime))
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _tar_chunks(root: Path, paths: Sequence[str]) -> Iterator[bytes]:
    """A tar of ``paths`` under ``root``, in chunks: memory stays bounded whatever the file sizes.

    Raises:
        SyncError: a file shrank while it was being sent.
    """
    for path in paths:
        full = root / path
        status = full.stat()
        info = tarfile.TarInfo(path)
        info.size, info.mtime, info.mode = status.st_size, int(status.st_mtime), stat.S_IMODE(status.st_mode)
        yield info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        sent = 0
        with open(full, "rb") as source:
            while sent < info.size and (block := source.read(min(TAR_CHUNK, info.size - sent))):
                sent += len(block)
                yield block
        if sent < info.size:
            raise SyncError("", "in", f"{full} shrank while it was being sent", hint="run fp again")
        yield b"\0" * (-info.size % tarfile.BLOCKSIZE)
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


class _Counter:
    def __init__(self) -> None:
        self.total = 0

    def count(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.total += len(chunk)
            yield chunk


def _single_file_tar(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = int(time.time())
        archive.addfile(info, io.BytesIO(data))
    return out.getvalue()
