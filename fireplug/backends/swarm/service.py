"""Runs on a Docker Swarm: one ``replicated-job`` service per run, placed by the swarm.

A run's service carries fp's labels (run id, project, map), reserves what ``--cpus``,
``--memory`` and ``--gpus`` ask, and runs ``python3 -m fireplug.remote.task`` (``task.py``) in front
of the command: the task brings its data in from S3 and its results out, since no data folder
follows it to whichever node it lands on. Its job (credentials included) is a Docker secret.

The restart policy is fp's: none for a failing command unless ``--retries`` asks (the swarm
would otherwise start it again and again); a task lost with its node is started again by fp
(``NodeLost``), elsewhere, since the engine leaves a job's task on a down node as it was.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from fireplug.backends.base import Node, RunState
from fireplug.errors import NodeLost as NodeLost
from fireplug.errors import TaskRejected as TaskRejected
from fireplug.hosts.engine import Engine, engine_time, mapping_of
from fireplug.run.records import SHARED_RUN
from fireplug.run.spec import ContainerSpec
from fireplug.support import labels
from fireplug.support.parallel import in_parallel

TASK_ENTRYPOINT = ("python3", "-m", "fireplug.remote.task")
SECRET_FILE = "fp-task"  # /run/secrets/fp-task in the task (task.JOB_FILE)
GPU_RESOURCE = "NVIDIA-GPU"  # the generic resource kind nodes advertise GPUs as (dockerd --node-generic-resource)
ENDED = ("complete", "failed", "rejected", "shutdown", "orphaned", "remove")
WAITING = ("new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting")
POLL_SECONDS = 0.5
NODE_CHECK_SECONDS = 2.0
SECRET_LABEL = f"{labels.LABEL}.secret-of"  # a run's secret: the run id


@dataclass(frozen=True)
class Task:
    """The newest task of a run's service, as the swarm reports it."""

    state: str
    node: str
    exit_code: int | None
    error: str
    changed_at: float | None
    attempts: int  # tasks the service had so far

    @property
    def ended(self) -> bool:
        return self.state in ENDED


def service_spec(
    spec: ContainerSpec,
    image: str,
    secret: tuple[str, str],
    *,
    retries: int = 0,
    stop_grace_seconds: float = 10.0,
    avoid_nodes: Iterable[str] = (),
) -> dict[str, Any]:
    """The engine's create-service body of one run of ``spec`` (``image``: its reference in the
    registry; ``secret``: the id and name of its job secret)."""
    uid, gid = _owner(spec.user)
    container: dict[str, Any] = {
        "Image": image,
        "Command": list(TASK_ENTRYPOINT),
        "Args": list(spec.command),
        "Dir": spec.workdir,
        "Env": [f"{name}={value}" for name, value in spec.env],
        "Labels": dict(spec.labels),
        "Init": True,
        "StopSignal": "SIGINT",
        "StopGracePeriod": int(stop_grace_seconds * 1e9),
        "Secrets": [{"File": {"Name": SECRET_FILE, "UID": uid, "GID": gid, "Mode": 0o400}, "SecretID": secret[0], "SecretName": secret[1]}],
    }
    if spec.user:
        container["User"] = spec.user
    task: dict[str, Any] = {
        "ContainerSpec": container,
        "Resources": _resources(spec),
        "RestartPolicy": {"Condition": "on-failure" if retries else "none", "MaxAttempts": retries, "Delay": 0},
        "Placement": {"Constraints": [f"node.id!={node}" for node in avoid_nodes]},
    }
    if spec.options.network:
        task["Networks"] = [{"Target": spec.options.network}]
    return {
        "Name": spec.name,
        "Labels": dict(spec.labels),
        "TaskTemplate": task,
        "Mode": {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}},
    }


def _owner(user: str) -> tuple[str, str]:
    """The owner of the job file in the task: the run's user when numeric (else root's, the default user's)."""
    uid, _, gid = user.partition(":")
    return (uid, gid or uid) if uid.isdigit() and (not gid or gid.isdigit()) else ("0", "0")


def _resources(spec: ContainerSpec) -> dict[str, Any]:
    options = spec.options
    asked: dict[str, Any] = {}
    if options.nano_cpus:
        asked["NanoCPUs"] = options.nano_cpus
    if options.memory:
        asked["MemoryBytes"] = options.memory
    reservations = dict(asked)
    if options.gpus is not None and options.gpus.count > 0:
        reservations["GenericResources"] = [{"DiscreteResourceSpec": {"Kind": GPU_RESOURCE, "Value": options.gpus.count}}]
    return {"Reservations": reservations, "Limits": asked}


