"""Moving objects to and from the bucket with boto3, for both ends: uploads of what the bucket
lacks (many small files at once, a large one in parallel parts), checked downloads (every
file written to a temporary name, checked against its digest, then renamed), manifests,
refs and conditional writes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from fireplug.remote.s3_layout import Manifest, Place, manifest_key_of
from fireplug.support.parallel import in_parallel
from fireplug.support.signature import is_racy
from fireplug.support.state import save_bytes
from fireplug.sync.tree import READ_SIZE, Entry, lstat_entry

LARGE = 64 << 20  # from this size a file goes as a multipart upload / ranged download

PART_SIZE = 64 << 20

LARGE_CONCURRENCY = 8  # parts of one large file in flight

SMALL_CONCURRENCY = 16  # small files in flight, sharing one client


class ObjectMissing(Exception):
    """The bucket lacks an object a manifest names (removed behind fp's back)."""


class ContentMismatch(Exception):
    """Bytes that arrived do not have the digest they are named by."""


class DigestCache:
    """SHA-256 of files by stat signature (size, mtime, ctime, inode): a file is hashed again only
    when its signature changed, and never trusted when it changed too recently (the racy rule)."""

    def __init__(self, entries: Mapping[str, list[Any]] | None = None) -> None:
        self.entries: dict[str, list[Any]] = dict(entries or {})

    @classmethod
    def load(cls, path: str) -> DigestCache:
        try:
            with open(path, "rb") as source:
                data = json.load(source)
            return cls(data if isinstance(data, dict) else {})
        except (OSError, ValueError):
            return cls()

    def save(self, path: str) -> None:
        save_bytes(Path(path), json.dumps(self.entries, separators=(",", ":")).encode())

    def known(self, path: str, entry: Entry) -> str:
        cached = self.entries.get(path)
        if isinstance(cached, list) and len(cached) == 5 and cached[:4] == [entry.size, entry.mtime_ns, entry.ctime_ns, entry.ino]:
            return str(cached[4])
        return ""

    def remember(self, path: str, entry: Entry, digest: str, looked_at_ns: int) -> None:
        if digest and not is_racy(entry.mtime_ns, entry.ctime_ns, looked_at_ns):
            self.entries[path] = [entry.size, entry.mtime_ns, entry.ctime_ns, entry.ino, digest]
        else:
            self.entries.pop(path, None)

    def keep_only(self, paths: Iterable[str]) -> None:
        wanted = set(paths)
        self.entries = {path: value for path, value in self.entries.items() if path in wanted}


def transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=LARGE, multipart_chunksize=PART_SIZE, max_concurrency=LARGE_CONCURRENCY, use_threads=True)


@dataclass(frozen=True)
class Upload:
    path: str  # relative to the root
    entry: Entry  # as listed
    digest: str = ""  # "" for a file below LARGE not hashed yet: it is hashed from the bytes sent


@dataclass
class Uploaded:
    digests: dict[str, str] = field(default_factory=dict)  # path -> digest of each file now staged
    changed: list[str] = field(default_factory=list)  # files that changed while they were read: not staged
    unreadable: list[str] = field(default_factory=list)  # files that could not be opened (or vanished)
    sent_bytes: int = 0


def upload_objects(
    client: Any, place: Place, root: str, uploads: list[Upload], known: set[str], on_bytes: Callable[[int], None] = lambda n: None, *, checked: bool = True
) -> Uploaded:
    """Stage each file's bytes under its digest, unless ``known`` (the bucket has it). Files
    below LARGE are read once, hashed (unless given a digest) and sent from memory, 16 at a
    time; larger ones go in parts. A file whose signature changed while it was read is not
    staged (a large one's object is removed again: its bytes may not be the ones named).
    ``checked``: small files carry their SHA-256 for S3 to verify (off for stores that reject
    checksum headers: ``request_checksum_calculation = "when_required"``)."""
    uploader = _Uploader(client, place, root, known, on_bytes, checked)
    by_size(uploader.send, uploads, lambda upload: upload.entry.size)
    return uploader.done


