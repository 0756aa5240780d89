"""A started container as the supervision reaches it (``backends/supervision.py``)."""

from __future__ import annotations

from collections.abc import Iterator

from fireplug.backends.docker.executor import DockerExecutor
from fireplug.hosts.engine import Attached, frames


class WatchedContainer:
    """A container fp attached to before it started: its output comes on the attached stream."""

    def __init__(self, executor: DockerExecutor, container: str, attached: Attached, *, name: str, tty: bool = False) -> None:
        self.executor = executor
        self.container = container
        self.attached = attached
        self.tty = tty
        self.stopping_words = f"container {name}"

    def output(self) -> Iterator[tuple[int, bytes]]:
        if not self.tty:
            yield from frames(self.attached)
            return
        while data := self.attached.recv():  # (a terminal's output is one stream)
            yield 1, data

    def wait(self) -> int:
        return self.executor.wait(self.container)

    def forward(self, signal_name: str) -> None:
        self.executor.signal(self.container, signal_name)

    def stop(self) -> None:
        self.executor.signal(self.container, "SIGKILL")
