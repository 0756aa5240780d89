"""What fp left on a Docker engine and no longer needs (see gc.py for the whole list): ended
runs whose results came back, helpers a killed fp left, and old trash under the data root.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from fireplug.backends.base import HELPER_AGE_SECONDS, Found, Garbage, RunState
from fireplug.backends.docker.executor import DockerExecutor
from fireplug.support import labels
from fireplug.support.locks import process_gone
from fireplug.sync.record import PairFiles
from fireplug.sync.tree import TRASH_DAYS, TRASH_FOLDER

if TYPE_CHECKING:
    from fireplug.hosts import Connection
    from fireplug.hosts.engine import Engine
    from fireplug.invocation import Invocation
    from fireplug.run.records import RunRecord

HERE = "this machine"
# $3 "remove": remove them first, so that what is printed is what is left (could not be removed)
TRASH_SCRIPT = f"""\
[ -d "$1" ] || exit 0
if [ "$3" = remove ]; then
  find "$1" -mindepth 3 -maxdepth 3 -path "$1/*/{TRASH_FOLDER}/*" -mtime +$2 -prune -exec rm -rf -- {{}} + 2>/dev/null
fi
find "$1" -mindepth 3 -maxdepth 3 -path "$1/*/{TRASH_FOLDER}/*" -mtime +$2 -prune -exec du -s -b -0 {{}} + 2>/dev/null
exit 0
"""


def ended_runs(invocation: Invocation, executor: DockerExecutor, records: Mapping[str, RunRecord], found: Found) -> None:
    for listed in executor.find([labels.kind_is("run")], running_only=False):
        if listed.running:
            continue
        state = executor.state(listed.handle) or listed
        run_id = state.labels.get(labels.RUN, "")
        if _results_came_back(invocation, executor.host, state, records.get(run_id)):
            size = _container_bytes(executor.engine, state.handle)
            found.items.append(Garbage("run", state.handle, f"{run_id or state.name}", size, f"ended (exit {state.exit_code}), its results came back"))
        elif state.ended:
            found.kept_runs.append(run_id or state.name)


def _results_came_back(invocation: Invocation, host: str, state: RunState, record: RunRecord | None) -> bool:
    """Whether this machine brought the run's results back after it ended: `fp pull` said so,
    or the project's last sync with the host came after the run's end."""
    if record is not None and record.pulled is not None:
        return True
    if state.finished_at is None:
        return False
    key = state.labels.get(labels.PROJECT_KEY, "")
    try:
        synced = PairFiles.of(invocation.state, key, host).record.stat().st_mtime
    except OSError:
        return False
    return bool(key) and synced > state.finished_at


def helpers(executor: DockerExecutor, found: Found) -> None:
    now = time.time()
    for kind in ("sync", "lookup", "deps-build", "assembly"):
        for state in executor.find([labels.kind_is(kind)], running_only=False):
            if not state.running and state.started_at is not None and now - state.started_at > HELPER_AGE_SECONDS:
                found.items.append(Garbage("helper", state.handle, state.name, 0, f"a {kind} helper an interrupted fp left"))
    for state in executor.find([labels.kind_is("anchor")], running_only=False):
        map_id = state.labels.get(labels.MAP, "")
        runs_on = executor.find([labels.kind_is("run"), f"{labels.MAP}={map_id}"]) if map_id else []
        if process_gone(state.labels.get(labels.OWNER, "")) and not runs_on:
            found.items.append(Garbage("helper", state.handle, state.name, 0, f"the network anchor of map {map_id}, whose fp ended"))


def _container_bytes(engine: Engine, container: str) -> int:
    inspected = engine.inspect_container(container, size=True) or {}
    size = inspected.get("SizeRw")
    return size if isinstance(size, int) and not isinstance(size, bool) else 0


def host_trash(connection: Connection, base_image: str, *, remove: bool) -> list[tuple[int, str]]:
    """(bytes, path) of each old trash batch under the host's data root; ``remove``: remove them,
    and say which could not be."""
    host = connection.host
    if host.local:
        return []
    if connection.shell is not None:
        words = ["sh", "-c", TRASH_SCRIPT, "sh", host.data_root, str(TRASH_DAYS), "remove" if remove else "list"]
        completed = connection.shell.run(words, what="looking for old trash", timeout=600)
        return parse_sizes(completed.stdout, b"\0", b"\t")
    from fireplug.image.base import ensure_base
    from fireplug.sync.api import MOUNT, ApiHost

    base = ensure_base(connection.engine, base_image)
    helper = ApiHost(connection.engine, base.tag, {}, host.data_root, ".")
    output = helper.run_helper(["trash", MOUNT, str(TRASH_DAYS), *(["remove"] if remove else [])])
    inside = parse_sizes(output, b"\n", b" ")
    return [(size, host.data_root + path[len(MOUNT) :]) for size, path in inside]


def parse_sizes(output: bytes, separator: bytes, between: bytes) -> list[tuple[int, str]]:
    found = []
    for item in output.split(separator):
        size, _, path = item.partition(between)
        if size.strip().isdigit() and path:
            found.append((int(size), os.fsdecode(path)))
    return found
