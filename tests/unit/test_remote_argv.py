"""ssh and rsync argv building, rsync output parsing, redaction, and user-config editing."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from fireplug.cli import console
from fireplug.config import Source, load
from fireplug.config.user import add_host, remove_host
from fireplug.errors import UsageError
from fireplug.hosts.address import SshSettings, SshTarget, parse_ssh_url
from fireplug.hosts.ssh import (
    SshConnection,
    SshError,
    cipher_preference,
    control_path,
    cpu_has_aes,
    engine_endpoint,
    ssh_options,
)
from fireplug.support.proc import Completed, run
from fireplug.support.secrets import redact
from fireplug.sync.rsync import _latest_progress, move_script, parse_stats, pull_argv, push_argv, rsync_failure
from fireplug.sync.tree import parse_digests


@pytest.mark.parametrize(
    ("url", "target"),
    [
        pytest.param("ssh://aws02", SshTarget("aws02"), id="alias-only"),
        pytest.param("ssh://ada@10.0.0.5:2222", SshTarget("10.0.0.5", "ada", 2222), id="user-and-port"),
    ],
)
def test_parse_ssh_url(url: str, target: SshTarget) -> None:
    assert parse_ssh_url(url) == target


def test_ssh_options_leave_unset_fields_to_the_users_ssh_config() -> None:
    argv = ssh_options(SshTarget("aws02"), SshSettings(), "/run/ctl")
    assert "-p" not in argv and "-l" not in argv and "-i" not in argv and "-F" not in argv
    assert "BatchMode=yes" in argv and "ControlPath=/run/ctl" in argv
    full = ssh_options(SshTarget("h", "ada", 2222, "/k ey"), SshSettings(config_file="/cfg"), "/c")
    assert full[:3] == ["ssh", "-F", "/cfg"]
    assert full[-8:] == ["-l", "ada", "-p", "2222", "-i", "/k ey", "-o", "IdentitiesOnly=yes"]


def test_control_paths_are_short_and_distinct() -> None:
    settings = SshSettings(control_dir="/run/user/1000/fireplug-ssh")
    one, two = control_path(SshTarget("a"), settings), control_path(SshTarget("a", port=2222), settings)
    assert one != two and len(one) < 60


@pytest.mark.parametrize(
    ("docker_host", "endpoint"),
    [("", "/var/run/docker.sock"), ("unix:///run/docker2.sock", "/run/docker2.sock"), ("tcp://127.0.0.1:2375", "127.0.0.1:2375")],
)
def test_engine_endpoint_follows_the_hosts_docker_host(docker_host: str, endpoint: str) -> None:
    assert engine_endpoint(docker_host) == endpoint


def test_rsync_copies_exactly_the_planned_paths_safely_and_never_deletes() -> None:
    argv = push_argv("ssh -p 22", "h", Path("/p/my data"), "/data/p/my data", Path("/tmp/l"), "/data/p/.fp-trash/B", progress=False)
    for option in ("--partial-dir=.fp-partial", "--ignore-times", "--no-devices", "--no-specials", "--chmod=ug-s", "--no-owner", "--no-group", "--from0"):
        assert option in argv
    assert "--files-from=/tmp/l" in argv and "--backup-dir=/data/p/.fp-trash/B" in argv
    assert not [word for word in argv if word.startswith("--delete") or word == "--partial"]
    assert argv[argv.index("--rsync-path") + 1] == "mkdir -p -- '/data/p/my data' && rsync"
    assert argv[-2:] == ["/p/my data/", "h:/data/p/my data/"]
    pull = pull_argv("ssh", "h", "/d/data", Path("/p/data"), Path("/tmp/l"), Path("/state/trash/B"), progress=False)
    assert pull[-2:] == ["h:/d/data/", "/p/data/"] and "--backup-dir=/state/trash/B" in pull and "--rsync-path" not in pull


def test_rsync_stats_are_parsed() -> None:
    output = b"Number of regular files transferred: 3\nTotal transferred file size: 1048576 bytes\nTotal bytes sent: 1200\nTotal bytes received: 1049000\n"
    found = parse_stats(output)
    assert (found.files, found.file_bytes, found.wire_bytes) == (3, 1048576, 1050200)


def test_host_moves_are_one_quoted_script_that_names_what_failed() -> None:
    script = move_script("/d/my data", [("r.txt", "r.fp-conflict-h-1.txt")], ["a b/c"], "/d/.fp-trash/B")
    assert "cd -- '/d/my data' || exit 1" in script
    assert "mv -T -- r.txt r.fp-conflict-h-1.txt || failed r.txt" in script
    assert "{ mkdir -p -- '/d/.fp-trash/B/a b' && mv -T -- 'a b/c' '/d/.fp-trash/B/a b/c'; } || failed 'a b/c'" in script


def test_host_digests_are_parsed_whatever_the_names() -> None:
    digest = "a" * 64
    assert parse_digests(f"{digest}  x y\n".encode() + b"\0" + f"{digest}  z".encode() + b"\0") == {"x y\n": digest, "z": digest}


def test_verbose_argv_hides_secret_values() -> None:
    shown = redact(["docker", "run", "-e", "AWS_SECRET_ACCESS_KEY=abc", "-e", "HF_TOKEN=t", "-e", "LANG=C", "--password=x"])
    assert shown == ["docker", "run", "-e", "AWS_SECRET_ACCESS_KEY=***", "-e", "HF_TOKEN=***", "-e", "LANG=C", "--password=***"]


def hosts_in(path: Path) -> dict[str, str]:
    return {name: settings.url for name, settings in load([Source(str(path), path.read_text())], {}, {}, root=Path("/")).hosts.items()}


def test_hosts_add_and_rm_edit_the_user_config_keeping_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('# my settings\n[run]\nuser = "root"\n\n[hosts.old]\nurl = "ssh://old"\n[hosts.old.labels]\ngpus = "1"\n\n[build]\nbase_image = "x"\n')
    add_host(path, "aws02", {"url": "ssh://ada@aws02", "ssh_key": 'C:\\keys\\"k"', "data_root": "/scratch"})
    assert hosts_in(path) == {"old": "ssh://old", "aws02": "ssh://ada@aws02"}
    with pytest.raises(UsageError, match="already in"):
        add_host(path, "aws02", {"url": "ssh://x"})
    remove_host(path, "old")
    text = path.read_text()
    assert hosts_in(path) == {"aws02": "ssh://ada@aws02"}
    assert text.startswith('# my settings\n[run]\nuser = "root"\n') and 'base_image = "x"' in text and "gpus" not in text
    with pytest.raises(UsageError, match="no host 'old'"):
        remove_host(path, "old")


def test_hosts_add_creates_a_missing_config(tmp_path: Path) -> None:
    path = tmp_path / "new" / "config.toml"
    add_host(path, "a", {"url": "ssh://a", "ssh_port": 2222})
    assert hosts_in(path) == {"a": "ssh://a"}


@pytest.mark.parametrize(
    ("stderr", "expected"),
    [
        pytest.param(
            b"sh: 1: rsync: not found\nrsync: connection unexpectedly closed (0 bytes received so far) [sender]\n",
            "rsync is not installed on the host",
            id="no-rsync",
        ),
        pytest.param(b"mkdir: cannot create directory '/data': Permission denied\n", "set data_root", id="data-root-not-writable"),
        pytest.param(b"rsync: [sender] write error: Broken pipe (32)\n", "rsync exited with status 12: rsync: [sender] write error", id="other"),
    ],
)
def test_rsync_failures_are_one_actionable_line(stderr: bytes, expected: str) -> None:
    detail, hint = rsync_failure(Completed(("rsync",), 12, b"", stderr, 0.1))
    assert expected in f"{detail}; {hint}" and "\n" not in detail + hint


def helper(*argv: str) -> bytes:
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "fireplug.remote.sync_helper", *argv], capture_output=True, check=True).stdout


def test_api_sync_helper_stages_files_folders_and_links_but_nothing_else(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fireplug.remote import sync_helper as helper_module

    data, staging = tmp_path / "data", tmp_path / ".fp-staging-1"
    (data / "empty").mkdir(parents=True)
    (data / "old.txt").write_bytes(b"x")
    (data / "new.txt").write_bytes(b"y")
    os.symlink("/etc/passwd", data / "link")
    os.mkfifo(data / "fifo")
    os.utime(data / "old.txt", ns=(1, 1_700_000_000_123_456_789))
    (tmp_path / "paths").write_bytes(b"empty\0old.txt\0new.txt\0link\0fifo\0")
    helper("stage", str(data), str(staging), str(tmp_path / "paths"))
    assert sorted(path.name for path in staging.iterdir()) == ["empty", "link", "new.txt", "old.txt"]
    assert os.readlink(staging / "link") == "/etc/passwd"
    assert (staging / "new.txt").stat().st_ino != (data / "new.txt").stat().st_ino  # changed just now: a copy
    assert (staging / "old.txt").stat().st_mtime_ns == 1_700_000_000_123_456_789
    helper("remove", str(staging))
    monkeypatch.setattr(helper_module, "STILL_NS", -(10**12))
    helper_module.stage(str(data), str(staging), ["old.txt"])
    assert (staging / "old.txt").stat().st_ino == (data / "old.txt").stat().st_ino  # settled: a hard link
    helper("remove", str(staging))
    assert not staging.exists()


def test_api_sync_helper_install_never_writes_through_a_symlink(tmp_path: Path) -> None:
    data, stage, outside = tmp_path / "data", tmp_path / "stage", tmp_path / "outside"
    for folder in (data, stage / "planted", stage / "fine", outside):
        folder.mkdir(parents=True)
    os.symlink(outside, data / "planted")
    (stage / "planted/chain.txt").write_text("x")
    (stage / "fine/r.txt").write_text("r")
    (data / "fine").mkdir()
    (data / "fine/r.txt").write_text("old")
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "fireplug.remote.sync_helper", "install", str(data), str(stage), str(tmp_path / "trash/B"), str(tmp_path / "trash")],
        capture_output=True,
        check=True,
    )
    assert b"refused planted" in done.stderr and list(outside.iterdir()) == []
    assert b"fine/r.txt" in done.stdout  # the listing after the install
    assert (data / "fine/r.txt").read_text() == "r" and (tmp_path / "trash/B/fine/r.txt").read_text() == "old"


def test_rsync_progress_is_shown_in_human_units() -> None:
    block = b"         32,768   0%    0.00kB/s    0:00:00  \r     50,000,000 100%  953.05MB/s    0:00:00 (xfr#1, to-chk=0/2)\n"
    assert _latest_progress(block) == "50.0 MB (100%), 999.3 MB/s, 0:00:00 left"
    assert _latest_progress(b"sent 1,024 bytes  received 35 bytes\n") == ""


def test_progress_without_a_terminal_is_a_plain_line_every_few_seconds(capfd: pytest.CaptureFixture[str]) -> None:
    with console.Progress("syncing data to host 'h'", every=0.0) as progress:  # stderr is captured: not a terminal
        transfer = console.Transfer(progress, 2_000_000_000)
        transfer.started -= 10
        transfer.moved(1_000_000_000)
    err = capfd.readouterr().err
    assert err == "fp: syncing data to host 'h': 1.0 GB of 2.0 GB (50%), 100.0 MB/s, 0:00:10 left\n"
    with console.Progress("quiet", every=3600.0) as progress:
        progress.update("not yet")
    assert capfd.readouterr().err == ""


DEFAULT_CIPHERS = "chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,aes128-gcm@openssh.com,aes256-gcm@openssh.com"
GCM_FIRST = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr"
CIPHER_CASES = {  # ssh -G's list for the host, ssh's built-in list, what fp asks for
    "default-list": (DEFAULT_CIPHERS, DEFAULT_CIPHERS, GCM_FIRST),
    "users-own-list": ("chacha20-poly1305@openssh.com,aes256-ctr", DEFAULT_CIPHERS, ""),
    "already-gcm-first": (GCM_FIRST, GCM_FIRST, ""),
    "no-gcm-offered": ("chacha20-poly1305@openssh.com,aes128-ctr", "chacha20-poly1305@openssh.com,aes128-ctr", ""),
    "ssh-G-failed": ("", DEFAULT_CIPHERS, ""),
}


@pytest.mark.parametrize(("effective", "default", "expected"), CIPHER_CASES.values(), ids=CIPHER_CASES.keys())
def test_aes_gcm_goes_first_only_when_nobody_chose_the_ciphers(effective: str, default: str, expected: str) -> None:
    assert cipher_preference(effective, default) == expected


def test_aes_instructions_are_read_from_cpuinfo() -> None:
    assert cpu_has_aes("processor\t: 0\nflags\t\t: fpu sse2 aes avx2\n")
    assert cpu_has_aes("Features\t: fp asimd aes pmull sha1\n")
    assert not cpu_has_aes("flags\t\t: fpu sse2 avx2 vaes_like\nmodel name\t: aes\n")


def test_a_chatty_tools_output_arrives_whole_and_in_batches() -> None:
    script = "import sys, time\nfor i in range(300):\n    print(i, flush=True)\n    time.sleep(0.001)\n"
    blocks: list[bytes] = []
    completed = run([sys.executable, "-c", script], timeout=30, what="printer", on_output=blocks.append, output_pace=0.05)
    assert completed.returncode == 0 and b"".join(blocks) == "".join(f"{i}\n" for i in range(300)).encode()
    assert len(blocks) <= 20  # ~0.35 s of printing, read every 50 ms, not once per line


@pytest.mark.parametrize("key", ["/nonexistent/id_ed25519", "missing_key"])
def test_a_missing_ssh_key_fails_before_ssh_runs_instead_of_ssh_using_another_key(tmp_path: Path, key: str) -> None:
    """ssh only warns about a missing -i file, then logs in with whatever key it has."""
    connection = SshConnection("lab", SshTarget("127.0.0.1", "u", 9, key), SshSettings(control_dir=str(tmp_path / "control")))
    with pytest.raises(SshError, match=rf"host 'lab'.*its ssh key {key} does not exist; fix ssh_key in \[hosts.lab\]"):
        connection.ensure_master()
    assert not list((tmp_path / "control").glob("*.log"))  # no ssh was started
