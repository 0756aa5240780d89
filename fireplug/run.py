"""Running the command in a container: live output, stdin, signals, and its own exit code.

Signals reach the supervising loop through a self-pipe (``signal.set_wakeup_fd``): the
handlers themselves do nothing, so no lock is ever taken inside a signal handler.
The first SIGINT/SIGTERM/SIGHUP is forwarded to the command; a second one kills the container.
Whatever happens, the container is removed.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import struct
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fireplug import console
from fireplug.engine import Attached, Engine
from fireplug.errors import FireplugError

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
OUTPUT_DRAIN_SECONDS = 10.0
_EXITED = 0  # byte written to the wake-up pipe when the container stopped


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class ContainerSpec:
    image: str
    command: tuple[str, ...]
    workdir: str
    name: str
    env: tuple[tuple[str, str], ...] = ()
    mounts: tuple[Mount, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    user: str = ""
    tty: bool = False
    stdin: bool = False


@dataclass(frozen=True)
class Stdio:
    """File descriptors fp's own process uses for the command's standard streams."""

    stdin: int | None = 0
    stdout: int = 1
    stderr: int = 2


def container_config(spec: ContainerSpec) -> dict[str, Any]:
    """The engine's create-container body for ``spec``; under an init process, never auto-removed."""
    return {
        "Image": spec.image,
        "Cmd": list(spec.command),
        "WorkingDir": spec.workdir,
        "Env": [f"{name}={value}" for name, value in spec.env],
        "Labels": dict(spec.labels),
        "User": spec.user,
        "Tty": spec.tty,
        "OpenStdin": spec.stdin,
        "StdinOnce": spec.stdin,
        "AttachStdin": spec.stdin,
        "AttachStdout": True,
        "AttachStderr": True,
        "HostConfig": {
            "Init": True,
            "AutoRemove": False,
            "Binds": [f"{mount.source}:{mount.target}:{'ro' if mount.read_only else 'rw'}" for mount in spec.mounts],
        },
    }


def docker_run_argv(spec: ContainerSpec) -> list[str]:
    """The `docker run` command equivalent to ``spec`` (what verbose mode shows, redacted)."""
    argv = ["docker", "run", "--rm", "--init", "--name", spec.name, "-w", spec.workdir]
    argv += ["-i"] * spec.stdin + ["-t"] * spec.tty + (["-u", spec.user] if spec.user else [])
    for name, value in spec.env:
        argv += ["-e", f"{name}={value}"]
    for mount in spec.mounts:
        argv += ["-v", f"{mount.source}:{mount.target}{':ro' if mount.read_only else ''}"]
    return [*argv, spec.image, *spec.command]


def run_container(engine: Engine, spec: ContainerSpec, stdio: Stdio) -> int:
    """Create, attach, start and supervise the container; remove it however the run ends.

    Returns the command's exit status, or 128 + the signal fp received when fp had to kill it.

    Raises:
        EngineUnreachable, EngineError: the engine failed before or during the run.
    """
    container = engine.create_container(container_config(spec), spec.name)
    try:
        attached = engine.attach(container, stdin=spec.stdin)
        try:
            with _raw_terminal(stdio.stdin if spec.tty else None):
                return _Supervisor(engine, container, attached, spec, stdio).run()
        finally:
            attached.close()
    finally:
        _remove(engine, container, spec.name)


def _remove(engine: Engine, container: str, name: str) -> None:
    try:
        engine.remove_container(container)
    except FireplugError as e:
        console.warn(f"container {name} could not be removed ({e}); remove it with: docker rm -f {name}")


