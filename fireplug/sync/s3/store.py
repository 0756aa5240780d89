"""The bucket as fp uses it (``Store``: one boto3 client, what objects the bucket holds,
manifests and refs) and a project's place in it (``Staging``); where fp meets boto3: its
errors are translated here, once.

Credentials are resolved here, by boto3's own chain, and reach a helper or a task only inside
its job file: never in an image, a label, an environment variable of a container or a log line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from fireplug.config import Config, SyncSettings
from fireplug.errors import S3Error
from fireplug.remote.s3_layout import Manifest, Place, decode_manifest, encode_manifest
from fireplug.remote.s3_transfer import ContentMismatch, ObjectMissing, Upload, Uploaded, client_config, download_object, put_manifest, put_ref, upload_objects
from fireplug.support import events
from fireplug.support.state import save_bytes

CHECK_SECONDS = 3600  # a bucket found usable with a key is not asked again for this long

_CONNECTION_FAILURES = {
    "EndpointConnectionError": "no connection",
    "ConnectionClosedError": "the connection closed",
    "ReadTimeoutError": "no answer in time",
    "ConnectTimeoutError": "connecting timed out",
}


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
