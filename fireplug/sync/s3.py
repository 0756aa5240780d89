"""The S3 transport of a sync (``--sync s3``): the data folder is staged in a bucket that the
Docker host pulls from and pushes to; this is where fp meets boto3 (its errors are translated
here, once).

The planner, the record and the host's listing are the same as on the other paths
(``session.py``); only the copies differ. A push uploads the objects the bucket lacks (the
client remembers what it holds, so a no-op or a touch makes no request at all), then the
client's manifest and ref, then a helper container on the host (``s3_helper fetch``)
downloads what the plan sends and moves it into place. A pull asks a helper to hash and
upload what the plan brings back (``s3_helper publish``); it prints the manifest of those
paths, and the client downloads them to temporary names and renames them.

Credentials are resolved here, by boto3's own chain, and reach the helper inside its job file
(uploaded into the container before it starts): never in an image, a label, an environment
variable of a container or a log line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from fireplug.config import Config, SyncSettings
from fireplug.errors import S3Error
from fireplug.hosts.engine import Engine
from fireplug.remote.s3_objects import (
    CLIENT_SIDE,
    LARGE,
    MISSING_OBJECT,
    ContentMismatch,
    DigestCache,
    Manifest,
    ObjectMissing,
    Place,
    Upload,
    Uploaded,
    by_size,
    client_config,
    decode_manifest,
    download_object,
    encode_manifest,
    in_parallel,
    is_plain_path,
    manifest_entry,
    put_manifest,
    put_ref,
    upload_objects,
)
from fireplug.remote.sync_helper import STAGING_PREFIX
from fireplug.support import events
from fireplug.support.state import save_bytes
from fireplug.sync import SyncError
from fireplug.sync.api import MOUNT, ApiHost, HelperFailed, land_entry, remove_if_empty, scratch_folder
from fireplug.sync.session import Transferred
from fireplug.sync.tree import DIR, FILE, LINK, Entry, file_sha256, scan

S3_HELPER = "fireplug.remote.s3_objects"
CHECK_SECONDS = 3600  # a bucket found usable with a key is not asked again for this long
_CONNECTION_FAILURES = {
    "EndpointConnectionError": "no connection",
    "ConnectionClosedError": "the connection closed",
    "ReadTimeoutError": "no answer in time",
    "ConnectTimeoutError": "connecting timed out",
}
HASH_CONCURRENCY = 4  # hashlib releases the GIL: files are hashed on several cores


@dataclass(frozen=True)
class Staging:
    """A project's place in a bucket, and where this machine keeps what it knows of it."""

    settings: SyncSettings
    place: Place
    state: Path

    @classmethod
    def of(cls, settings: SyncSettings, project_key: str, state_home: Path) -> Staging:
        bucket, prefix = settings.bucket_and_prefix
        place = Place(bucket, f"{prefix}/{project_key}" if prefix else project_key)
        name = hashlib.sha256(f"{settings.endpoint}\0{bucket}\0{place.root}".encode()).hexdigest()[:16]
        return cls(settings, place, state_home / "s3" / name)

    @property
    def url(self) -> str:
        return f"s3://{self.place.bucket}/{self.place.root}"


