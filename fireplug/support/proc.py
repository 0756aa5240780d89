"""The single wrapper every ssh and rsync call goes through: list argv, never a shell string.

Callers pass an argv list and a timeout; this module starts the process, enforces the timeout,
and turns the operating system's failures (tool not installed, timed out) into fp errors.
Interpreting a tool's exit status stays with the caller, which knows what it means.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO

from fireplug.errors import CommandTimedOut as CommandTimedOut
from fireplug.errors import ToolMissing as ToolMissing
from fireplug.support import events
from fireplug.support.secrets import display


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes
    seconds: float

    def stderr_tail(self, lines: int = 3) -> str:
        """The last meaningful lines of stderr, joined on one line for an error message."""
        return last_lines(self.stderr.decode(errors="replace"), lines)


def last_lines(text: str, count: int) -> str:
    """The last ``count`` non-empty lines of a tool's messages on one line (ssh's host-key notices left out)."""
    kept = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("Warning: Permanently added")]
    return " / ".join(kept[-count:])


def run(
    argv: Sequence[str],
    *,
    timeout: float | None,
    what: str,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    on_output: Callable[[bytes], None] | None = None,
    capture: bool = True,
    own_group: bool = False,
    output_pace: float = 0.0,
) -> Completed:
    """Run ``argv`` to completion; its status and output (never raises for a non-zero status).

    ``on_output`` receives stdout as it arrives (progress) instead of it being collected, at
    most once every ``output_pace`` seconds: a tool that prints a line per file (rsync's
    progress) then costs one wake-up per batch, not one per line.
    ``capture=False`` discards the output (for a process leaving a daemon behind, which
    would hold our pipes open). ``own_group`` starts it in a process group of its own (a
    terminal's Ctrl-C then reaches fp only) and, should fp be interrupted, stops that whole
    group (rsync and the ssh it started) before the interruption goes on.

    Raises:
        ToolMissing: the program is not installed.
        CommandTimedOut: it ran longer than ``timeout`` seconds (it is killed).
    """
    events.detail(f"$ {display(argv)}")
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
            stderr=subprocess.PIPE if capture else subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            start_new_session=own_group,
        )
    except FileNotFoundError as e:
        raise ToolMissing(argv[0]) from e
    stop = _stop_group if own_group else _kill
    try:
        if on_output is None:
            stdout, stderr = process.communicate(input, timeout=timeout)
            stdout, stderr = stdout or b"", stderr or b""
        else:
            stdout, stderr = _stream(process, on_output, timeout, started, output_pace)
    except subprocess.TimeoutExpired as e:
        stop(process)
        raise CommandTimedOut(what, timeout or 0) from e
    except BaseException:
        stop(process)
        raise
    return Completed(tuple(argv), process.returncode, stdout, stderr, time.monotonic() - started)


def _stream(process: subprocess.Popen[bytes], on_output: Callable[[bytes], None], timeout: float | None, started: float, pace: float) -> tuple[bytes, bytes]:
    """Feed stdout to ``on_output`` while collecting stderr in a file, so neither pipe fills up."""
    import tempfile
    import threading

    assert process.stdout is not None and process.stderr is not None
    with tempfile.TemporaryFile() as errors:
        drain = threading.Thread(target=_copy, args=(process.stderr, errors), daemon=True)
        drain.start()
        while block := os.read(process.stdout.fileno(), PIPE_READ):
            on_output(block)
            if timeout is not None and time.monotonic() - started > timeout:
                raise subprocess.TimeoutExpired(process.args, timeout)
            if pace and process.poll() is None:  # the pipe holds 64 KiB meanwhile: the tool blocks only if it prints more
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(pace)  # returns as soon as the tool is done: its last words are read at once
        remaining = None if timeout is None else max(0.1, timeout - (time.monotonic() - started))
        process.wait(remaining)
        drain.join()
        errors.seek(0)
        return b"", errors.read()


def _copy(source: IO[bytes], target: IO[bytes]) -> None:
    try:
        while block := source.read(65536):
            target.write(block)
    except (OSError, ValueError):
        return  # the caller gave up on the process (interrupted) and closed the file


def _kill(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait()


GRACE_SECONDS = 5.0
PIPE_READ = 1 << 20


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process's group (rsync then sets its partial file aside), SIGKILL after a grace time.

    Returns once the group leader is reaped and no member is left.
    """
    for signum, grace in ((signal.SIGTERM, GRACE_SECONDS), (signal.SIGKILL, GRACE_SECONDS)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if process.poll() is not None and not alive(process.pid, group=True):
                return
            time.sleep(0.02)
    process.wait()


def alive(pid: int, *, group: bool = False) -> bool:
    """Whether the process ``pid`` (``group``: any process of the group ``pid``) still exists."""
    try:
        (os.killpg if group else os.kill)(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
