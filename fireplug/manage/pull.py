"""`fp pull`: the results of ended (and running) runs brought back by their backend, each
project's into its own data folder; an ended run's output kept here, then the run removed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from fireplug.backends import backend_for
from fireplug.backends.base import Pulling
from fireplug.errors import UsageError
from fireplug.invocation import Invocation
from fireplug.manage.control import Hosts, Located, record_of
from fireplug.run.records import RunBook, RunRecord, keep_output_and_remove
from fireplug.support import labels


@dataclass(frozen=True)
class Pulled:
    host: str
    project_root: str
    runs: tuple[Located, ...]
    still_running: tuple[str, ...]


def pull_runs(invocation: Invocation, peers: Hosts, runs: Sequence[Located]) -> list[Pulled]:
    """Bring the results of ``runs`` back, one sync (changes made on the host only) per project
    and host; then each run that has ended is done with: its output is kept here, its
    container removed, its record marked pulled.

    Raises:
        UsageError: a run of another project, not started from this machine.
        FireplugError: a host, a sync or a removal failed (what completed stays done).
    """
    groups: dict[tuple[str, str], list[Located]] = {}
    for located in runs:
        groups.setdefault((_project_root(invocation, located), located.host), []).append(located)
    done = []
    for (root, host), members in groups.items():
        project = invocation if str(invocation.config.root) == root else invocation.for_project(Path(root))
        connection = peers.connection(host)
        ended = tuple(
            (located.state.handle if located.state is not None else "", located.record or record_of(located)) for located in members if not located.running
        )
        by_id = {located.run_id: located for located in members}

        def done_with(handle: str, record: RunRecord, book: RunBook = project.runs, by_id: dict[str, Located] = by_id) -> None:
            located = by_id[record.id]
            if located.state is not None and not located.state.running:
                _done_with(book, peers, located)

        pulling = Pulling(project, connection, peers.executor(host), ended, done_with)
        backend_for(connection.host).pull(pulling)
        still = tuple(located.run_id for located in members if located.running)
        done.append(Pulled(host, root, tuple(members), still))
    return done


def _project_root(invocation: Invocation, located: Located) -> str:
    if located.record is not None:
        return located.record.root
    if located.project_key == invocation.config.project.key:
        return str(invocation.config.root)
    project = located.state.labels.get(labels.PROJECT, "?") if located.state else "?"
    raise UsageError(
        f"run {located.run_id} belongs to project {project} ({located.project_key}), not this one, and was not started from this machine",
        hint="run fp pull in that project's folder",
    )


def _done_with(book: RunBook, peers: Hosts, located: Located) -> None:
    """Keep an ended run's output here, then remove its container."""
    assert located.state is not None
    keep_output_and_remove(book, peers.executor(located.host), located.state.handle, located.run_id)
    record = located.record or record_of(located)
    ended = replace(record.with_end(located.state.exit_code, now=located.state.finished_at), pulled=time.time())
    book.save(ended)
