"""Runs after their start, on the real bench: a detached run followed from new processes
(fp ps, fp logs -f, fp pull), fp stop, a Ctrl-C during fp pull, and fp gc removing exactly
what it lists."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import time

import pytest

from tests import testbed
from tests.integration.conftest import Project, RemoteBench, containers_of, docker, images_of, run_fp, start_in_group, wait_for

pytestmark = pytest.mark.engine

SLOW = """\
import os, sys, time
for tick in range(int(sys.argv[1])):
    print("tick", tick, flush=True)
    time.sleep(0.5)
os.makedirs("data/out", exist_ok=True)
open("data/out/slow.txt", "w").write("slow done\\n")
print("finished", flush=True)
"""


def started_id(completed) -> str:  # type: ignore[no-untyped-def]
    """The run id: the last word of what fp -d printed."""
    assert completed.returncode == 0, completed.stderr.decode()
    return completed.stderr.decode().split()[-1]


def state_of(project: Project, run_id: str, engine: str = "main") -> str:
    return docker("ps", "-a", "--filter", f"label=io.fireplug.run={run_id}", "--format", "{{.State}}", engine=engine).strip()


def test_a_detached_run_outlives_fp_shows_in_ps_follows_with_logs_and_pull_brings_it_back(project: Project, remote: RemoteBench) -> None:
    project.write("slow.py", SLOW)
    run_id = started_id(run_fp(project.root, "--host", "primary", "-d", "python", "slow.py", "8"))
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", run_id)
    assert state_of(project, run_id) == "running", "the run goes on after the fp that started it ended"

    listed = run_fp(project.root, "ps", "--json")  # a new process, from the labels and this machine's record
    [shown] = [entry for entry in json.loads(listed.stdout) if entry["id"] == run_id]
    assert (shown["host"], shown["state"], shown["command"]) == ("primary", "running", "python slow.py 8")
    assert run_id in run_fp(project.root, "ps").stdout.decode()

    followed = run_fp(project.root, "logs", "-f", run_id[-6:])  # its six hex digits name it
    assert followed.returncode == 0
    assert followed.stdout.decode().splitlines() == [f"tick {tick}" for tick in range(8)] + ["finished"]
    assert not (project.root / "data/out/slow.txt").exists(), "a detached run's results wait for fp pull"

    pulled = run_fp(project.root, "pull", run_id)
    assert pulled.returncode == 0, pulled.stderr.decode()
    assert (project.root / "data/out/slow.txt").read_text() == "slow done\n"
    assert state_of(project, run_id) == "", "an ended run is removed once its results came back"
    [gone] = [entry for entry in json.loads(run_fp(project.root, "ps", "--all", "--json").stdout) if entry["id"] == run_id]
    assert (gone["state"], gone["exit_code"]) == ("removed", 0)
    assert run_fp(project.root, "logs", run_id).stdout.decode().endswith("finished\n"), "its output was kept here"


def test_fp_stop_sends_sigint_then_kills_and_keeps_the_run_for_pull(project: Project, remote: RemoteBench) -> None:
    project.write(
        "trap.py",
        "import os, signal, sys, time\n"
        "def stop(signum, frame):\n"
        "    open('data/checkpoint', 'w').write('saved')\n"
        "    sys.exit(5)\n"
        "signal.signal(signal.SIGINT, stop)\n"
        "print('ready', flush=True)\n"
        "time.sleep(300)\n",
    )
    polite = started_id(run_fp(project.root, "--host", "second", "-d", "python", "trap.py"))
    stubborn = started_id(run_fp(project.root, "--host", "second", "-d", "sh", "-c", "trap '' INT; sleep 300"))
    wait_for(lambda: b"ready" in run_fp(project.root, "logs", polite).stdout, "the trap to be set")
    stopped = run_fp(project.root, "stop", polite)
    assert stopped.returncode == 0 and b"exit status 5" in stopped.stderr
    started = time.monotonic()
    killed = run_fp(project.root, "stop", "-t", "1", stubborn)
    assert killed.returncode == 0 and b"did not end within 1 s of SIGINT: killing it" in killed.stderr and b"exit status 137" in killed.stderr
    assert time.monotonic() - started < 15
    assert state_of(project, polite, "second") == "exited" and state_of(project, stubborn, "second") == "exited"
    assert run_fp(project.root, "pull", polite).returncode == 0
    assert (project.root / "data/checkpoint").read_text() == "saved"
    assert run_fp(project.root, "pull", stubborn).returncode == 0
    assert containers_of(project.name, "second") == []


def test_ctrl_c_during_fp_pull_of_a_big_result_leaves_no_partial_file_and_the_next_pull_finishes(project: Project, remote: RemoteBench) -> None:
    run_id = started_id(run_fp(project.root, "--host", "primary", "-d", "sh", "-c", "head -c 400000000 /dev/urandom > data/big.bin"))
    wait_for(lambda: state_of(project, run_id) == "exited", "the run to write its 400 MB", timeout=300)
    on_host = remote.data_on("primary", project) / "big.bin"
    digest = hashlib.sha256(on_host.read_bytes()).hexdigest()
    process = start_in_group(project, "pull", run_id)
    wait_for(lambda: any((project.root / "data").rglob(".fp-partial*")) or any((project.root / "data").rglob(".big.bin.*")), "the copy to start", process)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err.decode()
    local = project.root / "data/big.bin"
    assert not local.exists() or hashlib.sha256(local.read_bytes()).hexdigest() == digest, "never a partial file under its real name"
    assert state_of(project, run_id) == "exited", "an interrupted pull keeps the run"
    again = run_fp(project.root, "pull", run_id)
    assert again.returncode == 0, again.stderr.decode()
    assert hashlib.sha256(local.read_bytes()).hexdigest() == digest and state_of(project, run_id) == ""


def test_fp_gc_removes_exactly_what_it_lists(project: Project, remote: RemoteBench) -> None:
    for version in range(4):
        project.write("src/app.py", f"print({version})\n")
        assert run_fp(project.root, "--host", "primary", "true").returncode == 0
    images = images_of(project.name)
    assert len(images) == 4
    synced_run = started_id(run_fp(project.root, "--host", "primary", "-d", "true"))
    wait_for(lambda: state_of(project, synced_run) == "exited", "the run to end")
    assert run_fp(project.root, "--host", "primary", "--sync-in-only").returncode == 0  # its results came back: this sync was after its end
    kept_run = started_id(run_fp(project.root, "--host", "primary", "-d", "true"))
    wait_for(lambda: state_of(project, kept_run) == "exited", "the run to end")
    old_trash = remote.trash_on("primary", project) / "20200101T000000"
    (old_trash / "sub").mkdir(parents=True)
    (old_trash / "sub" / "old.bin").write_bytes(b"x" * 10_000)
    for path in (old_trash.parent, old_trash, old_trash / "sub", old_trash / "sub" / "old.bin"):
        shutil.chown(path, testbed.SSH_USER, testbed.SSH_USER)  # the trash is the ssh user's, as a sync leaves it
    os.utime(old_trash, (time.time() - 30 * 86400,) * 2)

    listed = run_fp(project.root, "gc", "--host", "primary", "--keep", "2", "--dry-run").stderr.decode()
    would = re.findall(r"would remove (\S+) (?:image )?(\S+) ", listed)
    named = {name for _, name in would}
    [kept] = re.findall(r"kept \d+ ended runs whose results were not brought back \(fp pull ID\): (.*)", listed)
    assert kept_run in kept and synced_run not in kept  # (the engine may hold other projects' runs too)
    assert synced_run in named and str(old_trash) in named
    old_images = [name for kind, name in would if kind == "image" and name.startswith(f"fp-{project.key}:")]
    assert len(old_images) == 2, listed
    assert images_of(project.name) == images and state_of(project, synced_run) == "exited" and old_trash.is_dir(), "a dry run removes nothing"

    removed = run_fp(project.root, "gc", "--host", "primary", "--keep", "2").stderr.decode()
    assert set(re.findall(r"removing (?:\S+ )?(?:image )?(\S+) ", removed)) == named
    assert len(images_of(project.name)) == 2 and state_of(project, synced_run) == "" and not old_trash.exists()
    assert state_of(project, kept_run) == "exited", "a run whose results did not come back stays"
    assert "nothing to remove" in run_fp(project.root, "gc", "--host", "primary", "--keep", "2").stderr.decode()
    assert run_fp(project.root, "pull", kept_run).returncode == 0


def test_fp_gc_on_a_host_without_ssh_finds_and_removes_old_trash_through_the_api(project: Project, remote: RemoteBench) -> None:
    data_root = remote.data_root("apionly")
    remote.add_hosts(f'[hosts.apionly]\nurl = "tcp://127.0.0.1:{testbed.TLS_PORT}"\ncert_path = "{testbed.CERTS}"\ndata_root = "{data_root}"\n')
    assert run_fp(project.root, "--host", "apionly", "true").returncode == 0
    old_trash = remote.trash_on("apionly", project) / "20200101T000000"
    old_trash.mkdir(parents=True)
    (old_trash / "old.bin").write_bytes(b"x" * 10_000)
    os.utime(old_trash, (time.time() - 30 * 86400,) * 2)
    listed = run_fp(project.root, "gc", "--host", "apionly", "--dry-run")
    assert listed.returncode == 0 and b"Traceback" not in listed.stderr, listed.stderr.decode()
    assert str(old_trash).encode() in listed.stderr and old_trash.is_dir()
    removed = run_fp(project.root, "gc", "--host", "apionly")
    assert removed.returncode == 0, removed.stderr.decode()
    assert not old_trash.exists() and remote.trash_on("apionly", project).is_dir()
