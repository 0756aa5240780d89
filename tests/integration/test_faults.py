"""Faults on the real bench: lost connections, a stalled engine, a dead ssh master, signals early
and late, a closed terminal. Each test asserts fp's exit status, its one line, what is left on
the host (containers running, left or removed) and the result files.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fireplug.hosts.engine import Engine
from fireplug.hosts.engine.wire import PING_INTERVAL, STALL_SECONDS
from fireplug.support.signature import RACY_NS
from tests import testbed
from tests.integration.conftest import (
    Project,
    RemoteBench,
    containers_of,
    docker,
    error_lines,
    finish,
    fp_command,
    images_of,
    run_fp,
    ssh_masters,
    sshd_serving,
    start_in_group,
    wait_for,
)

pytestmark = pytest.mark.engine  # needs the test bench (tests/run sets it up)

STALL_BOUND = PING_INTERVAL + STALL_SECONDS + 10  # the documented bound, plus fp's own start and exit


def states(project: Project, engine: str = "main") -> list[str]:
    return docker("ps", "-a", "--filter", f"label=io.fireplug.project={project.name}", "--format", "{{.State}}", engine=engine).split()


def run_containers(project: Project, engine: str = "main") -> list[str]:
    return docker("ps", "-aq", "--filter", f"label=io.fireplug.project={project.name}", "--filter", "label=io.fireplug.kind=run", engine=engine).split()


LONG_JOB = "touch data/started; sleep 6; echo done > data/out.txt"


# -- 1. connection loss mid-run ------------------------------------------------------------


def test_1_a_killed_ssh_master_mid_run_leaves_the_job_running_and_says_how_to_collect_it(project: Project, remote: RemoteBench) -> None:
    assert run_fp(project.root, "--host", "primary", "true").returncode == 0  # built, master up
    process = start_in_group(project, "--host", "primary", "sh", "-c", LONG_JOB)
    started = remote.data_on("primary", project) / "started"
    wait_for(started.exists, "the command to start", process)
    for pid in ssh_masters(remote):
        os.kill(pid, signal.SIGKILL)
    code, err, seconds = finish(process)
    assert code == 125, err
    [line] = error_lines(err)
    [run_id] = re.findall(r"fp pull (\S+)", line)
    assert "lost the connection to host 'primary'" in line and "the run goes on there" in line and f"fp logs -f {run_id}" in line
    assert seconds < 15
    assert states(project) == ["running"], "the job must go on after fp lost its connection"
    assert not (project.root / "data/out.txt").exists()

    followed = run_fp(project.root, "logs", "-f", run_id)  # from a new process, to the run's end
    assert followed.returncode == 0, followed.stderr
    assert (remote.data_on("primary", project) / "out.txt").read_text() == "done\n", "fp logs -f ended before the run"
    wait_for(lambda: states(project) == ["exited"], "the engine to see the run's end")
    collected = run_fp(project.root, "pull", run_id)
    assert collected.returncode == 0, collected.stderr
    assert (project.root / "data/out.txt").read_text() == "done\n"
    assert run_containers(project) == [], "an ended run is removed once its results came back"
    assert b"output kept here" in collected.stderr and run_fp(project.root, "logs", run_id).returncode == 0


@dataclass
class Proxy:
    """A TCP proxy process in front of the TLS engine: host 'flaky' goes through it."""

    port: int
    process: subprocess.Popen[bytes]

    def start(self) -> None:
        argv = [sys.executable, "-m", "tests.tcp_proxy", str(self.port), str(testbed.TLS_PORT)]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=Path(__file__).parents[2])
        assert self.process.stdout is not None and self.process.stdout.readline() == b"ready\n"

    def stop(self) -> None:
        self.process.send_signal(signal.SIGCONT)
        self.process.kill()
        self.process.wait()


@pytest.fixture
def proxy(remote: RemoteBench) -> Iterator[Proxy]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    made = Proxy(port, None)  # type: ignore[arg-type]
    made.start()
    remote.add_hosts(f'[hosts.flaky]\nurl = "tcp://127.0.0.1:{port}"\ncert_path = "{testbed.CERTS}"\ndata_root = "{remote.data_root("flaky")}"\n')
    yield made
    made.stop()


def test_1_a_cut_tls_connection_mid_run_leaves_the_job_running_and_a_later_sync_out_collects_it(project: Project, remote: RemoteBench, proxy: Proxy) -> None:
    process = start_in_group(project, "--host", "flaky", "sh", "-c", LONG_JOB)
    wait_for((remote.data_on("flaky", project) / "started").exists, "the command to start", process, timeout=300)
    proxy.stop()  # every connection through it is cut at once
    code, err, seconds = finish(process)
    assert code == 125, err
    [line] = error_lines(err)
    assert "lost the connection to host 'flaky'" in line and "fp pull" in line
    assert seconds < 15
    assert states(project, "tls") == ["running"]

    proxy.start()
    wait_for(lambda: states(project, "tls") == ["exited"], "the job to end")
    time.sleep(16)
    collected = run_fp(project.root, "--host", "flaky", "--sync-out-only")
    assert collected.returncode == 0, collected.stderr
    assert (project.root / "data/out.txt").read_text() == "done\n"
    assert run_containers(project, "tls") == []


# -- 2. a stalled engine ----------------------------------------------------------------------


def test_2_a_stalled_tls_host_mid_run_ends_fp_within_the_bound_and_leaves_the_job(project: Project, remote: RemoteBench, proxy: Proxy) -> None:
    process = start_in_group(project, "--host", "flaky", "sh", "-c", "touch data/started; sleep 60")
    wait_for((remote.data_on("flaky", project) / "started").exists, "the command to start", process, timeout=300)
    proxy.process.send_signal(signal.SIGSTOP)
    code, err, seconds = finish(process)
    assert code == 125, err
    [line] = error_lines(err)
    assert "stopped answering" in line and "host 'flaky'" in line
    assert seconds < STALL_BOUND
    assert states(project, "tls") == ["running"], "a stall is not the command's failure"
    docker("rm", "-f", *run_containers(project, "tls"), engine="tls")


def test_2_a_stalled_tls_host_mid_sync_ends_fp_within_the_bound_and_the_next_sync_finishes(project: Project, remote: RemoteBench, proxy: Proxy) -> None:
    big = project.write("data/big.bin", os.urandom(200 << 20))
    process = start_in_group(project, "--host", "flaky", "--sync-in-only")
    host_folder = remote.data_on("flaky", project).parent

    def staging() -> bool:
        return host_folder.exists() and any(path.name.startswith(".fp-staging-") for path in host_folder.iterdir())

    wait_for(staging, "the upload to start", process, timeout=300)
    proxy.process.send_signal(signal.SIGSTOP)
    code, err, seconds = finish(process)
    assert code == 125, err
    [line] = error_lines(err)
    assert "stopped answering" in line
    assert seconds < STALL_BOUND
    assert not (remote.data_on("flaky", project) / "big.bin").exists(), "nothing half-sent under its real name"

    proxy.process.send_signal(signal.SIGCONT)
    again = run_fp(project.root, "--host", "flaky", "--sync-in-only")
    assert again.returncode == 0, again.stderr
    assert (remote.data_on("flaky", project) / "big.bin").read_bytes() == big.read_bytes()
    assert containers_of(project.name, "tls") == [], "the helper the stalled fp left is removed by the next sync"


# -- 3. a dead ssh master ---------------------------------------------------------------------


def test_3_a_dead_ssh_master_is_replaced_and_no_stray_ssh_is_left(project: Project, remote: RemoteBench) -> None:
    assert run_fp(project.root, "--host", "primary", "true").returncode == 0
    [master] = ssh_masters(remote)
    os.kill(master, signal.SIGKILL)  # its control socket stays behind
    for _ in range(3):
        result = run_fp(project.root, "--host", "primary", "sh", "-c", "echo ok > data/ok.txt")
        assert result.returncode == 0, result.stderr
    assert (project.root / "data/ok.txt").read_text() == "ok\n"
    assert len(ssh_masters(remote)) == 1, "one new master, and no ssh -f -N that gave up multiplexing"


# -- 4. early Ctrl-C ----------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["local", "primary"])
def test_4_ctrl_c_as_the_container_is_made_leaves_nothing_and_says_so(project: Project, remote: RemoteBench, host: str) -> None:
    assert run_fp(project.root, "--host", host, "true").returncode == 0
    for attempt in range(6):
        process = start_in_group(project, "--host", host, "sleep", "30")
        wait_for(lambda: bool(containers_of(project.name)), "the container to be created", process, timeout=60)
        time.sleep(attempt * 0.05)
        os.killpg(process.pid, signal.SIGINT)
        code, err, _ = finish(process)
        assert code == 130, err
        assert "Traceback" not in err
        assert containers_of(project.name) == [], f"attempt {attempt}: {err}"
        # the first container is the command's lookup, made before the sync in: the signal may find fp syncing
        assert any(said in err for said in ("nothing was left running", "nothing is left running", "SIGINT forwarded to the command")), err


# -- 5. a second Ctrl-C after the command exited ---------------------------------------------


def test_5_a_ctrl_c_after_the_command_exited_keeps_its_status_and_its_results(project: Project, remote: RemoteBench) -> None:
    assert run_fp(project.root, "--host", "primary", "true").returncode == 0
    script = "trap 'echo saved > data/checkpoint; exit 3' INT; touch data/started; while :; do sleep 0.05; done"
    on_host = remote.data_on("primary", project)
    for _ in range(3):
        (project.root / "data/checkpoint").unlink(missing_ok=True)
        process = start_in_group(project, "--host", "primary", "sh", "-c", script)
        wait_for((on_host / "started").exists, "the command to start", process)
        (on_host / "started").unlink()
        os.killpg(process.pid, signal.SIGINT)
        wait_for(lambda: "exited" in states(project) or not containers_of(project.name), "the command to exit", process)
        with contextlib.suppress(ProcessLookupError):  # fp may be done already
            os.killpg(process.pid, signal.SIGINT)  # meant for the command, which has just exited
        code, err, _ = finish(process)
        assert "Traceback" not in err
        if code == 3:  # the late Ctrl-C was taken as the command's: results came back
            assert (project.root / "data/checkpoint").read_text() == "saved\n"
        else:  # it landed in the sync out, which stops cleanly and says so
            assert code == 130, err
            assert "the command itself had exited with status 3" in err and "--sync-out-only" in err, err
            again = run_fp(project.root, "--host", "primary", "--sync-out-only")
            assert again.returncode == 0, again.stderr
            assert (project.root / "data/checkpoint").read_text() == "saved\n"
        assert containers_of(project.name) == []


# -- 6. the terminal closed -------------------------------------------------------------------


def test_6_a_closed_terminal_forwards_sighup_and_the_command_checkpoints(project: Project) -> None:
    assert run_fp(project.root, "true").returncode == 0
    script = "trap 'echo saved > data/checkpoint; exit 0' HUP; touch data/started; while :; do sleep 0.05; done"
    controller, terminal = pty.openpty()

    def become_terminal_session() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(
        [*fp_command(), "sh", "-c", script], cwd=project.root, stdin=terminal, stdout=terminal, stderr=terminal, preexec_fn=become_terminal_session
    )
    os.close(terminal)
    drained = []

    def started() -> bool:
        with contextlib.suppress(OSError):
            drained.append(os.read(controller, 65536))  # keep the terminal's buffer from filling
        return (project.root / "data/started").exists()

    os.set_blocking(controller, False)
    wait_for(started, "the command to start", None, timeout=120)
    os.close(controller)  # the terminal hangs up: SIGHUP to its session
    code = process.wait(timeout=60)
    assert code in (0, 128 + signal.SIGHUP), code
    assert (project.root / "data/checkpoint").read_text() == "saved\n"
    assert containers_of(project.name) == []


# -- 8. bytes and paths -------------------------------------------------------------------------


def test_8_a_project_path_with_colon_and_comma_is_mounted_as_is(engine: Engine, tmp_path: Path) -> None:
    name = f"fpt-{os.urandom(5).hex()}"
    project = Project(tmp_path / f"odd:path,{name}", name)
    project.root.mkdir()
    project.write("fireplug.toml", f'[project]\nname = "{name}"\n')
    try:
        result = run_fp(project.root, "sh", "-c", "pwd > data/where.txt")
        assert result.returncode == 0, result.stderr
        assert (project.root / "data/where.txt").read_text() == f"{project.root}\n"
    finally:
        if ids := images_of(name):
            subprocess.run(["docker", "rmi", "-f", *ids], capture_output=True)
    assert containers_of(name) == []


def test_8_a_project_path_that_is_not_utf8_is_refused_in_one_line(engine: Engine, tmp_path: Path) -> None:
    root = os.fsencode(tmp_path) + b"/proj-\xff"
    os.mkdir(root)
    (Path(os.fsdecode(root)) / "fireplug.toml").write_text('[project]\nname = "fpt-bytes"\n')
    result = subprocess.run([*fp_command(), "true"], cwd=root, capture_output=True, stdin=subprocess.DEVNULL)
    assert result.returncode == 125
    [line] = error_lines(result.stderr.decode(errors="replace"))
    assert "is not named in valid UTF-8" in line
    assert containers_of("fpt-bytes") == [] and images_of("fpt-bytes") == []


def test_8_command_words_that_are_not_utf8_are_refused_not_changed(project: Project) -> None:
    result = subprocess.run([*fp_command(), "echo", b"caf\xe9"], cwd=project.root, capture_output=True, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    [line] = error_lines(result.stderr.decode(errors="replace"))
    assert "word 2 of the command" in line and "not valid UTF-8" in line


# -- 9. concurrent cold runs --------------------------------------------------------------------


def test_9_concurrent_cold_runs_build_the_image_once(project: Project) -> None:
    runs = [
        subprocess.Popen(
            [*fp_command(), "sh", "-c", f"echo {index} > data/run-{index}.txt"], cwd=project.root, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for index in range(4)
    ]
    for index, run in enumerate(runs):
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
        assert (project.root / f"data/run-{index}.txt").read_text() == f"{index}\n"
    assert len(images_of(project.name)) == 1, "one image, and no untagged copies of it"


# -- 10. order of checks ------------------------------------------------------------------------


def test_10_a_command_missing_from_the_image_is_said_before_any_data_moves(project: Project, remote: RemoteBench) -> None:
    project.write("data/input.bin", os.urandom(1000))
    result = run_fp(project.root, "--host", "primary", "pyhton", "model.py")
    assert result.returncode == 127
    [line] = error_lines(result.stderr.decode())
    assert "command 'pyhton' is not in the image" in line
    assert not remote.data_on("primary", project).exists(), "nothing was synced"
    assert run_fp(project.root, "--host", "primary", "sh", "-c", "test -f data/input.bin").returncode == 0


# -- 7. fp's own cache ----------------------------------------------------------------------------


def test_7_a_wrong_digest_in_the_scan_record_costs_one_run_not_every_run(project: Project, isolated_home: Path) -> None:
    time.sleep(RACY_NS / 1e9 + 0.5)  # the project's files settle, so the record trusts their digests
    assert run_fp(project.root, "true").returncode == 0
    [record_path] = (isolated_home / ".cache" / "fireplug" / "contexts").glob("*.json")
    payload, _, _ = record_path.read_bytes().rpartition(b"\n")
    record = json.loads(payload)
    for entry in record["entries"]:
        if entry[0] == "src/app.py":
            entry[3] = "0" * 64
    edited = json.dumps(record, separators=(",", ":")).encode()
    record_path.write_bytes(edited + b"\n" + b"0" * 64)  # edited by hand: its checksum no longer matches
    assert run_fp(project.root, "true").returncode == 0, "a record that fails its checksum is ignored"

    record_path.write_bytes(edited + b"\n" + hashlib.sha256(edited).hexdigest().encode())  # intact, yet wrong
    failed = run_fp(project.root, "true")
    assert failed.returncode == 125
    [line] = error_lines(failed.stderr.decode())
    assert "src/app.py changed while it was being sent" in line and "run fp again" in line
    again = run_fp(project.root, "sh", "-c", "cat src/app.py")
    assert again.returncode == 0, again.stderr
    assert again.stdout == b"print('app')\n"


def test_2_a_stalled_ssh_host_mid_run_ends_fp_within_the_bound(project: Project, remote: RemoteBench) -> None:
    assert run_fp(project.root, "--host", "primary", "true").returncode == 0
    process = start_in_group(project, "--host", "primary", "sh", "-c", "touch data/started; sleep 60")
    wait_for((remote.data_on("primary", project) / "started").exists, "the command to start", process)
    [master] = ssh_masters(remote)
    frozen = sshd_serving(master)
    for sshd in frozen:
        sshd.suspend()  # the host's end of the connection stops answering; the TCP connection stays up
    try:
        code, err, seconds = finish(process)
    finally:
        for sshd in frozen:
            sshd.resume()
    assert code == 125, err
    [line] = error_lines(err)
    assert "stopped answering" in line and "host 'primary'" in line
    assert seconds < STALL_BOUND
    assert states(project) == ["running"]
    docker("rm", "-f", *run_containers(project))
