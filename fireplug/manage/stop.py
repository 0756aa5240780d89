"""`fp stop`: a run's command is asked to stop (SIGTERM, through its backend), then killed after
a grace period; a map's background process is stopped the same way, and stops its runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence

from fireplug.backends.base import Executor, RunState
from fireplug.invocation import Invocation
from fireplug.manage.control import Hosts, Located
from fireplug.run.records import RunBook, RunRecord, matching
from fireplug.support import events
from fireplug.support.proc import alive

STOP_GRACE_SECONDS = 10.0

KILL_WAIT_SECONDS = 10.0

POLL_SECONDS = 0.2


def stop_runs(invocation: Invocation, peers: Hosts, runs: Sequence[Located], *, grace: float = STOP_GRACE_SECONDS) -> list[tuple[Located, int | None]]:
    """SIGINT to each running run, then SIGKILL to those still running after ``grace`` seconds
    (like `docker stop`, with the signal a Ctrl-C sends); each with its exit status. The
    containers stay, for `fp logs` and `fp pull`."""
    running = [located for located in runs if located.running]
    for located in running:
        _signal(peers, located, "SIGINT")
    deadline = time.monotonic() + grace
    results: list[tuple[Located, int | None]] = []
    for located in running:
        code, still = _wait_for_end(invocation, peers, located, deadline)
        if still:
            events.note(f"run {located.run_id} did not end within {grace:g} s of SIGINT: killing it")
            _signal(peers, located, "SIGKILL")
            code, _ = _wait_for_end(invocation, peers, located, time.monotonic() + KILL_WAIT_SECONDS)
        if located.record is not None and not located.in_live_map:  # (a sweep's run: its map's process records its end)
            invocation.runs.save(located.record.with_end(code))
        results.append((located, code))
    return results


def _signal(peers: Hosts, located: Located, signal_name: str) -> None:
    executor = peers.executor(located.host)
    if located.state is not None:
        executor.signal(located.state.handle, signal_name)
    else:
        executor.signal_run(located.run_id, signal_name)


def _wait_for_end(invocation: Invocation, peers: Hosts, located: Located, deadline: float) -> tuple[int | None, bool]:
    """(The run's exit status, whether it still runs at ``deadline``)."""
    if located.state is not None:
        state = _wait_until_ended(peers.executor(located.host), located.state.handle, deadline)
        return (state.exit_code if state is not None else None), state is not None and state.running
    while True:  # a sweep's run: its map's process records its end
        record = invocation.runs.load(located.run_id)
        if record is None or record.state != "running":
            return (record.exit_code if record is not None else None), False
        if time.monotonic() >= deadline:
            return None, True
        time.sleep(POLL_SECONDS)


def stop_map_process(book: RunBook, wanted: str, *, grace: float = STOP_GRACE_SECONDS) -> str:
    """A map going on in the background (`fp map -d`) that ``wanted`` names: SIGINT to its fp
    process (it stops handing out runs and forwards the signal), a second one after ``grace``
    seconds (it kills them); it removes its runs' containers itself. The map's id ("" when
    ``wanted`` names no such map).

    Raises:
        UsageError: ``wanted`` names several maps.
    """
    going = [path.stem for path in book.folder.glob("map-*.pid")] if book.folder.is_dir() else []
    stand_ins = [RunRecord(map_id, "", "", "", "", "", "", 0.0, map_id=map_id) for map_id in going]
    found = {record.map_id for record in matching(stand_ins, wanted)}
    if not found:
        return ""
    (map_id,) = found
    try:
        pid = int((book.folder / f"{map_id}.pid").read_text())
    except (OSError, ValueError):
        return ""
    for wait in (grace, KILL_WAIT_SECONDS):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and alive(pid):
            time.sleep(POLL_SECONDS)
        if not alive(pid):
            break
    return map_id


def _wait_until_ended(executor: Executor, handle: str, deadline: float) -> RunState | None:
    while True:
        state = executor.state(handle)
        if state is None or not state.running or time.monotonic() >= deadline:
            return state
        time.sleep(POLL_SECONDS)