class Store:
    """The bucket as fp uses it: one client, what objects it holds, manifests and refs."""

    @classmethod
    def for_project(cls, config: Config, state_home: Path) -> Store:
        """The project's staging in its configured bucket (``[sync] s3``)."""
        return cls(Staging.of(config.sync, config.project.key, state_home))

    def __init__(self, staging: Staging) -> None:
        self.staging = staging
        self.place = staging.place
        self._session: Any = None
        self._client: Any = None
        self._known: set[str] | None = None

    # -- the client, and errors in one line -------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            with self.translated():
                self._session, self._client = _make_client(self.staging.settings)
        return self._client

    @property
    def session(self) -> Any:
        return self.client and self._session  # the client is made with its session

    @contextlib.contextmanager
    def translated(self, doing: str = "") -> Iterator[None]:
        """botocore's errors as one S3Error line (what was asked, the service's code)."""
        import botocore.exceptions as boto
        from boto3.exceptions import Boto3Error

        where = self.staging.url
        try:
            yield
        except boto.NoCredentialsError as e:
            raise S3Error("no AWS credentials found for S3", hint="set AWS_PROFILE or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or configure ~/.aws") from e
        except boto.ProfileNotFound as e:
            raise S3Error(f"AWS profile {self.staging.settings.profile or '?'} not found", hint="check [sync] profile and ~/.aws/config") from e
        except (boto.EndpointConnectionError, boto.ConnectionClosedError, boto.ReadTimeoutError, boto.ConnectTimeoutError) as e:
            url = urllib.parse.urlsplit(str(e.kwargs.get("endpoint_url", "")))
            endpoint = f"{url.scheme}://{url.netloc}" if url.netloc else "the S3 endpoint"
            cause = _CONNECTION_FAILURES.get(type(e).__name__, "connection failed")
            raise S3Error(f"S3 at {endpoint} failed while {doing or 'using ' + where}: {cause}", hint="check [sync] endpoint and the network") from e
        except boto.ClientError as e:
            raise S3Error(f"S3 refused {doing or 'a request'} on {where}: {_error_code(e)}", hint=_hint_for(_error_code(e))) from e
        except (boto.BotoCoreError, Boto3Error) as e:  # s3transfer's failures are boto3's
            raise S3Error(f"S3 failed while {doing or 'using ' + where}: {e}") from e

    def check(self) -> None:
        """That there are credentials the endpoint accepts, and the bucket and the project's
        prefix can be listed (asked at most once an hour per key and place, so a no-op sync
        makes no request; a write that is denied fails at the sync, in one line too).

        Raises:
            S3Error: no credentials, no such bucket, or access denied.
        """
        key = self.credentials().get("access_key", "")
        memo = self.staging.state / "checked"
        mark = hashlib.sha256(f"{key}\0{self.endpoint}".encode()).hexdigest()
        with contextlib.suppress(OSError, ValueError):
            seen = json.loads(memo.read_text())
            if seen.get("mark") == mark and time.time() - float(seen.get("at", 0)) < CHECK_SECONDS:
                return
        with self.translated(f"checking bucket {self.place.bucket}"):
            self.client.head_bucket(Bucket=self.place.bucket)
        with self.translated(f"listing {self.staging.url}"):
            self.client.list_objects_v2(Bucket=self.place.bucket, Prefix=f"{self.place.root}/refs/", MaxKeys=1)
        with contextlib.suppress(OSError):
            save_bytes(memo, json.dumps({"mark": mark, "at": time.time()}).encode())

    @property
    def checked(self) -> bool:
        """Whether bodies carry their checksum (not for stores that reject checksum headers)."""
        return self.staging.settings.request_checksum_calculation != "when_required"

    @property
    def endpoint(self) -> str:
        return str(self.client.meta.endpoint_url or "")

    def credentials(self) -> dict[str, str]:
        """The resolved credentials (short-lived ones when the chain gives them).

        Raises:
            S3Error: none found.
        """
        import botocore.exceptions as boto

        with self.translated("resolving credentials"):
            found = self.session.get_credentials()
            if found is None:
                raise boto.NoCredentialsError()
            frozen = found.get_frozen_credentials()
        return {"access_key": frozen.access_key, "secret_key": frozen.secret_key, "token": frozen.token or ""}

    def job(self) -> dict[str, Any]:
        """What a helper container needs to reach the bucket (credentials included: it travels
        only in the job file)."""
        settings = self.staging.settings
        return {
            "bucket": self.place.bucket,
            "root": self.place.root,
            "endpoint": self.endpoint,
            "region": str(self.client.meta.region_name or ""),
            "credentials": self.credentials(),
            "request_checksum_calculation": settings.request_checksum_calculation,
            "response_checksum_validation": settings.response_checksum_validation,
        }

    # -- what the bucket holds ------------------------------------------------------------------

    @property
    def known_file(self) -> Path:
        return self.staging.state / "objects"

    def known(self) -> set[str]:
        """The objects the bucket holds, as far as this machine knows (one listing when it forgot)."""
        if self._known is None:
            try:
                self._known = set(self.known_file.read_text().split())
            except OSError:
                self._known = self._listed_objects()
                self._save_known()
        return self._known

    def learn(self, digests: set[str]) -> None:
        known = self.known()
        if not digests <= known:
            known |= digests
            self._save_known()

    def forget(self, digests: set[str] | None = None) -> None:
        """Forget objects (all of them: the next push lists the bucket, and writes the manifests again)."""
        if digests is None:
            self._known = None
            for memo in (self.known_file, *self.staging.state.glob("manifest-*")):
                memo.unlink(missing_ok=True)
        else:
            self.known().difference_update(digests)
            self._save_known()

    def _save_known(self) -> None:
        with contextlib.suppress(OSError):
            save_bytes(self.known_file, "\n".join(sorted(self._known or ())).encode())

    def _listed_objects(self) -> set[str]:
        return {Place.digest_of_key(item["Key"]) for item in self.listing(f"{self.place.root}/objects/")}

    def listing(self, prefix: str) -> Iterator[dict[str, Any]]:
        with self.translated(f"listing {prefix}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.place.bucket, Prefix=prefix):
                yield from page.get("Contents", ())

    # -- transfers --------------------------------------------------------------------------

    def upload(self, root: Path, uploads: list[Upload], transfer: events.Transfer) -> Uploaded:
        """Stage ``uploads`` (see ``s3_helper.upload_objects``); what the bucket now holds is remembered."""
        with self.translated("uploading"):
            done = upload_objects(self.client, self.place, str(root), uploads, set(self.known()), transfer.moved, checked=self.checked)
        self.learn(set(done.digests.values()))
        return done

    def put_manifest(self, side: str, manifest: Manifest) -> None:
        """Write ``side``'s manifest and ref, unless this machine wrote one with the same content
        last (mtimes aside: a touch costs no request)."""
        memo = self.staging.state / f"manifest-{side}"
        timeless = {path: {key: value for key, value in entry.items() if key != "mtime_ns"} for path, entry in manifest.items()}
        digest = hashlib.sha256(encode_manifest(timeless)).hexdigest()
        with contextlib.suppress(OSError):
            if memo.read_text() == digest:
                return
        with self.translated("writing the manifest"):
            put_manifest(self.client, self.place, side, manifest, checked=self.checked)
        with contextlib.suppress(OSError):
            save_bytes(memo, digest.encode())

    def download(self, digest: str, size: int, out: BinaryIO) -> None:
        """Raises: S3Error: the object is missing or damaged, or S3 failed."""
        try:
            with self.translated("downloading"):
                download_object(self.client, self.place, digest, size, out)
        except ObjectMissing as e:
            self.forget({digest})
            raise S3Error(f"the bucket lacks object {e}, which the host's manifest names", hint="run fp again: the host uploads it again") from e
        except ContentMismatch as e:
            raise S3Error(f"object {e} does not hold the bytes it is named by", hint="run `fp s3 gc` and fp again") from e

    def refs(self) -> dict[str, dict[str, Any]]:
        """Each side's ref: its manifest key and when it was written."""
        found = {}
        for item in self.listing(f"{self.place.root}/refs/"):
            body = self._read(item["Key"], "reading a ref")
            with contextlib.suppress(ValueError):
                ref = json.loads(body)
                if isinstance(ref, dict) and isinstance(ref.get("manifest"), str):
                    found[item["Key"].rsplit("/", 1)[-1]] = ref
        return found

    def manifest(self, key: str) -> Manifest:
        body = self._read(key, "reading a manifest")
        try:
            return decode_manifest(body)
        except ValueError as e:
            raise S3Error(f"{key} is not a manifest fp can read ({e})") from e

    # -- a swarm run's keys (see task.py) ------------------------------------------------------

    def put_side(self, side: str, manifest: Manifest) -> str:
        """Write ``manifest`` and ``side``'s ref whatever was written last; the manifest's key."""
        with self.translated("writing the manifest"):
            return put_manifest(self.client, self.place, side, manifest, checked=self.checked)

    def point_side(self, side: str, manifest_key: str) -> None:
        """``side``'s ref names the manifest ``manifest_key`` (written already)."""
        with self.translated("writing a ref"):
            put_ref(self.client, self.place, side, manifest_key, checked=self.checked)

    def side_manifest(self, side: str) -> Manifest | None:
        """The manifest ``side``'s ref names; None when it has none."""
        ref = self.read_optional(self.place.ref_key(side), "reading a ref")
        if ref is None:
            return None
        try:
            key = json.loads(ref)["manifest"]
        except (ValueError, KeyError, TypeError) as e:
            raise S3Error(f"the ref of {side} in {self.staging.url} is damaged ({e})") from e
        return self.manifest(str(key))

    def read_optional(self, key: str, doing: str) -> bytes | None:
        import botocore.exceptions as boto

        try:
            return self._read(key, doing)
        except S3Error as e:
            if isinstance(e.__cause__, boto.ClientError) and _error_code(e.__cause__) in ("NoSuchKey", "404"):
                return None
            raise

    def put_bytes(self, key: str, body: bytes, doing: str) -> None:
        with self.translated(doing):
            self.client.put_object(Bucket=self.place.bucket, Key=key, Body=body)

    def delete_keys(self, keys: Sequence[str]) -> None:
        if keys:
            with self.translated("removing a finished run's keys"):
                self.client.delete_objects(Bucket=self.place.bucket, Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True})

    def _read(self, key: str, doing: str) -> bytes:
        with self.translated(doing):
            return bytes(self.client.get_object(Bucket=self.place.bucket, Key=key)["Body"].read())


