"""The seam: what every place of execution provides, and the values that cross it.

A ``Backend`` is one kind of place (a Docker engine, a swarm, ...). Above it, the pipeline of
one run (``pipeline.py``), ``fp map``'s scheduler and the management verbs (``manage/``,
`fp hosts`) talk only to these protocols; below it, each kind decides how the image
reaches the place, how the data moves, and how a run is started, watched and collected.

    Backend.prepare(request)    -> Place        connect, check, make the image available there
    Place.sync_in() / run() / start_detached() / sync_out(status) / collect_left()
    Place.open_lane(map)        -> Lane         fp map's runs on this place
    Backend.executor(...)       -> Executor     find, state, logs, signal, remove (fp ps/logs/stop)
    Backend.pull / garbage / probe              fp pull, fp gc, fp hosts
    Watched                                     a started run, as supervision.py follows it to its end

A new kind is one folder under backends/ implementing ``Backend`` (and the ``Place``, ``Lane``,
``Executor`` and ``Watched`` it uses), plus one entry in ``backends/__init__.py``'s ``KINDS``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from fireplug.errors import BackendError as BackendError
from fireplug.errors import NotStarted as NotStarted
from fireplug.support.units import human_bytes

if TYPE_CHECKING:
    from fireplug.hosts import Connection
    from fireplug.hosts.inventory import Host
    from fireplug.invocation import Invocation
    from fireplug.run.records import RunRecord
    from fireplug.run.request import Placement, RunRequest
    from fireplug.run.spec import ContainerSpec
    from fireplug.sync.report import SyncReport
    from fireplug.sync.results import Landed

HELPER_AGE_SECONDS = 3600  # fp gc leaves a younger helper alone: it may belong to an fp that is running now
Write = Callable[[int, bytes], None]  # (stream: 1 stdout, 2 stderr; bytes) of a run's output


@dataclass(frozen=True)
class RunState:
    """A run as its backend sees it now."""

    handle: str  # the backend's id for it (a container id, a service id)
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    state: str = ""  # created, running, paused, restarting, exited, dead, removing
    exit_code: int | None = None  # once it ended
    started_at: float | None = None  # seconds since the epoch
    finished_at: float | None = None
    image_id: str = ""

    @property
    def running(self) -> bool:
        return self.state in ("running", "paused", "restarting")

    @property
    def ended(self) -> bool:
        return self.state in ("exited", "dead")


class Executor(Protocol):
    """The primitives of the runs at one place (each may raise EngineUnreachable or EngineError)."""

    @property
    def host(self) -> str: ...

    def signal(self, handle: str, signal_name: str) -> None:
        """Send a signal to the command; one that already ended is not an error."""

    def signal_run(self, run_id: str, signal_name: str) -> None:
        """Signal a run that has no handle of its own (a swarm sweep's); a no-op where none exists."""

    def remove(self, handle: str) -> None:
        """Remove the run (stopping it first if it still runs); a missing one is not an error."""

    def find(self, labels: Iterable[str], *, running_only: bool = True) -> list[RunState]:
        """The runs carrying every label in ``labels`` (``key=value``)."""

    def state(self, handle: str) -> RunState | None:
        """One run in detail (exit status, times); None when it is gone."""

    def logs(self, handle: str, *, follow: bool) -> Iterator[tuple[int, bytes]]:
        """Its output so far as (stream, bytes): 1 stdout, 2 stderr; ``follow``: until it ends."""


class Watched(Protocol):
    """A started run, as its backend reaches it."""

    @property
    def stopping_words(self) -> str:
        """What a second signal stops, in words: "container fp-x", "its task"."""

    def output(self) -> Iterator[tuple[int, bytes]]:
        """Its output as (stream, bytes) as it comes (1 stdout, 2 stderr), until it ended or the
        stream broke (the end then says how it ended)."""

    def wait(self) -> int:
        """Block until it ended; its exit status (``supervision.STOPPED`` once ``stop`` ended it).

        Raises:
            FireplugError: its place was lost, or refused it.
        """

    def forward(self, signal_name: str) -> None:
        """Pass a signal to the command."""

    def stop(self) -> None:
        """End it now."""


class Signallable(Protocol):
    def signal(self, handle: str, signal_name: str) -> None: ...


class Gate(Protocol):
    """fp map's board, as a lane sees it while it starts a run."""

    def enter(self, key: str, signaller: Signallable) -> None:
        """The run ``key`` is about to start (signals for it go to ``signaller``).

        Raises:
            NotStarted: the map is stopping: the run must not start.
        """


class Place(Protocol):
    """One request prepared at one place: the image is there, the spec fits."""

    @property
    def host(self) -> str: ...

    @property
    def spec(self) -> ContainerSpec:
        """The request's run as it starts here (a map's runs are made from it)."""

    def sync_in(self) -> None:
        """Make the data folder present there (raises SyncError, SyncInterrupted)."""

    def ready_for_run(self) -> None:
        """Without a sync in: what a run needs there anyway (its data folder, made empty)."""

    def run(self, *, last_step: bool) -> int:
        """Run the command attached to this terminal to its end; its exit status.

        Raises:
            ConnectionLost: the place was lost once it started (it may run on).
            Interrupted: a signal came before it started.
        """

    def start_detached(self) -> str:
        """Start the command and leave it running; its run id (said to the user by the caller)."""

    def sync_out(self, status: int | None) -> None:
        """Bring the results back after a run (``status`` None: fp itself failed)."""

    def collect_left(self) -> None:
        """--sync-out-only: bring back what earlier runs left there."""

    def check_command(self, program: str) -> None:
        """Raises: CommandNotFound: ``program`` is not in the image."""

    def open_lane(self, map_id: str, runs: int, *, per_host: int, retries: int, live: Callable[[], bool]) -> Lane:
        """fp map's runs here (``live``: whether the map still counts on this place)."""


class Lane(Protocol):
    """fp map's runs on one prepared place."""

    slots: int
    ready_words: str  # "host 'x' ready: 2 runs at a time"

    def execute(self, spec: ContainerSpec, record: RunRecord, write: Write, gate: Gate) -> int:
        """Start ``spec``, send its output to ``write``, wait for its end, record it; its status.

        Raises:
            NotStarted: the map stopped before it started.
            EngineUnreachable, SshError: the place was lost (the run may go on there).
            FireplugError: the place refused or failed it.
        """

    def land(self, record: RunRecord, status: int) -> Landed | None:
        """The run's results, landed here as it ended (None: they come with ``pull``)."""

    def pull(self) -> SyncReport | None:
        """Bring back what the ended runs wrote (None: nothing to bring, or landed per run)."""

    def close(self) -> list[str]:
        """Remove what the map made there; what could not be removed, one line each."""


@dataclass(frozen=True)
class Node:
    """A node of a place made of several (a swarm's), as `fp hosts` shows it."""

    id: str
    hostname: str
    role: str
    state: str  # ready, down, unknown, disconnected
    version: str
    cpus: float
    memory: int
    gpus: str  # its generic resources ("NVIDIA-GPU=2"), "" for none
    tasks: int  # fp runs' tasks running on it


@dataclass(frozen=True)
class Reading:
    """A place's resources and load, as its backend reads them."""

    cpus: int
    memory: int
    jobs: frozenset[str]  # running fp jobs: the fp process that started each (or its container id)
    gpus: bool
    free_bytes: int | None = None
    nodes: tuple[Node, ...] = ()


@dataclass(frozen=True)
class Garbage:
    kind: str  # run, helper, image, dangling image, trash; service, secret (a swarm's)
    handle: str  # container or image id, or a path
    name: str
    bytes: int
    why: str

    def describe(self) -> str:
        return f"{self.kind} {self.name} ({human_bytes(self.bytes)}): {self.why}"


@dataclass
class Found:
    items: list[Garbage] = field(default_factory=list)
    kept_runs: list[str] = field(default_factory=list)  # ended runs whose results did not come back

    @property
    def bytes(self) -> int:
        return sum(item.bytes for item in self.items)


@dataclass(frozen=True)
class Pulling:
    """Runs of one project on one place whose results `fp pull` brings back."""

    project: Invocation
    connection: Connection
    executor: Executor
    ended: tuple[tuple[str, RunRecord], ...]  # (handle or "", the run's record) of runs that ended
    done_with: Callable[[str, RunRecord], None]  # keep an ended run's output, remove it, mark it pulled


class Backend(Protocol):
    """One kind of place where runs execute."""

    kind: str

    def prepare(self, invocation: Invocation, request: RunRequest, host: Host, started: float) -> Place:
        """Connect, check the request against the place and make its image available there: all
        before any data moves.

        Raises:
            FireplugError: fp's own failure, or a request this kind of place cannot serve.
        """

    def connect(self, invocation: Invocation, host: Host, *, timeout: float) -> Connection:
        """Reach the place (its engine, its shell), for the management verbs.

        Raises:
            FireplugError: it cannot be reached.
        """

    def executor(self, invocation: Invocation, connection: Connection) -> Executor: ...

    def pull(self, pulling: Pulling) -> None:
        """Bring the results of ended (and running) runs back; then done_with each ended one."""

    def garbage(self, invocation: Invocation, connection: Connection, records: Mapping[str, RunRecord], keep: int) -> Found:
        """What fp made there and nobody needs any more."""

    def remove_garbage(self, invocation: Invocation, connection: Connection, item: Garbage) -> bool:
        """Remove one item of its own kinds (False: not one of them)."""

    def trash_left(self, connection: Connection, base_image: str) -> list[tuple[int, str]]:
        """Remove the old trash there; (bytes, path) of what could not be removed."""

    def read(self, connection: Connection, info: Mapping[str, Any], local_folder: str | None, timeout: float) -> Reading:
        """What `fp hosts` and the choice of an idle host know of the place (``local_folder``
        None: skip the free-disk reading)."""

    def data_words(self, invocation: Invocation, host: Host) -> str | None:
        """The dry run's words on how the data folder gets there (None: it is used in place)."""

    def placement(self, invocation: Invocation, host: Host) -> Placement:
        """Where the data folder is as the place mounts it, and who owns what a run writes there
        (as known without connecting)."""
