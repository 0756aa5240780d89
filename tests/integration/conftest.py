"""Integration fixtures: the test bench's real engine, throwaway projects, and ways to run fp.

Every container and image a test's project makes is removed afterwards; a container still
there at teardown fails the test, since fp must never leave one behind.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from fireplug import cli
from fireplug.config import derived_id
from fireplug.errors import FireplugError
from fireplug.hosts.engine import Engine
from tests import testbed

SOCKET_URL = "unix:///var/run/docker.sock"
FP_BIN = Path(sys.executable).with_name("fp")


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


@dataclass(frozen=True)
class Project:
    root: Path
    name: str

    @property
    def key(self) -> str:
        """The project's folder name on hosts (name-id, the id derived from its path)."""
        return f"{self.name}-{derived_id(self.root.resolve())}"

    def write(self, relative: str, text: str | bytes, mode: int | None = None) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        if mode is not None:
            path.chmod(mode)
        return path


# How the docker CLI reaches each test-bench engine (the main one first).
ENGINE_FLAGS = {
    "main": ["-H", SOCKET_URL],
    "second": ["-H", f"unix://{testbed.SECOND_SOCKET}"],
    "tls": ["-H", f"unix://{testbed.TLS_ADMIN_SOCKET}"],
    "swarm": ["-H", f"unix://{testbed.RUNTIME / 'swarm.sock'}"],  # the swarm's manager (tests/swarmbed.py)
}


def docker(*argv: str, engine: str = "main") -> str:
    return subprocess.run(["docker", *ENGINE_FLAGS[engine], *argv], check=True, capture_output=True, text=True).stdout


def containers_of(project: str, engine: str = "main") -> list[str]:
    return docker("ps", "-aq", "--filter", f"label=io.fireplug.project={project}", engine=engine).split()


def images_of(project: str, engine: str = "main") -> list[str]:
    return sorted(docker("images", "-q", "--no-trunc", "--filter", f"label=io.fireplug.project={project}", engine=engine).split())