def _make_client(settings: SyncSettings) -> tuple[Any, Any]:
    import boto3

    session = boto3.session.Session(profile_name=settings.profile or None, region_name=settings.region or None)
    config = client_config(settings.request_checksum_calculation, settings.response_checksum_validation)
    return session, session.client("s3", endpoint_url=settings.endpoint or None, config=config)


def _error_code(error: Any) -> str:
    details = error.response.get("Error", {}) if isinstance(getattr(error, "response", None), dict) else {}
    code = str(details.get("Code") or "")
    return {"404": "NoSuchBucket", "403": "AccessDenied"}.get(code, code) or str(error)


def _hint_for(code: str) -> str:
    return {
        "NoSuchBucket": "create the bucket, or fix [sync] s3",
        "AccessDenied": "the credentials may not use this bucket or prefix",
        "InvalidAccessKeyId": "the access key is unknown to the endpoint: check AWS_PROFILE / AWS_ACCESS_KEY_ID",
        "SignatureDoesNotMatch": "the secret key is wrong for this access key",
        "ExpiredToken": "the session credentials expired: renew them",
    }.get(code, "")


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
            manifest = {path: entry for path, entry in decode_manifest(result.stdout).items() if is_plain_path(path) and _well_formed(entry)}
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


def _well_formed(entry: Any) -> bool:
    if not isinstance(entry, dict) or entry.get("kind") not in (FILE, DIR, LINK):
        return False
    numbers = all(isinstance(entry.get(key), int) and entry[key] >= 0 for key in ("size", "mode", "mtime_ns"))
    if entry["kind"] == FILE:
        digest = entry.get("digest")
        return numbers and isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
    return numbers and (entry["kind"] != LINK or isinstance(entry.get("target"), str))


