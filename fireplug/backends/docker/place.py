"""One request on one Docker engine: the local engine (the data folder mounted in place) or a
remote one (the data folder synced to ``<data_root>/<project key>/`` there, by rsync over ssh,
the Docker API or a bucket, two-way before and after the run).
"""

from __future__ import annotations

import contextlib
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from fireplug.backends.docker.attached import run_container
from fireplug.backends.docker.executor import DockerExecutor
from fireplug.errors import ConfigError, ConnectionLost, FireplugError, SyncInterrupted
from fireplug.image.base import ensure_base
from fireplug.image.ready import check_command
from fireplug.run.options import Publish, check_against_host, local_port, through_ssh
from fireplug.run.records import run_record
from fireplug.run.request import container_options, container_user
from fireplug.run.spec import ContainerSpec, docker_run_argv
from fireplug.support import events, labels
from fireplug.support.secrets import display
from fireplug.support.signals import made_uninterrupted
from fireplug.support.state import remember_host
from fireplug.sync.project import ensure_data_folder, local_data_folder, sync_data

if TYPE_CHECKING:
    from fireplug.backends.base import Lane
    from fireplug.config import Config
    from fireplug.hosts import Connection
    from fireplug.hosts.engine import Engine
    from fireplug.hosts.inventory import Host
    from fireplug.invocation import Invocation
    from fireplug.run.request import RunRequest
    from fireplug.sync.report import SyncReport
    from fireplug.sync.s3 import Store
    from fireplug.sync.side import HostSide

FINISHED_RUN_GRACE_SECONDS = 15  # its own fp may still be draining its output (up to 10 s) before removing it


