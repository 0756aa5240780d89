"""Signals sent to a real `fp` process: forwarded first, container stopped second, nothing left."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time

import pytest

from tests.integration.conftest import Project, containers_of, docker, fp_command, images_of, run_fp, start_in_group

pytestmark = pytest.mark.engine  # needs the test bench (tests/run sets it up)


def start_fp(project: Project, *argv: str) -> subprocess.Popen[bytes]:
    run_fp(project.root, "true")  # build first
    return subprocess.Popen([*fp_command(), *argv], cwd=project.root, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_until_running(project: Project, process: subprocess.Popen[bytes], marker: str = "") -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        running = docker("ps", "-q", "--filter", f"label=io.fireplug.project={project.name}", "--filter", "status=running").split()
        if running and (not marker or (project.root / "data" / marker).exists()):
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    raise AssertionError("the container never started")


def finish(process: subprocess.Popen[bytes]) -> tuple[int, str]:
    _, err = process.communicate(timeout=60)
    return process.returncode, err.decode()


def test_ctrl_c_is_forwarded_and_nothing_is_left(project: Project) -> None:
    process = start_fp(project, "sleep", "120")
    wait_until_running(project, process)
    process.send_signal(signal.SIGINT)
    code, err = finish(process)
    assert code == 130
    assert "SIGINT forwarded to the command" in err
    assert containers_of(project.name) == []


def test_first_ctrl_c_lets_the_command_checkpoint(project: Project) -> None:
    script = (
        "import pathlib, time\n"
        "pathlib.Path('data/started').touch()\n"
        "try:\n    time.sleep(120)\n"
        "except KeyboardInterrupt:\n    pathlib.Path('data/checkpoint').write_text('saved')\n"
    )
    process = start_fp(project, "python", "-c", script)
    wait_until_running(project, process, marker="started")
    process.send_signal(signal.SIGINT)
    code, _ = finish(process)
    assert code == 0, "the command exited cleanly after its checkpoint: fp says so"
    assert (project.root / "data" / "checkpoint").read_text() == "saved"
    assert containers_of(project.name) == []


def test_second_ctrl_c_stops_a_command_that_ignores_it(project: Project) -> None:
    process = start_fp(project, "sh", "-c", "trap '' INT; touch data/started; sleep 120")
    wait_until_running(project, process, marker="started")
    process.send_signal(signal.SIGINT)
    time.sleep(1.5)
    assert process.poll() is None, "the command ignores SIGINT, so it must still run"
    process.send_signal(signal.SIGINT)
    code, err = finish(process)
    assert code == 130
    assert "second SIGINT: stopping container" in err
    assert containers_of(project.name) == []


def test_sigterm_is_forwarded_too(project: Project) -> None:
    process = start_fp(project, "sleep", "120")
    wait_until_running(project, process)
    process.send_signal(signal.SIGTERM)
    code, err = finish(process)
    assert code == 128 + signal.SIGTERM
    assert "SIGTERM forwarded" in err
    assert containers_of(project.name) == []


FP_FRAME = re.compile(r'File "[^"]*/fireplug/')


def test_a_ctrl_c_in_fps_first_moments_is_exit_130_in_one_line_never_a_traceback(project: Project) -> None:
    """Ctrl-C to fp's process group at every moment of its first 0.1 s (its imports, the command
    line, the configuration, the scan, the host's choice: a warm fp reaches the engine in ~60 ms,
    so later moments are the run's, which test_signals' other tests cover): 130 and one line, or
    the run's own end if it came first. Only the interpreter's own start (before any of fp runs)
    is Python's."""
    run_fp(project.root, "true")  # built: a run takes well under a second
    interrupted = 0
    for step in range(40):
        process = start_in_group(project, "true")
        time.sleep(0.0025 * step)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        _, err_bytes = process.communicate(timeout=60)
        err = err_bytes.decode(errors="replace")
        assert not FP_FRAME.search(err), f"a traceback through fp's code after {0.0025 * step:.4f} s:\n{err}"
        if process.returncode == 130:
            interrupted += 1
            assert "fp: interrupted (SIGINT)" in err and len(err.strip().splitlines()) <= 2, err
        else:
            assert process.returncode in (0, -signal.SIGINT) or "Traceback" in err, (process.returncode, err)
    assert interrupted >= 20, "too few runs were interrupted to tell"
    assert containers_of(project.name) == []


def assembly_containers() -> list[str]:
    return docker("ps", "-aq", "--filter", "label=io.fireplug.kind=assembly").split()


def test_a_ctrl_c_while_the_projects_image_is_assembled_leaves_no_container_and_no_image(project: Project) -> None:
    """Ctrl-C to fp's process group while the project's files are unpacked into the container its
    image is committed from: exit 130 in one line; neither that container nor a half-made image
    stays; the next run builds the image whole."""
    run_fp(project.root, "true")  # the base image exists: the next build is only the assembly
    before = images_of(project.name)
    with open(project.root / "weights.bin", "wb") as blob:  # (code, not data: its upload takes seconds)
        for _ in range(200):
            blob.write(os.urandom(1 << 20))
    process = start_in_group(project, "true")
    deadline = time.monotonic() + 60
    while not assembly_containers():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)
    time.sleep(0.2)  # (inside the upload of the project's files)
    os.killpg(process.pid, signal.SIGINT)
    _, err_bytes = process.communicate(timeout=60)
    err = err_bytes.decode(errors="replace")
    assert process.returncode == 130, err
    assert "fp: interrupted (SIGINT)" in err and not FP_FRAME.search(err), err
    assert assembly_containers() == [] and images_of(project.name) == before
    done = run_fp(project.root, "true")
    assert done.returncode == 0, done.stderr.decode()
    assert len(images_of(project.name)) == len(before) + 1 and assembly_containers() == []
    assert containers_of(project.name) == []
