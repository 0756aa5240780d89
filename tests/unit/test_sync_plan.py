"""The two-way sync's planner and session, on real files, with a folder standing in for the host."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fireplug.sync import SyncError, SyncInterrupted
from fireplug.sync.plan import Action, Sides, conflict_name, make_plan
from fireplug.sync.preview import preview
from fireplug.sync.record import Common, PairFiles, load_record, load_state
from fireplug.sync.session import sync
from fireplug.sync.side import Owner, SyncRequest
from fireplug.sync.states import digests_needed
from fireplug.sync.tree import DIR, FILE, LINK, RACY_NS, Entry, format_entry, link_leaves, parse_listing, scan, within_any
from tests.unit.sync_doubles import FolderHost

OLD_NS = 1_600_000_000 * 10**9


def file(size: int, mtime: int = OLD_NS, ctime: int = OLD_NS, ino: int = 1) -> Entry:
    return Entry(FILE, size, mtime, ctime, ino)


def common(size: int, digest: str = "", signature: tuple[int, int, int] = (OLD_NS, OLD_NS, 1)) -> Common:
    return Common(FILE, size, "", digest, signature, signature)


def plan_of(record: dict, local: dict, host: dict, **digests: dict) -> object:
    sides = Sides(local, host, digests.get("here", {}), digests.get("there", {}))
    return make_plan(record, sides, host_name="box", stamp="20261202T040000")


# -- the planner ------------------------------------------------------------------------------


def test_a_change_on_one_side_goes_the_other_way() -> None:
    record = {"a": common(3), "b": common(3)}
    plan = plan_of(record, {"a": file(4), "b": file(3)}, {"a": file(3), "b": file(5, ino=2)})
    assert plan.push == ["a"] and plan.pull == ["b"] and not plan.conflicts


def test_a_deletion_on_one_side_moves_the_other_sides_copy_to_its_trash() -> None:
    record = {"gone-here": common(3), "gone-there": common(3)}
    plan = plan_of(record, {"gone-there": file(3)}, {"gone-here": file(3)})
    assert plan.host_trash == ["gone-here"] and plan.local_trash == ["gone-there"]
    assert not plan.push and not plan.pull


def test_a_first_sync_deletes_nothing_and_a_differing_file_is_a_conflict() -> None:
    plan = plan_of({}, {"only-here": file(1), "both": file(2)}, {"only-there": file(1), "both": file(3)})
    assert not plan.host_trash and not plan.local_trash
    assert plan.push == ["both", "only-here"] and sorted(plan.pull) == ["both.fp-conflict-box-20261202T040000", "only-there"]
    assert plan.host_renames == [("both", "both.fp-conflict-box-20261202T040000")]


def test_same_size_files_are_compared_by_content() -> None:
    local, host = {"x": file(3)}, {"x": file(3, ino=9)}
    assert digests_needed({}, local, host) == (["x"], ["x"])
    assert plan_of({}, local, host, here={"x": "d1"}, there={"x": "d1"}).same["x"].digest == "d1"
    assert plan_of({}, local, host, here={"x": "d1"}, there={"x": "d2"}).conflicts


def test_a_same_size_edit_with_the_mtime_put_back_is_found_by_its_changed_ctime() -> None:
    record = {"x": common(3, "old")}
    local = {"x": file(3, ctime=OLD_NS + 5)}  # same size and mtime, new ctime
    host = {"x": file(3)}
    assert digests_needed(record, local, host) == (["x"], [])  # the record's digest is enough to compare with
    assert plan_of(record, local, host, here={"x": "new"}).push == ["x"]
    assert not plan_of(record, local, host, here={"x": "old"}).changes_anything  # only touched
    assert digests_needed({"x": common(3)}, local, host) == (["x"], ["x"])  # no digest recorded: compare both copies


def test_deleted_on_one_side_and_changed_on_the_other_keeps_the_change() -> None:
    record = {"x": common(3)}
    plan = plan_of(record, {}, {"x": file(8)})
    assert plan.pull == ["x"] and plan.kept == ["x"] and not plan.local_trash


def test_a_folder_is_kept_where_something_under_it_changed() -> None:
    record = {"in.csv": common(1), "out": Common(DIR), "out/a": common(1), "out/b": common(1)}
    local = {"in.csv": file(1), "out": Entry(DIR), "out/a": file(1), "out/b": file(2)}  # b changed here
    plan = plan_of(record, local, {"in.csv": file(1)})  # the host deleted the folder (and kept the rest)
    assert plan.local_trash == ["out/a"] and "out/b" in plan.push and "out" in plan.push


def test_a_kind_change_follows_the_three_way_rules() -> None:
    record = {"r": Common(LINK, 0, "/elsewhere")}
    replaced_there = plan_of(record, {"r": Entry(LINK, target="/elsewhere")}, {"r": Entry(DIR), "r/x": file(1)})
    assert replaced_there.local_trash == ["r"] and replaced_there.pull == ["r", "r/x"]
    changed_both = plan_of(record, {"r": Entry(LINK, target="/mine")}, {"r": Entry(DIR), "r/x": file(1)})
    copy = "r.fp-conflict-box-20261202T040000"
    assert changed_both.host_renames == [("r", copy)] and changed_both.pull == [copy, f"{copy}/x"] and changed_both.push == ["r"]
    assert not changed_both.local_trash


def test_a_file_replaced_by_a_folder_on_the_host_while_changed_here_is_a_conflict() -> None:
    record = {"keep.txt": common(3)}
    plan = plan_of(record, {"keep.txt": file(9)}, {"keep.txt": Entry(LINK, target="/etc/passwd")})
    assert plan.conflicts and not plan.local_trash and plan.push == ["keep.txt"]


def test_host_changes_outside_the_result_folders_stay_there() -> None:
    record = {"inputs/a": common(1), "results/r": common(1)}
    host = {"inputs/a": file(5), "results/r": file(6)}
    plan = make_plan(record, Sides({"inputs/a": file(1), "results/r": file(1)}, host), host_name="h", stamp="s", pull_scope=("results",))
    assert plan.pull == ["results/r"] and plan.skipped == ["inputs/a"] and not plan.push


def test_a_host_that_lost_many_files_gets_them_again_instead_of_deletions_here() -> None:
    record = {f"f{index}": common(1) for index in range(200)}
    local = {f"f{index}": file(1) for index in range(200)}
    host = {f"f{index}": file(1) for index in range(100)}
    plan = plan_of(record, local, host)
    assert not plan.local_trash and len(plan.push) == len(plan.restored) == 100
    accepted = make_plan(record, Sides(local, host), host_name="h", stamp="s", accept_deletions=True)
    assert len(accepted.local_trash) == 100 and not accepted.push
    a_few = plan_of(record, local, {f"f{index}": file(1) for index in range(190)})
    assert len(a_few.local_trash) == 10 and not a_few.restored


def test_a_differently_named_projects_id_is_derived_from_its_path() -> None:
    from fireplug.config import load

    one = load([], {}, {"project": {"name": "churn"}}, root=Path("/a/churn")).project
    two = load([], {}, {"project": {"name": "churn"}}, root=Path("/b/churn")).project
    assert one.key != two.key and one.key.startswith("churn-")
    assert load([], {}, {"project": {"name": "churn", "id": "beef0123"}}, root=Path("/a/churn")).project.key == "churn-beef0123"


def test_devices_and_fifos_never_travel() -> None:
    plan = plan_of({}, {}, {"fifo": Entry("o"), "ok": file(1)})
    assert plan.pull == ["ok"] and plan.unsyncable == ["fifo"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("out/r.txt", "out/r.fp-conflict-box-20261202T040000.txt", id="extension"),
        pytest.param(".env", ".env.fp-conflict-box-20261202T040000", id="dotfile"),
        pytest.param("folder", "folder.fp-conflict-box-20261202T040000", id="no-extension"),
    ],
)
def test_conflict_copies_are_named_after_the_file_host_and_time(path: str, expected: str) -> None:
    assert conflict_name(path, "box", "20261202T040000") == expected


@pytest.mark.parametrize(
    ("path", "target", "leaves"),
    [("a/l", "../b", False), ("a/l", "../../b", True), ("l", "/etc/passwd", True), ("a/b/l", "c/../../d", False)],
)
def test_links_pointing_outside_the_data_folder_are_recognised(path: str, target: str, leaves: bool) -> None:
    assert link_leaves(path, target) is leaves


@pytest.mark.parametrize("path", [b"../etc/passwd", b"/etc/passwd", b"a//b", b"a/./b", b""])
def test_a_listing_naming_a_path_outside_the_folder_is_refused(path: bytes) -> None:
    with pytest.raises(ValueError, match="unsafe path"):
        parse_listing(b"f 1 1.0 1.0 1 644\0" + path + b"\0\0")


def test_the_host_listing_format_round_trips(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f\nname").write_bytes(b"12345")
    os.symlink("../x y", tmp_path / "d" / "l")
    tree = scan(str(tmp_path))
    assert parse_listing(b"".join(format_entry(path, entry) for path, entry in tree.items())) == tree


# -- the session, on files ------------------------------------------------------------------


class Bench:
    def __init__(self, root: Path) -> None:
        self.local = root / "local"
        self.remote = root / "remote"
        self.local.mkdir()
        self.remote.mkdir()
        self.pair = PairFiles.of(root / "state", "proj-1234", "box")
        self.host_trash = root / "host-trash"

    def sync(self, *, stop_after: int | None = None, full: bool = False, push: bool = True) -> object:
        host = FolderHost(self.remote, self.host_trash, stop_after=stop_after)
        return sync(SyncRequest(self.local, self.pair, "box", full=full, push=push), host)


def write(path: Path, data: bytes, mtime_ns: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def contents(root: Path) -> dict[str, bytes]:
    return {path: (root / path).read_bytes() for path, entry in scan(str(root)).items() if entry.kind == FILE} if root.exists() else {}


@pytest.fixture
def bench(tmp_path: Path) -> Bench:
    return Bench(tmp_path)


def test_results_come_back_inputs_go_up_and_a_second_sync_does_nothing(bench: Bench) -> None:
    write(bench.local / "in.csv", b"a,b\n")
    (bench.local / "empty").mkdir()
    bench.sync()
    assert (bench.remote / "in.csv").read_bytes() == b"a,b\n" and (bench.remote / "empty").is_dir()
    write(bench.remote / "out/r.txt", b"v1")
    report = bench.sync()
    assert report.pulled == 1 and (bench.local / "out/r.txt").read_bytes() == b"v1"
    assert not bench.sync().changed_anything


def test_a_newer_host_file_is_not_put_back_by_the_next_sync(bench: Bench) -> None:
    write(bench.remote / "r.txt", b"v1")
    bench.sync()
    write(bench.remote / "r.txt", b"v2-longer")  # a --no-sync run on the host
    bench.sync()
    assert (bench.remote / "r.txt").read_bytes() == (bench.local / "r.txt").read_bytes() == b"v2-longer"


def test_a_local_deletion_reaches_the_host_trash_and_can_be_restored(bench: Bench) -> None:
    write(bench.local / "working/feat_v1.h5", b"stale features")
    bench.sync()
    (bench.local / "working/feat_v1.h5").unlink()
    report = bench.sync()
    assert not (bench.remote / "working/feat_v1.h5").exists() and report.trashed_there == ("working/feat_v1.h5",)
    trashed = next(bench.host_trash.rglob("feat_v1.h5"))
    assert trashed.read_bytes() == b"stale features"
    shutil.move(trashed, bench.local / "working/feat_v1.h5")  # restored by hand
    bench.sync()
    assert (bench.remote / "working/feat_v1.h5").read_bytes() == b"stale features"


def test_a_host_deletion_moves_the_unchanged_local_copy_to_the_local_trash(bench: Bench) -> None:
    write(bench.local / "tmp.bin", b"x" * 100)
    write(bench.local / "input.csv", b"a\n")
    bench.sync()
    (bench.remote / "tmp.bin").unlink()
    report = bench.sync()
    assert not (bench.local / "tmp.bin").exists() and report.trashed_here == ("tmp.bin",)
    assert (Path(report.local_trash) / "tmp.bin").read_bytes() == b"x" * 100


def test_a_conflict_keeps_both_versions_on_both_sides(bench: Bench) -> None:
    write(bench.local / "r.txt", b"base")
    bench.sync()
    write(bench.local / "r.txt", b"mine!")
    write(bench.remote / "r.txt", b"theirs")
    report = bench.sync()
    ((path, copy),) = report.conflicts
    assert path == "r.txt" and copy.startswith("r.fp-conflict-box-") and copy.endswith(".txt")
    for side in (bench.local, bench.remote):
        assert (side / "r.txt").read_bytes() == b"mine!" and (side / copy).read_bytes() == b"theirs"
    assert not bench.sync().changed_anything


def test_a_same_size_edit_with_the_mtime_put_back_is_sent(bench: Bench) -> None:
    write(bench.local / "x.bin", b"aaaa", OLD_NS)
    bench.sync()
    time.sleep(0.01)
    write(bench.local / "x.bin", b"bbbb", OLD_NS)
    bench.sync()
    assert (bench.remote / "x.bin").read_bytes() == b"bbbb"


def test_an_interrupted_sync_records_nothing_and_the_next_one_finishes(bench: Bench) -> None:
    for index in range(5):
        write(bench.local / f"f{index}", bytes([index]) * 10)
    with pytest.raises(SyncInterrupted) as stopped:
        bench.sync(stop_after=2)
    assert "while copying to the host" in stopped.value.story
    assert load_record(bench.pair.record) == {}
    bench.sync()
    assert contents(bench.remote) == contents(bench.local) and len(contents(bench.remote)) == 5
    assert not bench.sync().changed_anything


def synced_then_lost_on_the_host(bench: Bench, count: int) -> dict[str, bytes]:
    """``count`` files synced, then lost by the host (its folder emptied); their contents."""
    files = {f"f{index:02}.bin": bytes([index]) * 100 for index in range(count)}
    for name, data in files.items():
        write(bench.local / name, data)
    bench.sync()
    shutil.rmtree(bench.remote)
    bench.remote.mkdir()
    return files


def test_an_interrupted_resend_to_a_host_that_lost_its_files_never_becomes_deletions_here(bench: Bench) -> None:
    """The fault probe's case: the host lost all 12 files, the sync sending them again was
    interrupted after 3; the next sync must send the other 9, not trash them here."""
    files = synced_then_lost_on_the_host(bench, 12)
    with pytest.raises(SyncInterrupted):
        bench.sync(stop_after=3)
    assert len(contents(bench.remote)) == 3
    report = bench.sync()
    assert report.trashed_here == () and not list(bench.pair.trash.rglob("*.bin"))
    assert contents(bench.local) == contents(bench.remote) == files
    assert not bench.sync().changed_anything


def test_a_twice_interrupted_resend_still_sends_everything(bench: Bench) -> None:
    files = synced_then_lost_on_the_host(bench, 8)
    for stop in (2, 1):  # the second interrupted sync must keep the first one's note
        with pytest.raises(SyncInterrupted):
            bench.sync(stop_after=stop)
    assert len(contents(bench.remote)) == 3
    assert bench.sync().trashed_here == ()
    assert contents(bench.local) == contents(bench.remote) == files


def test_an_interrupted_pull_never_becomes_a_deletion_on_the_host(bench: Bench) -> None:
    files = {f"f{index}.bin": bytes([index]) * 10 for index in range(4)}
    for name, data in files.items():
        write(bench.remote / name, data)
    bench.sync()
    for name in files:  # deleted here, changed there: the host's versions come back
        (bench.local / name).unlink()
        write(bench.remote / name, b"new " + files[name])
    with pytest.raises(SyncInterrupted):
        bench.sync(stop_after=1)
    assert bench.sync().trashed_there == ()
    assert contents(bench.local) == contents(bench.remote) == {name: b"new " + data for name, data in files.items()}


def test_a_sync_that_could_not_copy_everything_is_not_recorded_as_agreed(bench: Bench) -> None:
    """A partial pull (here: the local folder refuses a file) leaves the record saying so:
    the next sync reads the host in full and brings the file once it can, and fp gc does not
    take the pair's last agreement for after the failure."""
    write(bench.local / "in.csv", b"a")
    time.sleep(RACY_NS / 1e9 + 0.1)  # old enough to be trusted: an unchanged pair then costs no planning at all
    bench.sync()
    agreed = bench.pair.record.stat().st_mtime_ns
    write(bench.remote / "result.txt", b"the run's result")
    failing = FolderHost(bench.remote, bench.host_trash, fail={"result.txt"})
    with pytest.raises(SyncError):
        sync(SyncRequest(bench.local, bench.pair, "box"), failing)
    assert bench.pair.record.stat().st_mtime_ns == agreed
    report = bench.sync()  # the host's listing is the one the failed sync saw: it must not answer "same"
    assert report.pulled == 1 and (bench.local / "result.txt").read_bytes() == b"the run's result"
    assert not bench.sync().changed_anything


