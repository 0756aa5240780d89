"""Remote hosts for real: sshd on 127.0.0.1, a second dockerd, a TLS dockerd; rsync and API sync."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import testbed
from tests.integration.conftest import Project, RemoteBench, docker, run_fp

pytestmark = pytest.mark.engine


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fill_data(project: Project) -> dict[str, str]:
    """A data folder with binary, nested, empty and oddly named files; their checksums."""
    files = {
        "data/raw/matrix.bin": os.urandom(3 * 1024 * 1024 + 17),
        "data/raw/deep/er/notes with spaces.txt": "héllo\n".encode(),
        "data/empty.csv": b"",
        "data/table.csv": b"a,b\n1,2\n" * 1000,
    }
    for relative, content in files.items():
        project.write(relative, content)
    return {relative: hashlib.sha256(content).hexdigest() for relative, content in files.items()}


CHECKSUM_AND_WRITE = (
    "cd data && find . -type f ! -path './results/*' -exec sha256sum {} + | sort -k2 > /tmp/sums && mkdir -p results && "
    "cp /tmp/sums results/inputs.sha256 && head -c 1048576 /dev/urandom > results/model.bin && "
    "sha256sum results/model.bin > results/model.sha256"
)


def add_tls_api_host(remote: RemoteBench) -> None:
    """'tlsapi': the TLS engine with no ssh settings, so data goes through the Docker API."""
    remote.add_hosts(f'[hosts.tlsapi]\nurl = "tcp://127.0.0.1:{testbed.TLS_PORT}"\ncert_path = "{testbed.CERTS}"\ndata_root = "{remote.data_root("tlsapi")}"\n')


def checksum_round(fp, project: Project, remote: RemoteBench, host: str) -> tuple[dict[str, str], Path, Any]:  # type: ignore[no-untyped-def]
    """Fill the data folder, run CHECKSUM_AND_WRITE on ``host``, and check the host got every byte.

    Returns the local checksums, the host's copy of the data folder and fp's result.
    """
    sums = fill_data(project)
    result = fp(project.root, "--host", host, "sh", "-c", CHECKSUM_AND_WRITE)
    assert result.code == 0, result.err
    on_host = remote.data_on(host, project)
    for relative, digest in sums.items():
        assert sha256(on_host / relative.removeprefix("data/")) == digest
    return sums, on_host, result


def test_data_goes_in_and_results_come_back_byte_identical(fp, project: Project, remote: RemoteBench) -> None:
    sums, on_host, result = checksum_round(fp, project, remote, "primary")
    seen_inside = dict(reversed(line.split("  ./", 1)) for line in (project.root / "data/results/inputs.sha256").read_text().splitlines())
    assert seen_inside == {relative.removeprefix("data/"): digest for relative, digest in sums.items()}
    model = project.root / "data/results/model.bin"
    assert model.stat().st_size == 1048576
    assert (project.root / "data/results/model.sha256").read_text().split()[0] == sha256(model) == sha256(on_host / "results/model.bin")
    assert "synced 4 files" in result.err and "from host 'primary'" in result.err


def test_a_second_sync_of_unchanged_data_moves_nothing_and_one_change_moves_one_file(fp, project: Project, remote: RemoteBench) -> None:
    fill_data(project)
    assert fp(project.root, "--host", "primary", "--sync-in-only").code == 0
    again = fp(project.root, "--host", "primary", "--sync-in-only", "-v")
    assert again.code == 0
    assert "data and host 'primary' in sync: nothing changed" in again.err
    project.write("data/table.csv", b"changed\n")
    changed = fp(project.root, "--host", "primary", "--sync-in-only", "-v")
    assert "synced 1 files (8 B) to host 'primary'" in changed.err
    assert (remote.data_on("primary", project) / "table.csv").read_bytes() == b"changed\n"
    # A host that lost the data gets all of it again, though nothing changed here.
    shutil.rmtree(remote.data_on("primary", project))
    restored = fp(project.root, "--host", "primary", "--sync-in-only")
    assert "synced 4 files" in restored.err, restored.err
    assert (remote.data_on("primary", project) / "raw/matrix.bin").stat().st_size == 3 * 1024 * 1024 + 17
    # The host is listed at every sync: an edit made there by hand comes back.
    (remote.data_on("primary", project) / "table.csv").write_bytes(b"edited on the host")
    assert "1 files (18 B) from host 'primary'" in fp(project.root, "--host", "primary", "--sync-in-only").err
    assert (project.root / "data/table.csv").read_bytes() == b"edited on the host"
    (project.root / "data/raw/empty-for-outputs").mkdir()
    assert fp(project.root, "--host", "primary", "--sync-in-only").code == 0
    assert (remote.data_on("primary", project) / "raw/empty-for-outputs").is_dir()


def test_results_come_back_after_an_interrupted_command(project: Project, remote: RemoteBench) -> None:
    project.write("wait.sh", "echo started > data/progress.txt\ntrap 'echo checkpoint > data/progress.txt; exit 130' INT\nwhile :; do sleep 0.1; done\n")
    process = subprocess.Popen([*run_fp_command(), "--host", "primary", "sh", "wait.sh"], cwd=project.root, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    host_copy = remote.data_on("primary", project) / "progress.txt"
    deadline = time.monotonic() + 120
    while not host_copy.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(2)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert (project.root / "data/progress.txt").read_text() == "checkpoint\n"


def run_fp_command() -> list[str]:
    from tests.integration.conftest import fp_command

    return fp_command()


def test_no_run_flags_do_only_their_steps(fp, project: Project, remote: RemoteBench) -> None:
    project.write("data/in.txt", "x")
    on_host = remote.data_on("primary", project)
    assert fp(project.root, "--host", "primary", "--no-run").code == 0
    assert (on_host / "in.txt").read_text() == "x"
    (on_host / "made-there.txt").write_text("there")
    assert fp(project.root, "--host", "primary", "--no-sync", "--no-build", "sh", "-c", "test ! -e data/made-here.txt").code == 0
    assert not (project.root / "data/made-there.txt").exists()
    assert fp(project.root, "--host", "primary", "--sync-out-only").code == 0
    assert (project.root / "data/made-there.txt").read_text() == "there"


def test_idle_host_choice_prefers_the_host_without_a_running_fp_job_then_the_one_with_the_data(fp, project: Project, remote: RemoteBench) -> None:
    busy = docker(
        "run", "-d", "--label", "io.fireplug.kind=run", "--label", f"io.fireplug.project={project.name}", "debian:bookworm-slim", "sleep", "120"
    ).strip()
    try:
        result = fp(project.root, "sh", "-c", "echo ran")
        assert result.code == 0, result.err
        assert "host 'second' (idle: no fp job running" in result.err
    finally:
        docker("rm", "-f", busy)
    quiet = fp(project.root, "true")  # both idle now: the host that holds the data wins
    assert "host 'second' (idle: no fp job running" in quiet.err and "holds this project's data)" in quiet.err


def test_api_sync_against_the_tls_host(fp, project: Project, remote: RemoteBench) -> None:
    add_tls_api_host(remote)
    _, on_host, _ = checksum_round(fp, project, remote, "tlsapi")
    assert sha256(project.root / "data/results/model.bin") == sha256(on_host / "results/model.bin")
    again = fp(project.root, "--host", "tlsapi", "--sync-in-only")
    assert "data and host 'tlsapi' in sync: nothing changed" in again.err
    project.write("data/results/model.bin", b"edited here")
    out = fp(project.root, "--host", "tlsapi", "--sync-out-only")
    assert (project.root / "data/results/model.bin").read_bytes() == (on_host / "results/model.bin").read_bytes() == b"edited here"
    assert "synced 1 files (11 B) to host 'tlsapi'" in out.err


def test_docker_machine_host_runs_over_tls_with_rsync(fp, project: Project, remote: RemoteBench, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MACHINE_STORAGE_PATH", str(testbed.MACHINE_STORE))
    remote.add_hosts(f'[hosts.{testbed.MACHINE_NAME}]\ndata_root = "{remote.data_root("machine")}"\n')
    project.write("data/in.txt", "via machine")
    result = fp(project.root, "--host", testbed.MACHINE_NAME, "sh", "-c", "cat data/in.txt > data/out.txt")
    assert result.code == 0, result.err
    assert (project.root / "data/out.txt").read_text() == "via machine"
    assert (remote.data_on("machine", project) / "out.txt").exists()


def test_docker_context_host_runs(fp, project: Project, remote: RemoteBench, isolated_home: Path) -> None:
    docker_config = isolated_home / ".docker"
    subprocess.run(["docker", "--config", str(docker_config), "context", "create", "ctx2", "--docker", "host=ssh://fp-second"], check=True, capture_output=True)
    remote.add_hosts(f'[hosts.ctx2]\ndata_root = "{remote.data_root("ctx2")}"\n')
    result = fp(project.root, "--host", "ctx2", "sh", "-c", "echo $HOSTNAME > /dev/null; echo ok > data/ctx.txt")
    assert result.code == 0, result.err
    assert (project.root / "data/ctx.txt").read_text() == "ok\n"
    assert docker("ps", "-aq", "--filter", f"label=io.fireplug.project={project.name}", engine="second") == ""


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word (a hung host)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield listener.getsockname()[1]
    listener.close()


def test_fp_hosts_lists_every_source_reachable_or_not_within_the_timeout(fp, project: Project, remote: RemoteBench, monkeypatch, silent_port: int) -> None:
    monkeypatch.setenv("MACHINE_STORAGE_PATH", str(testbed.MACHINE_STORE))
    subprocess.run(["docker", "context", "create", "ctx2", "--docker", "host=ssh://fp-second"], check=True, capture_output=True)
    remote.add_hosts(
        f'[hosts.refused]\nurl = "ssh://root@127.0.0.1:{testbed.CLOSED_PORT}"\n\n'
        f'[hosts.hung]\nurl = "ssh://root@127.0.0.1:{silent_port}"\n\n'
        f'[hosts.tcpdead]\nurl = "tcp://127.0.0.1:{testbed.CLOSED_PORT}"\n'
    )
    started = time.monotonic()
    result = fp(project.root, "hosts", "--json", "--timeout", "3")
    elapsed = time.monotonic() - started
    assert result.code == 0, result.err
    listed = {entry["name"]: entry for entry in json.loads(result.out)}
    assert set(listed) == {testbed.MACHINE_NAME, "ctx2", "primary", "second", "refused", "hung", "tcpdead", "local"}
    assert [entry["name"] for entry in json.loads(result.out)][-1] == "local"
    assert {name: entry["source"] for name, entry in listed.items() if name in (testbed.MACHINE_NAME, "ctx2", "primary")} == {
        testbed.MACHINE_NAME: "docker-machine",
        "ctx2": "docker context",
        "primary": "config",
    }
    for name in (testbed.MACHINE_NAME, "ctx2", "primary", "second", "local"):
        assert listed[name]["reachable"] is True, listed[name]
        assert listed[name]["cpus"] > 0 and listed[name]["memory"] > 0 and listed[name]["running_jobs"] >= 0
    assert listed["primary"]["free_bytes"] > 0
    for name in ("refused", "hung", "tcpdead"):
        assert listed[name]["reachable"] is False and listed[name]["reason"]
    assert "refused" in listed["refused"]["reason"].lower() and "refused" in listed["tcpdead"]["reason"].lower()
    assert elapsed < 3 + 3, f"fp hosts took {elapsed:.1f} s with a 3 s timeout"
    table = fp(project.root, "hosts", "--timeout", "3")
    assert "unreachable" in table.out and "primary" in table.out


def test_unknown_and_dead_hosts_fail_in_one_line_with_125(fp, project: Project, remote: RemoteBench) -> None:
    remote.add_hosts(f'[hosts.refused]\nurl = "ssh://root@127.0.0.1:{testbed.CLOSED_PORT}"\n')
    unknown = fp(project.root, "--host", "nope", "true")
    assert unknown.code == 125 and "unknown host 'nope' (known hosts: primary, second, refused, local)" in unknown.err
    dead = fp(project.root, "--host", "refused", "true")
    assert dead.code == 125
    assert len(dead.err.strip().splitlines()) == 1 and "host 'refused'" in dead.err and "Connection refused" in dead.err


def test_a_bad_key_fails_in_one_line(fp, project: Project, remote: RemoteBench, isolated_home: Path) -> None:
    (isolated_home / "ssh_config").write_text(ssh_client_config_without_key(isolated_home))
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(isolated_home / "stranger")], check=True)
    remote.add_hosts(f'[hosts.stranger]\nurl = "ssh://{testbed.SSH_USER}@127.0.0.1:{testbed.SSH_PORT}"\nssh_key = "{isolated_home / "stranger"}"\n')
    result = fp(project.root, "--host", "stranger", "true")
    assert result.code == 125
    assert len(result.err.strip().splitlines()) == 1 and "Permission denied" in result.err and "ssh_key" in result.err


def test_a_missing_ssh_key_fails_in_one_line_instead_of_ssh_using_another_key(fp, project: Project, remote: RemoteBench) -> None:
    """The ssh config's own key would let ssh in: a key named for the host that is not there must
    not be silently replaced by it."""
    remote.add_hosts(
        f'[hosts.keyless]\nurl = "ssh://{testbed.SSH_USER}@127.0.0.1:{testbed.SSH_PORT}"\ndata_root = "{remote.data_root("primary")}"\n'
        'ssh_key = "/nonexistent/id_ed25519"\n'
    )
    result = fp(project.root, "--host", "keyless", "true")
    assert result.code == 125 and len(result.err.strip().splitlines()) == 1, result.err
    assert "its ssh key /nonexistent/id_ed25519 does not exist" in result.err and "[hosts.keyless]" in result.err


def ssh_client_config_without_key(home: Path) -> str:
    from tests.integration.conftest import ssh_client_config

    return ssh_client_config(home, with_key=False)


def test_fp_hosts_add_and_rm_edit_the_user_config(fp, project: Project, remote: RemoteBench) -> None:
    added = fp(project.root, "hosts", "add", "extra", f"ssh://{testbed.SSH_USER}@127.0.0.1:{testbed.SSH_PORT}", "--data-root", "/tmp/x")
    assert added.code == 0, added.err
    listed = {entry["name"]: entry for entry in json.loads(fp(project.root, "hosts", "--json").out)}
    assert listed["extra"]["reachable"] is True and listed["extra"]["data_root"] == "/tmp/x"
    assert fp(project.root, "hosts", "rm", "extra").code == 0
    assert "extra" not in remote.config.read_text()
    assert "primary" in remote.config.read_text()


def test_fp_runs_as_a_real_process_on_a_remote_host(project: Project, remote: RemoteBench) -> None:
    project.write("data/in.txt", "piped")
    done = run_fp(project.root, "--host", "second", "sh", "-c", "cat data/in.txt; cat; exit 4", input=b" and stdin")
    assert done.returncode == 4, done.stderr
    assert done.stdout == b"piped and stdin"


def test_stdin_ends_and_output_stays_clean_on_the_tls_host(project: Project, remote: RemoteBench) -> None:
    """Closing stdin over TLS must not tear down the TLS session the output still comes through."""
    add_tls_api_host(remote)
    payload = os.urandom(300_000).hex().encode()
    done = run_fp(project.root, "--host", "tlsapi", "--no-sync", "sh", "-c", "sha256sum; sleep 0.5; echo after-eof; exit 5", input=payload)
    assert done.returncode == 5, done.stderr
    assert done.stdout == f"{hashlib.sha256(payload).hexdigest()}  -\nafter-eof\n".encode()


def test_results_that_cannot_come_back_fail_with_125_and_the_commands_status(fp, project: Project, remote: RemoteBench) -> None:
    project.write("fireplug.toml", f'[project]\nname = "{project.name}"\n\n[run]\nuser = "root"\n')
    result = fp(project.root, "--host", "primary", "sh", "-c", "mkdir -m 700 data/locked && echo x > data/locked/f && echo ok > data/fine.txt")
    assert result.code == 125
    lines = [line for line in result.err.splitlines() if line.startswith("fp: error:")]
    assert len(lines) == 1 and "syncing data with host 'primary' failed" in lines[0] and "Permission denied" in lines[0]
    assert "(the command itself exited with status 0)" in lines[0]
    assert (project.root / "data/fine.txt").read_text() == "ok\n"  # what could come back did


def test_a_failing_sync_helper_is_one_error_and_leaves_no_container(tmp_path: Path, remote_engines: None) -> None:
    from fireplug.errors import FireplugError
    from fireplug.hosts.engine import Engine
    from fireplug.hosts.transport import TlsFiles, connector_for
    from fireplug.sync.api import ApiHost

    url = f"tcp://127.0.0.1:{testbed.TLS_PORT}"
    engine = Engine("tlsapi", url, connector=connector_for("tlsapi", url, TlsFiles.in_folder(str(testbed.CERTS))))
    engine.negotiate()
    label = f"fpt-{os.urandom(4).hex()}"
    host_side = ApiHost(engine, "debian:bookworm-slim", {"io.fireplug.project": label}, str(tmp_path / "remote"), "data")  # no python3 there
    with pytest.raises(FireplugError, match=r"host 'tlsapi'.*python3.*not found") as failed:
        host_side.list()
    assert "\n" not in str(failed.value)
    assert docker("ps", "-aq", "--filter", f"label=io.fireplug.project={label}", engine="tls") == ""


def test_a_host_without_rsync_fails_in_one_line(fp, project: Project, remote: RemoteBench) -> None:
    remote.add_hosts(f'[hosts.bare]\nurl = "ssh://{testbed.SSH_USER}@127.0.0.1:{testbed.NO_RSYNC_SSH_PORT}"\ndata_root = "{remote.data_root("bare")}"\n')
    project.write("data/in.txt", "x")
    result = fp(project.root, "--host", "bare", "true")
    assert result.code == 125
    lines = [line for line in result.err.splitlines() if line.strip() and not line.startswith("fp: building")]
    errors = [line for line in lines if line.startswith("fp: error:")]
    assert len(errors) == 1 and "host 'bare'" in errors[0] and "rsync is not installed on the host" in errors[0], result.err


def test_a_dry_run_tells_the_data_plan_and_changes_nothing(fp, project: Project, remote: RemoteBench) -> None:
    project.write("data/a.txt", "aaa")
    project.write("data/b.txt", "bbb")
    first = fp(project.root, "--dry-run", "--host", "primary", "true")
    assert first.code == 0, first.err
    expected = "data      data/: 2 files, 6 B; in: 2 entries (6 B) to send, 0 deleted here to move to the host's trash (first sync with host 'primary')"
    assert expected in first.out
    assert not remote.data_on("primary", project).exists()
    assert fp(project.root, "--host", "primary", "--sync-in-only").code == 0
    project.write("data/a.txt", "aaaa")
    (project.root / "data/b.txt").unlink()
    os.symlink("/etc/passwd", project.root / "data/passwd")
    plan = fp(project.root, "--dry-run", "--host", "primary", "true")
    assert "in: 2 entries (4 B) to send, 1 deleted here to move to the host's trash (against host 'primary' as the last sync left it" in plan.out
    assert "warning   symlinks pointing outside the data folder (dangling on the host): passwd" in plan.out
    assert (remote.data_on("primary", project) / "a.txt").read_text() == "aaa" and (remote.data_on("primary", project) / "b.txt").exists()
