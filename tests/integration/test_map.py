"""fp map on the real bench: two ssh hosts ('primary' in front of the main engine, 'second' in
front of the second one), results checked byte for byte, the joblog read back, a host lost
mid-map, Ctrl-C to a real fp map process, and a hostile run among the others."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import stat
from pathlib import Path

import pytest

from fireplug.map.params import read_joblog
from tests import testbed
from tests.integration.conftest import (
    Project,
    RemoteBench,
    containers_of,
    docker,
    run_fp,
    ssh_masters,
    sshd_serving,
    start_in_group,
    wait_for,
)

pytestmark = pytest.mark.engine

# Each run writes a result whose bytes depend on its fold only, after a marker that it started;
# it fails (3) while data/fail-FOLD exists.
WORK = """\
import hashlib, os, sys, time
fold = sys.argv[1]
os.makedirs("data/out", exist_ok=True)
open(f"data/out/started-{fold}", "w").write(os.environ["FP_RUN_INDEX"] + " " + os.environ["FP_PARAM_FOLD"])
time.sleep(float(os.environ.get("SLEEP", "2")))
block = hashlib.sha256(fold.encode()).digest()
with open(f"data/out/fold{fold}.bin", "wb") as out:
    out.write(block * 4096)
print("fold", fold, "done", flush=True)
sys.exit(3 if os.path.exists(f"data/fail-{fold}") else 0)
"""


def expected(fold: int) -> bytes:
    return hashlib.sha256(str(fold).encode()).digest() * 4096


def map_project(project: Project) -> Project:
    project.write("work.py", WORK)
    project.write("data/input.csv", "a,b\n1,2\n")
    return project


def joblog_of(err: str) -> Path:
    found = re.findall(r"fp: joblog ([^;\s]+)", err)
    assert found, err
    return Path(found[-1])


def most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans], key=lambda event: (event[0], event[1]))
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def test_a_4_run_map_over_2_hosts_runs_2_at_a_time_brings_every_result_back_and_resumes_the_failed_run(project: Project, remote: RemoteBench) -> None:
    map_project(project)
    project.write("data/fail-2", "")
    argv = ["map", "-p", "fold=0,1,2,3", "--hosts", "primary,second", "--", "python", "work.py", "{fold}"]
    done = run_fp(project.root, *argv)
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert "run 3 failed on host" in err and "python work.py 2" in err and "3 of 4 runs succeeded" in err
    assert re.search(r"^3\s+fold=2\s+(primary|second)\s+[\d.]+ s\s+3\s*$", err, re.MULTILINE), err
    for fold in range(4):
        assert (project.root / f"data/out/fold{fold}.bin").read_bytes() == expected(fold)
        assert (project.root / f"data/out/started-{fold}").read_text() == f"{fold} {fold}"  # FP_RUN_INDEX, FP_PARAM_FOLD
        assert f"fold={fold} @" in err or b"fold " + str(fold).encode() in done.stdout
    assert sorted(re.findall(rb"\[fold=(\d) @(?:primary|second)\] fold \1 done", done.stdout)) == [b"0", b"1", b"2", b"3"]

    joblog = joblog_of(err)
    logged = read_joblog(joblog.read_text())
    assert sorted(logged) == [1, 2, 3, 4] and [logged[seq].exit_code for seq in (1, 2, 3, 4)] == [0, 0, 3, 0]
    assert {outcome.host for outcome in logged.values()} == {"primary", "second"}
    # (in the joblog's milliseconds: a slot's next run starts as its last one ends)
    spans = [(outcome.start, round(outcome.start + outcome.runtime, 3)) for outcome in logged.values()]
    assert most_at_once(spans) == 2, f"two hosts at one run each: never more than 2 at once ({spans})"
    for host in ("primary", "second"):
        assert most_at_once([span for span, outcome in zip(spans, logged.values(), strict=True) if outcome.host == host]) == 1
    assert containers_of(project.name) == [] and containers_of(project.name, "second") == []

    (project.root / "data/fail-2").unlink()
    again = run_fp(project.root, "map", "--resume-failed", str(joblog), *argv[1:])
    assert again.returncode == 0, again.stderr.decode()
    assert b"map-" in again.stderr and b": 1 runs on" in again.stderr
    relogged = joblog.read_text().splitlines()
    assert len(relogged) == 6 and relogged[-1].startswith("3\t") and relogged[-1].split("\t")[6] == "0"
    assert read_joblog(joblog.read_text())[3].succeeded


def test_a_host_lost_mid_map_hands_its_runs_to_the_other(project: Project, remote: RemoteBench) -> None:
    map_project(project)
    process = start_in_group(project, "map", "-e", "SLEEP=4", "-p", "fold=0,1,2,3,4,5", "--hosts", "primary,second", "--", "python", "work.py", "{fold}")
    on_second = remote.data_on("second", project) / "out"
    wait_for(lambda: on_second.is_dir() and any(on_second.glob("started-*")), "a run to start on host second", process, timeout=300)
    [master] = [pid for pid in ssh_masters(remote) if "fp-second" in " ".join(psutil_cmdline(pid))]
    listener = second_listener()
    listener.suspend()  # no new connection to host second...
    try:
        for sshd in sshd_serving(master):
            sshd.kill()  # ...and the one fp had is cut
        _, err_bytes = process.communicate(timeout=300)
    finally:
        listener.resume()
    err = err_bytes.decode()
    assert process.returncode == 0, err
    assert "lost host 'second'" in err and "goes back to the queue" in err and "6 of 6 runs succeeded" in err
    for fold in range(6):
        assert (project.root / f"data/out/fold{fold}.bin").read_bytes() == expected(fold)
    logged = read_joblog(joblog_of(err).read_text())
    assert sorted(logged) == [1, 2, 3, 4, 5, 6] and all(outcome.succeeded for outcome in logged.values())
    assert sum(1 for outcome in logged.values() if outcome.host == "primary") >= 5, "every run after the loss went to primary"
    [(run_id, left)] = re.findall(r"run (\S+) may still run on lost host 'second' \(container (fp-\S+)\)", err)
    assert "the map's network anchor" in err and "stays on lost host 'second'" in err
    wait_for(lambda: docker("ps", "-q", "--filter", f"name={left}", engine="second") == "", "the lost host's run to end", timeout=60)
    pulled = run_fp(project.root, "pull", run_id)  # the run left on the lost host is collected like any other
    assert pulled.returncode == 0, pulled.stderr.decode()
    cleaned = run_fp(project.root, "gc", "--host", "second")
    assert b"network anchor of map" in cleaned.stderr, cleaned.stderr.decode()
    assert containers_of(project.name, "second") == []


def test_ctrl_c_on_a_real_fp_map_stops_its_runs_leaves_no_container_and_brings_back_what_exists(project: Project, remote: RemoteBench) -> None:
    map_project(project)
    process = start_in_group(project, "map", "-e", "SLEEP=60", "-p", "fold=0,1,2,3", "--hosts", "primary,second", "--", "python", "work.py", "{fold}")

    def running() -> int:
        wanted = ["--filter", f"label=io.fireplug.project={project.name}", "--filter", "label=io.fireplug.kind=run"]  # not the network anchors
        return sum(len(docker("ps", "-q", *wanted, engine=engine).split()) for engine in ("main", "second"))

    wait_for(lambda: running() == 2, "two runs to start", process, timeout=300)
    wait_for(lambda: len(list((remote.data_on("primary", project) / "out").glob("started-*"))) == 1, "the run on primary to write", process)
    os.killpg(process.pid, signal.SIGINT)
    _, err_bytes = process.communicate(timeout=120)
    err = err_bytes.decode()
    assert process.returncode == 130, err
    assert "no new run starts; forwarded to 2 running runs" in err
    assert not [line for line in err.splitlines() if "Traceback" in line and not line.startswith("[fold=")], "fp's own lines hold no traceback"
    assert err.count("KeyboardInterrupt") == 2, "each running command got the SIGINT (python says so)"
    assert containers_of(project.name) == [] and containers_of(project.name, "second") == []
    logged = read_joblog(joblog_of(err).read_text())
    assert sorted(logged) == [1, 2] and all(outcome.signal == signal.SIGINT for outcome in logged.values())
    assert sorted(path.name for path in (project.root / "data/out").glob("started-*")) == ["started-0", "started-1"], "what the runs wrote came back"
    assert not list((project.root / "data/out").glob("fold*.bin"))


def test_a_hostile_run_cannot_make_the_map_write_outside_the_data_folder(project: Project, remote: RemoteBench, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    map_project(project)
    project.write(
        "hostile.py",
        f"""\