def test_a_copy_of_the_project_cannot_use_the_originals_record_but_a_moved_project_can(bench: Bench, tmp_path: Path) -> None:
    """Two folders of one project (a copy keeps project.id) would share the host's copy and the
    record, and trash each other's files: the record knows its folder, and refuses the copy."""
    original, copy = tmp_path / "kaggle", tmp_path / "kaggle-copy"
    live = {str(original), str(copy)}

    def sync_from(project: Path) -> object:
        owner = Owner(str(project), lambda folder: folder in live)
        return sync(SyncRequest(project / "data", bench.pair, "box", owner=owner), FolderHost(bench.remote, bench.host_trash))

    write(original / "data/mine.csv", b"original")
    sync_from(original)
    shutil.copytree(original, copy)
    write(copy / "data/theirs.csv", b"the copy's own")
    (copy / "data/mine.csv").unlink()
    with pytest.raises(SyncError, match=rf"{original} holds this project too.*change or delete `id` under \[project\] in {copy}/fireplug.toml"):
        sync_from(copy)
    assert contents(bench.remote) == {"mine.csv": b"original"}  # nothing moved
    live.discard(str(original))  # the original folder was moved away (renamed): the same project, elsewhere
    sync_from(copy)
    assert contents(bench.remote) == {"theirs.csv": b"the copy's own"} and load_state(bench.pair.record).made_for == str(copy)


