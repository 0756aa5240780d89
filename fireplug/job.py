"""One `fp COMMAND`: scan the project, make sure its image exists on the host, run the command.

Everything about the local process (folder, environment, user, terminals) comes in as a
``LocalSide`` value, so this module reads no globals.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fireplug import console, hosts, labels
from fireplug.build import (
    GENERATED_DOCKERFILE,
    Image,
    Recipe,
    base_files,
    base_image_tag,
    ensure_base,
    ensure_deps_image,
    ensure_project_image,
    generated_recipe,
    image_hash,
    latest_project_image,
    own_recipe,
    project_dockerfile,
    project_image_tag,
    scan_rules,
)
from fireplug.config import PROJECT_FILE, Config, project_key_at
from fireplug.context import Context, ScanLimit, human_bytes
from fireplug.deps import Dependencies, find_dependencies, layer_tag
from fireplug.engine import Engine
from fireplug.errors import ConfigError, ConnectionLost, ContextChanged, FireplugError, ProjectError, UsageError
from fireplug.execution import DockerExecutor
from fireplug.inventory import Host
from fireplug.invocation import Invocation, LocalSide
from fireplug.locks import Leases, this_process
from fireplug.lookup import ensure_command
from fireplug.options import ContainerOptions, Publish, check_against_host, local_port, parse_options, through_ssh
from fireplug.proc import display
from fireplug.run import ignore_late_signals, made_uninterrupted, run_container
from fireplug.runs import RunRecord, new_id
from fireplug.scancache import cache_dir, load_context
from fireplug.scancache import forget as forget_scan
from fireplug.spec import ContainerSpec, Mount, docker_run_argv
from fireplug.sync import SyncInterrupted, SyncReport
from fireplug.sync.record import PairFiles, last_host, remember_host
from fireplug.sync.session import HostSide, Owner, SyncRequest, preview, sync
from fireplug.sync.tree import TRASH_FOLDER

if TYPE_CHECKING:  # imported where used: fp's start-up does not pay for a transport it may not use
    from fireplug.sync.s3 import Store

COMMAND_LABEL_LIMIT = 512
FINISHED_RUN_GRACE_SECONDS = 15  # its own fp may still be draining its output (up to 10 s) before removing it


@dataclass(frozen=True)
class Steps:
    """Which of build, sync in, run and sync out a request asks for (the original tool's flags)."""

    build: bool = True
    sync_in: bool = True
    run: bool = True
    sync_out: bool = True

    @classmethod
    def from_flags(cls, *, no_build: bool, no_sync: bool, sync_in_only: bool, sync_out_only: bool, no_run: bool) -> Steps:
        """Raises: UsageError: flags that contradict each other."""
        if sum([sync_in_only, sync_out_only, no_run]) > 1:
            raise UsageError("--sync-in-only, --sync-out-only and --no-run exclude each other")
        if no_sync and (sync_in_only or sync_out_only):
            raise UsageError("--no-sync contradicts --sync-in-only and --sync-out-only")
        if sync_in_only:
            return cls(build=False, sync_in=True, run=False, sync_out=False)
        if sync_out_only:
            return cls(build=False, sync_in=False, run=False, sync_out=True)
        return cls(build=not no_build, sync_in=not no_sync, run=not no_run, sync_out=not no_sync and not no_run)


@dataclass(frozen=True)
class RunRequest:
    command: tuple[str, ...]
    env: tuple[str, ...] = ()
    host: str | None = None
    dry_run: bool = False
    verbose: bool = False
    steps: Steps = Steps()
    full_sync: bool = False  # compare every file's content on both sides, whatever the metadata says
    accept_deletions: bool = False  # repeat a mass deletion on the host here too
    container: Mapping[str, Any] = field(default_factory=dict)  # container options from the command line (see options.py)
    yes: bool = False  # ship a folder without fireplug.toml however big its code is
    detach: bool = False  # start the command and return (no sync out: fp pull brings the results)


def run(invocation: Invocation, request: RunRequest) -> int:
    """Build, sync in, run ``request.command``, sync out (as the request's steps say).

    Returns the command's exit status (0 when it was not asked to run).

    Raises:
        FireplugError: any failure of fp itself (host, engine, build, sync, configuration).
    """
    started = time.perf_counter()
    config = invocation.config
    resolve_env([*config.run.env, *request.env], invocation.local.environ)  # usage errors first, before any host is probed
    container_options(config, request)  # and a container option docker would refuse
    leases = Leases(invocation.state / "leases")
    host, why = choose_host(invocation, request, leases=leases)
    if why:
        console.note(f"host '{host.name}' ({why})")
    try:
        if host.swarm:
            from fireplug import swarmjob

            return swarmjob.run(invocation, request, host, started, swarmjob.bucket_soon(invocation, host, request.steps))
        store = staging_store(invocation, host, request.steps)
        job = prepare(invocation, request, host, started, store)
        return job.run_here() if host.local else job.run_remote()
    finally:
        leases.release(host.name)


def staging_store(invocation: Invocation, host: Host, steps: Steps) -> Store | None:
    """With ``--sync s3`` and a remote host, the bucket, checked before anything is built.

    Raises:
        S3Error: no credentials, no such bucket, or access denied.
    """
    config = invocation.config
    if config.sync.mode != "s3" or not (steps.sync_in or steps.sync_out):
        return None
    if host.local:
        console.note(f"host 'local' uses the data folder in place: {config.sync.s3} is not used")
        return None
    from fireplug.sync.s3 import Store

    store = Store.for_project(config, invocation.state)
    store.check()
    return store


def prepare(invocation: Invocation, request: RunRequest, host: Host, started: float, store: Store | None = None) -> Job:
    """Connect to ``host``, check the container options against it, and make the image to run
    (built as needed) with the command checked to be in it: all before any data moves."""
    config, local = invocation.config, invocation.local
    spec = container_spec(config, "", request, local, host=host)
    own = own_recipe(config) if request.steps.build else None
    context = scan(config, local, own, limit=None if request.yes else project_limit(config)) if request.steps.build else None
    if request.verbose and context is not None:
        how = "unchanged files known from the last scan" if context.from_record else "scanned"
        console.detail(f"context: {context.file_count} files, {human_bytes(context.total_bytes)}, hash {context.digest[:12]}, {how} ({_ms(started)})")
    connection = invocation.connect(host, verbose=request.verbose)
    if connection.shell is not None and not host.local:  # files written there must stay the ssh user's, for rsync
        spec = container_spec(config, "", request, local, host=host, owner=connection.shell.identity())
    if request.steps.run:
        spec = fit_to_host(spec, connection)
    image = ready_image(connection.engine, invocation, request, own, context, spec)
    if image is not None and project_dockerfile(config) and not config.project.workdir:
        spec = in_image_workdir(spec, config, local, connection.engine.image_config(image.id))
    return Job(invocation, request, connection, replace(spec, image=image.tag if image else ""), started, store)


def in_image_workdir(spec: ContainerSpec, config: Config, local: LocalSide, image_config: Mapping[str, Any]) -> ContainerSpec:
    """With the project's own Dockerfile, the project sits where its WORKDIR says (unless
    project.workdir is set): the command runs there and the data folder is mounted under it."""
    workdir = str(image_config.get("WorkingDir") or "")
    if not workdir.startswith("/"):
        return spec
    return rooted(spec, config, local, workdir)


def rooted(spec: ContainerSpec, config: Config, local: LocalSide, project_in_container: str) -> ContainerSpec:
    """``spec`` with the project at ``project_in_container``: its working folder and data mount."""
    data = Mount(spec.mounts[0].source, posixpath.join(project_in_container, config.project.data))
    return replace(spec, workdir=container_workdir(project_in_container, config.root, local.cwd), mounts=(data, *spec.mounts[1:]))


def fit_to_host(spec: ContainerSpec, connection: hosts.Connection) -> ContainerSpec:
    """The spec checked against the host's engine (before anything is built or synced), with its
    memory (for the default /dev/shm), and published ports kept on an ssh host's loopback.

    Raises:
        FireplugError: an option the host cannot honour (see options.check_against_host).
    """
    engine, host = connection.engine, connection.host
    info = engine.info()
    check_against_host(spec.options, host.name, info, engine.network_names() if spec.options.network else ())
    options = spec.options
    if options.publish and connection.shell is not None and not host.local:
        options = through_ssh(options, host.name)
    elif options.publish and not host.local:
        ports = ", ".join(str(local_port(port)) for port in options.publish)
        console.note(f"ports are published on host '{host.name}' itself (no ssh to forward them here): {ports}")
    return replace(spec, options=options, host_memory=int(info.get("MemTotal") or 0))


def ready_image(engine: Engine, invocation: Invocation, request: RunRequest, own: Recipe | None, context: Context | None, spec: ContainerSpec) -> Image | None:
    """The image to run, and the command checked to be in it: all before any data moves."""
    local = invocation.local
    cache = cache_dir(local.environ, local.home)
    try:
        image = project_image(engine, invocation, request, own, context)
    except ContextChanged:
        forget_scan(invocation.config.root, cache)  # a digest it trusted was wrong, or the file changed
        raise
    if image is not None and request.steps.run:
        _command_in_image(engine, image.tag, image.id, request.command[0], spec, local)
    return image


def check_command(job: Job, program: str) -> None:
    """``program`` is in the job's image (its PATH), as ``ready_image`` checks the command's.

    Raises:
        CommandNotFound: it is not.
    """
    engine = job.connection.engine
    _command_in_image(engine, job.spec.image, engine.image_id(job.spec.image) or "", program, job.spec, job.invocation.local)


def _command_in_image(engine: Engine, tag: str, image_id: str, program: str, spec: ContainerSpec, local: LocalSide) -> None:
    """Raises: CommandNotFound: ``program`` is not in the image's PATH (found names are remembered per image)."""
    lookup_labels = {**spec.labels, labels.KIND: "lookup"}
    ensure_command(engine, tag, image_id, program, lookup_labels, cache_dir(local.environ, local.home).parent / "commands")


def project_image(engine: Engine, invocation: Invocation, request: RunRequest, own: Recipe | None, context: Context | None) -> Image | None:
    """The image to run: built as needed, the newest one with --no-build, none when nothing runs."""
    config, locks = invocation.config, invocation.locks
    if context is not None:
        base = ensure_base(engine, config.build.base_image, verbose=request.verbose, locks=locks) if own is None or own.needs_base else None
        deps = layer_dependencies(config, own)
        if deps is not None and base is not None:
            base = ensure_deps_image(engine, deps, base, verbose=request.verbose, locks=locks)
        chosen = own or generated_recipe(config, base.tag if base else "")
        image = ensure_project_image(engine, config, context, chosen, base, verbose=request.verbose, locks=locks)
        if image.built:
            _say_which_recipe(config, own, deps)
        return image
    if not request.steps.run:
        return None
    latest = latest_project_image(engine, config.project.key)
    if latest.tag != current_image_tag(engine, config, invocation.local):
        console.warn(f"--no-build: the project changed since {latest.tag} was built; running that image anyway (without --no-build, fp rebuilds)")
    return latest


def layer_dependencies(config: Config, own: Recipe | None) -> Dependencies | None:
    """The dependencies fp installs in its layer: none for a project Dockerfile that does not
    build on fp's base (its requirements are its own business, even unreadable ones).

    Raises:
        ConfigError: see find_dependencies.
    """
    if own is not None and not own.needs_base:
        return None
    return find_dependencies(config)


def _say_which_recipe(config: Config, own: Recipe | None, deps: Dependencies | None) -> None:
    """When the project's image was built: what became of its dependencies."""
    for note in deps.notes if deps else ():
        console.note(note)
    if own is not None and deps is not None:
        console.note(f"the project's {own.name} builds FROM ${{FP_BASE}}: fp's dependency layer, with {deps.source} installed")
    elif own is not None and (declared := _declared_dependencies(config)):
        console.note(f"the project's {own.name} does not build FROM ${{FP_BASE}}, so fp leaves {declared} to it")


def _declared_dependencies(config: Config) -> str:
    """What the project declares as dependencies, in words, without reading it ("" for nothing)."""
    with contextlib.suppress(ConfigError):
        found = find_dependencies(config)
        return found.source if found else ""
    return config.build.requirements or "its requirements"


def current_image_tag(engine: Engine, config: Config, local: LocalSide) -> str:
    """The tag a build of the project as it is now would have (its scan is cached: cheap)."""
    own = own_recipe(config)
    base_tag = base_image_tag(config.build.base_image, base_files())
    base_id = (engine.image_id(base_tag) or "") if own is None or own.needs_base else ""
    deps = layer_dependencies(config, own)
    if deps is not None and base_id:
        base_tag = layer_tag(deps, base_id)
        base_id = engine.image_id(base_tag) or ""
    recipe = own or generated_recipe(config, base_tag)
    return project_image_tag(config.project.key, image_hash(scan(config, local, own), recipe, base_id))


@dataclass(frozen=True)
class Job:
    """One request on a prepared host: the image is there, the spec fits the host."""

    invocation: Invocation
    request: RunRequest
    connection: hosts.Connection
    spec: ContainerSpec
    started: float
    store: Store | None = None  # the bucket, with --sync s3

    @property
    def host(self) -> str:
        return self.connection.host.name

    @property
    def config(self) -> Config:
        return self.invocation.config

    @property
    def local(self) -> LocalSide:
        return self.invocation.local

    def run_here(self) -> int:
        """On an engine that sees this machine's files: the data folder is mounted in place."""
        if not self.request.steps.run:
            if not self.request.steps.build:
                console.note(f"host '{self.host}' uses the data folder in place: nothing to sync")
            return 0
        ensure_data_folder(self.config.root / self.config.project.data)
        if self.request.detach:
            return self._detached()
        try:
            return self.start(last_step=True)
        except ConnectionLost as e:
            raise ConnectionLost(e.host, e.container, e.cause, run_id=e.run_id, in_place=True) from e

    def run_remote(self) -> int:
        """Sync, run, and sync again however the run ended (each sync is two-way)."""
        steps = self.request.steps
        remember_host(self.invocation.state, self.config.project.key, self.host)
        host_side = make_host_side(self.connection, self.config, verbose=self.request.verbose, locks=self.invocation.locks, store=self.store)
        if steps.sync_in:
            ensure_data_folder(self.local_data)
            self.sync(host_side)
        elif steps.run:
            host_side.list()  # makes the host's data folder when it has none yet: the engine mounts only what exists
        if not steps.run:
            if steps.sync_out:
                ensure_data_folder(self.local_data)
                self._sweep_runs()
                self.sync(host_side)
            return 0
        if self.request.detach:
            return self._detached()
        status: int | None = None
        ran = True
        try:
            status = self.start(last_step=not steps.sync_out)
        except (ConnectionLost, KeyboardInterrupt):
            # Lost: the job may run on, and syncing now would bring back half its results.
            # Interrupted: it never started, so it has no results.
            ran = False
            raise
        finally:
            if steps.sync_out and ran:
                self._sync_after_run(host_side, status)
                ignore_late_signals()
        return status

    def _detached(self) -> int:
        run_id = self.start_detached()
        pull = f"fp pull {run_id}" if not self.connection.host.local else "its results are written in place"
        console.note(f"started on host '{self.host}' and left running: fp logs -f {run_id} follows it, {pull}; run {run_id}")
        return 0

    def _sweep_runs(self) -> None:
        """Before a --sync-out-only: name the project's runs still going on the host, and remove
        those that finished a while ago (a lost connection leaves them: fp never removes a job
        it could not see end)."""
        engine = self.connection.engine
        wanted = [labels.kind_is("run"), f"{labels.PROJECT_KEY}={self.config.project.key}"]
        for found in engine.containers(wanted, running_only=False):
            container, name = str(found.get("Id", "")), str((found.get("Names") or ["?"])[0]).lstrip("/")
            if found.get("State") == "running":
                console.warn(f"{name} of this project is still running on host '{self.host}': what it wrote so far comes back now")
                continue
            since = engine.seconds_since_exit(container) if container else None
            if since is not None and since > FINISHED_RUN_GRACE_SECONDS:
                _remove_quietly(engine, container, name)

    @property
    def local_data(self) -> Path:
        return local_data_folder(self.config)

    def sync(self, host_side: HostSide) -> SyncReport:
        full, deletions = self.request.full_sync, self.request.accept_deletions
        return sync_data(self.invocation, host_side, full=full, accept_deletions=deletions, verbose=self.request.verbose)

    def _sync_after_run(self, host_side: HostSide, status: int | None) -> None:
        """Results come back however the run ended. When fp itself failed (``status`` None), that
        failure is what gets reported; otherwise a failed sync is, with the command's status.

        Raises:
            FireplugError: the results could not be brought back after the command ran.
        """
        try:
            self.sync(host_side)
        except FireplugError as e:
            if status is None:
                console.warn(f"results could not be brought back: {e}")
                return
            raise FireplugError(f"{e.message} (the command itself exited with status {status})", hint=e.hint) from e
        except SyncInterrupted as e:
            if status is not None:
                e.story += f" (the command itself had exited with status {status})"
            raise

    def start(self, *, last_step: bool = False) -> int:
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
            status = run_container(DockerExecutor(self.connection.engine), self.spec, self.local.stdio, last_step=last_step, on_started=started)
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

    def start_detached(self) -> str:
        """Create and start the container, and leave it running (``fp logs`` / ``pull`` / ``stop`` follow
        it); its run id. A signal before the start removes it unstarted."""
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
            console.note(f"published ports stay on host '{self.host}' (its loopback): a detached run has no forward here")
        return record.id

    def _say_starting(self) -> None:
        if self.request.verbose:
            console.detail(f"image {self.spec.image} on host '{self.host}'; starting {self.spec.name} ({_ms(self.started)})")
            console.detail(f"$ {display(docker_run_argv(self.spec))}")


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


class _PortForwards:
    """On an ssh host, each published port listens here too (ssh -L), for as long as the run lasts."""

    def __init__(self, connection: hosts.Connection, asked: tuple[Publish, ...]) -> None:
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
            console.note(f"port {port.container_port} of the container is at {address}:{here} here (forwarded over ssh)")

    def close(self) -> None:
        shell = self.connection.shell
        for address, here, there in self.opened if shell is not None else ():
            shell.forward_port(address, here, there, cancel=True)


def _remove_quietly(engine: Engine, container: str, name: str) -> None:
    try:
        engine.remove_container(container)
    except FireplugError as e:
        console.warn(f"finished run {name} could not be removed ({e})")
    else:
        console.note(f"removed {name}, a run of this project that ended on host '{engine.host}' without fp")


def choose_host(invocation: Invocation, request: RunRequest, *, leases: Leases | None = None) -> tuple[Host, str]:
    """The host to run on, and why in words ("" when --host named it, or when fp runs here
    because the pool is empty and -v was not given).

    In order: --host, FP_HOST, ``[pool] default_host``; then, for a request that builds
    nothing (--sync-out-only, --no-build), the host this project last ran on (its results and
    its image are there); else an idle host of the pool, or local when the pool is empty.
    """
    config, local, inventory = invocation.config, invocation.local, invocation.inventory
    state = invocation.state
    wanted, why = request.host, ""
    if wanted is None and local.environ.get("FP_HOST"):
        wanted, why = local.environ["FP_HOST"], "FP_HOST"
    elif wanted is None and config.pool.default_host:
        wanted, why = config.pool.default_host, "default_host in [pool]"
    elif wanted is None and not request.steps.build:
        wanted, why = last_host(state, config.project.key), "where this project last ran; --host picks another"
    choice = hosts.Choice(
        leases=leases,
        holds_data=lambda name: PairFiles.of(state, config.project.key, name).record.exists(),
        memory=hosts.UnreachableMemory(cache_dir(local.environ, local.home).parent / "unreachable-hosts.json"),
    )
    host, chosen_why = hosts.choose(wanted, inventory, invocation.settings, choice=choice)
    if wanted is None:
        return host, chosen_why if inventory.pool or request.verbose else ""
    return host, why


def make_host_side(connection: hosts.Connection, config: Config, *, verbose: bool, locks: Path | None = None, store: Store | None = None) -> HostSide:
    """Through ``store`` (a bucket) when given; else rsync over the host's ssh when it has one
    (unless [sync] mode is api), else the Docker API (on fp's base image).

    Raises:
        ConfigError: mode rsync for a host without ssh.
    """
    folder = project_folder_on_host(connection.host, config)
    mode = config.sync.mode
    if store is None and connection.shell is not None and mode != "api":
        from fireplug.sync.rsync import RsyncHost

        return RsyncHost(connection.shell, posixpath.join(folder, config.project.data), posixpath.join(folder, TRASH_FOLDER), verbose=verbose)
    if store is None and mode == "rsync":
        raise ConfigError(f"host '{connection.host.name}' has no ssh, so rsync cannot reach it", hint="use --sync api or --sync s3", key="sync.mode")
    from fireplug.sync.api import ApiHost

    base = ensure_base(connection.engine, config.build.base_image, verbose=verbose, locks=locks)
    helper_labels = {labels.PROJECT: config.project.name, labels.PROJECT_KEY: config.project.key}
    user = ""
    if connection.shell is not None:  # the helpers write as the runs do, so that the ssh user owns the files
        user = container_user(config.run.user, connection.shell.identity())
        connection.shell.run(["mkdir", "-p", "--", folder], what="making the project's folder")  # else the engine makes it, as root
    if store is not None:
        from fireplug.sync.s3 import S3Host

        return S3Host(connection.engine, base.tag, helper_labels, folder, config.project.data, store, user=user)
    return ApiHost(connection.engine, base.tag, helper_labels, folder, config.project.data, user=user)


def sync_data(
    invocation: Invocation, host_side: HostSide, *, full: bool = False, accept_deletions: bool = False, push: bool = True, verbose: bool = False
) -> SyncReport:
    """One sync of the project's data folder with the host of ``host_side`` (two-way, or with
    ``push`` False only bringing changes back), said in one summary line.

    Raises:
        SyncError, SyncInterrupted: see ``sync.session.sync``.
    """
    config, host = invocation.config, host_side.host
    request = SyncRequest(
        local=local_data_folder(config),
        pair=PairFiles.of(invocation.state, config.project.key, host),
        host_name=host,
        full=full,
        accept_deletions=accept_deletions,
        pull_scope=pull_scope(config),
        push=push,
        on_wait=lambda holder: console.note(f"waiting for {holder}, which is syncing this project with host '{host}'"),
        owner=project_owner(config),
    )
    report = sync(request, host_side)
    report_sync(host, report, verbose=verbose)
    return report


def project_owner(config: Config) -> Owner:
    """This project folder, as the sync record's owner: another folder whose fireplug.toml gives
    the same project key (a copied project keeps its id) is a copy, not this project moved."""
    root = str(config.root)
    return Owner(root, lambda folder: folder != root and project_key_at(Path(folder)) == config.project.key)


def pull_scope(config: Config) -> tuple[str, ...]:
    """The result folders relative to the data folder; () when the whole data folder comes back."""
    folders = [posixpath.relpath(folder, config.project.data) for folder in config.project.result_folders]
    return () if "." in folders else tuple(folders)


def report_sync(host: str, report: SyncReport, *, verbose: bool = False) -> None:
    """One summary line (and one line per conflict, removal and refusal, or the count of them)."""
    if verbose:
        console.detail(f"sync with '{host}': {report.wire_bytes} bytes over the wire")
    parts = []
    if report.pushed:
        parts.append(f"{report.pushed} files ({human_bytes(report.pushed_bytes)}) to host '{host}'")
    if report.pulled:
        source = "from it" if parts else f"from host '{host}'"
        parts.append(f"{report.pulled} files ({human_bytes(report.pulled_bytes)}) {source}")
    if report.trashed_there:
        parts.append(f"{len(report.trashed_there)} deleted here moved to the host's trash")
    if report.trashed_here:
        parts.append(f"{len(report.trashed_here)} deleted on the host moved to the local trash")
    if report.conflicts:
        parts.append(f"{len(report.conflicts)} conflicts")
    if parts:
        console.note(f"synced {', '.join(parts)} in {report.seconds:.1f} s")
    else:
        console.note(f"data and host '{host}' in sync: nothing changed ({report.seconds:.1f} s)")
    for path, copy in report.conflicts:
        console.warn(f"conflict: {path} changed here and on host '{host}'; kept yours, the host's version is {copy}")
    _list_some(f"moved to the host's trash ({report.host_trash}), deleted here:", report.trashed_there, verbose)
    _list_some(f"moved to the local trash ({report.local_trash}), deleted on host '{host}':", report.trashed_here, verbose)
    _list_some("kept, changed on one side though deleted on the other:", report.kept, True)
    if report.restored:
        console.warn(
            f"host '{host}' lacks {len(report.restored)} files it had at the last sync (lost or cleaned up?): sent them again, "
            "nothing was deleted here; to delete them here too, pass --accept-deletions"
        )
    _list_some("symlinks pointing outside the data folder (dangling on the other side):", report.outside_links, verbose, warn=False)
    _list_some("left out, not files, folders or symlinks:", report.unsyncable, verbose)
    _list_some("not copied here, the local path passes through a symlink or changed meanwhile:", report.unsafe, True)


def _list_some(title: str, paths: Sequence[str], show: bool, *, warn: bool = True) -> None:
    if paths and show:
        (console.warn if warn else console.note)(f"{title} {_first_few(paths)}")


def _first_few(paths: Sequence[str], limit: int = 5) -> str:
    return ", ".join(paths[:limit]) + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def ensure_data_folder(folder: Path) -> None:
    """Create a missing data folder here, so that it is the user's and not made by the engine as root."""
    if not folder.is_dir():
        folder.mkdir(parents=True)
        console.note(f"created the data folder {folder} (mounted into the container)")


def scan(config: Config, local: LocalSide, own: Recipe | None, *, full: bool = False, limit: ScanLimit | None = None) -> Context:
    """The project's context for ``own`` Dockerfile (None: fp generates one); see ``project_limit``."""
    rules = scan_rules(config, own.name if own else GENERATED_DOCKERFILE, generated=own is None)
    return load_context(config.root, rules, cache_dir(local.environ, local.home), full=full, home=local.home, limit=limit)


def project_limit(config: Config) -> ScanLimit | None:
    """A folder without fireplug.toml is refused when its code passes the limit (it is likely
    several projects, or a home folder); with one, it is the project, whatever its size."""
    return None if (config.root / PROJECT_FILE).is_file() else ScanLimit()


def container_spec(config: Config, image: str, request: RunRequest, local: LocalSide, *, host: Host, owner: tuple[int, int] | None = None) -> ContainerSpec:
    """What the container looks like: same relative folder, data mounted, asked-for env only.

    ``owner`` (uid, gid) should own what the command writes to the data folder: by default
    the local user on the local engine; the ssh user on a remote host (given once known).

    Raises:
        UsageError: an ``-e NAME`` names a variable that is not set locally.
    """
    project_in_container = config.container_root()
    _refuse_what_json_cannot_carry(config, request)
    user = container_user(config.run.user, owner or ((local.uid, local.gid) if host.local else None))
    env = [("PYTHONUNBUFFERED", "1")]
    if user not in ("", "0", "0:0"):
        env.append(("HOME", "/tmp"))  # an arbitrary uid has no home in the image
    env += resolve_env([*config.run.env, *request.env], local.environ)
    run_id = new_id()
    return ContainerSpec(
        image=image,
        command=request.command,
        workdir=container_workdir(project_in_container, config.root, local.cwd),
        name=f"fp-{config.project.name}-{run_id}",
        env=tuple(env),
        mounts=(Mount(data_on_host(host, config), posixpath.join(project_in_container, config.project.data)),),
        labels={
            labels.KIND: "run",
            labels.PROJECT: config.project.name,
            labels.PROJECT_KEY: config.project.key,
            labels.RUN: run_id,
            labels.OWNER: this_process(),
            labels.COMMAND: display(request.command)[:COMMAND_LABEL_LIMIT],  # anyone with Docker access there reads labels
        },
        user=user,
        tty=local.stdin_is_terminal and local.stdout_is_terminal,
        stdin=local.stdio.stdin is not None,
        options=container_options(config, request),
    )


def container_options(config: Config, request: RunRequest) -> ContainerOptions:
    """[run] settings, with the command line's flags on top.

    Raises:
        UsageError: a value docker would not accept.
    """
    return parse_options({**config.run.container, **request.container})


def _refuse_what_json_cannot_carry(config: Config, request: RunRequest) -> None:
    """The engine API is JSON (UTF-8): bytes that are not UTF-8 would arrive as U+FFFD, or as
    another path, so they are refused rather than passed on changed.

    Raises:
        UsageError: a command word or -e value is not UTF-8.
        ProjectError: the project's path is not UTF-8.
    """
    for position, word in enumerate(request.command):
        if not _is_utf8(word):
            raise UsageError(f"word {position + 1} of the command ({word!r}) is not valid UTF-8, which the Docker API cannot pass on unchanged")
    for entry in request.env:
        if not _is_utf8(entry):
            raise UsageError(f"-e {entry!r} is not valid UTF-8, which the Docker API cannot pass on unchanged")
    if not _is_utf8(str(config.root)):
        raise ProjectError(f"the project folder {str(config.root)!r} is not named in valid UTF-8, which the Docker engine cannot mount", hint="rename it")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # surrogate escapes: bytes the OS gave that are not UTF-8
        return False
    return True


def data_on_host(host: Host, config: Config) -> str:
    """The data folder as the host's engine sees it: the local folder, or ``<data_root>/<name>-<id>/<data>``."""
    if host.local:
        return str(config.root / config.project.data)
    return posixpath.join(project_folder_on_host(host, config), config.project.data)


def project_folder_on_host(host: Host, config: Config) -> str:
    """The project's own folder on a remote host: its data folder and its sync trash, side by side."""
    return posixpath.join(host.data_root, config.project.key)


def container_workdir(project_in_container: str, root: Path, cwd: Path) -> str:
    """The container folder matching the local ``cwd`` (the project root when cwd is outside it)."""
    try:
        relative = cwd.resolve().relative_to(root).as_posix()
    except ValueError:
        relative = "."
    return posixpath.normpath(posixpath.join(project_in_container, relative))


def container_user(setting: str, owner: tuple[int, int] | None) -> str:
    """The container's user: by default ``owner``, who then owns what it writes (root when None or 0)."""
    if setting == "auto":
        return f"{owner[0]}:{owner[1]}" if owner and owner[0] != 0 else ""
    if setting == "root":
        return "0:0"
    return setting


def resolve_env(entries: list[str], environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """``NAME=value`` entries as given, ``NAME`` entries with their local value.

    Raises:
        UsageError: an entry is malformed or names a variable that is not set locally.
    """
    resolved = []
    for entry in entries:
        name, has_value, value = entry.partition("=")
        if not name or any(character.isspace() for character in name):
            raise UsageError(f"-e {entry!r}: expected NAME or NAME=value")
        if not has_value:
            if name not in environ:
                raise UsageError(f"-e {name}: {name} is not set in your environment", hint=f"set it, or pass -e {name}=VALUE")
            value = environ[name]
        resolved.append((name, value))
    return resolved


def dry_run_report(invocation: Invocation, request: RunRequest) -> list[str]:
    """What a run would send and do, for `fp --dry-run`: it probes the pool as a run would
    (to name the host and why), and builds, sends and runs nothing."""
    config, local = invocation.config, invocation.local
    own = own_recipe(config)
    context = scan(config, local, own, full=True, limit=None if request.yes else project_limit(config))
    base_tag = base_image_tag(config.build.base_image, base_files())
    host, why = choose_host(invocation, request)
    spec = container_spec(config, "(one-time image)", request, local, host=host)
    lines = [
        "fp dry run: nothing is built, sent or run.",
        f"project   {config.project.name} at {config.root}",
        f"context   {context.file_count} files, {human_bytes(context.total_bytes)} (content hash {context.digest[:16]})",
    ]
    lines += [f"  largest {human_bytes(entry.size):>9}  {entry.path}" for entry in context.largest()]
    lines += [f"warning   {warning}" for warning in context.size_warnings()]
    lines.append(f"left out  {len(context.exclusions)} paths:")
    for exclusion in context.exclusions:
        shown = exclusion.path + ("/" if exclusion.is_dir else "")
        lines.append(f"  {shown:<40} {exclusion.reason}")
    deps = layer_dependencies(config, own)
    lines += dependency_lines(config, deps, own)
    chosen = own or generated_recipe(config, "fp-deps-<hash> (on each host)" if deps else base_tag)
    source = f"the project's {own.name}" if own else f"generated, on fp's base image {base_tag}"
    lines.append(f"recipe    {source}:")
    lines += [f"  {line}" for line in chosen.text.splitlines()]
    lines += data_plan(invocation, request, host)
    mounts = ", ".join(f"{mount.source} -> {mount.target}" for mount in spec.mounts)
    where = "mounted in place" if host.local else f"synced there {_sync_path(config, host)}"
    picked = f" (chosen: {why})" if why else ""
    lines += [
        f"host      {host.name} ({host.url}); data {where}{picked}",
        f"command   {shlex.join(request.command)}",
        f"  in {spec.workdir} as {spec.user or 'the image user (root)'}; data: {mounts}",
        f"  environment: {', '.join(name for name, _ in spec.env)}",
    ]
    return lines


def dependency_lines(config: Config, deps: Dependencies | None, own: Recipe | None) -> list[str]:
    """The dry run's words on the dependency layer: what was found, and the hash of its inputs."""
    if own is not None and not own.needs_base:
        declared = _declared_dependencies(config)
        return [f"deps      {declared}: left to the project's {own.name} (it does not build FROM ${{FP_BASE}})"] if declared else []
    if deps is None:
        return ["deps      none (no requirements.txt, pyproject.toml dependencies or [build] pip/apt)"]
    lines = [f"deps      {deps.summary()}; layer inputs hash {deps.inputs_digest()[:16]} (image fp-deps-<hash with the base image id>)"]
    lines += [f"  file    {name}" for name, _ in deps.files]
    lines += [f"  pip     {setting}" for setting in deps.index.redacted()]
    lines += [f"  network {deps.network}"] if deps.network else []
    lines += [f"  note    {note}" for note in deps.notes]
    return lines


def _sync_path(config: Config, host: Host) -> str:
    """How the data reaches a remote host, in words (make_host_side's choice)."""
    mode = config.sync.mode
    if mode == "s3":
        return f"through {config.sync.s3}"
    return "with rsync over ssh" if host.ssh and mode != "api" else "through the Docker API"


def data_plan(invocation: Invocation, request: RunRequest, host: Host) -> list[str]:
    """The dry run's data lines: what the sync in would send, against the host as the last sync left it."""
    config = invocation.config
    if host.local or not request.steps.sync_in or not local_data_folder(config).is_dir():
        return []
    pair = PairFiles.of(invocation.state, config.project.key, host.name)
    request_ = SyncRequest(local=local_data_folder(config), pair=pair, host_name=host.name, pull_scope=pull_scope(config))
    found = preview(request_)
    plan = found.plan
    against = (
        f"first sync with host '{host.name}'" if found.first else f"against host '{host.name}' as the last sync left it; it is listed again when the run syncs"
    )
    lines = [
        f"data      {config.project.data}/: {found.local_files} files, {human_bytes(found.local_bytes)}; in: "
        f"{len(plan.push)} entries ({human_bytes(found.push_bytes)}) to send, {len(plan.host_trash)} deleted here to move to the host's trash ({against})",
        f"  back: what the run changes under {', '.join(config.project.result_folders)}/ (and any other change on the host, after the run)",
    ]
    if plan.conflicts or plan.pull:
        lines.append(f"  also: {len(plan.pull)} entries to bring back, {len(plan.conflicts)} conflicts")
    if plan.outside_links:
        lines.append(f"warning   symlinks pointing outside the data folder (dangling on the host): {_first_few(plan.outside_links)}")
    if plan.unsyncable:
        lines.append(f"warning   not files, folders or symlinks, never synced: {_first_few(plan.unsyncable)}")
    return lines


def local_data_folder(config: Config) -> Path:
    return config.root / config.project.data


def _ms(started: float) -> str:
    return f"{(time.perf_counter() - started) * 1000:.0f} ms"
