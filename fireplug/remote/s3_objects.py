"""The host's S3 helper: the Docker host's end of S3 staging (the bucket's layout is
``s3_layout.py``, the transfers ``s3_transfer.py``, which the client imports too). Every file
is written to a temporary name, checked against its digest, then renamed.

On a Docker host this runs as ``python3 -m fireplug.remote.s3_objects`` in a short-lived
container on fp's base image (host networking; the job, credentials included, arrives as
the file /tmp/fp-paths, never in the container's environment or labels):

    fetch DATA STAGE BACKUP TRASH   download the job's entries into STAGE, then move them into
                                    DATA as ``helper install`` does and list DATA (exit status
                                    MISSING_OBJECT: the bucket lacks an object the job names)
    publish DATA STATE              hash the job's paths in DATA, upload the objects the bucket
                                    lacks, write the host's manifest and ref, print the manifest

Standard library and boto3 (Debian's python3-boto3 in the base image).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import IO, Any

from fireplug.remote.s3_layout import Manifest, Place, encode_manifest, is_plain_path, manifest_entry
from fireplug.remote.s3_transfer import (
    LARGE,
    ContentMismatch,
    DigestCache,
    ObjectMissing,
    Upload,
    by_size,
    download_object,
    make_client,
    put_manifest,
    upload_objects,
)
from fireplug.remote.sync_helper import install, list_tree
from fireplug.sync.tree import DIR, FILE, LINK, file_sha256, lstat_entry, safe_parent

MISSING_OBJECT = 3  # the helper's exit status when the bucket lacks an object the job names


def fetch(job: Mapping[str, Any], data: str, stage: str, backup: str, trash: str, out: IO[bytes], errors: IO[bytes], client: Any = None) -> None:
    """Lay the job's entries out under ``stage`` (objects downloaded and checked), then install."""
    client = client or make_client(job)
    place = Place(job["bucket"], job["root"])
    entries: Manifest = {path: entry for path, entry in job["entries"].items() if is_plain_path(path)}
    os.makedirs(stage)
    parts = stage + "-parts"  # temporary names, outside what ``install`` moves (pruned with the stage)
    os.makedirs(parts)
    files = []
    for path in sorted(entries):
        entry = entries[path]
        target = os.path.join(stage, path)
        if not safe_parent(stage, path):
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if entry["kind"] == DIR:
            os.makedirs(target, exist_ok=True)
            os.chmod(target, entry["mode"] & 0o777)
        elif entry["kind"] == LINK:
            os.symlink(entry["target"], target)
            os.utime(target, ns=(entry["mtime_ns"], entry["mtime_ns"]), follow_symlinks=False)
        elif entry["kind"] == FILE:
            files.append(path)

    def download(path: str) -> None:
        entry = entries[path]
        handle, temporary = tempfile.mkstemp(dir=parts)
        with os.fdopen(handle, "wb") as out:
            download_object(client, place, entry["digest"], entry["size"], out)
        os.chmod(temporary, entry["mode"] & 0o777)
        os.utime(temporary, ns=(entry["mtime_ns"], entry["mtime_ns"]))
        os.rename(temporary, os.path.join(stage, path))

    by_size(download, files, lambda path: entries[path]["size"])
    install(data, stage, backup, errors)
    os.rmdir(parts)
    errors.flush()
    list_tree(data, trash, out)


def publish(job: Mapping[str, Any], data: str, state: str, out: IO[bytes], client: Any = None) -> tuple[str, Manifest]:
    """Stage the host's tree in the bucket (``stage_tree``), then write the host's manifest and
    ref, and print the manifest of the job's paths (what the client downloads). The host's
    manifest's key, and the manifest."""
    client = client or make_client(job)
    manifest, wanted = stage_tree(job, data, state, client)
    key = put_manifest(client, Place(job["bucket"], job["root"]), job["side"], manifest, checked=job.get("request_checksum_calculation") != "when_required")
    out.write(encode_manifest(wanted))
    return key, manifest


def stage_tree(job: Mapping[str, Any], data: str, state: str, client: Any) -> tuple[Manifest, Manifest]:
    """The job's paths hashed (through the digest cache) and the objects the bucket lacks
    uploaded: the manifest of the whole tree, and that of the job's paths."""
    place = Place(job["bucket"], job["root"])
    cache = DigestCache.load(state)
    now = time.time_ns()
    wanted: Manifest = {}
    uploads = []
    for path in filter(is_plain_path, job["paths"]):
        entry = lstat_entry(data, path)
        if entry is None or entry.kind not in (FILE, DIR, LINK) or not safe_parent(data, path):
            continue
        if entry.kind != FILE:
            wanted[path] = manifest_entry(entry)
            continue
        digest = cache.known(path, entry) or (file_sha256(os.path.join(data, path)) if entry.size >= LARGE else "")
        if digest or entry.size < LARGE:  # else unreadable
            uploads.append(Upload(path, entry, digest))
    listed = {upload.path: upload.entry for upload in uploads}
    checked = job.get("request_checksum_calculation") != "when_required"
    staged = upload_objects(client, place, data, uploads, set(job.get("known", ())), checked=checked)
    for path, digest in staged.digests.items():
        wanted[path] = manifest_entry(listed[path], digest)
        cache.remember(path, listed[path], digest, now)
    for path in staged.changed:
        cache.entries.pop(path, None)
    manifest = {**_cached_manifest(data, cache), **wanted}
    cache.save(state)
    return manifest, wanted


def _cached_manifest(data: str, cache: DigestCache) -> Manifest:
    """The host's files whose digest is known and still right (unchanged since hashed)."""
    found: Manifest = {}
    for path in list(cache.entries):
        entry = lstat_entry(data, path)
        digest = cache.known(path, entry) if entry is not None and entry.kind == FILE else ""
        if digest:
            found[path] = manifest_entry(entry, digest)  # type: ignore[arg-type]
        else:
            cache.entries.pop(path)
    return found


def main(argv: list[str]) -> int:
    command, arguments = (argv[0], argv[1:]) if argv else ("", [])
    try:
        with open("/tmp/fp-paths", "rb") as source:
            job = json.load(source)
        with contextlib.suppress(OSError):  # as another user than the file's, the container's removal does it
            os.unlink("/tmp/fp-paths")  # the credentials in it are not left in the container
        if command == "fetch" and len(arguments) == 4:
            fetch(job, arguments[0], arguments[1], arguments[2], arguments[3], sys.stdout.buffer, sys.stderr.buffer)
        elif command == "publish" and len(arguments) == 2:
            publish(job, arguments[0], arguments[1], sys.stdout.buffer)
        else:
            print("usage: s3_helper fetch DATA STAGE BACKUP TRASH | publish DATA STATE", file=sys.stderr)
            return 2
    except ObjectMissing as e:
        print(f"missing object: {e}", file=sys.stderr)
        return MISSING_OBJECT
    except ContentMismatch as e:
        print(f"object {e} does not hold the bytes it is named by", file=sys.stderr)
        return 4
    except Exception as e:  # one line for fp to show: botocore's errors name the request and the code
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
