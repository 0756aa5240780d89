"""Runs on a Docker Swarm: the image built on a manager and pushed to the swarm's registry,
the data staged in S3 (a task fetches and publishes it, ``task.py``), one ``replicated-job``
service per run (``run.py``), a map's runs served by workers of one service (``sweep.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fireplug.backends.base import Found, Garbage, Gate, NotStarted, Pulling, Reading, Write
from fireplug.backends.docker.executor import DockerExecutor
from fireplug.backends.docker.garbage import helpers
from fireplug.backends.swarm.run import Prepared, collect, finish_run, follow, forget_run, prepare, require_staging, signaller, start_run
from fireplug.backends.swarm.service import SECRET_LABEL, SwarmExecutor, swarm_nodes
from fireplug.backends.swarm.sweep import Sweep, Withdrawn
from fireplug.errors import FireplugError
from fireplug.run.records import SHARED_RUN, keep_output_and_remove
from fireplug.run.request import Placement
from fireplug.support import events, labels
from fireplug.sync.project import ensure_data_folder, local_data_folder

if TYPE_CHECKING:
    from fireplug.hosts import Connection
    from fireplug.hosts.inventory import Host
    from fireplug.invocation import Invocation
    from fireplug.run.records import RunRecord
    from fireplug.run.request import RunRequest
    from fireplug.run.spec import ContainerSpec
    from fireplug.sync.report import SyncReport
    from fireplug.sync.results import Landed


class SwarmBackend:
    kind = "swarm"

    def prepare(self, invocation: Invocation, request: RunRequest, host: Host, started: float) -> SwarmPlace:
        return SwarmPlace(invocation, request, prepare(invocation, request, host), started)

    def connect(self, invocation: Invocation, host: Host, *, timeout: float) -> Connection:
        return invocation.connect(host, timeout=timeout)

    def executor(self, invocation: Invocation, connection: Connection) -> SwarmExecutor:
        return SwarmExecutor(connection.engine, _signaller_of_records(invocation))

    def pull(self, pulling: Pulling) -> None:
        """A swarm run's results come from the bucket, once its task ended and published them."""
        from fireplug.sync.s3 import Store

        project, host = pulling.project, pulling.connection.host
        config = project.config
        store = require_staging(host, Store.for_project(config, project.state) if config.sync.s3 else None)
        data = local_data_folder(config)
        ensure_data_folder(data)
        for handle, record in pulling.ended:
            landed = collect(store, project, record, data)
            if landed is None:
                why = f"stopped before it could, or its task failed: fp logs {record.id} shows why; or they were pulled already"
                events.warn(f"run {record.id} published no results ({why})")
            else:
                events.landed(host.name, landed)
            pulling.done_with(handle, record)
            forget_run(store, record.id)

    def garbage(self, invocation: Invocation, connection: Connection, records: Mapping[str, RunRecord], keep: int) -> Found:
        found = Found()
        ended_services(self.executor(invocation, connection), found)
        helpers(DockerExecutor(connection.engine), found)
        return found  # (a swarm's runs keep no data folder on it: their data is in the bucket)

    def remove_garbage(self, invocation: Invocation, connection: Connection, item: Garbage) -> bool:
        if item.kind == "service":  # its output kept here first (fp logs still shows it)
            keep_output_and_remove(invocation.runs, self.executor(invocation, connection), item.handle, item.name)
        elif item.kind == "secret":
            connection.engine.remove_secret(item.handle)
        else:
            return False
        return True

    def trash_left(self, connection: Connection, base_image: str) -> list[tuple[int, str]]:
        return []

    def read(self, connection: Connection, info: Mapping[str, Any], local_folder: str | None, timeout: float) -> Reading:
        """A swarm as one host: the resources of its ready nodes together."""
        nodes = swarm_nodes(connection.engine)
        ready = [node for node in nodes if node.state == "ready"]
        return Reading(
            cpus=int(sum(node.cpus for node in ready)),
            memory=sum(node.memory for node in ready),
            jobs=frozenset(f"{node.id}:{number}" for node in nodes for number in range(node.tasks)),
            gpus=any(node.gpus for node in ready),
            nodes=nodes,
        )

    def data_words(self, invocation: Invocation, host: Host) -> str | None:
        s3 = invocation.config.sync.s3
        return f"through {s3}, fetched and published by each task" if s3 else "through S3 ([sync] s3 is not set: a swarm refuses the run)"

    def placement(self, invocation: Invocation, host: Host) -> Placement:
        return Placement("")  # (no data folder is mounted: a task fetches it)