@dataclass
class DockerPlace:
    """A request prepared on one engine: the image is there, the spec fits the engine."""

    invocation: Invocation
    request: RunRequest
    connection: Connection
    spec: ContainerSpec
    started: float
    store: Store | None = None  # the bucket, with --sync s3
    _host_side: HostSide | None = None

    @property
    def host(self) -> str:
        return self.connection.host.name

    @property
    def in_place(self) -> bool:
        """The engine sees this machine's files: the data folder is mounted as it is."""
        return self.connection.host.local

    @property
    def config(self) -> Config:
        return self.invocation.config

    @property
    def host_side(self) -> HostSide:
        if self._host_side is None:
            self._host_side = make_host_side(self.connection, self.config, locks=self.invocation.locks, store=self.store)
        return self._host_side

    # -- the steps of one run ---------------------------------------------------------------

    def sync_in(self) -> None:
        if self.in_place:
            if not self.request.steps.run and not self.request.steps.build:
                events.note(f"host '{self.host}' uses the data folder in place: nothing to sync")
            return
        remember_host(self.invocation.state, self.config.project.key, self.host)
        ensure_data_folder(local_data_folder(self.config))
        self._sync()

    def ready_for_run(self) -> None:
        if self.in_place:
            ensure_data_folder(local_data_folder(self.config))
            return
        remember_host(self.invocation.state, self.config.project.key, self.host)
        self.host_side.list()  # makes the host's data folder when it has none yet: the engine mounts only what exists

    def collect_left(self) -> None:
        if self.in_place:
            if not self.request.steps.build:
                events.note(f"host '{self.host}' uses the data folder in place: nothing to sync")
            return
        remember_host(self.invocation.state, self.config.project.key, self.host)
        ensure_data_folder(local_data_folder(self.config))
        self._sweep_runs()
        self._sync()

    def run(self, *, last_step: bool) -> int:
        if self.in_place:
            ensure_data_folder(local_data_folder(self.config))
            try:
                return self._attached(last_step=True)
            except ConnectionLost as e:
                raise ConnectionLost(e.host, e.container, e.cause, run_id=e.run_id, in_place=True) from e
        return self._attached(last_step=last_step)

    def sync_out(self, status: int | None) -> None:
        """Results come back however the run ended. When fp itself failed (``status`` None), that
        failure is what gets reported; otherwise a failed sync is, with the command's status.

        Raises:
            FireplugError: the results could not be brought back after the command ran.
        """
        if self.in_place:
            return
        try:
            self._sync()
        except FireplugError as e:
            if status is None:
                events.warn(f"results could not be brought back: {e}")
                return
            raise FireplugError(f"{e.message} (the command itself exited with status {status})", hint=e.hint) from e
        except SyncInterrupted as e:
            if status is not None:
                e.story += f" (the command itself had exited with status {status})"
            raise

    def start_detached(self) -> str:
        """Create and start the container, and leave it running (``fp logs`` / ``pull`` / ``stop`` follow
        it); its run id. A signal before the start removes it unstarted."""
        if self.in_place:
            ensure_data_folder(local_data_folder(self.config))
        self._say_starting()
        spec = replace(self.spec, tty=False, stdin=False, labels={**self.spec.labels, labels.DETACHED: "1"})
        executor = DockerExecutor(self.connection.engine)
        handle = made_uninterrupted(lambda: executor.create(spec), executor.remove)
        try:
            executor.start(handle)
        except BaseException:
            with contextlib.suppress(FireplugError):
                executor.remove(handle)
            raise
        record = replace(run_record(self.invocation, spec, self.host), detached=True)
        self.invocation.runs.save(record)
        if container_options(self.config, self.request).publish and self.connection.shell is not None:
            events.note(f"published ports stay on host '{self.host}' (its loopback): a detached run has no forward here")
        pull = "its results are written in place" if self.in_place else f"fp pull {record.id}"
        events.note(f"started on host '{self.host}' and left running: fp logs -f {record.id} follows it, {pull}; run {record.id}")
        return record.id

    def check_command(self, program: str) -> None:
        check_command(self.connection.engine, self.spec, self.invocation.local, program)

    def open_lane(self, map_id: str, runs: int, *, per_host: int, retries: int, live: Callable[[], bool]) -> Lane:
        from fireplug.backends.docker.lane import DockerLane

        return DockerLane(self, map_id, per_host=per_host, live=live)

    # -- helpers -------------------------------------------------------------------------

    def sync_back(self) -> SyncReport | None:
        """Bring back what the host changed (nothing is sent); None on the local engine."""
        if self.in_place:
            return None
        return sync_data(self.invocation, self.host_side, push=False)

    def _sync(self) -> SyncReport:
        full, deletions = self.request.full_sync, self.request.accept_deletions
        return sync_data(self.invocation, self.host_side, full=full, accept_deletions=deletions)

    def _sweep_runs(self) -> None:
        """Before a --sync-out-only: name the project's runs still going on the host, and remove
        those that finished a while ago (a lost connection leaves them: fp never removes a job
        it could not see end)."""
        engine = self.connection.engine
        wanted = [labels.kind_is("run"), f"{labels.PROJECT_KEY}={self.config.project.key}"]
        for found in engine.containers(wanted, running_only=False):
            container, name = str(found.get("Id", "")), str((found.get("Names") or ["?"])[0]).lstrip("/")
            if found.get("State") == "running":
                events.warn(f"{name} of this project is still running on host '{self.host}': what it wrote so far comes back now")
                continue
            since = engine.seconds_since_exit(container) if container else None
            if since is not None and since > FINISHED_RUN_GRACE_SECONDS:
                _remove_quietly(engine, container, name)

    def _attached(self, *, last_step: bool) -> int:
        """Run the command attached; its exit status. The run is recorded once it started."""
        self._say_starting()
        forwards = _PortForwards(self.connection, container_options(self.config, self.request).publish)
        record = run_record(self.invocation, self.spec, self.host)
        book = self.invocation.runs
        began: list[str] = []

        def started(handle: str) -> None:
            began.append(handle)
            book.save(record)
            forwards.open(handle)

        try:
            status = run_container(DockerExecutor(self.connection.engine), self.spec, self.invocation.local.stdio, last_step=last_step, on_started=started)
        except ConnectionLost:
            book.save(replace(record, state="lost"))
            raise
        except BaseException:
            if began:  # it had started, and run_container removed it
                book.save(record.with_end(None))
            raise
        finally:
            forwards.close()
        book.save(record.with_end(status))
        return status

    def _say_starting(self) -> None:
        events.detail(f"image {self.spec.image} on host '{self.host}'; starting {self.spec.name} ({elapsed(self.started)})")
        events.detail(f"$ {display(docker_run_argv(self.spec))}")