class _Uploader:
    """``upload_objects``' workers' shared state: what is known to the bucket, what was sent."""

    def __init__(self, client: Any, place: Place, root: str, known: set[str], on_bytes: Callable[[int], None], checked: bool) -> None:
        self.client, self.place, self.root = client, place, root
        self.known, self.on_bytes, self.checked = known, on_bytes, checked
        self.done = Uploaded()
        self.lock = threading.Lock()

    def send(self, upload: Upload) -> None:
        (self._send_small if upload.entry.size < LARGE else self._send_large)(upload)

    def _claim(self, digest: str) -> bool:
        """Whether this worker sends ``digest`` (no other has, and the bucket lacks it)."""
        with self.lock:
            fresh = digest not in self.known
            self.known.add(digest)
            return fresh

    def _finish(self, upload: Upload, digest: str, sent: int) -> None:
        with self.lock:
            self.done.digests[upload.path] = digest
            self.done.sent_bytes += sent
            self.on_bytes(self.done.sent_bytes)

    def _send_small(self, upload: Upload) -> None:
        try:
            with open(os.path.join(self.root, upload.path), "rb") as source:
                body = source.read()
        except OSError:
            with self.lock:
                self.done.unreadable.append(upload.path)
            return
        digest = upload.digest or hashlib.sha256(body).hexdigest()
        if lstat_entry(self.root, upload.path) != upload.entry:
            with self.lock:
                self.done.changed.append(upload.path)
            return
        fresh = self._claim(digest)
        if fresh:  # S3 checks the bytes against the name
            put_bytes(self.client, self.place.bucket, self.place.object_key(digest), body, checked=self.checked, digest=digest)
        self._finish(upload, digest, len(body) if fresh else 0)

    def _send_large(self, upload: Upload) -> None:
        if not upload.digest:  # unreadable when it was to be hashed
            return
        if not self._claim(upload.digest):
            self._finish(upload, upload.digest, 0)
            return
        key = self.place.object_key(upload.digest)
        with open(os.path.join(self.root, upload.path), "rb") as source:
            self.client.upload_fileobj(source, self.place.bucket, key, Config=transfer_config())
        if lstat_entry(self.root, upload.path) != upload.entry:  # written to while it was hashed or sent
            self.client.delete_object(Bucket=self.place.bucket, Key=key)
            with self.lock:
                self.known.discard(upload.digest)
                self.done.changed.append(upload.path)
            return
        self._finish(upload, upload.digest, upload.entry.size)


def download_object(client: Any, place: Place, digest: str, size: int, out: IO[bytes]) -> None:
    """Write the object named ``digest`` to ``out`` and check its bytes.

    Raises:
        ObjectMissing: the bucket has no such object.
        ContentMismatch: its bytes are not the ones named.
    """
    key = place.object_key(digest)
    hashing = _Hashing(out)
    try:
        if size < LARGE:
            body = client.get_object(Bucket=place.bucket, Key=key)["Body"]
            while block := body.read(READ_SIZE):
                hashing.write(block)
        else:
            client.download_fileobj(place.bucket, key, hashing, Config=transfer_config())  # in order: ``hashing`` cannot seek
    except Exception as e:
        if _is_missing(e):
            raise ObjectMissing(key) from e
        raise
    if hashing.hash.hexdigest() != digest or hashing.size != size:
        raise ContentMismatch(key)


