"""Container options on the real bench: /dev/shm, CPU and memory limits, GPUs refused, ports forwarded."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest

from tests import testbed
from tests.integration.conftest import Project, RemoteBench, containers_of, start_in_group

pytestmark = pytest.mark.engine

SHARED_200_MB = (
    "from multiprocessing import shared_memory\n"
    "block = shared_memory.SharedMemory(create=True, size=200 << 20)\n"
    "block.buf[:] = b'x' * (200 << 20)\n"  # every page touched: past /dev/shm's size this is SIGBUS
    "print('allocated', block.size >> 20)\n"
    "block.close(); block.unlink()\n"
)


def test_a_200_mb_shared_memory_block_works_by_default_and_shm_size_is_applied(fp, project: Project) -> None:
    project.write("shm.py", SHARED_200_MB)
    default = fp(project.root, "python3", "shm.py")
    assert default.code == 0 and default.out == "allocated 200\n", default.err
    small = fp(project.root, "--shm-size", "64m", "python3", "shm.py")
    assert small.code == 135  # docker's 64 MB: Bus error, as PyTorch's DataLoader workers meet it
    sized = fp(project.root, "--shm-size", "300m", "sh", "-c", "df -k /dev/shm | tail -1")
    assert sized.code == 0 and sized.out.split()[1] == str(300 * 1024)


CGROUP_V2 = "cut -d' ' -f1 /sys/fs/cgroup/cpu.max; cat /sys/fs/cgroup/memory.max"
CGROUP_V1 = "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/memory/memory.limit_in_bytes"


def test_cpus_and_memory_become_the_containers_cgroup_limits(fp, project: Project) -> None:
    project.write("fireplug.toml", f'[project]\nname = "{project.name}"\n\n[run]\nmemory = "256m"\ncpus = "2"\n')
    limits = CGROUP_V2 if Path("/sys/fs/cgroup/cgroup.controllers").exists() else CGROUP_V1
    result = fp(project.root, "--cpus", "1.5", "sh", "-c", limits)
    assert result.code == 0, result.err
    assert result.out.split() == ["150000", str(256 << 20)]  # the flag wins over [run]


def test_options_a_host_cannot_honour_fail_in_one_line_before_any_work(fp, project: Project, remote: RemoteBench) -> None:
    project.write("data/in.txt", "x")
    for argv, message in (
        (["--gpus", "all"], "reports no NVIDIA runtime"),
        (["--cpus", "512"], "CPUs"),
        (["--network", "no-such-net"], "no such network"),
    ):
        result = fp(project.root, "--host", "primary", *argv, "true")
        assert result.code == 125 and result.err.count("fp: error:") == 1 and message in result.err, result.err
    assert not remote.data_on("primary", project).exists()  # nothing was synced
    bad = fp(project.root, "--shm-size", "lots", "true")
    assert bad.code == 2 and "--shm-size 'lots'" in bad.err
    project.write("fireplug.toml", f'[project]\nname = "{project.name}"\n\n[run]\nshm_size = "99999999999999999999999g"\n')
    huge = fp(project.root, "--host", "primary", "true")  # the engine could not even read it: "json: cannot unmarshal number"
    assert huge.code == 2 and huge.err.count("fp: error:") == 1 and "more than the engine can hold" in huge.err, huge.err
    assert not remote.data_on("primary", project).exists()


def test_a_published_port_on_an_ssh_host_is_forwarded_here(project: Project, remote: RemoteBench) -> None:
    here = testbed.free_port()
    project.write("data/page.txt", "served from the host\n")
    running = start_in_group(project, "--host", "primary", "-p", f"{here}:8000", "python3", "-m", "http.server", "8000", "--bind", "0.0.0.0", "-d", "data")
    try:
        body = b""
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not body:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{here}/page.txt", timeout=5).read()
            except OSError:
                time.sleep(0.5)
        assert body == b"served from the host\n"
    finally:
        running.send_signal(2)
        _, err = running.communicate(timeout=60)
    assert f"is at 127.0.0.1:{here} here (forwarded over ssh)" in err.decode()
    with pytest.raises(OSError):  # the forward ended with the run
        urllib.request.urlopen(f"http://127.0.0.1:{here}/page.txt", timeout=5)
    assert containers_of(project.name) == []


def test_a_command_that_ends_before_its_port_is_forwarded_keeps_its_own_status(fp, project: Project, remote: RemoteBench) -> None:
    """The container of a short command may be gone before fp reads its published port: there
    is nothing to forward then, and the command's status stands (it used to be 125, "Bad local
    forwarding specification ...:0")."""
    for status in (0, 3, 0, 0, 0, 0):
        result = fp(project.root, "--host", "primary", "-p", f"{testbed.free_port()}:8000", "sh", "-c", f"exit {status}")
        assert result.code == status and "fp: error" not in result.err, result.err
    assert containers_of(project.name) == []
