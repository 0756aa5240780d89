"""The clock a listing is judged by (the racy rule): the data folder's own filesystem time when it can."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from fireplug.support.signature import RACY_NS
from fireplug.sync.record import RACY, PairFiles, load_record
from fireplug.sync.rsync import LIST_SCRIPT
from fireplug.sync.session import sync
from fireplug.sync.side import SyncRequest
from fireplug.sync.tree import FILE, Listing, clock_line, parse_clock, parse_listing, scan, split_answer
from tests.unit.sync_doubles import FolderHost


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"fs 1733212345.1234567890", (1733212345123456789, 0)),
        (b"fs 1733212345.5", (1733212345500000000, 0)),
        (b"fs 1733212345", (1733212345000000000, 0)),
        (b"1733212345123456789", (1733212345123456789, RACY_NS)),
    ],
    ids=["find-ten-digits", "short-fraction", "whole-seconds", "wall-clock"],
)
def test_a_clock_line_is_a_filesystem_time_without_margin_or_a_wall_clock_with_one(line: bytes, expected: tuple[int, int]) -> None:
    assert parse_clock(line) == expected


DAMAGED = {"empty": b"", "no-time": b"fs", "not-a-number": b"fs 12a", "unknown-word": b"wall 12", "negative": b"-5", "extra": b"fs 1 2"}


@pytest.mark.parametrize("line", DAMAGED.values(), ids=DAMAGED.keys())
def test_a_damaged_clock_line_is_refused(line: bytes) -> None:
    with pytest.raises(ValueError):
        parse_clock(line)


def test_every_change_after_the_clock_has_a_timestamp_at_or_after_it(tmp_path: Path) -> None:
    data, trash = tmp_path / "data", tmp_path / "trash"
    data.mkdir()
    trash.mkdir()
    before = data / "before"
    before.write_bytes(b"1")
    now_ns, racy_ns = parse_clock(clock_line(str(data), str(trash / ".clock")))
    after = data / "after"
    after.write_bytes(b"2")
    assert racy_ns == 0 and list(trash.iterdir()) == []  # the data folder's filesystem; the marker is gone
    assert before.stat().st_ctime_ns < now_ns <= after.stat().st_ctime_ns  # the clock ticked past what came before


def test_a_marker_on_another_filesystem_gives_the_wall_clock(tmp_path: Path) -> None:
    elsewhere = Path("/dev/shm")
    assert elsewhere.stat().st_dev != tmp_path.stat().st_dev, "this test needs /dev/shm on a filesystem of its own"
    started = time.time_ns()
    now_ns, racy_ns = parse_clock(clock_line(str(tmp_path), str(elsewhere / f".fp-clock-test-{os.getpid()}")))
    assert racy_ns == RACY_NS and started <= now_ns <= time.time_ns()
    assert not list(elsewhere.glob(f".fp-clock-test-{os.getpid()}"))


def test_no_marker_gives_the_wall_clock(tmp_path: Path) -> None:
    assert parse_clock(clock_line(str(tmp_path), str(tmp_path / "missing" / ".clock")))[1] == RACY_NS


def test_the_ssh_listing_script_gives_the_filesystem_clock(tmp_path: Path) -> None:
    data, trash = tmp_path / "data", tmp_path / "trash"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "f").write_bytes(b"x")
    completed = subprocess.run(["sh", "-c", LIST_SCRIPT, "sh", str(data), str(trash), "-"], capture_output=True, check=True)
    (now_ns, racy_ns), answer, listing = split_answer(completed.stdout)
    assert racy_ns == 0 and answer == b"listing" and abs(now_ns - time.time_ns()) < 60 * 10**9
    assert set(parse_listing(listing)) == {"sub", "sub/f"} and not list(trash.iterdir())


def test_files_a_push_wrote_just_before_the_hosts_listing_are_trusted_without_hashing(tmp_path: Path) -> None:
    local, remote = tmp_path / "local", tmp_path / "remote"
    for index in range(20):
        (local / f"d{index % 3}").mkdir(parents=True, exist_ok=True)
        (local / f"d{index % 3}" / f"f{index}").write_bytes(os.urandom(1000))
    pair = PairFiles.of(tmp_path / "state", "proj-1234", "box")
    assert sync(SyncRequest(local, pair, "box"), FolderHost(remote, tmp_path / "trash")).pushed == 20
    record = load_record(pair.record)
    assert all(common.there is not None and common.there[1] != RACY for common in record.values() if common.kind == FILE)
    again = FolderHost(remote, tmp_path / "trash")
    assert not sync(SyncRequest(local, pair, "box"), again).changed_anything
    assert again.digested == []


def test_a_file_changed_in_the_tick_of_the_listing_is_not_trusted(tmp_path: Path) -> None:
    local, remote = tmp_path / "local", tmp_path / "remote"
    (local / "f").parent.mkdir(parents=True)
    (local / "f").write_bytes(b"aaaa")
    pair = PairFiles.of(tmp_path / "state", "proj-1234", "box")
    host = FolderHost(remote, tmp_path / "trash")
    sync(SyncRequest(local, pair, "box"), host)
    (remote / "f").write_bytes(b"bbbb")
    os.utime(remote / "f", ns=(0, (local / "f").stat().st_mtime_ns))
    changed = (remote / "f").stat()
    host.list = lambda previous=b"": (Listing(scan(str(remote)), changed.st_ctime_ns, racy_ns=0), "")  # type: ignore[method-assign]
    sync(SyncRequest(local, pair, "box"), host)
    assert (local / "f").read_bytes() == b"bbbb"
    assert load_record(pair.record)["f"].there[1] == RACY  # type: ignore[index]