# -- fp s3 ls / fp s3 gc -------------------------------------------------------------------------


@dataclass(frozen=True)
class StagedSide:
    side: str  # "client" or a host's name
    files: int
    total_bytes: int
    at: float  # when its ref was written
    manifest: str


def staged_sides(store: Store) -> list[StagedSide]:
    """What each side last staged in the bucket, newest first."""
    found = []
    for side, ref in store.refs().items():
        manifest = store.manifest(ref["manifest"])
        files = [entry for entry in manifest.values() if isinstance(entry, dict) and entry.get("kind") == FILE]
        found.append(StagedSide(side, len(files), sum(int(entry.get("size", 0)) for entry in files), float(ref.get("at", 0)), ref["manifest"]))
    return sorted(found, key=lambda staged: -staged.at)


@dataclass(frozen=True)
class Garbage:
    """What no ref reaches: objects and manifests, and multipart uploads never finished."""

    objects: tuple[str, ...] = ()
    object_bytes: int = 0
    manifests: tuple[str, ...] = ()
    uploads: tuple[tuple[str, str], ...] = ()  # key, upload id
    recent: int = 0  # unreachable objects spared: younger than the minimum age (a push may be under way)
    map_keys: tuple[str, ...] = ()  # what the queues of maps that ended left (a swarm sweep's, see backends/swarm/sweep.py)


