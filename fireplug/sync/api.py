"""The Docker API transport of a sync, for engines fp reaches without ssh (a tcp:// TLS engine).

Each step is one short-lived helper container on fp's base image (``helper.py``), with the
host's project folder mounted (data folder, trash and staging side by side) and no network.
Copies to the host are uploaded (PUT archive) into a staging folder beside the data folder
and then moved into place by the helper, so an interrupted upload never leaves a partial
file under its final name; copies from the host arrive as a tar stream that fp writes to
temporary names and renames, refusing anything but files, folders and symlinks, and any
path whose parent is not a real folder inside the data folder (``tarstream.py``, ``landing.py``).
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import os
import tarfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fireplug.errors import EngineError, EngineUnreachable
from fireplug.errors import HelperFailed as HelperFailed
from fireplug.hosts.engine import Engine, frames
from fireplug.remote.sync_helper import STAGING_PREFIX
from fireplug.support import events, labels
from fireplug.support.locks import process_gone, this_process
from fireplug.support.signals import made_uninterrupted
from fireplug.sync import SyncError
from fireplug.sync.side import Moved, Transferred
from fireplug.sync.tarstream import Chunks, Extraction, SentCounter, coalesced, count_files, extract, single_file_tar, tar_chunks
from fireplug.sync.tree import FILE, TRASH_FOLDER, Listing, Tree, parse_digests, parse_listing, split_answer

MOUNT = "/fp-sync"

STDOUT, STDERR = 1, 2


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
                into = Extraction(local, set(wanted), backup, f"{stage}/", listed, transfer=events.transfer(progress, total))
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
        files, file_bytes = count_files(local, paths)
        digests: dict[str, str] = {}
        with events.progress(f"syncing data to host '{self.host}'") as progress:
            sent = SentCounter(events.transfer(progress, file_bytes))
            chunks = sent.count(coalesced(tar_chunks(local, sorted(paths), f"{stage}/", self.host, digests)))
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
        fetch: tuple[str, Extraction] | None = None,
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
                self.engine.put_archive(container, "/tmp", [single_file_tar("fp-paths", upload)])
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

    def _fetch(self, container: str, path: str, into: Extraction, result: _HelperResult) -> None:
        chunks = self.engine.get_archive(container, path)
        stream = Chunks(chunks)
        try:
            extract(stream, into, result.transferred)
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


def _nul_list(words: Sequence[str]) -> bytes:
    return b"".join(os.fsencode(word) + b"\0" for word in words)
