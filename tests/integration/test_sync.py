"""Two-way sync for real: sshd + rsync ('primary') and the Docker API of a TLS engine ('tlsapi').

Each test asserts on the bytes on both sides afterwards. The numbers in the test names refer
to the problems listed in the two-way sync issue.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fireplug.sync.record import RACY, load_record
from tests import testbed
from tests.integration.conftest import Project, RemoteBench, docker, error_lines, finish, images_of, run_fp, start_in_group, wait_for
from tests.integration.test_remote import add_tls_api_host

pytestmark = pytest.mark.engine
BIG = 500_000_000


@pytest.fixture(params=["primary", "tlsapi"])
def host(request: pytest.FixtureRequest, remote: RemoteBench) -> str:
    """Each test on the rsync path and on the Docker API path."""
    if request.param == "tlsapi":
        add_tls_api_host(remote)
    return str(request.param)


def sums(root: Path) -> dict[str, str]:
    """Every file (sha256), folder ("dir") and symlink ("-> target") under ``root``."""
    found = {}
    for folder, folders, files in os.walk(root):
        for name in folders + files:
            path = Path(folder) / name
            relative = str(path.relative_to(root))
            if path.is_symlink():
                found[relative] = f"-> {os.readlink(path)}"
            elif path.is_dir():
                found[relative] = "dir"
            else:
                found[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
        folders[:] = [name for name in folders if not (Path(folder) / name).is_symlink() and name != ".fp-partial"]
    return {path: value for path, value in found.items() if not path.endswith(".fp-partial") and ".fp-partial/" not in path}


def assert_same_on_both_sides(project: Project, remote: RemoteBench, host: str) -> dict[str, str]:
    here, there = sums(project.root / "data"), sums(remote.data_on(host, project))
    assert here == there
    return here


def fp_ok(fp, project: Project, *argv: str) -> str:  # type: ignore[no-untyped-def]
    result = fp(project.root, *argv)
    assert result.code == 0, result.err
    return str(result.err)


def test_2_a_newer_host_result_is_not_put_back_by_the_next_sync(fp, project: Project, remote: RemoteBench, host: str) -> None:
    fp_ok(fp, project, "--host", host, "sh", "-c", "mkdir -p data/output && echo v1 > data/output/r.txt")
    fp_ok(fp, project, "--host", host, "--no-sync", "sh", "-c", "echo v2 > data/output/r.txt")
    err = fp_ok(fp, project, "--host", host, "cat", "data/output/r.txt")
    assert (project.root / "data/output/r.txt").read_text() == "v2\n" and "1 files (3 B) from host" in err
    assert assert_same_on_both_sides(project, remote, host)["output/r.txt"] == hashlib.sha256(b"v2\n").hexdigest()


def test_3_a_local_deletion_reaches_the_host_trash_and_is_restorable(fp, project: Project, remote: RemoteBench, host: str) -> None:
    project.write("data/working/feat_v1.h5", b"stale features")
    project.write("data/working/keep.h5", b"keep")
    fp_ok(fp, project, "--host", host, "--sync-in-only")
    (project.root / "data/working/feat_v1.h5").unlink()
    err = fp_ok(fp, project, "--host", host, "sh", "-c", "test ! -e data/working/feat_v1.h5 && echo recomputed > data/working/feat_v2.h5")
    assert "1 deleted here moved to the host's trash" in err
    assert not (project.root / "data/working/feat_v1.h5").exists()  # not brought back
    assert_same_on_both_sides(project, remote, host)
    trashed = list(remote.trash_on(host, project).rglob("feat_v1.h5"))
    assert len(trashed) == 1 and trashed[0].read_bytes() == b"stale features"
    (project.root / "data/working/feat_v1.h5").write_bytes(trashed[0].read_bytes())  # restored by hand
    fp_ok(fp, project, "--host", host, "--sync-in-only")
    assert (remote.data_on(host, project) / "working/feat_v1.h5").read_bytes() == b"stale features"


def test_a_host_deletion_moves_the_unchanged_local_copy_to_the_local_trash(fp, project: Project, remote: RemoteBench, host: str, isolated_home: Path) -> None:
    project.write("data/tmp/cache.bin", b"cache")
    project.write("data/input.csv", b"a\n")
    err = fp_ok(fp, project, "--host", host, "rm", "data/tmp/cache.bin")
    assert "1 deleted on the host moved to the local trash" in err
    assert not (project.root / "data/tmp/cache.bin").exists()
    trashed = list((isolated_home / ".local/state/fireplug/trash").rglob("cache.bin"))
    assert len(trashed) == 1 and trashed[0].read_bytes() == b"cache"
    assert_same_on_both_sides(project, remote, host)


def test_4_a_host_that_lost_files_gets_them_again(fp, project: Project, remote: RemoteBench, host: str) -> None:
    for index in range(1500):
        project.write(f"data/raw/{index % 10}/f{index}.txt", f"{index}\n")
    fp_ok(fp, project, "--host", host, "--sync-in-only")
    on_host = remote.data_on(host, project)
    for index in range(800, 1500):
        (on_host / f"raw/{index % 10}/f{index}.txt").unlink()
    err = fp_ok(fp, project, "--host", host, "sh", "-c", "find data/raw -type f | wc -l > data/count.txt")
    assert (project.root / "data/count.txt").read_text().strip() == "1500"
    assert "lacks 700 files it had at the last sync" in err
    assert len([path for path in assert_same_on_both_sides(project, remote, host) if path.endswith(".txt")]) == 1501


def test_5_a_same_size_edit_with_the_mtime_put_back_is_sent_both_ways(fp, project: Project, remote: RemoteBench, host: str) -> None:
    project.write("data/params.json", b'{"lr": 0.1}')
    project.write("data/out.json", b'{"auc": 0.5}')
    fp_ok(fp, project, "--host", host, "--sync-in-only")
    local, on_host = project.root / "data/params.json", remote.data_on(host, project) / "out.json"
    for path, content in ((local, b'{"lr": 0.2}'), (on_host, b'{"auc": 0.9}')):
        before = path.stat()
        path.write_bytes(content)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    fp_ok(fp, project, "--host", host, "--sync-in-only")
    assert (remote.data_on(host, project) / "params.json").read_bytes() == b'{"lr": 0.2}'
    assert (project.root / "data/out.json").read_bytes() == b'{"auc": 0.9}'
    assert_same_on_both_sides(project, remote, host)
    assert "nothing changed" in fp_ok(fp, project, "--host", host, "--sync-in-only", "--full-sync")


def test_pushed_files_are_trusted_at_once_and_an_edit_right_after_the_sync_is_still_seen(
    fp, project: Project, remote: RemoteBench, host: str, isolated_home: Path
) -> None:
    """The host's listing is judged by its filesystem's own clock (tree.clock_line): what a push
    wrote before the listing is trusted without hashing, and a same-size edit made right after
    the sync, with the mtime put back, is still caught by its ctime."""
    for index in range(300):
        project.write(f"data/in/f{index:03d}.bin", os.urandom(2000))
    fp_ok(fp, project, "--host", host, "--sync-in-only")
    (record_file,) = (isolated_home / ".local/state/fireplug/sync").glob(f"*/{host}/record")
    record = load_record(record_file)
    assert len(record) == 301 and all(common.there is not None and common.there[1] != RACY for common in record.values() if common.kind == "f")
    edited = remote.data_on(host, project) / "in/f007.bin"
    before = edited.stat()
    edited.write_bytes(b"x" * 2000)
    os.utime(edited, ns=(before.st_atime_ns, before.st_mtime_ns))
    err = fp_ok(fp, project, "--host", host, "--sync-in-only")
    assert "1 files (2.0 KB) from host" in err and (project.root / "data/in/f007.bin").read_bytes() == b"x" * 2000
    assert_same_on_both_sides(project, remote, host)


def test_a_conflict_keeps_both_versions_and_says_so(fp, project: Project, remote: RemoteBench, host: str) -> None:
    project.write("data/notes.txt", b"base\n")
    fp_ok(fp, project, "--host", host, "--sync-in-only")
    project.write("data/notes.txt", b"edited here\n")
    (remote.data_on(host, project) / "notes.txt").write_bytes(b"edited on the host\n")
    err = fp_ok(fp, project, "--host", host, "--sync-in-only")
    copies = list((project.root / "data").glob(f"notes.fp-conflict-{host}-*.txt"))
    assert len(copies) == 1 and copies[0].read_bytes() == b"edited on the host\n"
    assert (project.root / "data/notes.txt").read_bytes() == b"edited here\n"
    assert f"conflict: notes.txt changed here and on host '{host}'; kept yours, the host's version is {copies[0].name}" in err
    assert "1 conflicts" in err
    assert_same_on_both_sides(project, remote, host)


def test_8_empty_folders_and_symlinks_travel_as_they_are(fp, project: Project, remote: RemoteBench, host: str) -> None:
    (project.root / "data/output").mkdir(parents=True)
    project.write("data/raw/x.csv", b"1,2\n")
    os.symlink("raw/x.csv", project.root / "data/latest.csv")
    fp_ok(fp, project, "--host", host, "sh", "-c", "echo hi > data/output/r.txt && test -L data/latest.csv && cat data/latest.csv > data/output/copy.csv")
    assert (project.root / "data/output/copy.csv").read_bytes() == b"1,2\n"
    assert os.readlink(remote.data_on(host, project) / "latest.csv") == "raw/x.csv"
    assert assert_same_on_both_sides(project, remote, host)["latest.csv"] == "-> raw/x.csv"


def test_10_kind_changes_follow_the_three_way_rules(fp, project: Project, remote: RemoteBench, host: str) -> None:
    project.write("data/keep.txt", b"v1\n")
    project.write("data/becomes-folder.txt", b"unchanged here\n")
    (project.root / "data/results").mkdir(parents=True)
    fp_ok(fp, project, "--host", host, "--sync-in-only")
    command = (
        "rm data/keep.txt && ln -s /etc/passwd data/keep.txt && rm data/becomes-folder.txt && mkdir data/becomes-folder.txt"
        " && rm -r data/results && echo x > data/results"
    )
    fp_ok(fp, project, "--host", host, "--no-sync", "sh", "-c", command)  # what a run does while this side changes too
    project.write("data/keep.txt", b"v2, newer here\n")
    fp_ok(fp, project, "--host", host, "--sync-out-only")
    assert (project.root / "data/keep.txt").read_bytes() == b"v2, newer here\n"  # a conflict: the link is a conflict copy
    copies = list((project.root / "data").glob(f"keep.fp-conflict-{host}-*.txt"))
    assert len(copies) == 1 and os.readlink(copies[0]) == "/etc/passwd"
    assert (project.root / "data/becomes-folder.txt").is_dir()  # unchanged here: follows the host
    assert (project.root / "data/results").read_bytes() == b"x\n"
    assert_same_on_both_sides(project, remote, host)


def test_10_a_symlinked_local_results_folder_stays_a_symlink(fp, project: Project, remote: RemoteBench, host: str, tmp_path: Path) -> None:
    elsewhere = tmp_path / "big-disk-results"
    elsewhere.mkdir()
    (project.root / "data").mkdir()
    os.symlink(elsewhere, project.root / "data/results")
    err = fp_ok(fp, project, "--host", host, "-v", "sh", "-c", "echo ok > data/other.txt")
    assert os.readlink(project.root / "data/results") == str(elsewhere) and list(elsewhere.iterdir()) == []
    assert "symlinks pointing outside the data folder" in err and "results" in err
    assert_same_on_both_sides(project, remote, host)


def test_11_a_container_cannot_make_fp_write_outside_the_data_folder(fp, project: Project, remote: RemoteBench, host: str, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    project.write("fireplug.toml", f'[project]\nname = "{project.name}"\n\n[run]\nuser = "root"\n')
    plant = f"ln -s {outside} data/chain && mkfifo data/fifo && mknod data/null c 1 3 && cp /bin/sh data/sh && chmod 4755 data/sh && echo ok > data/ok.txt"
    fp_ok(fp, project, "--host", host, "sh", "-c", plant)
    local = project.root / "data"
    assert os.readlink(local / "chain") == str(outside)
    assert not (local / "fifo").exists() and not (local / "null").exists()
    assert (local / "sh").stat().st_mode & 0o6000 == 0 and (local / "ok.txt").read_text() == "ok\n"
    follow = "rm data/chain && mkdir data/chain && echo x > data/chain/chain.txt"
    fp_ok(fp, project, "--host", host, "sh", "-c", follow)
    assert list(outside.iterdir()) == []
    assert (local / "chain/chain.txt").read_text() == "x\n" and not (local / "chain").is_symlink()


def test_7_sync_out_only_without_host_uses_the_host_of_the_last_run(fp, project: Project, remote: RemoteBench) -> None:
    fp_ok(fp, project, "--host", "second", "true")
    (remote.data_on("second", project) / "late.txt").write_text("written after fp left\n")
    err = fp_ok(fp, project, "--sync-out-only")
    assert "host 'second' (where this project last ran" in err
    assert (project.root / "data/late.txt").read_text() == "written after fp left\n"


def test_6_same_named_projects_in_two_folders_stay_apart(fp, project: Project, remote: RemoteBench, tmp_path: Path) -> None:
    twin = Project(tmp_path / "elsewhere" / project.name, project.name)
    twin.root.mkdir(parents=True)
    twin.write("fireplug.toml", f'[project]\nname = "{project.name}"\n')
    twin.write("src/app.py", "print('twin')\n")
    assert twin.key != project.key
    fp_ok(fp, project, "--host", "primary", "sh", "-c", "echo mine > data/result.txt")
    fp_ok(fp, twin, "--host", "primary", "sh", "-c", "echo twin > data/result.txt && python src/app.py > data/ran.txt")
    assert (project.root / "data/result.txt").read_text() == "mine\n" and not (project.root / "data/ran.txt").exists()
    assert (twin.root / "data/result.txt").read_text() == "twin\n"
    assert (remote.data_on("primary", project) / "result.txt").read_text() == "mine\n"
    fp_ok(fp, project, "--host", "primary", "--no-build", "sh", "-c", "python src/app.py > data/ran.txt")
    assert (project.root / "data/ran.txt").read_text() == "app\n"  # its own image, not the twin's
    assert len(images_of(project.name)) == 2


def test_a_non_ascii_project_name_becomes_a_readable_ascii_one(fp, tmp_path: Path, remote: RemoteBench) -> None:
    root = tmp_path / "My Kaggle Прогноз"
    root.mkdir()
    (root / "data").mkdir()
    result = fp(root, "--host", "primary", "--sync-in-only")
    assert result.code == 0, result.err
    assert [path.name.rsplit("-", 1)[0] for path in remote.data_root("primary").iterdir()] == ["my-kaggle-prognoz"]


# -- interruptions and concurrency ----------------------------------------------------------


def in_flight(roots: list[Path]) -> bool:
    """Whether a transfer has started writing a temporary file under one of ``roots``."""
    for root in roots:
        for folder, _, files in os.walk(root):
            temporary = ".fp-staging-" in folder or ".fp-partial" in folder
            if any((temporary or name.startswith(".big.bin.")) and os.path.getsize(os.path.join(folder, name)) > 0 for name in files):
                return True
    return False


def interrupt_mid_transfer(process: subprocess.Popen[bytes], roots: list[Path]) -> str:
    deadline = time.monotonic() + 180
    while not in_flight(roots):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the transfer never started"
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    return err.decode()


def no_temporary_files(root: Path) -> None:
    for folder, _, files in os.walk(root):
        assert not [name for name in files if name.startswith(".big.bin.")], f"rsync temporary files in {folder}"


def rsync_left() -> list[str]:
    return subprocess.run(["pgrep", "-f", "fp-sync-.*\\.list"], capture_output=True, text=True).stdout.split()


@pytest.fixture
def big_file(project: Project) -> Iterator[str]:
    digest = hashlib.sha256()
    path = project.root / "data/big.bin"
    path.parent.mkdir(parents=True)
    with path.open("wb") as out:
        for _ in range(BIG // 10_000_000):
            block = os.urandom(10_000_000)
            digest.update(block)
            out.write(block)
    yield digest.hexdigest()


def assert_whole_or_absent(path: Path, digest: str) -> None:
    if path.exists():
        assert path.stat().st_size == BIG and hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_1_ctrl_c_during_sync_in_of_500_mb_leaves_no_partial_file_and_the_next_sync_finishes(
    project: Project, remote: RemoteBench, host: str, big_file: str
) -> None:
    process = start_in_group(project, "--host", host, "--sync-in-only")
    on_host = remote.data_on(host, project)
    err = interrupt_mid_transfer(process, [on_host, on_host.parent])
    assert "stopped while copying to the host" in err and f"fp --host {host} --sync-out-only" in err, err
    assert rsync_left() == []
    assert_whole_or_absent(on_host / "big.bin", big_file)
    no_temporary_files(on_host)
    done = run_fp(project.root, "--host", host, "--sync-in-only")
    assert done.returncode == 0, done.stderr
    assert hashlib.sha256((on_host / "big.bin").read_bytes()).hexdigest() == big_file


def test_1_ctrl_c_during_sync_out_of_500_mb_keeps_the_local_copy_whole_and_the_next_sync_finishes(project: Project, remote: RemoteBench, host: str) -> None:
    done = run_fp(project.root, "--host", host, "sh", "-c", f"head -c {BIG} /dev/urandom > data/big.bin")
    assert done.returncode == 0, done.stderr
    local = project.root / "data/big.bin"
    whole = hashlib.sha256(local.read_bytes()).hexdigest()
    process = start_in_group(project, "--host", host, "sh", "-c", f"head -c {BIG} /dev/urandom > data/big.bin && sha256sum data/big.bin > data/big.sha256")
    err = interrupt_mid_transfer(process, [project.root / "data"])
    assert "stopped while copying from the host" in err, err
    assert rsync_left() == []
    new = (remote.data_on(host, project) / "big.sha256").read_text().split()[0]
    if local.exists() and hashlib.sha256(local.read_bytes()).hexdigest() not in (whole, new):
        raise AssertionError("a partial file landed under its final name")
    no_temporary_files(project.root / "data")
    finished = run_fp(project.root, "--host", host, "--sync-out-only")
    assert finished.returncode == 0, finished.stderr
    assert hashlib.sha256(local.read_bytes()).hexdigest() == new
    assert_same_on_both_sides(project, remote, host)


def test_2_overlapping_runs_never_push_over_a_file_a_running_container_writes(project: Project, remote: RemoteBench, host: str) -> None:
    writer = (
        "mkdir -p data/output; for i in $(seq 1 20); do echo line $i >> data/output/a.log; sleep 0.4; done;"
        " echo done writing $(wc -l < data/output/a.log) lines"
    )
    long_run = start_in_group(project, "--host", host, "sh", "-c", writer)
    on_host = remote.data_on(host, project) / "output/a.log"
    deadline = time.monotonic() + 120
    while not (on_host.exists() and len(on_host.read_text().splitlines()) >= 5):
        assert long_run.poll() is None and time.monotonic() < deadline, long_run.communicate()
        time.sleep(0.1)
    for _ in range(2):  # two short runs at once while the long one writes: their syncs take turns
        short = [start_in_group(project, "--host", host, "true") for _ in range(2)]
        for process in short:
            _, err = process.communicate(timeout=120)
            assert process.returncode == 0, err
    out, err = long_run.communicate(timeout=120)
    assert long_run.returncode == 0, err
    assert b"done writing 20 lines" in out
    assert len((project.root / "data/output/a.log").read_text().splitlines()) == 20
    assert len(on_host.read_text().splitlines()) == 20
    assert_same_on_both_sides(project, remote, host)


def test_results_come_back_after_a_failing_command_with_the_commands_status(fp, project: Project, remote: RemoteBench, host: str) -> None:
    result = fp(project.root, "--host", host, "sh", "-c", "mkdir -p data/out && echo partial > data/out/log.txt && exit 7")
    assert result.code == 7
    assert (project.root / "data/out/log.txt").read_text() == "partial\n"


def test_the_record_and_trash_stay_outside_the_data_folders(fp, project: Project, remote: RemoteBench, host: str) -> None:
    project.write("data/a.txt", b"a")
    fp_ok(fp, project, "--host", host, "rm", "data/a.txt")
    names = {path.name for path in (project.root / "data").rglob("*")} | {path.name for path in remote.data_on(host, project).rglob("*")}
    assert not [name for name in names if name.startswith((".fp", ".~tmp~"))]
    assert docker("ps", "-aq", "--filter", "label=io.fireplug.kind=sync", engine="tls" if host == "tlsapi" else "main") == ""


def test_10_a_local_edit_made_while_the_command_runs_is_never_overwritten(project: Project, remote: RemoteBench, host: str) -> None:
    project.write("data/result.txt", "v1\n")
    command = "echo started > data/started && sleep 3 && echo host > data/result.txt && touch -d 2020-01-01 data/result.txt && rm data/started"
    process = start_in_group(project, "--host", host, "sh", "-c", command)
    started = remote.data_on(host, project) / "started"
    deadline = time.monotonic() + 120
    while not started.exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    project.write("data/result.txt", "mine, written during the run\n")
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert (project.root / "data/result.txt").read_text() == "mine, written during the run\n"
    copies = list((project.root / "data").glob(f"result.fp-conflict-{host}-*.txt"))
    assert len(copies) == 1 and copies[0].read_text() == "host\n" and b"conflict: result.txt" in err
    assert_same_on_both_sides(project, remote, host)


def test_1_a_killed_ssh_during_sync_in_of_500_mb_is_one_error_and_the_next_sync_finishes(remote: RemoteBench, project: Project, big_file: str) -> None:
    process = start_in_group(project, "--host", "primary", "--sync-in-only")
    on_host = remote.data_on("primary", project)
    deadline = time.monotonic() + 180
    while not in_flight([on_host]):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.01)
    carriers = subprocess.run(["pgrep", "-f", "ssh .*rsync --server"], capture_output=True, text=True).stdout.split()
    assert carriers, "no ssh carrying rsync"
    for pid in carriers:  # the connection drops under rsync, as when the network goes away
        os.kill(int(pid), signal.SIGKILL)
    _, err = process.communicate(timeout=120)
    errors = [line for line in err.decode().splitlines() if line.startswith("fp: error:")]
    assert process.returncode == 125 and len(errors) == 1 and "syncing data with host 'primary' failed" in errors[0], err
    assert rsync_left() == []
    assert_whole_or_absent(on_host / "big.bin", big_file)
    no_temporary_files(on_host)
    done = run_fp(project.root, "--host", "primary", "--sync-in-only")
    assert done.returncode == 0, done.stderr
    assert hashlib.sha256((on_host / "big.bin").read_bytes()).hexdigest() == big_file


# -- a deletion is only read from a side that received everything it was sent --------------

PARTS = 12
PART_BYTES = 25_000_000


def synced_then_lost_on_the_host(project: Project, remote: RemoteBench) -> tuple[dict[str, str], Path]:
    """12 files of 25 MB synced to 'primary', whose copy then loses them all: their SHA-256,
    and the host's data folder."""
    digests = {}
    for index in range(PARTS):
        data = os.urandom(PART_BYTES)
        project.write(f"data/part{index:02}.bin", data)
        digests[f"part{index:02}.bin"] = hashlib.sha256(data).hexdigest()
    first = run_fp(project.root, "--host", "primary", "--sync-in-only")
    assert first.returncode == 0, first.stderr
    on_host = remote.data_on("primary", project)
    for path in on_host.iterdir():
        path.unlink()
    return digests, on_host


