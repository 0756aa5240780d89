"""Integration fixtures: the test bench's real engine, throwaway projects, and ways to run fp.

Every container and image a test's project makes is removed afterwards; a container still
there at teardown fails the test, since fp must never leave one behind.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fireplug import cli
from fireplug.engine import Engine
from fireplug.errors import FireplugError

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


def docker(*argv: str) -> str:
    return subprocess.run(["docker", *argv], check=True, capture_output=True, text=True).stdout


def containers_of(project: str) -> list[str]:
    return docker("ps", "-aq", "--filter", f"label=io.fireplug.project={project}").split()


def images_of(project: str) -> list[str]:
    return docker("images", "-q", "--no-trunc", "--filter", f"label=io.fireplug.project={project}").split()


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
    leftover = containers_of(name)
    if leftover:
        docker("rm", "-f", *leftover)
    ids = images_of(name)
    if ids:
        subprocess.run(["docker", "rmi", "-f", *ids], capture_output=True)
    assert not leftover, f"fp left containers behind: {leftover}"


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
