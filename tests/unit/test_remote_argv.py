"""ssh and rsync argv building, rsync output parsing, redaction, and user-config editing."""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

import pytest

from fireplug.config import Source, load
from fireplug.errors import UsageError
from fireplug.proc import Completed, redact
from fireplug.ssh import SshSettings, SshTarget, control_path, engine_endpoint, parse_ssh_url, ssh_options
from fireplug.sync.rsync import listed_sync_in_argv, parse_report, rsync_failure, sync_in_argv, sync_out_argv
from fireplug.sync.state import SyncRecord, changed_since, marker_path, snapshot
from fireplug.userconfig import add_host, remove_host


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


def test_rsync_in_creates_the_folder_and_never_deletes() -> None:
    argv = sync_in_argv("ssh -p 22", "h", Path("/p/my data"), "/data/p/my data", progress=False)
    assert argv[:3] == ["rsync", "-a", "--partial"] and "--delete" not in argv
    assert argv[argv.index("--rsync-path") + 1] == "mkdir -p -- '/data/p/my data' && rsync"
    assert argv[-2:] == ["/p/my data/", "h:/data/p/my data/"]


def test_rsync_out_keeps_newer_local_files_and_brings_each_result_folder() -> None:
    argv = sync_out_argv("ssh", "h", "/data/p/data", Path("/p/data"), ["results", "logs/run"], progress=False)
    assert "--update" in argv and "-R" in argv and "--delete" not in argv
    assert argv[-3:] == ["h:/data/p/data/./results/", "h:/data/p/data/./logs/run/", "/p/data/"]
    assert shlex.split(argv[argv.index("--rsync-path") + 1])[:5] == ["mkdir", "-p", "--", "/data/p/data/results", "/data/p/data/logs/run"]
    whole = sync_out_argv("ssh", "h", "/d", Path("/p/data"), ["."], progress=False)
    assert whole[-2:] == ["h:/d/./", "/p/data/"]


def test_rsync_report_counts_transfers_and_kept_files() -> None:
    output = (
        b"results/model.h5 is newer\n"
        b"Number of regular files transferred: 3\nTotal transferred file size: 1048576 bytes\n"
        b"Total bytes sent: 1200\nTotal bytes received: 1049000\n"
    )
    report = parse_report("out", output, 1.5)
    assert (report.files, report.file_bytes, report.wire_bytes, report.kept) == (3, 1048576, 1050200, ("results/model.h5",))


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


def test_listed_sync_checks_the_hosts_marker_before_starting_rsync(tmp_path: Path) -> None:
    argv = listed_sync_in_argv("ssh", "h", Path("/p/data"), "/d/p/data", tmp_path / "list", "abc123", progress=False)
    assert argv[argv.index("--files-from=" + str(tmp_path / "list")) - 1] == "--from0"
    remote = argv[argv.index("--rsync-path") + 1]
    assert "test -d /d/p/data" in remote and '"$(cat -- /d/p/.fp-sync-data 2>/dev/null)" = abc123' in remote and remote.endswith("&& rsync")
    complete = sync_in_argv("ssh", "h", Path("/p/data"), "/d/p/data", progress=False, token="abc123")
    assert complete[complete.index("--rsync-path") + 1] == "mkdir -p -- /d/p/data && printf %s abc123 > /d/p/.fp-sync-data && rsync"


def test_sync_record_lists_new_changed_and_racy_files_only(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("old.bin", "sub/kept.bin", "sub/edited.bin"):
        (tmp_path / name).write_bytes(b"x")
    record = SyncRecord("t", snapshot(tmp_path, time.time_ns(), racy_ns=0))
    assert set(record.files) == {"old.bin", "sub", "sub/kept.bin", "sub/edited.bin"} and None not in record.files.values()
    (tmp_path / "sub/edited.bin").write_bytes(b"y")  # same size: the signature (mtime, ctime) still differs
    (tmp_path / "new.bin").write_bytes(b"n")
    (tmp_path / "sub/empty").mkdir()  # a new empty folder is listed (and so is its parent, whose mtime changed)
    assert changed_since(snapshot(tmp_path, time.time_ns(), racy_ns=0), record) == ["new.bin", "sub", "sub/edited.bin", "sub/empty"]
    racy = snapshot(tmp_path, time.time_ns(), racy_ns=60_000_000_000)
    assert changed_since(racy, record) == ["new.bin", "old.bin", "sub", "sub/edited.bin", "sub/empty", "sub/kept.bin"]
    assert marker_path("/data/proj/data") == "/data/proj/.fp-sync-data"


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
    error = rsync_failure("aws02", "in", Completed(("rsync",), 12, b"", stderr, 0.1))
    assert expected in str(error) and "host 'aws02'" in str(error) and "\n" not in str(error)


def test_api_sync_helper_packs_only_differing_files_and_names_the_kept_ones(tmp_path: Path) -> None:
    import io
    import json
    import subprocess
    import sys
    import tarfile

    host = tmp_path / "host"
    (host / "results").mkdir(parents=True)
    for name, content, mtime in (("same.txt", b"s", 1000), ("changed.txt", b"host", 2000), ("mine.txt", b"host", 3000), ("new.txt", b"n", 4000)):
        (host / "results" / name).write_bytes(content)
        os.utime(host / "results" / name, (mtime, mtime))
    local = {"results/same.txt": [1, 1000], "results/changed.txt": [5, 1500], "results/mine.txt": [5, 3000]}
    (tmp_path / "manifest.json").write_text(json.dumps(local))
    done = subprocess.run(
        [sys.executable, "-m", "fireplug.sync.helper", "pack", str(host), str(tmp_path / "manifest.json"), "results"], capture_output=True, check=True
    )
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as archive:
        assert sorted(archive.getnames()) == ["results/changed.txt", "results/new.txt"]
    assert done.stderr.decode().splitlines() == ["kept results/mine.txt"]