def newest_task(tasks: list[dict[str, Any]]) -> Task | None:
    if not tasks:
        return None
    latest = max(tasks, key=lambda task: str(task.get("CreatedAt") or ""))
    status = mapping_of(latest.get("Status"))
    container = mapping_of(status.get("ContainerStatus"))
    state = str(status.get("State") or "")
    code = container.get("ExitCode")
    has_code = state in ("complete", "failed") and isinstance(code, int) and not isinstance(code, bool)
    return Task(
        state=state,
        node=str(latest.get("NodeID") or ""),
        exit_code=code if has_code else None,
        error=str(status.get("Err") or ""),
        changed_at=engine_time(str(status.get("Timestamp") or "")),
        attempts=len(tasks),
    )


def run_state(service: Mapping[str, Any], task: Task | None) -> RunState:
    """A run as `fp ps` shows it, from its service and newest task."""
    spec = mapping_of(service.get("Spec"))
    found = mapping_of(spec.get("Labels"))
    state = "created" if task is None or task.state in WAITING else "running" if task.state == "running" else "exited"
    return RunState(
        handle=str(service.get("ID", "")),
        name=str(spec.get("Name") or "?"),
        labels={str(key): str(value) for key, value in found.items()},
        state=state,
        exit_code=task.exit_code if task is not None and state == "exited" else None,
        started_at=engine_time(str(service.get("CreatedAt") or "")),
        finished_at=task.changed_at if task is not None and state == "exited" else None,
    )


