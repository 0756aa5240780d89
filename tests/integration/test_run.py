"""`fp COMMAND` on the real local engine: output, exit codes, stdin, data folder, env, terminal."""

from __future__ import annotations

import hashlib
import os
import pty
import select
import subprocess
import time

import pytest

from tests.integration.conftest import Project, fp_command, run_fp

pytestmark = pytest.mark.engine  # needs the test bench (tests/run sets it up)


def test_output_keeps_stdout_and_stderr_apart(project: Project, fp) -> None:  # type: ignore[no-untyped-def]
    result = fp(project.root, "sh", "-c", "echo to-out; echo to-err >&2; echo more-out")
    assert result.code == 0
    assert result.out == "to-out\nmore-out\n"
    assert result.err.endswith("to-err\n")


@pytest.mark.parametrize(("script", "code"), [("exit 0", 0), ("exit 1", 1), ("exit 3", 3), ("kill -9 $$", 137)])
def test_exit_status_is_the_commands(project: Project, fp, script: str, code: int) -> None:  # type: ignore[no-untyped-def]
    assert fp(project.root, "sh", "-c", script).code == code


def test_unknown_command_exits_127_like_a_shell(project: Project, fp) -> None:  # type: ignore[no-untyped-def]
    result = fp(project.root, "no-such-command-here")
    assert result.code == 127
    assert "no-such-command-here" in result.err


def test_output_streams_live(project: Project) -> None:
    run_fp(project.root, "true")  # build first, so the timing below is the run's
    process = subprocess.Popen(
        [*fp_command(), "python", "-c", "import time; print('first'); time.sleep(8); print('second')"],
        cwd=project.root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    still_running = process.poll() is None
    rest, _ = process.communicate(timeout=60)
    assert first == b"first\n"
    assert still_running, "the first line arrived only after the command ended"
    assert rest == b"second\n"
    assert process.returncode == 0


def test_stdin_is_piped_byte_for_byte(project: Project) -> None:
    data = os.urandom(2_000_000)
    done = run_fp(project.root, "python", "-c", "import sys, hashlib; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())", input=data)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().strip() == hashlib.sha256(data).hexdigest()


def test_data_folder_is_mounted_at_the_same_relative_path(project: Project, fp) -> None:  # type: ignore[no-untyped-def]
    project.write("data/in.txt", "hello data\n")
    result = fp(project.root / "src", "sh", "-c", "cat ../data/in.txt; mkdir -p ../data/out; echo result > ../data/out/r.txt; pwd")
    assert result.code == 0, result.err
    assert result.out == f"hello data\n{project.root}/src\n"
    assert (project.root / "data" / "out" / "r.txt").read_text() == "result\n"


def test_files_written_to_data_belong_to_the_run_user(project: Project, fp) -> None:  # type: ignore[no-untyped-def]
    project.write("fireplug.toml", f'[project]\nname = "{project.name}"\n[run]\nuser = "4321:4322"\n')
    (project.root / "data").mkdir()
    os.chown(project.root / "data", 4321, 4322)  # the data folder of a user whose uid is 4321
    result = fp(project.root, "sh", "-c", "id -u; echo x > data/owned.txt")
    assert result.code == 0, result.err
    assert result.out == "4321\n"
    written = (project.root / "data" / "owned.txt").stat()
    assert (written.st_uid, written.st_gid) == (4321, 4322)


def test_environment_passes_only_what_is_asked(project: Project, fp, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MY_TOKEN", "abc")
    monkeypatch.setenv("LOCAL_ONLY", "leak")
    result = fp(project.root, "-e", "MY_TOKEN", "-e", "FIXED=1 2", "sh", "-c", 'echo "$MY_TOKEN|$FIXED|${LOCAL_ONLY:-unset}|$PYTHONUNBUFFERED"')
    assert result.out == "abc|1 2|unset|1\n"


def test_unset_variable_is_a_usage_error(project: Project, fp) -> None:  # type: ignore[no-untyped-def]
    result = fp(project.root, "-e", "SURELY_NOT_SET_ANYWHERE", "true")
    assert result.code == 2
    assert "SURELY_NOT_SET_ANYWHERE is not set in your environment" in result.err


def test_terminal_when_both_ends_are_terminals(project: Project) -> None:
    run_fp(project.root, "true")
    pid, master = pty.fork()
    if pid == 0:  # child: fp with the pty as its terminal
        os.chdir(project.root)
        command = fp_command()
        os.execv(command[0], [*command, "sh", "-c", "test -t 0 && test -t 1 && echo tty-ok; stty size; exit 5"])
    output = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
    _, status = os.waitpid(pid, 0)
    os.close(master)
    assert b"tty-ok" in output
    assert os.waitstatus_to_exitcode(status) == 5


def test_closed_pipe_stops_the_command(project: Project) -> None:
    run_fp(project.root, "true")
    command = " ".join(fp_command())
    done = subprocess.run(f"{command} yes | head -n 2", shell=True, cwd=project.root, capture_output=True, timeout=60)
    assert done.stdout == b"y\ny\n"


def test_no_build_after_a_code_edit_says_so_and_runs_the_old_image(project: Project, fp) -> None:  # type: ignore[no-untyped-def]
    assert fp(project.root, "python3", "src/app.py").out == "app\n"
    unchanged = fp(project.root, "--no-build", "python3", "src/app.py")
    assert unchanged.code == 0 and "--no-build" not in unchanged.err
    project.write("src/app.py", "print('edited')\n")
    stale = fp(project.root, "--no-build", "python3", "src/app.py")
    assert stale.code == 0 and stale.out == "app\n"
    assert stale.err.count("--no-build: the project changed since fp-") == 1