class _Supervisor:
    def __init__(self, engine: Engine, container: str, attached: Attached, spec: ContainerSpec, stdio: Stdio) -> None:
        self.engine = engine
        self.container = container
        self.attached = attached
        self.spec = spec
        self.stdio = stdio
        self.wake_read, self.wake_write = os.pipe()
        self.stop_read, self.stop_write = os.pipe()
        self.status: int | None = None
        self.failure: BaseException | None = None
        self.signals_received: list[int] = []
        self.killed = False
        self.wake_lock = threading.Lock()
        self.wake_closed = False
        self.exited = False

    def run(self) -> int:
        output = threading.Thread(target=self._pump_output, name="fp-output", daemon=True)
        feeder = threading.Thread(target=self._pump_stdin, name="fp-stdin", daemon=True)
        feeds_stdin = self.spec.stdin and self.stdio.stdin is not None
        try:
            with self._signal_handlers():
                self.engine.start(self.container)
                if self.spec.tty:
                    self._resize()
                output.start()
                if feeds_stdin:
                    feeder.start()
                threading.Thread(target=self._wait, name="fp-wait", daemon=True).start()
                self._loop()
        finally:
            self._shut_down(output, feeder)
        if self.failure is not None:
            raise self.failure
        if self.killed:
            return 128 + self.signals_received[0]
        assert self.status is not None
        return self.status

    def _shut_down(self, output: threading.Thread, feeder: threading.Thread) -> None:
        """Stop the stdin feeder, let the output drain, and close the pipes no thread still uses."""
        os.write(self.stop_write, b"x")
        if feeder.is_alive():
            feeder.join(1.0)
        if output.is_alive() and self.exited:  # the rest of the output is on its way
            output.join(OUTPUT_DRAIN_SECONDS)
        with self.wake_lock:
            self.wake_closed = True
            os.close(self.wake_read)
            os.close(self.wake_write)
        if not feeder.is_alive():
            os.close(self.stop_read)
            os.close(self.stop_write)

    def _loop(self) -> None:
        while True:
            for byte in os.read(self.wake_read, 64):
                if byte == _EXITED:
                    self.exited = True
                    return
                self._on_signal(byte)

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGWINCH:
            self._resize()
            return
        self.signals_received.append(signum)
        name = signal.Signals(signum).name
        if len(self.signals_received) == 1:
            self.engine.kill(self.container, name)
            again = "Ctrl-C" if signum == signal.SIGINT else name
            console.note(f"{name} forwarded to the command; {again} again stops the container")
        elif not self.killed:
            self.killed = True
            console.note(f"second {name}: stopping container {self.spec.name}")
            self.engine.kill(self.container, "SIGKILL")

    def _wait(self) -> None:
        try:
            self.status = self.engine.wait(self.container)
        except BaseException as e:  # handed to the main thread, which raises it
            self.failure = e
        with self.wake_lock:
            if not self.wake_closed:
                os.write(self.wake_write, bytes([_EXITED]))

    def _resize(self) -> None:
        try:
            columns, rows = os.get_terminal_size(self.stdio.stdout)
        except OSError:
            return
        self.engine.resize(self.container, rows, columns)

    def _pump_output(self) -> None:
        writer = _OutputWriter(on_broken_pipe=self._on_broken_pipe)
        try:
            if self.spec.tty:
                while data := self.attached.recv():
                    writer.write(self.stdio.stdout, data)
            else:
                for stream, data in frames(self.attached):
                    writer.write(self.stdio.stderr if stream == 2 else self.stdio.stdout, data)
        except OSError:
            pass  # the connection closed: the waiter reports how the container ended

    def _on_broken_pipe(self) -> None:
        # Locally, writing to a closed pipe kills the writer with SIGPIPE (`fp yes | head`).
        with contextlib.suppress(FireplugError):
            self.engine.kill(self.container, "SIGPIPE")

    def _pump_stdin(self) -> None:
        assert self.stdio.stdin is not None
        try:
            while True:
                ready, _, _ = select.select([self.stdio.stdin, self.stop_read], [], [])
                if self.stop_read in ready:
                    return
                data = os.read(self.stdio.stdin, 65536)
                if not data:
                    self.attached.close_stdin()
                    return
                self.attached.send_all(data)
        except OSError:
            return

    @contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (*FORWARDED_SIGNALS, *((signal.SIGWINCH,) if self.spec.tty else ()))
        os.set_blocking(self.wake_write, False)
        previous_fd = signal.set_wakeup_fd(self.wake_write, warn_on_full_buffer=False)
        previous = {signum: signal.signal(signum, _record_only) for signum in handled}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            signal.set_wakeup_fd(previous_fd)


def _record_only(signum: int, frame: Any) -> None:
    """The C-level handler already wrote ``signum`` to the wake-up pipe; nothing else to do."""


class _OutputWriter:
    """Writes the command's output unbuffered; a reader that went away stops that stream only."""

    def __init__(self, on_broken_pipe: Callable[[], None]) -> None:
        self.closed: set[int] = set()
        self.on_broken_pipe = on_broken_pipe

    def write(self, fd: int, data: bytes) -> None:
        if fd in self.closed:
            return
        view = memoryview(data)
        try:
            while view:
                try:
                    view = view[os.write(fd, view) :]
                except BlockingIOError:  # a non-blocking stdout (some terminals): wait until writable
                    select.select([], [fd], [])
        except BrokenPipeError:
            self.closed.add(fd)
            self.on_broken_pipe()
        except OSError:
            self.closed.add(fd)


def frames(attached: Attached) -> Iterator[tuple[int, bytes]]:
    """Demultiplex the engine's stdout/stderr stream: 8-byte headers (stream, size), then data."""
    buffer = b""
    while True:
        while len(buffer) < 8:
            chunk = attached.recv()
            if not chunk:
                return
            buffer += chunk
        stream, size = struct.unpack(">BxxxL", buffer[:8])
        buffer = buffer[8:]
        while size:
            if not buffer:
                buffer = attached.recv()
                if not buffer:
                    return
            piece, buffer = buffer[:size], buffer[size:]
            size -= len(piece)
            yield stream, piece


@contextmanager
def _raw_terminal(fd: int | None) -> Iterator[None]:
    """Put a local terminal in raw mode so keys (Ctrl-C included) go to the remote terminal."""
    if fd is None:
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