def fit_to_host(spec: ContainerSpec, connection: Connection) -> ContainerSpec:
    """The spec checked against the host's engine (before anything is built or synced), with its
    memory (for the default /dev/shm), and published ports kept on an ssh host's loopback.

    Raises:
        FireplugError: an option the host cannot honour (see options.check_against_host).
    """
    engine, host = connection.engine, connection.host
    info = connection.info()
    check_against_host(spec.options, host.name, info, engine.network_names() if spec.options.network else ())
    options = spec.options
    if options.publish and connection.shell is not None and not host.local:
        options = through_ssh(options, host.name)
    elif options.publish and not host.local:
        ports = ", ".join(str(local_port(port)) for port in options.publish)
        events.note(f"ports are published on host '{host.name}' itself (no ssh to forward them here): {ports}")
    return replace(spec, options=options, host_memory=int(info.get("MemTotal") or 0))


class _PortForwards:
    """On an ssh host, each published port listens here too (ssh -L), for as long as the run lasts."""

    def __init__(self, connection: Connection, asked: tuple[Publish, ...]) -> None:
        self.connection = connection
        self.asked = asked if connection.shell is not None and not connection.host.local else ()
        self.opened: list[tuple[str, int, int]] = []

    def open(self, container: str) -> None:
        """Raises: SshError: a forward could not be made (the port is taken here, say)."""
        shell = self.connection.shell
        if not self.asked or shell is None:
            return
        published = self.connection.engine.published_ports(container)
        for port in self.asked:
            address, here, there = port.ip or "127.0.0.1", local_port(port), published.get(port.key, 0)
            if not there:  # the command ended already, and its ports with it: nothing to forward to
                continue
            shell.forward_port(address, here, there)
            self.opened.append((address, here, there))
            events.note(f"port {port.container_port} of the container is at {address}:{here} here (forwarded over ssh)")

    def close(self) -> None:
        shell = self.connection.shell
        if shell is None:
            return
        for address, here, there in self.opened:
            shell.forward_port(address, here, there, cancel=True)


def _remove_quietly(engine: Engine, container: str, name: str) -> None:
    try:
        engine.remove_container(container)
    except FireplugError as e:
        events.warn(f"finished run {name} could not be removed ({e})")
    else:
        events.note(f"removed {name}, a run of this project that ended on host '{engine.host}' without fp")


def make_host_side(connection: Connection, config: Config, *, locks: Path | None = None, store: Store | None = None) -> HostSide:
    """Through ``store`` (a bucket) when given; else rsync over the host's ssh when it has one
    (unless [sync] mode is api), else the Docker API (on fp's base image).

    Raises:
        ConfigError: mode rsync for a host without ssh.
    """
    folder = project_folder_on_host(connection.host, config)
    mode = config.sync.mode
    if store is None and connection.shell is not None and mode != "api":
        from fireplug.sync.rsync import RsyncHost
        from fireplug.sync.tree import TRASH_FOLDER

        return RsyncHost(connection.shell, posixpath.join(folder, config.project.data), posixpath.join(folder, TRASH_FOLDER))
    if store is None and mode == "rsync":
        raise ConfigError(f"host '{connection.host.name}' has no ssh, so rsync cannot reach it", hint="use --sync api or --sync s3", key="sync.mode")
    from fireplug.sync.api import ApiHost

    base = ensure_base(connection.engine, config.build.base_image, locks=locks)
    helper_labels = {labels.PROJECT: config.project.name, labels.PROJECT_KEY: config.project.key}
    user = ""
    if connection.shell is not None:  # the helpers write as the runs do, so that the ssh user owns the files
        user = container_user(config.run.user, connection.shell.identity())
        connection.shell.run(["mkdir", "-p", "--", folder], what="making the project's folder")  # else the engine makes it, as root
    if store is not None:
        from fireplug.sync.s3 import S3Host

        return S3Host(connection.engine, base.tag, helper_labels, folder, config.project.data, store, user=user)
    return ApiHost(connection.engine, base.tag, helper_labels, folder, config.project.data, user=user)


def data_on_host(host: Host, config: Config) -> str:
    """The data folder as the host's engine sees it: the local folder, or ``<data_root>/<key>/<data>``."""
    if host.local:
        return str(config.root / config.project.data)
    return posixpath.join(project_folder_on_host(host, config), config.project.data)


def project_folder_on_host(host: Host, config: Config) -> str:
    """The project's own folder on a remote host: its data folder and its sync trash, side by side."""
    return posixpath.join(host.data_root, config.project.key)


def elapsed(started: float) -> str:
    return f"{(time.perf_counter() - started) * 1000:.0f} ms"