@functools.cache
def engine_answers(name: str) -> bool:
    return subprocess.run(["docker", *ENGINE_FLAGS[name], "version"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def engine() -> Engine:
    local = Engine("local", SOCKET_URL)
    try:
        local.negotiate()
    except FireplugError as e:
        pytest.fail(f"integration tests need the test bench's engine ({e}); run them with tests/run")
    return local


@pytest.fixture
def project(tmp_path: Path, engine: Engine) -> Iterator[Project]:
    name = f"fpt-{uuid.uuid4().hex[:10]}"
    made = Project(tmp_path / name, name)
    made.root.mkdir()
    made.write("fireplug.toml", f'[project]\nname = "{name}"\n')
    made.write("src/app.py", "print('app')\n")
    yield made
    leftovers = {}
    for engine_name, flags in ENGINE_FLAGS.items():
        if not engine_answers(engine_name):
            continue
        if leftover := containers_of(name, engine_name):
            leftovers[engine_name] = leftover
            docker("rm", "-f", *leftover, engine=engine_name)
        if ids := images_of(name, engine_name):
            subprocess.run(["docker", *flags, "rmi", "-f", *ids], capture_output=True)
    assert not leftovers, f"fp left containers behind: {leftovers}"


@contextlib.contextmanager
def stdin_from_devnull() -> Iterator[None]:
    """In-process runs read fd 0 like the real command does; give them an empty stdin."""
    saved = os.dup(0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    try:
        yield
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        os.close(devnull)


@pytest.fixture
def fp(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Run `fp ARGS` in-process from a folder: main([...]) with its exit status and output."""

    def call(cwd: Path, *argv: str) -> Result:
        monkeypatch.chdir(cwd)
        capfd.readouterr()
        with stdin_from_devnull():
            code = cli.main(list(argv))
        out, err = capfd.readouterr()
        return Result(code, out, err)

    return call


def fp_command() -> list[str]:
    return [str(FP_BIN)] if FP_BIN.exists() else [sys.executable, "-m", "fireplug"]


def start_in_group(project: Project, *argv: str) -> subprocess.Popen[bytes]:
    """A real fp in a process group of its own, as a terminal's foreground job is (SIGINT not
    ignored, even when the tests run as a background job of a non-interactive shell)."""
    return subprocess.Popen(
        [*fp_command(), *argv],
        cwd=project.root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def run_fp(cwd: Path, *argv: str, input: bytes | None = None, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run the real `fp` executable as a separate process."""
    return subprocess.run(
        [*fp_command(), *argv],
        cwd=cwd,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        env=env,
    )


@dataclass(frozen=True)
class RemoteBench:
    """Hosts of the test bench as a user would configure them, with data roots of this test's own."""

    home: Path
    data_roots: Path
    config: Path

    def data_root(self, host: str) -> Path:
        return self.data_roots / host

    def data_on(self, host: str, project: Project) -> Path:
        """The project's data folder on ``host``."""
        return self.data_roots / host / project.key / "data"

    def trash_on(self, host: str, project: Project) -> Path:
        return self.data_roots / host / project.key / ".fp-trash"

    def add_hosts(self, text: str) -> None:
        with self.config.open("a") as out:
            out.write("\n" + text)


def ssh_client_config(home: Path, *, with_key: bool = True) -> str:
    key = f"  IdentityFile {testbed.CLIENT_KEY}\n  IdentitiesOnly yes\n" if with_key else "  IdentitiesOnly yes\n"
    return (
        f"Host fp-second\n  HostName 127.0.0.1\n  Port {testbed.SECOND_SSH_PORT}\n  User {testbed.SSH_USER}\n"
        f"Host *\n{key}  UserKnownHostsFile {home / 'known_hosts'}\n  StrictHostKeyChecking accept-new\n"
    )


@pytest.fixture(scope="session")
def remote_engines() -> None:
    """The test bench's sshd ports and extra engines must be up (tests/run starts them)."""
    for name in ("second", "tls"):
        if not engine_answers(name):
            pytest.fail(f"the test bench's {name} engine is not running; run the tests with tests/run")


@pytest.fixture
def remote(isolated_home: Path, remote_engines: None) -> Iterator[RemoteBench]:
    """Two ssh hosts in the user config: 'primary' (the main engine) and 'second' (an ssh alias).

    Their data roots are this test's own, in the test bench's folder the ssh user can write to.
    """
    ssh_config = isolated_home / "ssh_config"
    ssh_config.write_text(ssh_client_config(isolated_home))
    config = isolated_home / ".config" / "fireplug" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    data_roots = testbed.HOST_DATA / uuid.uuid4().hex[:12]
    data_roots.mkdir()
    shutil.chown(data_roots, testbed.SSH_USER, testbed.SSH_USER)
    config.write_text(
        f'[hosts.primary]\nurl = "ssh://{testbed.SSH_USER}@127.0.0.1:{testbed.SSH_PORT}"\ndata_root = "{data_roots / "primary"}"\n\n'
        f'[hosts.second]\nurl = "ssh://fp-second"\ndata_root = "{data_roots / "second"}"\n'
    )
    yield RemoteBench(isolated_home, data_roots, config)
    shutil.rmtree(data_roots, ignore_errors=True)


# -- waiting on real processes, and the ssh connections under them --------------------------


def wait_for(condition, what: str, process: subprocess.Popen[bytes] | None = None, timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"fp ended before {what}: {process.communicate()}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def finish(process: subprocess.Popen[bytes], timeout: float = 120) -> tuple[int, str, float]:
    started = time.monotonic()
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err.decode(errors="replace"), time.monotonic() - started


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("fp: error:")]


def ssh_masters(remote: RemoteBench) -> list[int]:
    found = subprocess.run(["pgrep", "-f", f"ssh -F {remote.home / 'ssh_config'} .*ControlMaster=yes"], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


def sshd_serving(master: int) -> list[psutil.Process]:
    """The sshd processes at the other end of the ssh master's TCP connection."""
    [ours] = [connection.laddr.port for connection in psutil.Process(master).net_connections(kind="tcp") if connection.raddr]
    serving = []
    for process in psutil.process_iter(["name"]):
        if process.info["name"] == "sshd":
            with contextlib.suppress(psutil.Error):
                if any(connection.raddr and connection.raddr.port == ours for connection in process.net_connections(kind="tcp")):
                    serving.append(process)
    assert serving, "no sshd serves the master"
    return serving
