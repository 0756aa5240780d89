"""Running the command in a container attached to this terminal: live output, stdin, signals,
and its own exit code.

The run is supervised as every run is (``backends/supervision.py``: the first
SIGINT/SIGTERM/SIGHUP forwarded to the command, a second one kills the container); this module
adds what an attached container needs around it: its creation and start, the terminal in raw
mode, stdin, resizes, and its removal. The container is removed however the run ends, except
after a lost connection: then the job may still be running there, and removing it would throw
its work away.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fireplug.backends.docker.executor import DockerExecutor
from fireplug.backends.docker.watched import WatchedContainer
from fireplug.backends.supervision import supervise
from fireplug.errors import ConnectionLost, EngineUnreachable, FireplugError, Interrupted
from fireplug.hosts.engine import Attached
from fireplug.run.spec import ContainerSpec, Stdio
from fireplug.support import events, labels
from fireplug.support.signals import HeldSignals


def run_container(
    executor: DockerExecutor, spec: ContainerSpec, stdio: Stdio, *, last_step: bool = False, on_started: Callable[[str], None] | None = None
) -> int:
    """Create, attach, start and supervise the container; remove it however the run ends,
    except after a lost connection, when the job may still be running there.

    Signals are held from before the container is created until it is removed: one that comes
    before the start removes the container unstarted; one that comes after the command exited
    changes nothing (its status stands, and the results are still brought back).

    ``last_step``: nothing follows (no sync out), so once the command's status is known the
    signals stay ignored (see ``ignore_late_signals``). ``on_started``: told the container's id
    once it started (its published ports exist then); what it raises ends the run.

    Returns the command's exit status, or 128 + the signal fp received when fp had to kill it.

    Raises:
        ConnectionLost: the connection broke or the engine stalled once the container had started.
        Interrupted: a signal came before the container started (it was removed).
        EngineUnreachable, EngineError: the engine failed before the container started.
    """
    with HeldSignals(tty=spec.tty, then_ignore=last_step) as held:
        container = executor.create(spec)
        supervisor = _Supervisor(executor, container, spec, stdio, held, on_started)
        try:
            status = supervisor.run()
        except EngineUnreachable as e:
            if not supervisor.start_sent:
                _remove(executor, container, spec.name)
                raise
            raise ConnectionLost(executor.host, spec.name, e.cause, run_id=spec.labels.get(labels.RUN, "")) from e
        except Interrupted as e:
            if not _remove(executor, container, spec.name):
                raise Interrupted(e.signum, left=f"container {spec.name} may be left on host '{executor.host}' (docker rm -f {spec.name})") from e
            raise
        except BaseException:
            _remove(executor, container, spec.name)
            raise
        _remove(executor, container, spec.name)
        if late := held.take():
            name = signal.Signals(late[0]).name
            events.note(f"{name} came after the command had exited (status {status}); its results are still brought back")
        return status


def _remove(executor: DockerExecutor, container: str, name: str) -> bool:
    try:
        executor.remove(container)
    except FireplugError as e:
        events.warn(f"container {name} could not be removed ({e}); remove it with: docker rm -f {name}")
        return False
    return True


class _Supervisor:
    """What an attached run adds to the supervision: the terminal, stdin, and the start."""

    def __init__(
        self, executor: DockerExecutor, container: str, spec: ContainerSpec, stdio: Stdio, held: HeldSignals, on_started: Callable[[str], None] | None = None
    ) -> None:
        self.on_started = on_started
        self.executor = executor
        self.container = container
        self.spec = spec
        self.stdio = stdio
        self.held = held
        self.stop_read, self.stop_write = os.pipe()
        self.start_sent = False

    def run(self) -> int:
        """Raises: Interrupted: a signal came before the start (nothing started)."""
        if early := self.held.take():
            raise Interrupted(early[0])
        attached = self.executor.attach(self.container, stdin=self.spec.stdin)
        try:
            if early := self.held.take():
                raise Interrupted(early[0])
            with _raw_terminal(self.stdio.stdin if self.spec.tty else None):
                return self._supervise(attached)
        finally:
            attached.close()

    def _supervise(self, attached: Attached) -> int:
        feeder = threading.Thread(target=self._pump_stdin, args=(attached,), name="fp-stdin", daemon=True)
        writer = _OutputWriter(on_broken_pipe=self._on_broken_pipe)
        stdio = self.stdio

        def write(stream: int, data: bytes) -> None:
            writer.write(stdio.stderr if stream == 2 else stdio.stdout, data)

        try:
            self.start_sent = True
            self.executor.start(self.container)
            if self.on_started is not None:
                self.on_started(self.container)
            if self.spec.tty:
                self._resize()
            if self.spec.stdin and stdio.stdin is not None:
                feeder.start()
            watched = WatchedContainer(self.executor, self.container, attached, name=self.spec.name, tty=self.spec.tty)
            return supervise(watched, write, signals=self.held, on_window_change=self._resize)
        finally:
            self._stop_feeding(feeder)

    def _stop_feeding(self, feeder: threading.Thread) -> None:
        """Stop the stdin feeder, and close the pipe unless it still uses it."""
        os.write(self.stop_write, b"x")
        if feeder.is_alive():
            feeder.join(1.0)
        if not feeder.is_alive():
            os.close(self.stop_read)
            os.close(self.stop_write)

    def _resize(self) -> None:
        try:
            columns, rows = os.get_terminal_size(self.stdio.stdout)
        except OSError:
            return
        self.executor.resize(self.container, rows, columns)

    def _on_broken_pipe(self) -> None:
        # Locally, writing to a closed pipe kills the writer with SIGPIPE (`fp yes | head`).
        with contextlib.suppress(FireplugError):
            self.executor.signal(self.container, "SIGPIPE")

    def _pump_stdin(self, attached: Attached) -> None:
        assert self.stdio.stdin is not None
        try:
            while True:
                ready, _, _ = select.select([self.stdio.stdin, self.stop_read], [], [])
                if self.stop_read in ready:
                    return
                data = os.read(self.stdio.stdin, 65536)
                if not data:
                    attached.close_stdin()
                    return
                attached.send_all(data)
        except OSError:
            return


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
        with contextlib.suppress(termios.error, OSError):  # the terminal may be gone (hung up)
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
