"""Output of several runs at once on one screen: whole lines only, each with its run's prefix
(its parameters and host), and a colour per run on a terminal."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping

from fireplug.support import events

COLOURS = ("36", "33", "35", "32", "34", "31", "96", "93", "95", "92", "94", "91")  # ANSI foreground colours


def run_prefix(params: Mapping[str, str], host: str) -> str:
    """``[fold=0 seed=1 @aws02] ``: what a line of a map run starts with."""
    shown = " ".join(f"{name}={value}" for name, value in params.items())
    return f"[{shown} @{host}] " if shown else f"[@{host}] "


class LineWriter:
    """Writes runs' output to stdout (stream 1) and stderr (stream 2). With a prefix, a line is
    written whole once it is complete (or at ``flush``), so that lines of runs never mix."""

    def __init__(self, stdout: int = 1, stderr: int = 2, *, colour: bool | None = None) -> None:
        self.fds = {1: stdout, 2: stderr}
        self.colour = os.isatty(stdout) if colour is None else colour
        self._pending: dict[tuple[str, int], bytes] = {}
        self._colours: dict[str, str] = {}
        self._lock = threading.Lock()

    def write(self, stream: int, data: bytes, *, prefix: str = "", key: str = "") -> None:
        fd = self.fds.get(stream, self.fds[1])
        if not prefix:
            with self._lock:
                _write_all(fd, data)
            return
        with self._lock:
            pending = self._pending.pop((key, stream), b"") + data
            *lines, rest = pending.split(b"\n")
            if rest:
                self._pending[(key, stream)] = rest
            if lines:
                head = self._head(prefix, key)
                _write_all(fd, b"".join(head + line + b"\n" for line in lines))

    def flush(self, key: str, prefix: str = "") -> None:
        """Write what is left of ``key``'s lines (a last line without a newline)."""
        with self._lock:
            for stream in (1, 2):
                rest = self._pending.pop((key, stream), b"")
                if rest:
                    _write_all(self.fds[stream], self._head(prefix, key) + rest + b"\n")

    def note(self, text: str, *, key: str = "", prefix: str = "") -> None:
        """One line of fp's own about a run (on stderr), with the run's prefix and colour."""
        with self._lock:
            _write_all(self.fds[2], self._head(prefix, key) + text.encode(errors="replace") + b"\n")

    def _head(self, prefix: str, key: str) -> bytes:
        if not prefix or not self.colour:
            return prefix.encode(errors="replace")
        colour = self._colours.setdefault(key, COLOURS[len(self._colours) % len(COLOURS)])
        return f"\x1b[{colour}m{prefix}\x1b[0m".encode(errors="replace")


def _write_all(fd: int, data: bytes) -> None:
    with events.above_status():
        _write_through(fd, data)


def _write_through(fd: int, data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        pass  # a reader that went away (a closed pipe): the runs go on