def find_garbage(store: Store, min_age: float) -> Garbage:
    """Mark what the refs' manifests name, sweep the rest that is older than ``min_age`` seconds."""
    now = time.time()
    refs = store.refs()
    live_manifests = {ref["manifest"] for ref in refs.values()}
    live = {entry["digest"] for key in live_manifests for entry in store.manifest(key).values() if isinstance(entry, dict) and entry.get("kind") == FILE}
    root = store.place.root
    objects, object_bytes, recent = [], 0, 0
    for item in store.listing(f"{root}/objects/"):
        if Place.digest_of_key(item["Key"]) in live:
            continue
        if now - item["LastModified"].timestamp() < min_age:
            recent += 1
            continue
        objects.append(item["Key"])
        object_bytes += int(item.get("Size", 0))
    manifests = [item["Key"] for item in store.listing(f"{root}/manifests/") if item["Key"] not in live_manifests]
    with store.translated("listing unfinished uploads"):
        pages = store.client.get_paginator("list_multipart_uploads").paginate(Bucket=store.place.bucket, Prefix=f"{root}/")
        started = [upload for page in pages for upload in page.get("Uploads", ())]
    uploads = [(upload["Key"], upload["UploadId"]) for upload in started if now - upload["Initiated"].timestamp() >= min_age]
    return Garbage(tuple(objects), object_bytes, tuple(manifests), tuple(uploads), recent, _ended_maps_keys(store, now - min_age))


def _ended_maps_keys(store: Store, before: float) -> tuple[str, ...]:
    """The keys of the sweeps whose map ended (its ``done`` written) before ``before``."""
    prefix = f"{store.place.root}/maps/"
    by_map: dict[str, list[str]] = {}
    ended = set()
    for item in store.listing(prefix):
        key = str(item["Key"])
        map_id = key[len(prefix) :].split("/", 1)[0]
        by_map.setdefault(map_id, []).append(key)
        if key == f"{prefix}{map_id}/done" and item["LastModified"].timestamp() < before:
            ended.add(map_id)
    return tuple(key for map_id in sorted(ended) for key in by_map[map_id])


def remove_garbage(store: Store, garbage: Garbage) -> None:
    keys = [*garbage.objects, *garbage.manifests, *garbage.map_keys]
    with store.translated("removing unreachable objects"):
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1,000 keys
            batch = keys[start : start + 1000]
            store.client.delete_objects(Bucket=store.place.bucket, Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True})
        for key, upload_id in garbage.uploads:
            store.client.abort_multipart_upload(Bucket=store.place.bucket, Key=key, UploadId=upload_id)
    store.forget({Place.digest_of_key(key) for key in garbage.objects})
