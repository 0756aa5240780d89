"""S3 staging's pure parts: [sync] settings, key layout, manifests, the digest cache, paths."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from fireplug.cli import sync_override as _sync_override
from fireplug.config import Source, load
from fireplug.errors import ConfigError
from fireplug.remote.s3_layout import Place, decode_manifest, encode_manifest, is_plain_path, manifest_entry
from fireplug.remote.s3_transfer import DigestCache
from fireplug.support.parallel import in_parallel
from fireplug.sync.s3 import Staging
from fireplug.sync.s3.staging import well_formed
from fireplug.sync.tree import DIR, FILE, LINK, Entry

ROOT = Path("/work/proj")
DIGEST = "ab" * 32


def sync_of(text: str = "", overrides: dict[str, dict[str, str]] | None = None):  # type: ignore[no-untyped-def]
    return load([Source("fireplug.toml", text)] if text else [], {}, overrides or {}, root=ROOT).sync


def test_sync_defaults_to_auto_and_reads_the_bucket() -> None:
    assert sync_of().mode == "auto"
    settings = sync_of('[sync]\nmode = "s3"\ns3 = "s3://my-bucket/some/prefix/"\nendpoint = "http://127.0.0.1:9000"\n')
    assert settings.mode == "s3"
    assert settings.bucket_and_prefix == ("my-bucket", "some/prefix")
    assert settings.endpoint == "http://127.0.0.1:9000"


def test_a_bucket_on_the_command_line_means_mode_s3() -> None:
    assert _sync_override("s3://bucket-a/x") == {"sync": {"mode": "s3", "s3": "s3://bucket-a/x"}}
    assert sync_of('[sync]\nmode = "rsync"\n', _sync_override("s3://bucket-a/x")).mode == "s3"
    assert sync_of('[sync]\ns3 = "s3://bucket-b"\n').mode == "s3"  # a bucket alone: staged there
    assert sync_of('[sync]\ns3 = "s3://bucket-b"\n', _sync_override("rsync")).mode == "rsync"
    assert _sync_override(None) == {}


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[sync]\nmode = "ftp"\n', "sync.mode"),
        ('[sync]\nmode = "s3"\n', "sync.s3"),
        ('[sync]\ns3 = "bucket/prefix"\n', "sync.s3"),
        ('[sync]\ns3 = "s3://B!/x"\n', "sync.s3"),
        ('[sync]\ns3 = "s3://bucket/a/../b"\n', "sync.s3"),
        ('[sync]\ns3 = "s3://bucket"\nrequest_checksum_calculation = "never"\n', "sync.request_checksum_calculation"),
        ("[sync]\nendpoint = 3\n", "sync.endpoint"),
    ],
)
def test_bad_sync_settings_name_their_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        sync_of(text)
    assert caught.value.key == key


def test_keys_are_under_the_prefix_and_the_project() -> None:
    staging = Staging.of(sync_of('[sync]\ns3 = "s3://bucket-a/team"\n'), "churn-1a2b3c4d", Path("/state"))
    assert staging.place == Place("bucket-a", "team/churn-1a2b3c4d")
    assert staging.place.object_key(DIGEST) == f"team/churn-1a2b3c4d/objects/ab/{DIGEST}"
    assert staging.place.ref_key("client") == "team/churn-1a2b3c4d/refs/client"
    assert Place.digest_of_key(staging.place.object_key(DIGEST)) == DIGEST
    bare = Staging.of(sync_of('[sync]\ns3 = "s3://bucket-a"\n'), "churn-1a2b3c4d", Path("/state"))
    assert bare.place.root == "churn-1a2b3c4d"
    assert bare.state != staging.state  # what this machine knows of each place is kept apart


def test_manifest_round_trip_and_damage() -> None:
    manifest = {
        "a.bin": manifest_entry(Entry(FILE, 5, 10, 11, 12, 0o644), DIGEST),
        "d": manifest_entry(Entry(DIR, mode=0o755)),
        "d/l": manifest_entry(Entry(LINK, target="../a.bin")),
    }
    assert decode_manifest(encode_manifest(manifest)) == manifest
    assert encode_manifest(manifest) == encode_manifest(dict(reversed(manifest.items())))  # one name per content
    for damaged in (b"[]", b'{"format": 9, "paths": {}}', b'{"format": 1, "paths": []}', b"{"):
        with pytest.raises(ValueError):
            decode_manifest(damaged)


def test_well_formed_entries_only() -> None:
    assert well_formed({"kind": FILE, "size": 1, "mode": 0o644, "mtime_ns": 1, "digest": DIGEST})
    assert not well_formed({"kind": FILE, "size": 1, "mode": 0o644, "mtime_ns": 1, "digest": "../../x"})
    assert not well_formed({"kind": FILE, "size": -1, "mode": 0o644, "mtime_ns": 1, "digest": DIGEST})
    assert not well_formed({"kind": "o", "size": 0, "mode": 0, "mtime_ns": 0})
    assert not well_formed({"kind": LINK, "size": 0, "mode": 0, "mtime_ns": 0, "target": 5})
    assert not well_formed(["f"])


def test_plain_paths_only() -> None:
    assert is_plain_path("a/b.txt")
    for bad in ("", "/etc/passwd", "a/../../b", "a//b", "./a", "a/", 5):
        assert not is_plain_path(bad)


def test_digest_cache_trusts_an_unchanged_signature_only(tmp_path: Path) -> None:
    cache = DigestCache()
    settled = Entry(FILE, 5, 1_000, 1_000, 7)
    cache.remember("a", settled, DIGEST, looked_at_ns=time.time_ns())
    assert cache.known("a", settled) == DIGEST
    assert cache.known("a", Entry(FILE, 5, 1_000, 2_000, 7)) == ""  # ctime moved: an edit with the mtime put back
    assert cache.known("a", Entry(FILE, 5, 1_000, 1_000, 8)) == ""
    now = time.time_ns()
    cache.remember("b", Entry(FILE, 5, now, now, 9), DIGEST, looked_at_ns=now)
    assert cache.known("b", Entry(FILE, 5, now, now, 9)) == ""  # racy: changed too recently to trust
    path = str(tmp_path / "cache.json")
    cache.save(path)
    assert DigestCache.load(path).known("a", settled) == DIGEST
    cache.keep_only(["x"])
    assert cache.entries == {}
    Path(path).write_text("{damaged")
    assert DigestCache.load(path).entries == {}


def test_in_parallel_stops_at_the_first_failure() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def work(item: int) -> None:
        with lock:
            started.append(item)
        if item == 0:
            raise OSError("disk full")
        time.sleep(0.05)

    with pytest.raises(OSError, match="disk full"):
        in_parallel(work, list(range(200)), 4)
    assert len(started) < 200  # what had not started was cancelled
