"""A run on a swarm host: build on the manager and push, stage the data folder in S3, submit
one ``replicated-job`` service, follow it, and bring its results back from the bucket.

The data never touches a node's disk outside the task (``task.py`` fetches and publishes it),
so a run may land on any node, and ``fp pull`` collects it from any machine with the bucket.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from fireplug.backends.base import Node
from fireplug.backends.supervision import STOPPED, supervise
from fireplug.backends.swarm.service import SECRET_LABEL, NodeLost, SwarmExecutor, service_spec, swarm_nodes
from fireplug.errors import FireplugError, SwarmRefused
from fireplug.hosts.inventory import Host, docker_config_dir
from fireplug.image import registry
from fireplug.image.build import own_recipe
from fireplug.image.ready import project_limit, ready_image, scan
from fireplug.remote.s3_layout import CLIENT_SIDE
from fireplug.remote.task import input_side, result_side, signal_key
from fireplug.run.records import RunRecord, keep_output_and_remove, new_id, run_record
from fireplug.run.request import Placement, container_spec
from fireplug.run.spec import ContainerSpec
from fireplug.support import events, labels
from fireplug.support.output import LineWriter
from fireplug.support.signals import HeldSignals, made_uninterrupted
from fireplug.sync.project import ensure_data_folder, local_data_folder
from fireplug.sync.record import PairFiles
from fireplug.sync.results import Landed, land
from fireplug.sync.s3 import Store, stage_local
from fireplug.sync.tree import scan as scan_tree

if TYPE_CHECKING:
    from fireplug.hosts import Connection
    from fireplug.invocation import Invocation
    from fireplug.run.request import RunRequest

NODE_LOSS_RESTARTS = 3
STOP_GRACE_SECONDS = 10.0


@dataclass(frozen=True)
class Submitted:
    handle: str  # the service id
    record: RunRecord
    spec: ContainerSpec
    image: str  # the registry reference the nodes pull
    secret: tuple[str, str]
    registry_auth: str


def require_staging(host: Host, store: Store | None) -> Store:
    """Raises: SwarmRefused: no S3 location (a task's data has no other way to a node)."""
    if store is None:
        raise SwarmRefused(
            f"host '{host.name}' is a swarm: its runs bring their data in and out through S3, and this project has no S3 staging",
            hint='set [sync] mode = "s3" and s3 = "s3://BUCKET/PREFIX" in fireplug.toml (or pass --sync s3 with the bucket configured)',
        )
    return store


def check_manager(connection: Connection) -> None:
    """Raises: SwarmRefused: the engine is no manager of an active swarm."""
    swarm = connection.info().get("Swarm") or {}
    if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
        raise SwarmRefused(
            f"host '{connection.host.name}' is configured as a swarm, but its engine is not a manager of an active swarm",
            hint="point its url at a manager (`docker node ls` works there)",
        )


def check_fits(connection: Connection, spec: ContainerSpec) -> tuple[Node, ...]:
    """The swarm's nodes.

    Raises:
        SwarmRefused: no ready node has the CPUs and memory a run reserves (its task would wait
        for one forever).
    """
    options = spec.options
    wanted_cpus, wanted_memory = (options.nano_cpus or 0) / 1e9, options.memory or 0
    nodes = swarm_nodes(connection.engine)
    ready = [node for node in nodes if node.state == "ready"]
    if not any(node.cpus >= wanted_cpus and node.memory >= wanted_memory for node in ready):
        largest = max(ready, key=lambda node: (node.cpus, node.memory), default=None)
        biggest = f"the largest has {largest.cpus:g} CPUs and {largest.memory / 2**30:.1f} GiB" if largest else "none is ready"
        raise SwarmRefused(
            f"no node of swarm '{connection.host.name}' has room for a run reserving {wanted_cpus:g} CPUs and {wanted_memory / 2**30:.1f} GiB ({biggest})",
            hint="ask for less with --cpus / --memory",
        )
    return nodes


def registry_auth(invocation: Invocation, host: Host) -> tuple[registry.Repository, str]:
    """Raises: SwarmRefused (a registry setting fp cannot read), RegistryError."""
    try:
        repository = registry.Repository.parse(host.registry)
    except ValueError as e:
        raise SwarmRefused(f"hosts.{host.name}.{e}") from None
    local = invocation.local
    return repository, registry.auth_header(repository.address, docker_config_dir(local.environ, local.home))


def stage_inputs(store: Store, data: Path) -> str:
    """The data folder staged in the bucket; its manifest's key (what a task fetches)."""
    tree = scan_tree(str(data))
    staged = stage_local(store, data, tree, sorted(tree))
    if staged.changed:
        events.warn(
            f"{len(staged.changed)} files changed while they were uploaded; the run sees them as they were before: {', '.join(sorted(staged.changed)[:3])}"
        )
    return store.put_side(f"{CLIENT_SIDE}-swarm", staged.manifest)


def task_job(store: Store, spec: ContainerSpec, run_id: str, input_key: str, *, map_id: str = "") -> bytes:
    """The task's job file (credentials included: it only ever travels as a Docker secret);
    ``map_id``: a sweep's worker (``run_id`` then names its scratch space)."""
    data = spec.mounts[0].target
    return json.dumps({**store.job(), "run": run_id, "input": input_key, "data": data, **({"map": map_id} if map_id else {})}).encode()


def submit(connection: Connection, spec: ContainerSpec, image: str, job: bytes, auth: str, *, retries: int) -> tuple[str, tuple[str, str]]:
    """Create the run's secret and service; (service id, (secret id, secret name))."""
    engine = connection.engine
    run_id = spec.labels[labels.RUN]
    name = f"fp-task-{run_id}-{uuid.uuid4().hex[:6]}"
    secret_labels = {SECRET_LABEL: run_id, labels.PROJECT_KEY: spec.labels.get(labels.PROJECT_KEY, "")}
    secret = (made_uninterrupted(lambda: engine.create_secret(name, job, secret_labels), engine.remove_secret), name)
    body = service_spec(spec, image, secret, retries=retries, stop_grace_seconds=STOP_GRACE_SECONDS)
    try:
        handle = made_uninterrupted(lambda: engine.create_service(body, auth), engine.remove_service)
    except BaseException:
        with contextlib.suppress(FireplugError):
            engine.remove_secret(secret[0])
        raise
    return handle, secret


def signaller(store: Store) -> Callable[[str, str], bool]:
    """How a signal reaches a task: a key in the bucket it looks at every second (True: sent)."""

    def send(run_id: str, signal_name: str) -> bool:
        store.put_bytes(signal_key(store.place, run_id), f"{signal_name} {uuid.uuid4().hex[:8]}".encode(), "asking the task to stop")
        return True

    return send


class FollowedTask:
    """A run's service as the supervision reaches it: its output followed to its end, a signal
    sent through the bucket, and a task lost with its node started again elsewhere (up to
    NODE_LOSS_RESTARTS times: the output then follows the new task)."""

    def __init__(self, submitted: Submitted, connection: Connection, store: Store) -> None:
        self.submitted = submitted
        self.engine = connection.engine
        self.executor = SwarmExecutor(connection.engine, signaller(store))
        self.handle = submitted.handle
        self.lost_nodes: list[str] = []
        self.stopping_words = f"the task of run {submitted.record.id}"
        self.stopped = False
        self.changed = threading.Condition()  # a new task, or the end
        self.ended = False

    def output(self) -> Iterator[tuple[int, bytes]]:
        followed = ""
        while followed := self._task_after(followed):
            with contextlib.suppress(FireplugError):  # (a broken follow: the next task's output still comes)
                yield from self.executor.logs(followed, follow=True)

    def _task_after(self, followed: str) -> str:
        """The service of the task started after ``followed`` once there is one; "" once the run ended."""
        with self.changed:
            self.changed.wait_for(lambda: self.handle != followed or self.ended)
            return self.handle if self.handle != followed else ""

    def wait(self) -> int:
        try:
            return self._wait_starting_again()
        finally:
            with self.changed:
                self.ended = True
                self.changed.notify_all()

    def forward(self, signal_name: str) -> None:
        self.executor.signal(self.handle, signal_name)

    def stop(self) -> None:
        self.stopped = True
        self.engine.remove_service(self.handle)

    def _wait_starting_again(self) -> int:
        while True:
            try:
                return self.executor.wait(self.handle)
            except NodeLost as e:
                if self.stopped:
                    return STOPPED
                self._start_again(e)
            except FireplugError:
                if self.stopped:
                    return STOPPED
                raise

    def _start_again(self, lost: NodeLost) -> None:
        """Raises: NodeLost: its node was lost too often."""
        self.lost_nodes.append(lost.node)
        if len(self.lost_nodes) > NODE_LOSS_RESTARTS:
            raise lost
        submitted = self.submitted
        events.warn(f"{lost.message}: starting run {submitted.record.id} again on another node")
        self.engine.remove_service(self.handle)
        spec = service_spec(submitted.spec, submitted.image, submitted.secret, stop_grace_seconds=STOP_GRACE_SECONDS, avoid_nodes=self.lost_nodes)
        with self.changed:
            self.handle = self.engine.create_service(spec, submitted.registry_auth)
            self.changed.notify_all()


def follow(submitted: Submitted, connection: Connection, store: Store, *, last_step: bool) -> tuple[FollowedTask, int]:
    """Stream the run's output to this terminal until it ends; the task followed (its service
    handle, whether fp stopped it) and its exit status. The first SIGINT/SIGTERM/SIGHUP is
    forwarded to the command (through the bucket), a second stops the task."""
    followed = FollowedTask(submitted, connection, store)
    with HeldSignals(tty=False, then_ignore=last_step) as held:
        status = supervise(followed, LineWriter().write, signals=held)
    return followed, status


def collect(store: Store, invocation: Invocation, record: RunRecord, local_data: Path) -> Landed | None:
    """Land what the run changed in ``local_data``; None when it published nothing (yet)."""
    result = store.side_manifest(result_side(record.id))
    if result is None:
        return None
    base = store.side_manifest(input_side(record.id)) or {}
    trash = PairFiles.of(invocation.state, record.project_key, record.host).trash / time.strftime("%Y%m%dT%H%M%S")
    landed = land(base, result, local_data, trash, store.download, side=record.host, stamp=time.strftime("%Y%m%dT%H%M%S"))
    return landed


def forget_run(store: Store, run_id: str) -> None:
    """The run's refs and keys in the bucket (its objects go with the next `fp s3 gc`)."""
    place = store.place
    store.delete_keys([place.ref_key(input_side(run_id)), place.ref_key(result_side(run_id)), signal_key(place, run_id)])


@dataclass
class Prepared:
    """A swarm ready for runs of one request: the image in the registry, then the data staged."""

    connection: Connection
    store: Store
    spec: ContainerSpec  # the request's run, on the pushed image (each run gets its own id)
    image: str
    registry_auth: str
    nodes: tuple[Node, ...] = ()  # the swarm's nodes, as they were
    inputs: str = ""  # the key of the staged data folder's manifest (once staged)

    def stage(self, invocation: Invocation) -> None:
        """The data folder staged in the bucket, as every run of the request finds it."""
        data = local_data_folder(invocation.config)
        ensure_data_folder(data)
        self.store.forget()  # what the bucket holds is listed again: a task cannot ask this machine for an object the bucket lost
        self.inputs = stage_inputs(self.store, data)


def bucket_soon(invocation: Invocation) -> Callable[[], Store | None]:
    """The project's bucket, made and checked in a thread (boto3's import, its client and the
    bucket's check take 0.2-0.3 s, which the engine's side of the preparation overlaps); what it
    returns gives the store, or raises what the check raised."""
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fp-bucket")
    future = pool.submit(_checked_bucket, invocation)
    pool.shutdown(wait=False)
    return future.result


def _checked_bucket(invocation: Invocation) -> Store | None:
    """Raises: S3Error: no credentials, no such bucket, or access denied."""
    config = invocation.config
    if config.sync.mode != "s3":
        return None
    store = Store.for_project(config, invocation.state)
    store.check()
    return store


def prepare(invocation: Invocation, request: RunRequest, host: Host) -> Prepared:
    """Build on the manager and push, with the bucket checked: all before any data moves.

    Raises:
        FireplugError: fp's own failure (staging, registry, swarm), or a request a swarm cannot serve.
    """
    steps = request.steps
    if not (steps.build and steps.sync_in and steps.run and (steps.sync_out or request.detach)):
        raise SwarmRefused(
            f"host '{host.name}' is a swarm: each run brings its own data in and out, so --no-build, --no-sync and the --sync-*-only steps do not apply",
            hint="fp pull RUN brings a run's results back",
        )
    config, local = invocation.config, invocation.local
    if config.sync.mode != "s3":
        require_staging(host, None)  # (refused before the bucket's store is even made)
    bucket = bucket_soon(invocation)
    own = own_recipe(config)
    if own is not None and not own.needs_base:
        raise SwarmRefused(
            f"the project's {own.name} does not build FROM ${{FP_BASE}}: a swarm task needs fp's base image (its data goes in and out through its task)"
        )
    connection = invocation.connect(host)
    check_manager(connection)
    repository, auth = registry_auth(invocation, host)
    spec = replace(container_spec(config, request, local, Placement(""), new_id()), tty=False, stdin=False)
    nodes = check_fits(connection, spec)
    context = scan(config, local, own, limit=None if request.yes else project_limit(config))
    store = require_staging(host, bucket())  # (the bucket checked before anything is built)
    image = ready_image(connection.engine, invocation, request, own, context, spec)
    assert image is not None  # (built: the steps above include the build)
    reference = registry.push(connection.engine, image.tag, repository, auth)
    return Prepared(connection, store, replace(spec, image=reference), reference, auth, nodes)


def start_run(invocation: Invocation, prepared: Prepared, spec: ContainerSpec, *, retries: int = 0, detached: bool = False) -> Submitted:
    """Submit one run of ``spec`` (its own run id in its labels) and record it."""
    run_id = spec.labels[labels.RUN]
    prepared.store.point_side(input_side(run_id), prepared.inputs)
    handle, secret = submit(
        prepared.connection, spec, prepared.image, task_job(prepared.store, spec, run_id, prepared.inputs), prepared.registry_auth, retries=retries
    )
    record = replace(run_record(invocation, spec, prepared.connection.host.name), detached=detached)
    invocation.runs.save(record)
    return Submitted(handle, record, spec, prepared.image, secret, prepared.registry_auth)


def finish_run(invocation: Invocation, prepared: Prepared, record: RunRecord, status: int | None, *, handle: str = "") -> Landed | None:
    """After the run's end: its results landed here, its keys gone; ``handle``: its service too
    (its output kept first)."""
    landed = collect(prepared.store, invocation, record, local_data_folder(invocation.config))
    if handle:
        keep_output_and_remove(invocation.runs, SwarmExecutor(prepared.connection.engine), handle, record.id)
    forget_run(prepared.store, record.id)
    invocation.runs.save(replace(record.with_end(status), pulled=time.time()))
    return landed
