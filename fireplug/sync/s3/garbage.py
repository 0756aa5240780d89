"""What a project staged in the bucket (`fp s3 ls`) and what nothing needs any more (`fp s3 gc`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from fireplug.remote.s3_layout import Place
from fireplug.sync.s3.store import Store
from fireplug.sync.tree import FILE


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
