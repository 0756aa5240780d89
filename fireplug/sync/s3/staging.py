"""Staging a local folder in the bucket: the objects it lacks uploaded (the client remembers
what it holds, so a no-op or a touch makes no request), then a manifest of the folder.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fireplug.remote.s3_layout import CLIENT_SIDE, Manifest, manifest_entry
from fireplug.remote.s3_transfer import LARGE, DigestCache, Upload
from fireplug.support import events
from fireplug.support.parallel import in_parallel
from fireplug.sync.s3.store import Store
from fireplug.sync.tree import DIR, FILE, LINK, Entry, file_sha256

HASH_CONCURRENCY = 4  # hashlib releases the GIL: files are hashed on several cores


@dataclass(frozen=True)
class LocalStaging:
    manifest: Manifest  # the client's manifest as written
    digests: dict[str, str]  # path -> SHA-256 of each local file that could be read
    changed: frozenset[str]  # files that changed while they were uploaded (not staged)
    uploaded_bytes: int


def stage_local(store: Store, local: Path, tree: Mapping[str, Entry], paths: Sequence[str]) -> LocalStaging:
    """Upload the objects of ``paths`` the bucket lacks, then the client's manifest (its whole
    staged tree) and ref; nothing at all when the bucket has them and the manifest is the same.

    Digests come from the client's digest cache (by signature); a file it lacks is read once:
    a small one being sent is hashed from the bytes sent, the others here first."""
    cache_file = str(store.staging.state / "digests.json")
    cache = DigestCache.load(cache_file)
    looked_at = time.time_ns()
    files = [path for path, entry in tree.items() if entry.kind == FILE]
    digests = {path: digest for path in files if (digest := cache.known(path, tree[path]))}
    sending = {path for path in paths if tree[path].kind == FILE}
    later = {path for path in sending if path not in digests and tree[path].size < LARGE}
    now = [path for path in files if path not in digests and path not in later]
    hashed: dict[str, str] = {}
    in_parallel(lambda path: hashed.__setitem__(path, file_sha256(str(local / path))), now, HASH_CONCURRENCY)
    digests.update((path, digest) for path, digest in hashed.items() if digest)
    known = store.known()
    uploads = [Upload(path, tree[path], digests.get(path, "")) for path in sorted(sending) if path in later or (path in digests and digests[path] not in known)]
    total = sum(upload.entry.size for upload in uploads)
    with events.progress(f"uploading data to {store.staging.url}") as progress:
        done = store.upload(local, uploads, events.transfer(progress, total))
    digests.update(done.digests)
    for path in done.changed:
        digests.pop(path, None)
    for path, digest in digests.items():
        cache.remember(path, tree[path], digest, looked_at)
    cache.keep_only(files)
    with contextlib.suppress(OSError):
        cache.save(cache_file)
    known = store.known()
    manifest = {path: manifest_entry(entry, digests.get(path, "")) for path, entry in tree.items() if _staged(entry, digests.get(path, ""), known)}
    store.put_manifest(CLIENT_SIDE, manifest)
    return LocalStaging(manifest, digests, frozenset(done.changed), done.sent_bytes)


def _staged(entry: Entry, digest: str, known: set[str]) -> bool:
    """Whether an entry belongs in the client's manifest: folders and links, and files whose
    object the bucket holds (a manifest never names a missing object)."""
    return entry.kind in (DIR, LINK) or (entry.kind == FILE and bool(digest) and digest in known)


def well_formed(entry: Any) -> bool:
    if not isinstance(entry, dict) or entry.get("kind") not in (FILE, DIR, LINK):
        return False
    numbers = all(isinstance(entry.get(key), int) and entry[key] >= 0 for key in ("size", "mode", "mtime_ns"))
    if entry["kind"] == FILE:
        digest = entry.get("digest")
        return numbers and isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
    return numbers and (entry["kind"] != LINK or isinstance(entry.get("target"), str))
