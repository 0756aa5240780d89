"""The runs started from this machine: one small record each, so that `fp ps` still shows a
run once its container is gone, and `fp logs` / `pull` / `stop` know its host without asking
every host.

A record is JSON under fp's state folder (``runs/RUN_ID.json``), written atomically; one that
is damaged, or not what ``save`` writes, is skipped (fp's own files are disposable). A run's
output, when fp kept it (map runs, and runs whose container `fp pull` removed), lies beside it
as ``RUN_ID.log``.

Run ids look like ``20261203-071500-a1b2c3`` (map ids ``map-20261203-071500-a1b2c3``); any
unique prefix, or the six hex digits at the end, names one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fireplug.errors import UsageError
from fireplug.support import labels
from fireplug.support.state import save_bytes

if TYPE_CHECKING:
    from collections.abc import Iterator

    from fireplug.backends.base import Executor
    from fireplug.invocation import Invocation
    from fireplug.run.spec import ContainerSpec

RUN_ID = re.compile(r"(map-)?\d{8}-\d{6}-[0-9a-f]{6}")
RECORD_LIMIT = 64 * 1024  # bytes: a record is a few hundred
KEEP_SECONDS = 30 * 86400  # records of ended runs older than this are pruned
SHARED_RUN = "sweep:"  # a record's container for a run with no handle of its own (a swarm sweep's: this, then its name)


def new_id(prefix: str = "", now: float | None = None) -> str:
    """A fresh run id (``prefix`` "map-" for a map)."""
    return f"{prefix}{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}-{os.urandom(3).hex()}"


@dataclass(frozen=True)
class RunRecord:
    id: str
    host: str
    project: str
    project_key: str
    root: str  # the project folder on this machine
    container: str  # the container's name
    command: str  # as shown to people (secrets redacted)
    started: float  # seconds since the epoch
    map_id: str = ""
    index: int | None = None  # FP_RUN_INDEX, in a map
    params: Mapping[str, str] = field(default_factory=dict)
    detached: bool = False
    state: str = "running"  # running, exited, lost (fp lost the host while it ran), removed
    exit_code: int | None = None
    ended: float | None = None
    pulled: float | None = None  # when its results were last brought back after it ended

    def with_end(self, exit_code: int | None, *, state: str = "exited", now: float | None = None) -> RunRecord:
        return replace(self, state=state, exit_code=exit_code, ended=now if now is not None else time.time())


class RunBook:
    """The records in one folder (``<state>/runs``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def save(self, record: RunRecord) -> None:
        """Best effort: a run goes on without its record (ps then shows it from its labels only)."""
        with contextlib.suppress(OSError):
            save_bytes(self.folder / f"{record.id}.json", json.dumps(asdict(record), sort_keys=True).encode())

    def discard(self, run_id: str) -> None:
        """Forget a run that never ran (a sweep's, withdrawn before a worker took it)."""
        with contextlib.suppress(OSError):
            (self.folder / f"{run_id}.json").unlink()

    def log_path(self, run_id: str) -> Path:
        return self.folder / f"{run_id}.log"

    def load(self, run_id: str) -> RunRecord | None:
        return _parse(self._read(self.folder / f"{run_id}.json"))

    def all(self) -> list[RunRecord]:
        """Every readable record, oldest first."""
        try:
            names = sorted(os.listdir(self.folder))
        except OSError:
            return []
        found = [_parse(self._read(self.folder / name)) for name in names if name.endswith(".json")]
        return sorted((record for record in found if record is not None), key=lambda record: record.started)

    def find(self, wanted: str) -> list[RunRecord]:
        """The runs ``wanted`` names: a run id, a map id (all its runs), a unique prefix or the six hex digits.

        Raises:
            UsageError: it names runs of more than one id.
        """
        return matching(self.all(), wanted)

    def prune(self, now: float | None = None) -> None:
        """Forget ended runs older than KEEP_SECONDS (and their kept output)."""
        now = now if now is not None else time.time()
        for record in self.all():
            if record.ended is not None and now - record.ended > KEEP_SECONDS:
                for path in (self.folder / f"{record.id}.json", self.log_path(record.id)):
                    path.unlink(missing_ok=True)

    def _read(self, path: Path) -> bytes:
        try:
            with open(path, "rb") as source:
                return source.read(RECORD_LIMIT + 1)
        except OSError:
            return b""


def matching(records: Iterable[RunRecord], wanted: str) -> list[RunRecord]:
    """The records ``wanted`` names (see ``RunBook.find``).

    Raises:
        UsageError: it names more than one run or map.
    """
    records = list(records)
    for exact in (lambda record: record.id == wanted, lambda record: record.map_id == wanted):
        found = [record for record in records if exact(record)]
        if found:
            return found
    found = [record for record in records if _names(wanted, record.id) or (record.map_id and _names(wanted, record.map_id))]
    ids = {record.map_id if record.map_id and _names(wanted, record.map_id) else record.id for record in found}
    if len(ids) > 1:
        raise UsageError(f"{wanted!r} names several runs: {', '.join(sorted(ids)[:5])}", hint="give more of the id")
    return found


def _names(wanted: str, run_id: str) -> bool:
    return bool(wanted) and (run_id.startswith(wanted) or (len(wanted) == 6 and run_id.endswith("-" + wanted)))


_FIELDS: Mapping[str, tuple[type, ...]] = {
    "id": (str,),
    "host": (str,),
    "project": (str,),
    "project_key": (str,),
    "root": (str,),
    "container": (str,),
    "command": (str,),
    "started": (int, float),
    "map_id": (str,),
    "index": (int, type(None)),
    "params": (dict,),
    "detached": (bool,),
    "state": (str,),
    "exit_code": (int, type(None)),
    "ended": (int, float, type(None)),
    "pulled": (int, float, type(None)),
}


def _parse(data: bytes) -> RunRecord | None:
    """A record from its file's bytes; None for anything ``save`` would not have written."""
    if not data or len(data) > RECORD_LIMIT:
        return None
    try:
        value: Any = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict) or set(value) != set(_FIELDS):
        return None
    for name, kinds in _FIELDS.items():
        item = value[name]
        if not isinstance(item, kinds) or (isinstance(item, bool) and bool not in kinds):
            return None
    if not RUN_ID.fullmatch(value["id"]) or (value["map_id"] and not RUN_ID.fullmatch(value["map_id"])):
        return None
    if not all(isinstance(key, str) and isinstance(item, str) for key, item in value["params"].items()):
        return None
    return RunRecord(**value)


def run_record(invocation: Invocation, spec: ContainerSpec, host: str) -> RunRecord:
    """The local record of a run of ``spec`` on ``host``, started now."""
    given, config = spec.labels, invocation.config
    index = given.get(labels.INDEX, "")
    return RunRecord(
        id=given[labels.RUN],
        host=host,
        project=config.project.name,
        project_key=config.project.key,
        root=str(config.root),
        container=spec.name,
        command=given.get(labels.COMMAND, ""),
        started=time.time(),
        map_id=given.get(labels.MAP, ""),
        index=int(index) if index.isdigit() else None,
        params=json.loads(given[labels.PARAMS]) if labels.PARAMS in given else {},
    )


def keep_output_and_remove(book: RunBook, executor: Executor, handle: str, run_id: str) -> None:
    """An ended run's output kept here (unless it is already), then the run removed from its host."""
    kept = book.log_path(run_id)
    if not kept.exists():
        keep_output(executor.logs(handle, follow=False), kept)
    executor.remove(handle)


def keep_output(chunks: Iterator[tuple[int, bytes]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(partial, "wb") as kept:
        for _, data in chunks:
            kept.write(data)
    partial.replace(path)