class _Hashing:
    """A file object that hashes what is written to it; s3transfer writes a non-seekable
    output's parts in order."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.out.write(data)


def _is_missing(error: Exception) -> bool:
    response = getattr(error, "response", None)
    code = str((response or {}).get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""
    return code in ("NoSuchKey", "404", "NotFound")


def by_size(work: Callable[[Any], None], items: list[Any], size_of: Callable[[Any], int]) -> None:
    """``work`` on each item: those below LARGE SMALL_CONCURRENCY at a time, then the large
    ones one after the other (s3transfer sends each one's parts in parallel)."""
    in_parallel(work, [item for item in items if size_of(item) < LARGE], SMALL_CONCURRENCY)
    in_parallel(work, [item for item in items if size_of(item) >= LARGE], 1)


def put_manifest(client: Any, place: Place, side: str, manifest: Manifest, *, checked: bool = True) -> str:
    """Write ``manifest`` (its objects are there already), then point ``side``'s ref at it."""
    key, data, digest = manifest_key_of(place, manifest)
    put_bytes(client, place.bucket, key, data, checked=checked, digest=digest)
    put_ref(client, place, side, key, checked=checked)
    return key


def put_ref(client: Any, place: Place, side: str, manifest_key: str, *, checked: bool = True) -> None:
    """Point ``side``'s ref at the manifest ``manifest_key`` (written already)."""
    put_bytes(client, place.bucket, place.ref_key(side), json.dumps({"manifest": manifest_key, "at": int(time.time())}).encode(), checked=checked)


def client_config(request_checksums: str = "", response_checksums: str = "") -> Any:
    """botocore's settings for fp's clients, here and on the host.

    Unless checksums go only where required (for stores that reject them), every body fp sends
    carries a checksum S3 verifies (``put_bytes``: SHA-256; s3transfer's parts: botocore's CRC),
    so the body is not hashed once more for the request's signature, which botocore otherwise
    does for every plain-http endpoint."""
    import botocore.config

    options: dict[str, Any] = {"retries": {"max_attempts": 5, "mode": "standard"}, "max_pool_connections": SMALL_CONCURRENCY + LARGE_CONCURRENCY}
    if request_checksums != "when_required":
        options["s3"] = {"payload_signing_enabled": False}
    checksums = {"request_checksum_calculation": request_checksums, "response_checksum_validation": response_checksums}
    try:
        return botocore.config.Config(**options, **{key: value for key, value in checksums.items() if value})
    except TypeError:  # an older botocore (Debian's): it knows no checksum settings, and adds no checksums either
        return botocore.config.Config(**options)


def put_bytes(client: Any, bucket: str, key: str, body: bytes, *, checked: bool, digest: str = "") -> None:
    """PUT ``body``, with its SHA-256 (``digest``, made when not given) for S3 to verify when ``checked``."""
    extra = {"ChecksumSHA256": base64.b64encode(bytes.fromhex(digest) if digest else hashlib.sha256(body).digest()).decode()} if checked else {}
    client.put_object(Bucket=bucket, Key=key, Body=body, **extra)


CLAIMS = "/claims/"  # a key holding this is written only when absent (see put_if_absent)


def put_if_absent(client: Any, bucket: str, key: str, body: bytes) -> bool:
    """Create ``key`` unless it exists (S3's conditional write): whether this call created it.
    Two writers racing for one key: exactly one gets True (a sweep's claim on a run). ``key``
    must hold CLAIMS: the condition goes in through a request hook, as Debian's botocore knows
    no IfNoneMatch parameter.

    Raises:
        botocore's ClientError: other than the key's existing.
    """
    import botocore.exceptions

    client.meta.events.register("before-call.s3.PutObject", _only_if_absent, unique_id="fp-put-if-absent")
    for _ in range(5):
        try:
            client.put_object(Bucket=bucket, Key=key, Body=body)
            return True
        except botocore.exceptions.ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code == "ConditionalRequestConflict":  # a racing write still in flight: ask again
                time.sleep(0.1)
                continue
            if code not in ("PreconditionFailed", "412"):
                raise
            # a retried request whose first try created it fails too: then the key holds this body
            return bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read()) == body
    return False


def _only_if_absent(params: dict[str, Any], **_: Any) -> None:
    if CLAIMS in str(params.get("url_path", "")):
        params.setdefault("headers", {})["If-None-Match"] = "*"


def make_client(job: Mapping[str, Any]) -> Any:
    """A client from the job's settings (the host side: no profile, no config files)."""
    import boto3

    credentials = job.get("credentials") or {}
    return boto3.session.Session().client(
        "s3",
        endpoint_url=job.get("endpoint") or None,
        region_name=job.get("region") or None,
        aws_access_key_id=credentials.get("access_key"),
        aws_secret_access_key=credentials.get("secret_key"),
        aws_session_token=credentials.get("token") or None,
        config=client_config(job.get("request_checksum_calculation", ""), job.get("response_checksum_validation", "")),
    )