@dataclass
class SwarmPlace:
    """One request on a swarm: the image pushed; the data staged by ``sync_in``."""

    invocation: Invocation
    request: RunRequest
    prepared: Prepared
    started: float
    _handle: str = ""
    _record: RunRecord | None = None

    @property
    def host(self) -> str:
        return self.prepared.connection.host.name

    @property
    def spec(self) -> ContainerSpec:
        return self.prepared.spec

    def sync_in(self) -> None:
        self.prepared.stage(self.invocation)

    def ready_for_run(self) -> None:
        self.prepared.stage(self.invocation)  # (a swarm refuses a request without a sync in: never reached)

    def collect_left(self) -> None:
        """(A swarm refuses --sync-out-only: fp pull RUN brings a run's results back.)"""

    def check_command(self, program: str) -> None:
        """(The nodes pull the image: a missing command fails the task, said by its status 127.)"""

    def run(self, *, last_step: bool) -> int:
        submitted = start_run(self.invocation, self.prepared, self.spec)
        self._say_started(submitted.handle)
        self._record = submitted.record
        followed, status = follow(submitted, self.prepared.connection, self.prepared.store, last_step=last_step)
        self._handle = "" if followed.stopped else followed.handle  # (a stopped task's service is gone)
        return status

    def start_detached(self) -> str:
        spec = replace(self.spec, labels={**self.spec.labels, labels.DETACHED: "1"})
        submitted = start_run(self.invocation, self.prepared, spec, detached=True)
        self._say_started(submitted.handle)
        run_id = submitted.record.id
        events.note(f"started on swarm '{self.host}' and left running: fp logs -f {run_id} follows it, fp pull {run_id} brings its results; run {run_id}")
        return run_id

    def sync_out(self, status: int | None) -> None:
        if self._record is None or status is None:
            return  # it was not followed to its end: its results stay in the bucket (fp pull)
        landed = finish_run(self.invocation, self.prepared, self._record, status, handle=self._handle)
        if landed is None:
            events.warn(f"run {self._record.id} published no results (stopped before it could, or its task failed: fp logs {self._record.id} shows why)")
        else:
            events.landed(self.host, landed)

    def open_lane(self, map_id: str, runs: int, *, per_host: int, retries: int, live: Callable[[], bool]) -> SwarmLane:
        sweep = Sweep(self.prepared, map_id, runs, retries=retries)  # all at once: the swarm places them where their reservations fit
        sweep.start()
        return SwarmLane(self, sweep, runs)

    def _say_started(self, handle: str) -> None:
        ms = (time.perf_counter() - self.started) * 1000
        events.detail(f"service {handle[:12]} ({self.spec.name}) on swarm '{self.host}', image {self.prepared.image} ({ms:.0f} ms)")


class SwarmLane:
    """fp map's runs on a swarm: handed to the sweep's workers, each landed here as it ends."""

    def __init__(self, place: SwarmPlace, sweep: Sweep, runs: int) -> None:
        self.place = place
        self.sweep = sweep
        self.slots = runs
        self.ready_words = f"swarm '{place.host}' ready: all runs are handed to it, placed by its free resources"

    def execute(self, spec: ContainerSpec, record: RunRecord, write: Write, gate: Gate) -> int:
        run_id = spec.labels[labels.RUN]
        gate.enter(run_id, self.sweep)
        book = self.place.invocation.runs
        record = _sweep_run(record)
        book.save(record)
        try:
            return self.sweep.run(spec, write)
        except Withdrawn:
            book.discard(run_id)
            raise NotStarted from None
        except FireplugError:
            book.save(replace(record, state="lost"))
            raise

    def land(self, record: RunRecord, status: int) -> Landed | None:
        record = _sweep_run(record)
        return finish_run(self.place.invocation, self.place.prepared, record, status)

    def pull(self) -> SyncReport | None:
        return None  # (each run landed as it ended)

    def close(self) -> list[str]:
        try:
            self.sweep.close()
        except FireplugError as e:
            events.warn(f"swarm '{self.place.host}': fp could not remove the map's service ({e}): `fp gc --host {self.place.host}` does")
        return []


def _sweep_run(record: RunRecord) -> RunRecord:
    """A sweep's run as recorded: it has no service of its own (``fp ps`` asks its map's fp)."""
    return replace(record, container=f"{SHARED_RUN}{record.container}")


def _signaller_of_records(invocation: Invocation) -> Callable[[str, str], bool]:
    """How `fp stop` reaches a swarm task: a key in the bucket of the run's project (the one
    this machine recorded it under, else this folder's); False without one (a stop then
    removes the service)."""
    from fireplug.sync.s3 import Store

    def send(run_id: str, signal_name: str) -> bool:
        record = invocation.runs.load(run_id)
        project = invocation
        if record is not None and record.root != str(invocation.config.root):
            try:
                project = invocation.for_project(Path(record.root))
            except FireplugError:
                return False
        if not project.config.sync.s3:
            return False
        return signaller(Store.for_project(project.config, project.state))(run_id, signal_name)

    return send


def ended_services(executor: SwarmExecutor, found: Found) -> None:
    """A swarm run's ended service: its results stay in the bucket (fp pull ID brings them), its
    output is kept here when it goes; and the job secrets whose service is gone."""
    runs = set()
    services = executor.find([labels.kind_is("run")], running_only=False) + executor.find([labels.kind_is("sweep")], running_only=False)
    for state in services:  # (a map's sweep: its run label is the map's id, as its secret's)
        run_id = state.labels.get(labels.RUN, "")
        runs.add(run_id)
        if state.ended:
            found.items.append(Garbage("service", state.handle, run_id or state.name, 0, f"ended (exit {state.exit_code}); its results stay in the bucket"))
    for secret in executor.engine.secrets([SECRET_LABEL]):
        run_id = str(((secret.get("Spec") or {}).get("Labels") or {}).get(SECRET_LABEL, ""))
        if run_id not in runs:
            found.items.append(Garbage("secret", str(secret.get("ID", "")), f"of run {run_id}", 0, "a run's job secret, whose service is gone"))
