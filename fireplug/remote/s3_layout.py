"""The bucket's layout, which both ends of S3 staging import: where a project's objects,
manifests and refs are (``Place``), and a manifest's entries and bytes.

Under ``<prefix>/<project key>/`` in the bucket:

    objects/ab/abcd...   a file's bytes, named by their SHA-256 (immutable)
    manifests/<sha256>   a side's staged tree, JSON, named by the SHA-256 of its bytes
    refs/<side>          {"manifest": key, "at": unix time}: the current manifest of a side
                         ("client", or a host's name)

An object is written before any manifest naming it, and a manifest before the ref naming it,
so a reader never meets a name whose bytes are not there.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from fireplug.sync.tree import FILE, LINK, Entry

CLIENT_SIDE = "client"

MANIFEST_FORMAT = 1

ManifestEntry = dict[str, Any]  # kind, size, mode, mtime_ns; digest (files), target (links)

Manifest = dict[str, ManifestEntry]


@dataclass(frozen=True)
class Place:
    """Where one project's staging lives in a bucket."""

    bucket: str
    root: str  # "<prefix>/<project key>" or "<project key>"

    def object_key(self, digest: str) -> str:
        return f"{self.root}/objects/{digest[:2]}/{digest}"

    def manifest_key(self, digest: str) -> str:
        return f"{self.root}/manifests/{digest}"

    def ref_key(self, side: str) -> str:
        return f"{self.root}/refs/{side}"

    @staticmethod
    def digest_of_key(key: str) -> str:
        return key.rsplit("/", 1)[-1]


def is_plain_path(path: object) -> bool:
    """A relative "/"-separated path with no empty, "." or ".." part (nothing outside the root)."""
    return isinstance(path, str) and bool(path) and not path.startswith("/") and all(part not in ("", ".", "..") for part in path.split("/"))


def manifest_entry(entry: Entry, digest: str = "") -> ManifestEntry:
    found: ManifestEntry = {"kind": entry.kind, "size": entry.size, "mode": entry.mode, "mtime_ns": entry.mtime_ns}
    if entry.kind == FILE:
        found["digest"] = digest
    elif entry.kind == LINK:
        found["target"] = entry.target
    return found


def encode_manifest(manifest: Manifest) -> bytes:
    return json.dumps({"format": MANIFEST_FORMAT, "paths": manifest}, sort_keys=True, separators=(",", ":")).encode()


def decode_manifest(data: bytes) -> Manifest:
    """Raises: ValueError: not a manifest of this format."""
    document = json.loads(data)
    if not isinstance(document, dict) or document.get("format") != MANIFEST_FORMAT or not isinstance(document.get("paths"), dict):
        raise ValueError("not a fireplug manifest")
    return document["paths"]


def manifest_key_of(place: Place, manifest: Manifest) -> tuple[str, bytes, str]:
    """Where ``manifest`` goes (its content names it), its bytes and their digest."""
    data = encode_manifest(manifest)
    digest = hashlib.sha256(data).hexdigest()
    return place.manifest_key(digest), data, digest