def test_a_record_written_by_another_process_at_once_is_whole(bench: Bench) -> None:
    write(bench.local / "a", b"1")
    bench.sync()
    assert set(load_record(bench.pair.record)) == {"a"}
    assert not list(bench.pair.folder.glob("*.tmp"))


# -- fuzz: no content that existed before a sync is unreachable after it ------------------------

NAMES = st.sampled_from(["a", "b", "c/d", "c/e", "f/g/h", "c"])
CONTENT = st.binary(min_size=0, max_size=6)


@st.composite
def edits(draw: st.DrawFn) -> list[tuple[str, str, bytes]]:
    return draw(st.lists(st.tuples(st.sampled_from(["write", "delete", "link", "mkdir"]), NAMES, CONTENT), max_size=6))


def apply(root: Path, changes: list[tuple[str, str, bytes]]) -> None:
    for action, name, data in changes:
        path = root / name
        try:
            if action == "delete":
                if path.is_symlink() or path.is_file():
                    path.unlink()
                elif path.is_dir():
                    shutil.rmtree(path)
                continue
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.exists() and action != "mkdir":
                shutil.rmtree(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            if action == "write":
                path.write_bytes(data)
            elif action == "link":
                os.symlink(data.hex() or "t", path)
            else:
                path.mkdir(exist_ok=True)
        except (NotADirectoryError, FileExistsError, FileNotFoundError):
            continue  # a parent is a file: the edit cannot be made, as for a user


def reachable(*roots: Path) -> set[bytes]:
    found = set()
    for root in roots:
        if root.exists():
            found |= {hashlib.sha256(data).digest() for data in contents(root).values()}
    return found


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=edits(), here=edits(), there=edits(), stop=st.one_of(st.none(), st.integers(0, 4)), push=st.booleans())
def test_fuzz_no_content_is_lost_and_both_sides_converge(tmp_path_factory: pytest.TempPathFactory, start, here, there, stop, push) -> None:  # type: ignore[no-untyped-def]
    """A sync (two-way, or bringing changes back only), interrupted or not, loses no content;
    the next two-way sync makes both sides the same, and the one after changes nothing."""
    bench = Bench(tmp_path_factory.mktemp("fuzz"))
    apply(bench.local, start)
    bench.sync()
    apply(bench.local, here)
    apply(bench.remote, there)
    before = reachable(bench.local, bench.remote)
    host_before = scan_without_times(bench.remote)
    with contextlib.suppress(SyncInterrupted):
        bench.sync(stop_after=stop, push=push)
    if not push:
        assert changed_on_host_but_conflicts(host_before, scan_without_times(bench.remote)) == []
    trash = [bench.host_trash, bench.pair.trash]
    assert before <= reachable(bench.local, bench.remote, *trash)
    bench.sync()
    assert scan_without_times(bench.local) == scan_without_times(bench.remote)
    assert not bench.sync().changed_anything


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=edits(), here=edits(), stops=st.lists(st.integers(0, 4), max_size=3))
def test_fuzz_a_wiped_host_gets_every_file_back_however_often_the_resend_is_interrupted(tmp_path_factory: pytest.TempPathFactory, start, here, stops) -> None:  # type: ignore[no-untyped-def]
    """A host that lost its data folder is sent every file again, and an interruption of that
    (once or more) never turns the files it had not received yet into deletions here."""
    bench = Bench(tmp_path_factory.mktemp("wiped"))
    apply(bench.local, start)
    bench.sync()
    apply(bench.local, here)
    shutil.rmtree(bench.remote)
    bench.remote.mkdir()
    files_here = {path: data for path, data in contents(bench.local).items()}
    for stop in stops:
        with contextlib.suppress(SyncInterrupted):
            bench.sync(stop_after=stop)
    bench.sync()
    assert contents(bench.local) == files_here == contents(bench.remote)
    assert not [path for path in bench.pair.trash.rglob("*") if path.is_file()]