def tasks_by_service(engine: Engine, services: Iterable[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The tasks of ``services``, by service id (one request for all of them)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for task in engine.tasks(str(service.get("ID", "")) for service in services):
        found.setdefault(str(task.get("ServiceID", "")), []).append(task)
    return found


def down_nodes(engine: Engine) -> set[str]:
    return {str(node.get("ID", "")) for node in engine.nodes() if (node.get("Status") or {}).get("State") == "down"}


class SwarmExecutor:
    """Runs as services of a swarm, through one of its managers (``fp ps`` / ``logs`` / ``stop``
    / ``gc`` see them as runs; a signal goes through the bucket, see ``task.py``)."""

    def __init__(self, engine: Engine, signaller: Any = None) -> None:
        self.engine = engine
        self.signaller = signaller  # (run id, signal name) -> whether it wrote the signal where the task looks

    @property
    def host(self) -> str:
        return self.engine.host

    def task(self, handle: str) -> Task | None:
        return newest_task(self.engine.tasks([handle]))

    def find(self, wanted: Iterable[str], *, running_only: bool = True) -> list[RunState]:
        services = self.engine.services(wanted)
        tasks = tasks_by_service(self.engine, services)
        states = [run_state(service, newest_task(tasks.get(str(service.get("ID", "")), []))) for service in services]
        return [state for state in states if not running_only or not state.ended]

    def state(self, handle: str) -> RunState | None:
        if handle.startswith(SHARED_RUN):
            return None
        service = self.engine.service(handle)
        return run_state(service, self.task(handle)) if service is not None else None

    def wait(self, handle: str) -> int:
        """Block until the run's task ended; its exit status.

        Raises:
            NodeLost: its node went down (the swarm leaves the task as it was).
            TaskRejected: the swarm could not start it, or its service was removed.
        """
        checked_nodes = 0.0
        while True:
            task = self.task(handle)
            if task is None and self.engine.service(handle) is None:
                raise TaskRejected(f"the service of the run on swarm '{self.host}' was removed before its task ended")
            if task is not None and task.ended:
                if task.exit_code is not None:
                    return task.exit_code
                if task.node and task.node in down_nodes(self.engine):  # (the swarm rejects a down node's task: "no longer meets constraints")
                    raise NodeLost(self.host, task.node)
                raise TaskRejected(f"swarm '{self.host}' could not run the task ({task.state}): {task.error or 'no reason given'}")
            if task is not None and task.node and time.monotonic() - checked_nodes > NODE_CHECK_SECONDS:
                checked_nodes = time.monotonic()
                if task.node in down_nodes(self.engine):
                    raise NodeLost(self.host, task.node)
            time.sleep(POLL_SECONDS)

    def signal(self, handle: str, signal_name: str) -> None:
        state = self.state(handle)
        if state is None or state.ended:
            return
        if signal_name == "SIGKILL" or self.signaller is None or not self.signaller(state.labels.get(labels.RUN, ""), signal_name):
            self.remove(handle)

    def signal_run(self, run_id: str, signal_name: str) -> None:
        """A signal to a sweep's run (see swarmsweep.py), through the bucket its worker watches."""
        if self.signaller is not None:
            self.signaller(run_id, signal_name)

    def remove(self, handle: str) -> None:
        """The service (its task, if it still runs, is stopped: StopSignal, then SIGKILL after the
        grace period), its job secret, and its task containers on the manager itself (Engine 20.10
        leaves a removed job's containers behind; those on other nodes are out of fp's reach)."""
        service = self.engine.service(handle)
        self.remove_service(handle)
        run_id = ((service or {}).get("Spec") or {}).get("Labels", {}).get(labels.RUN, "")
        if run_id:
            self.remove_secrets(run_id)

    def remove_service(self, handle: str) -> None:
        """The service and its task containers on the manager (not its job secret)."""
        self.engine.remove_service(handle)
        containers = [str(container.get("Id", "")) for container in self.engine.containers([f"com.docker.swarm.service.id={handle}"], running_only=False)]
        in_parallel(self.engine.remove_container, containers, len(containers))  # (one still running is being killed: this is the kill)

    def remove_secrets(self, run_id: str) -> None:
        """The job secrets of run (or map) ``run_id`` (refused while a service still uses one)."""
        for secret in self.engine.secrets([f"{SECRET_LABEL}={run_id}"]):
            self.engine.remove_secret(str(secret.get("ID", "")))

    def logs(self, handle: str, *, follow: bool) -> Iterator[tuple[int, bytes]]:
        """Its output as (stream, bytes); ``follow``: until the task ended."""
        if not follow:
            yield from self.engine.service_logs(handle, follow=False)
            return
        yield from _until_ended(self, handle)

    def published_ports(self, handle: str) -> dict[str, int]:
        return {}


def _until_ended(executor: SwarmExecutor, handle: str) -> Iterator[tuple[int, bytes]]:
    """A service's output as it comes, until its task ended; then what the follow had not
    brought yet, from the whole output read once more (the engine's log stream of a service
    does not end by itself, and it may lag behind the task's end)."""
    lines: queue.Queue[tuple[int, bytes] | BaseException] = queue.Queue()

    def read() -> None:
        try:
            for item in executor.engine.service_logs(handle, follow=True):
                lines.put(item)
        except BaseException as e:  # handed to the reader
            lines.put(e)

    threading.Thread(target=read, daemon=True).start()
    received = {1: 0, 2: 0}
    next_check = next_node_check = 0.0
    while True:
        try:
            item = lines.get(timeout=POLL_SECONDS)
        except queue.Empty:
            item = None
        if isinstance(item, BaseException):
            raise item
        if item is not None:
            stream, data = item
            received[stream] = received.get(stream, 0) + len(data)
            yield stream, data
        if time.monotonic() < next_check:
            continue
        next_check = time.monotonic() + POLL_SECONDS
        task = executor.task(handle)
        if task is None or task.ended:
            break
        if task.node and time.monotonic() >= next_node_check:  # a down node's task may show "running" for long
            next_node_check = time.monotonic() + NODE_CHECK_SECONDS
            if task.node in down_nodes(executor.engine):
                return  # (the waiter says so)
    whole: dict[int, bytes] = {1: b"", 2: b""}
    for stream, data in executor.engine.service_logs(handle, follow=False):
        whole[stream] = whole.get(stream, b"") + data
    for stream, data in whole.items():
        seen = received.get(stream, 0)
        if len(data) > seen:
            yield stream, data[seen:]


def swarm_nodes(engine: Engine) -> tuple[Node, ...]:
    running: dict[str, int] = {}
    services = engine.services([labels.kind_is("run")]) + engine.services([labels.kind_is("sweep")])  # (a map's workers: a task each)
    for task in engine.tasks(str(service.get("ID", "")) for service in services):
        if (task.get("Status") or {}).get("State") == "running":
            node = str(task.get("NodeID") or "")
            running[node] = running.get(node, 0) + 1
    return tuple(_node(node, running) for node in engine.nodes())


def _node(node: Mapping[str, Any], running: Mapping[str, int]) -> Node:
    description = node.get("Description") or {}
    resources = description.get("Resources") or {}
    generic = [item.get("DiscreteResourceSpec") or {} for item in resources.get("GenericResources") or []]
    node_id = str(node.get("ID", ""))
    return Node(
        id=node_id,
        hostname=str(description.get("Hostname") or "?"),
        role=str((node.get("Spec") or {}).get("Role") or ""),
        state=str((node.get("Status") or {}).get("State") or ""),
        version=str((description.get("Engine") or {}).get("EngineVersion") or ""),
        cpus=int(resources.get("NanoCPUs") or 0) / 1e9,
        memory=int(resources.get("MemoryBytes") or 0),
        gpus=", ".join(f"{item.get('Kind')}={item.get('Value')}" for item in generic if item),
        tasks=running.get(node_id, 0),
    )