def the_next_sync_sends_the_rest(project: Project, remote: RemoteBench, isolated_home: Path, digests: dict[str, str]) -> None:
    """The sync the interruption's message suggests: every part on both sides, none in the local trash."""
    again = run_fp(project.root, "--host", "primary", "--sync-in-only")
    assert again.returncode == 0, again.stderr
    assert b"local trash" not in again.stderr, again.stderr
    for side in (project.root / "data", remote.data_on("primary", project)):
        assert {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in side.glob("part*.bin")} == digests, side
    assert not list((isolated_home / ".local/state/fireplug/trash").rglob("part*.bin")), "parts went to the local trash"


def arrived(folder: Path) -> list[str]:
    """The parts on the host under their own names (rsync renames a file there once it is whole)."""
    return sorted(path.name for path in folder.glob("part*.bin"))


def test_1_a_resend_interrupted_by_ctrl_c_never_moves_local_files_to_the_trash(project: Project, remote: RemoteBench, isolated_home: Path) -> None:
    """The fault probe's case: the host lost the data folder, the sync sending it again is
    interrupted (Ctrl-C to fp's process group) with some files there; the sync the message
    suggests sends the rest, and moves nothing here to the trash."""
    digests, on_host = synced_then_lost_on_the_host(project, remote)
    process = start_in_group(project, "--host", "primary", "--sync-in-only")
    wait_for(lambda: len(arrived(on_host)) >= 2, "two parts on the host", process, timeout=180)
    os.killpg(process.pid, signal.SIGINT)
    code, err, _ = finish(process)
    assert code == 130 and "--sync-in-only" in err, err
    assert 2 <= len(arrived(on_host)) < PARTS, "the sync finished before the Ctrl-C: nothing was tested"
    the_next_sync_sends_the_rest(project, remote, isolated_home, digests)


