"""The Docker host's side of an S3 sync: a helper container there fetches what a push staged
in the bucket and publishes what a pull brings back (``remote/s3_objects.py``); the copies
here go through the bucket.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from fireplug.hosts.engine import Engine
from fireplug.remote.s3_layout import Manifest, decode_manifest, is_plain_path
from fireplug.remote.s3_objects import MISSING_OBJECT
from fireplug.remote.s3_transfer import by_size
from fireplug.remote.sync_helper import STAGING_PREFIX
from fireplug.support import events
from fireplug.sync import SyncError
from fireplug.sync.api import MOUNT, ApiHost, HelperFailed
from fireplug.sync.landing import land_entry, remove_if_empty, scratch_folder
from fireplug.sync.s3.staging import stage_local, well_formed
from fireplug.sync.s3.store import Store
from fireplug.sync.side import Transferred
from fireplug.sync.tree import DIR, FILE, LINK, Entry, scan

S3_HELPER = "fireplug.remote.s3_objects"


class S3Host(ApiHost):
    """The host side of a sync staged in S3 (``session.HostSide``): the host is listed, hashed
    and moved through the Docker API as on the API path; copies go through the bucket."""

    def __init__(self, engine: Engine, image: str, project_labels: dict[str, str], project_folder: str, data: str, store: Store, *, user: str = "") -> None:
        super().__init__(engine, image, project_labels, project_folder, data, user=user)
        self.store = store
        self.host_state = f"{MOUNT}/.fp-s3-digests.json"  # the host's digest cache, beside the data folder

    def push(self, local: Path, paths: Sequence[str], batch: str, fresh: set[str]) -> Transferred:
        tree = scan(str(local))
        try:
            return self._push_once(local, paths, batch, tree)
        except HelperFailed as e:
            if e.status != MISSING_OBJECT:
                raise
            # (a gc from elsewhere, a bucket made again): the push lists the bucket and sends them again, once
            events.note(f"{self.store.staging.url} lacks objects fp thought it had: listing it and sending them again")
            return self._push_once(local, paths, batch, tree)

    def _push_once(self, local: Path, paths: Sequence[str], batch: str, tree: Mapping[str, Entry]) -> Transferred:
        pushed = [path for path in paths if path in tree and tree[path].kind in (FILE, DIR, LINK)]
        staged = stage_local(self.store, local, tree, pushed)
        digests = staged.digests
        entries = {path: staged.manifest[path] for path in pushed if path in staged.manifest and path not in staged.changed}
        stage = f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
        job = {**self.store.job(), "entries": entries}
        result = self._run_s3_helper(["fetch", self.data, f"{MOUNT}/{stage}", f"{self.trash}/{batch}", self.trash], job)
        self.after_push = self._parse_listing(result.stdout)
        refused = [item[8:].decode(errors="replace") for item in result.stderr.split(b"\0") if item.startswith(b"refused ")]
        problems = []
        unread = [path for path in pushed if tree[path].kind == FILE and path not in digests and path not in staged.changed]
        if unread:
            problems.append(f"{len(unread)} files could not be read here: {', '.join(sorted(unread)[:3])}")
        if refused:
            problems.append(f"{len(refused)} paths were refused on the host (a parent is not a real folder): {', '.join(refused[:3])}")
        if staged.changed:
            problems.append(f"{len(staged.changed)} files changed while they were uploaded (the next sync sends them): {', '.join(sorted(staged.changed)[:3])}")
        files = [entry for entry in entries.values() if entry["kind"] == FILE]
        sent = {path: digests[path] for path in entries if path in digests}
        return Transferred(len(files), sum(entry["size"] for entry in files), staged.uploaded_bytes, "; ".join(problems), sent)

    def pull(self, paths: Sequence[str], local: Path, backup: Path, fresh: set[str]) -> Transferred:
        job = {**self.store.job(), "paths": sorted(paths), "known": sorted(self.store.known()), "side": self.host}
        result = self._run_s3_helper(["publish", self.data, self.host_state], job)
        try:
            manifest = {path: entry for path, entry in decode_manifest(result.stdout).items() if is_plain_path(path) and well_formed(entry)}
        except ValueError as e:
            raise SyncError(self.host, f"the S3 helper's manifest is damaged ({e})", hint="run fp again") from e
        unstaged = sorted(set(paths) - set(manifest))
        if unstaged:  # changed while it was uploaded, or gone: its record stays as it was
            events.warn(f"{len(unstaged)} entries on host '{self.host}' changed while they were staged; the next sync brings them: {', '.join(unstaged[:3])}")
        self.store.learn({entry["digest"] for entry in manifest.values() if entry["kind"] == FILE})
        total = sum(entry["size"] for entry in manifest.values() if entry["kind"] == FILE)
        with events.progress(f"downloading data from {self.store.staging.url}") as progress:
            return self._land_all(manifest, local, backup, events.transfer(progress, total))

    def _land_all(self, manifest: Manifest, local: Path, backup: Path, transfer: events.Transfer) -> Transferred:
        transferred = Transferred()
        counting = threading.Lock()
        scratch = scratch_folder(local)
        try:
            for path in sorted(path for path, entry in manifest.items() if entry["kind"] != FILE):
                entry = manifest[path]
                land_entry(local, path, entry["kind"], entry["mode"], entry["mtime_ns"], entry.get("target", ""), backup, scratch)
            files = [path for path, entry in manifest.items() if entry["kind"] == FILE]

            def land(path: str) -> None:
                entry = manifest[path]

                def write(out: BinaryIO) -> None:
                    self.store.download(entry["digest"], entry["size"], out)

                if not land_entry(local, path, FILE, entry["mode"], entry["mtime_ns"], "", backup, scratch, write):
                    return
                with counting:
                    transferred.files += 1
                    transferred.file_bytes += entry["size"]
                    transferred.digests[path] = entry["digest"]
                    transfer.moved(transferred.file_bytes)

            by_size(land, files, lambda path: manifest[path]["size"])
        finally:
            remove_if_empty(scratch)
        transferred.wire_bytes = transferred.file_bytes
        return transferred

    def _run_s3_helper(self, arguments: list[str], job: dict[str, Any]) -> Any:
        """The S3 helper with the job file; a failure may mean the bucket lost objects fp
        thought it had: what this machine knows of the bucket is forgotten (relisted next time)."""
        try:
            return self._helper(arguments, upload=json.dumps(job).encode(), module=S3_HELPER, host_network=True)
        except SyncError:
            self.store.forget()
            raise