import os, sys
if sys.argv[1] == "evil":
    os.symlink({str(outside)!r}, "data/evil")
    os.mkfifo("data/fifo")
    os.makedirs("data/out", exist_ok=True)
    open("data/out/evil.txt", "w").write("evil")
else:
    os.makedirs("data/out", exist_ok=True)
    open(f"data/out/{{sys.argv[1]}}.txt", "w").write(sys.argv[1])
""",
    )
    done = run_fp(project.root, "map", "-p", "who=evil,good", "--hosts", "primary", "--", "python", "hostile.py", "{who}")
    assert done.returncode == 0, done.stderr.decode()
    evil = project.root / "data/evil"
    assert evil.is_symlink() and os.readlink(evil) == str(outside) and list(outside.iterdir()) == []
    assert not (project.root / "data/fifo").exists() or not stat.S_ISFIFO(os.lstat(project.root / "data/fifo").st_mode)
    assert (project.root / "data/out/good.txt").read_text() == "good"
    again = run_fp(project.root, "map", "-p", "who=good2", "--hosts", "primary", "--", "python", "hostile.py", "{who}")
    assert again.returncode == 0 and list(outside.iterdir()) == [], "a later pull never follows the planted link"


def psutil_cmdline(pid: int) -> list[str]:
    import psutil

    return psutil.Process(pid).cmdline()


def second_listener():  # type: ignore[no-untyped-def]
    """The sshd listening for host 'second' (its port), not the sessions it serves."""
    import psutil

    port = str(testbed.SECOND_SSH_PORT)
    found = [
        process for process in psutil.process_iter(["name", "cmdline"]) if process.info["name"] == "sshd" and port in " ".join(process.info["cmdline"] or [])
    ]
    parents = [process for process in found if process.ppid() not in {other.pid for other in found}]
    assert len(parents) == 1, found
    return parents[0]


def test_two_runs_writing_one_file_keep_both_versions(project: Project, remote: RemoteBench) -> None:
    project.write("same.py", "import sys\nopen('data/result.txt', 'w').write(f'run {sys.argv[1]}\\n')\n")
    done = run_fp(project.root, "map", "-p", "who=a,b", "--hosts", "primary", "--", "python", "same.py", "{who}")
    err = done.stderr.decode()
    assert done.returncode == 0, err
    assert "two runs of the map wrote result.txt" in err and "both versions are kept" in err
    copies = sorted(path.name for path in (project.root / "data").glob("result.fp-conflict-primary-*.txt"))
    assert (project.root / "data/result.txt").read_text() == "run b\n" and len(copies) == 1
    assert (project.root / "data" / copies[0]).read_text() == "run a\n"


def test_a_detached_map_goes_on_in_the_background_and_fp_stop_ends_it(project: Project, remote: RemoteBench, isolated_home: Path) -> None:
    map_project(project)
    started = run_fp(project.root, "map", "-d", "-e", "SLEEP=1", "-p", "fold=0,1,2", "--hosts", "primary,second", "--", "python", "work.py", "{fold}")
    assert started.returncode == 0, started.stderr.decode()
    map_id = started.stderr.decode().split()[-1]
    assert map_id.startswith("map-")
    wait_for(lambda: all((project.root / f"data/out/fold{fold}.bin").exists() for fold in range(3)), "the background map's results", timeout=300)
    for fold in range(3):
        assert (project.root / f"data/out/fold{fold}.bin").read_bytes() == expected(fold)
    pid_file = isolated_home / ".local/state/fireplug/runs" / f"{map_id}.pid"
    assert (isolated_home / ".local/state/fireplug/runs" / f"{map_id}.out").is_file(), "its messages go to a file"
    wait_for(lambda: not pid_file.exists(), "the background map to end")
    listed = json.loads(run_fp(project.root, "ps", "--all", "--json").stdout)
    assert sorted(entry["params"]["fold"] for entry in listed if entry["map"] == map_id) == ["0", "1", "2"]
    logs = run_fp(project.root, "logs", map_id).stdout.decode()
    assert sorted(re.findall(r"\[fold=(\d) @\w+\] fold \1 done", logs)) == ["0", "1", "2"]

    long = run_fp(project.root, "map", "-d", "-e", "SLEEP=120", "-p", "fold=5,6,7,8", "--hosts", "primary,second", "--", "python", "work.py", "{fold}")
    long_id = long.stderr.decode().split()[-1]
    wait_for(lambda: len(list((remote.data_on("primary", project) / "out").glob("started-[5-8]"))) == 1, "a long run to start", timeout=300)
    stopped = run_fp(project.root, "stop", long_id)
    assert stopped.returncode == 0 and b"told to stop" in stopped.stderr, stopped.stderr.decode()
    wait_for(lambda: containers_of(project.name) == [] and containers_of(project.name, "second") == [], "the map's containers to go", timeout=60)