CONFLICT_COPY = re.compile(r"\.fp-conflict-box-\d{8}T\d{6}(-\d+)?")


def changed_on_host_but_conflicts(before: dict[str, tuple[str, int, str, bytes]], after: dict[str, tuple[str, int, str, bytes]]) -> list[str]:
    """Files and links a pull-only sync changed on the host, but for conflicts (the host's copy
    renamed to its conflict name, the local version sent under the original name)."""
    conflicted = {CONFLICT_COPY.sub("", path) for path in after if CONFLICT_COPY.search(path)}

    def kept(path: str, entry: tuple[str, int, str, bytes]) -> bool:
        return entry[0] != DIR and not CONFLICT_COPY.search(path) and not within_any(path, conflicted)

    was = {path: entry for path, entry in before.items() if kept(path, entry)}
    now = {path: entry for path, entry in after.items() if kept(path, entry)}
    return sorted(path for path in was.keys() | now.keys() if was.get(path) != now.get(path))


def scan_without_times(root: Path) -> dict[str, tuple[str, int, str, bytes]]:
    return {path: (entry.kind, entry.size, entry.target, (root / path).read_bytes() if entry.kind == FILE else b"") for path, entry in scan(str(root)).items()}


def test_a_plan_never_pushes_over_a_file_the_host_changed() -> None:
    record = {"a.log": common(8)}
    plan = plan_of(record, {"a.log": file(8)}, {"a.log": file(20, ino=3)})
    assert plan.pull == ["a.log"] and "a.log" not in plan.push
    assert Action.PULL.value == "pull"


def test_a_preview_tells_what_the_next_sync_would_send_without_the_host(bench: Bench) -> None:
    write(bench.local / "in.csv", b"a,b\n")
    write(bench.local / "old.bin", b"stale")
    first = preview(SyncRequest(bench.local, bench.pair, "box"))
    assert first.first and sorted(first.plan.push) == ["in.csv", "old.bin"] and first.push_bytes == 9
    bench.sync()
    assert not preview(SyncRequest(bench.local, bench.pair, "box")).plan.changes_anything
    write(bench.local / "in.csv", b"a,b\n1,2\n")
    (bench.local / "old.bin").unlink()
    os.symlink("/etc/passwd", bench.local / "link")
    after = preview(SyncRequest(bench.local, bench.pair, "box"))
    assert not after.first and sorted(after.plan.push) == ["in.csv", "link"] and after.plan.host_trash == ["old.bin"]
    assert after.plan.outside_links == ["link"] and after.push_bytes == 8
    assert contents(bench.remote) == {"in.csv": b"a,b\n", "old.bin": b"stale"}  # a preview changes nothing