@pytest.fixture
def small_data_root(remote: RemoteBench) -> Iterator[Path]:
    """'primary''s data root on a 360 MB filesystem of its own (a tmpfs), so that it can fill up."""
    root = remote.data_root("primary")
    root.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=360m", "fp-test-full", str(root)], check=True)
    try:
        shutil.chown(root, testbed.SSH_USER, testbed.SSH_USER)
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def test_1_a_resend_that_filled_the_hosts_disk_never_moves_local_files_to_the_trash(
    project: Project, remote: RemoteBench, isolated_home: Path, small_data_root: Path
) -> None:
    digests, on_host = synced_then_lost_on_the_host(project, remote)
    ballast = small_data_root / "ballast"
    subprocess.run(["dd", "if=/dev/zero", f"of={ballast}", "bs=1M", "count=250", "status=none"], check=True)
    full = run_fp(project.root, "--host", "primary", "--sync-in-only")
    assert full.returncode == 125 and len(error_lines(full.stderr.decode())) == 1, full.stderr
    assert 1 <= len(arrived(on_host)) < PARTS, arrived(on_host)
    ballast.unlink()
    the_next_sync_sends_the_rest(project, remote, isolated_home, digests)


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` read-only even for root (the tests run as root): a read-only bind mount of itself."""
    subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_results_a_failed_sync_out_could_not_bring_back_come_with_the_next_sync(fp, project: Project, remote: RemoteBench, host: str) -> None:
    """A sync out that could not write here (a read-only data folder) is not recorded as one that
    agreed: a later --sync-out-only fails again while the folder is read-only, then brings the
    result once it is writable (it used to say "in sync: nothing changed", and the result never came)."""
    project.write("data/input.txt", "in\n")
    time.sleep(2.1)  # old enough to be trusted by its signature: an unchanged side then costs no planning at all
    fp_ok(fp, project, "--host", host, "--sync-in-only")
    with read_only(project.root / "data"):
        ran = fp(project.root, "--host", host, "sh", "-c", "echo the result > data/result.txt")
        assert ran.code == 125 and "exited with status 0" in ran.err, ran.err
        still = fp(project.root, "--host", host, "--sync-out-only")
        assert still.code == 125 and "nothing changed" not in still.err, still.err
    assert not (project.root / "data/result.txt").exists()
    err = fp_ok(fp, project, "--host", host, "--sync-out-only")
    assert "1 files" in err and (project.root / "data/result.txt").read_text() == "the result\n", err
    assert_same_on_both_sides(project, remote, host)


def test_9_a_copied_project_folder_is_refused_instead_of_trashing_the_originals_files(
    fp, project: Project, remote: RemoteBench, host: str, tmp_path: Path
) -> None:
    """Two copies of one `fp init` project (a copied folder keeps project.id) would share the
    host's folder and the sync record, each sync moving the other's files to the host's trash."""
    project.write("fireplug.toml", f'[project]\nname = "{project.name}"\nid = "c0ffee42"\n')
    project.write("data/original.csv", "original\n")
    fp_ok(fp, project, "--host", host, "--sync-in-only")
    copy = tmp_path / "copy-of-the-project"
    shutil.copytree(project.root, copy)
    (copy / "data/original.csv").unlink()
    (copy / "data/copy.csv").write_text("the copy's\n")
    refused = fp(copy, "--host", host, "--sync-in-only")
    assert refused.code == 125 and len(error_lines(refused.err)) == 1, refused.err
    assert f"{project.root} holds this project too" in refused.err and f"in {copy}/fireplug.toml" in refused.err
    on_host = remote.data_root(host) / f"{project.name}-c0ffee42"
    assert sums(on_host / "data") == {"original.csv": hashlib.sha256(b"original\n").hexdigest()}
    assert not list((on_host / ".fp-trash").rglob("original.csv"))
    fp_ok(fp, project, "--host", host, "--sync-in-only")  # the original goes on as before
    (copy / "fireplug.toml").write_text(f'[project]\nname = "{project.name}"\nid = "c0ffee43"\n')  # what the message says to do
    fp_ok(fp, Project(copy, project.name), "--host", host, "--sync-in-only")
    assert sums(remote.data_root(host) / f"{project.name}-c0ffee43" / "data") == {"copy.csv": hashlib.sha256(b"the copy's\n").hexdigest()}
    assert (on_host / "data/original.csv").read_text() == "original\n"
