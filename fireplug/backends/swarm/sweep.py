"""``fp map`` on a swarm: one service per sweep, whose tasks stay and take the map's runs.

A service per run pays a task's start for every run: the swarm's scheduling, a container,
``fireplug.remote.task``'s Python and boto3, the data folder brought in. A sweep pays it once per
worker: its service is a ``replicated-job`` with as many tasks as the map has runs (the swarm
starts those its nodes' free resources fit, by the runs' reservations, and the rest when room
frees), each running ``python3 -m fireplug.remote.task --serve`` (see task.py), which takes the runs one
after another from a queue in the bucket:

- ``maps/<map>/items/<seq>``: a run (its id, command and own environment), written here;
- ``maps/<map>/claims/<seq>``: created by the worker that takes it (a conditional write: one
  worker wins), or by fp, withdrawing a run no worker took yet when the map stops;
- ``maps/<map>/ended/<run>``: the run ended, and its results are published (``run-<id>``).

The runs' output comes through the service's log, each line tagged with its run's id. A worker
lost with its node has its run taken again: queued anew, with a new service of workers kept off
the nodes that went down (the swarm does not start a job's task again).
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from fireplug.backends.base import Write
from fireplug.backends.supervision import supervise
from fireplug.backends.swarm.run import NODE_LOSS_RESTARTS, STOP_GRACE_SECONDS, Prepared, signaller, task_job
from fireplug.backends.swarm.service import SECRET_LABEL, WAITING, NodeLost, SwarmExecutor, TaskRejected, down_nodes, service_spec
from fireplug.backends.swarm.workers import status_in, task_error, task_failed, task_state, untag, workers_for
from fireplug.errors import FireplugError
from fireplug.errors import Withdrawn as Withdrawn
from fireplug.remote.s3_transfer import put_if_absent
from fireplug.remote.task import SERVE, TASK_ID_VARIABLE, claim_key, done_key, item_key, sweep_key
from fireplug.run.spec import ContainerSpec
from fireplug.support import events, labels
from fireplug.support.signals import made_uninterrupted

POLL_SECONDS = 0.3

TASK_CHECK_SECONDS = 2.0

OUTPUT_LAG_SECONDS = 5.0  # after a run's end, how long its last output may take to come through the log

SETTLE_SECONDS = 15.0  # at the end, how long the workers not started yet get to start and end


@dataclass
class _Run:
    run_id: str
    item: bytes  # its queue entry
    lines: queue.Queue[tuple[int, bytes] | None] = field(default_factory=queue.Queue)  # its output as routed, None at its end
    seqs: list[int] = field(default_factory=list)  # its places in the queue (one more per start again)
    status: int | None = None
    failure: FireplugError | None = None
    withdrawn: bool = False
    lost_nodes: list[str] = field(default_factory=list)
    ended: threading.Event = field(default_factory=threading.Event)
    marked: set[int] = field(default_factory=set)  # streams whose end the worker marked
    output_done: threading.Event = field(default_factory=threading.Event)

    def fail(self, failure: FireplugError) -> None:
        self.failure = failure
        self.ended.set()


class _WatchedRun:
    """A sweep's run as the supervision reaches it: its lines as the service's log routes them,
    its end as its worker writes it in the bucket."""

    def __init__(self, sweep: Sweep, run: _Run) -> None:
        self.sweep = sweep
        self.run = run
        self.stopping_words = f"run {run.run_id}"

    def output(self) -> Iterator[tuple[int, bytes]]:
        while (line := self.run.lines.get()) is not None:
            yield line

    def wait(self) -> int:
        """Raises: Withdrawn, NodeLost, TaskRejected: see ``Sweep.run``."""
        run = self.run
        run.ended.wait()
        if run.withdrawn:
            raise Withdrawn
        if run.failure is not None:
            raise run.failure
        assert run.status is not None
        return run.status

    def forward(self, signal_name: str) -> None:
        self.sweep.signal(self.run.run_id, signal_name)

    def stop(self) -> None:
        self.sweep.signal(self.run.run_id, "SIGKILL")


class Sweep:
    """A map's runs on one swarm, served by the workers of one service (more after node loss)."""

    def __init__(self, prepared: Prepared, map_id: str, runs: int, *, retries: int = 0) -> None:
        self.prepared = prepared
        self.map_id = map_id
        self.expected = runs  # the map's runs: once all ended (none to try again), the workers may end
        self.retries = retries
        self.engine = prepared.connection.engine
        self.host = prepared.connection.host.name
        self.store = prepared.store
        self.place = prepared.store.place
        self.signal_task = signaller(prepared.store)
        self.lock = threading.Lock()
        self.runs: dict[str, _Run] = {}
        self.next_seq = 0
        self.services: list[str] = []
        self.services_lock = threading.Lock()
        self.removed = False
        self.secret: tuple[str, str] = ("", "")
        self.looked_at: set[str] = set()  # tasks whose loss or failure was dealt with
        self.closed = threading.Event()
        self.wake = threading.Event()  # a run's end was marked in its output: look at once
        self.done = False
        self.removing: threading.Thread | None = None
        self.removal_error: FireplugError | None = None
        self.base_env = set(prepared.spec.env)

    # -- its life ------------------------------------------------------------------------

    def start(self) -> None:
        """The job secret and the first service of workers, then the watchers."""
        spec, engine = self.prepared.spec, self.engine
        job = task_job(self.store, spec, self.map_id, self.prepared.inputs, map_id=self.map_id)
        secret_labels = {SECRET_LABEL: self.map_id, labels.PROJECT_KEY: spec.labels.get(labels.PROJECT_KEY, "")}
        name = f"fp-sweep-{self.map_id}"
        self.secret = (made_uninterrupted(lambda: engine.create_secret(name, job, secret_labels), engine.remove_secret), name)
        try:
            self._add_workers(workers_for(self.prepared.nodes, spec, self.expected), avoid=())
        except BaseException:
            with contextlib.suppress(FireplugError):
                engine.remove_secret(self.secret[0])
            raise
        threading.Thread(target=self._watch, name=f"fp-sweep-{self.host}", daemon=True).start()

    def close(self) -> None:
        """The workers told to end (``done``: idle, each ends within DONE_POLL_SECONDS), then
        its services, their containers on the manager and its secret removed, its queue's keys
        gone from the bucket but ``done``: Engine 20.10 may still start a removed job's waiting
        task, which then finds it and ends.

        Raises:
            FireplugError: the engine or the bucket failed.
        """
        self.closed.set()
        self._end_workers()
        if self.removing is None:
            self._remove()
            return
        self.removing.join()
        if self.removal_error is not None:
            raise self.removal_error

    def _end_workers(self) -> None:
        if not self.done:
            self.store.put_bytes(done_key(self.place, self.map_id), b"{}", "ending the map's workers")
            self.done = True

    def _finish_early(self) -> None:
        """Once every run of the map ended (and none may be tried again): the workers told to
        end, and as soon as every run's output came through, the services removed (while the
        last results land here)."""
        runs = list(self.runs.values())
        if self.retries or self.removing is not None or len(runs) < self.expected or not all(run.ended.is_set() for run in runs):
            return
        self._end_workers()
        if all(run.output_done.is_set() or run.failure is not None or run.withdrawn for run in runs):
            self.removing = threading.Thread(target=self._remove_noting_error, name=f"fp-sweep-{self.host}-end", daemon=True)
            self.removing.start()

    def _remove_noting_error(self) -> None:
        try:
            self._remove()
        except FireplugError as e:
            self.removal_error = e

    def _remove(self) -> None:
        executor = SwarmExecutor(self.engine)
        with self.services_lock:
            self.removed = True  # (no service of workers comes after this)
        deadline = time.monotonic() + SETTLE_SECONDS  # a waiting task the engine starts after the removal would leave its container
        while time.monotonic() < deadline and any(task_state(task) in WAITING for task in self.engine.tasks(self.services)):
            time.sleep(POLL_SECONDS)
        for handle in self.services:
            executor.remove_service(handle)
        executor.remove_secrets(self.map_id)  # (once no service uses it)
        done = done_key(self.place, self.map_id)
        keys = [str(item["Key"]) for item in self.store.listing(sweep_key(self.place, self.map_id, ""))]
        self.store.delete_keys([key for key in keys if key != done])

    def _add_workers(self, workers: int, avoid: Sequence[str]) -> None:
        spec = self.prepared.spec
        service_labels = {**spec.labels, labels.KIND: "sweep", labels.RUN: self.map_id, labels.MAP: self.map_id}
        name = f"fp-{spec.labels.get(labels.PROJECT, 'project')[:28]}-{self.map_id}-{len(self.services)}"  # (at most 63 characters)
        spec = replace(spec, name=name, command=(SERVE,), labels=service_labels)
        body = service_spec(spec, self.prepared.image, self.secret, stop_grace_seconds=STOP_GRACE_SECONDS, avoid_nodes=avoid)
        body["Mode"] = {"ReplicatedJob": {"MaxConcurrent": workers, "TotalCompletions": workers}}
        body["TaskTemplate"]["ContainerSpec"]["Env"].append(f"{TASK_ID_VARIABLE}={{{{.Task.ID}}}}")  # (what its claims name)
        with self.services_lock:
            if self.removed:
                return
            handle = made_uninterrupted(lambda: self.engine.create_service(body, self.prepared.registry_auth), self.engine.remove_service)
            self.services.append(handle)
        threading.Thread(target=self._follow, args=(handle,), name=f"fp-sweep-{self.host}-log", daemon=True).start()

    # -- a run -----------------------------------------------------------------------------

    def run(self, spec: ContainerSpec, write: Write) -> int:
        """Queue the run of ``spec`` and wait for its end; its exit status.

        Raises:
            Withdrawn: the map stopped before a worker took it.
            NodeLost: its node went down more than NODE_LOSS_RESTARTS times.
            TaskRejected: no worker is left to take it (their tasks failed: the reason is said).
        """
        run_id = spec.labels[labels.RUN]
        own_env = [[name, value] for name, value in spec.env if (name, value) not in self.base_env]
        run = _Run(run_id, json.dumps({"run": run_id, "argv": list(spec.command), "env": own_env}).encode())
        with self.lock:
            self.runs[run_id] = run
        if not run.withdrawn:
            self._queue(run)
        try:
            return supervise(_WatchedRun(self, run), write, drain_seconds=OUTPUT_LAG_SECONDS)  # (the map's board signals it)
        finally:
            run.lines.put(None)  # its output ends here (withdrawn, failed, or its end's mark never came): no reader waits on

    def signal(self, run_id: str, signal_name: str) -> None:
        """A run no worker took yet is withdrawn; one running gets the signal through the bucket."""
        run = self.runs.get(run_id)
        if run is None or run.ended.is_set():
            return
        if not run.seqs:  # (not queued yet)
            run.withdrawn = True
            run.ended.set()
            return
        withdrawal = json.dumps({"withdrawn": signal_name, "at": time.time()}).encode()
        with self.store.translated("withdrawing a run"):
            withdrawn = put_if_absent(self.store.client, self.place.bucket, claim_key(self.place, self.map_id, run.seqs[-1]), withdrawal)
        if withdrawn:
            run.withdrawn = True
            run.ended.set()
            return
        self.signal_task(run_id, signal_name)

    def _queue(self, run: _Run) -> None:
        with self.lock:
            seq, self.next_seq = self.next_seq, self.next_seq + 1
            run.seqs.append(seq)
        self.store.put_bytes(item_key(self.place, self.map_id, seq), run.item, "queueing a run")

    # -- output --------------------------------------------------------------------------

    def _follow(self, handle: str) -> None:
        """The service's output, each line to its run (followed again after a broken stream,
        from where it broke)."""
        taken = {1: 0, 2: 0}  # bytes of each stream routed
        partial = {1: b"", 2: b""}
        while not self.closed.is_set():
            offset = {1: 0, 2: 0}  # (a follow starts from the beginning)
            try:
                for stream, data in self.engine.service_logs(handle, follow=True):
                    if self.closed.is_set():
                        return
                    start, offset[stream] = offset.get(stream, 0), offset.get(stream, 0) + len(data)
                    if offset[stream] <= taken.get(stream, 0):
                        continue
                    lines = (partial.get(stream, b"") + data[max(taken.get(stream, 0) - start, 0) :]).split(b"\n")
                    taken[stream], partial[stream] = offset[stream], lines.pop()
                    for line in lines:
                        self._route(stream, line + b"\n")
            except FireplugError:
                pass
            self.closed.wait(1.0)

    def _route(self, stream: int, line: bytes) -> None:
        tagged = untag(line)
        run = self.runs.get(tagged[0]) if tagged else None
        if tagged is None or run is None:
            events.warn(f"swarm '{self.host}': {line.decode(errors='replace').rstrip()}")
            return
        _, output = tagged
        if output is not None:
            run.lines.put((stream, output))
        else:
            run.marked.add(stream)
            if run.marked >= {1, 2} and not run.output_done.is_set():
                run.output_done.set()
                run.lines.put(None)
                self.wake.set()

    # -- watching the queue and the tasks --------------------------------------------------

    def _watch(self) -> None:
        next_task_check = 0.0
        while not self.closed.is_set():
            self.wake.wait(POLL_SECONDS)
            self.wake.clear()
            try:
                self._take_ended()
                self._finish_early()
                if time.monotonic() >= next_task_check:
                    next_task_check = time.monotonic() + TASK_CHECK_SECONDS
                    self._look_at_tasks()
            except FireplugError as e:
                events.warn(f"swarm '{self.host}': fp could not look at its runs ({e}); trying again")
            except Exception as e:  # fp's own failure: this thread must go on, or the runs would wait forever
                events.warn(f"swarm '{self.host}': fp failed looking at its runs ({type(e).__name__}: {e}); trying again")

    def _take_ended(self) -> None:
        for item in self.store.listing(sweep_key(self.place, self.map_id, "ended/")):
            run = self.runs.get(str(item["Key"]).rsplit("/", 1)[-1])
            if run is None or run.ended.is_set():
                continue
            body = self.store.read_optional(str(item["Key"]), "reading a run's end")
            run.status = status_in(body)
            run.ended.set()

    def _look_at_tasks(self) -> None:
        """Runs whose worker was lost with its node are queued again; runs whose worker failed,
        and those no worker is left to take, end with the reason."""
        tasks = self.engine.tasks(self.services)
        if not tasks and not self.removed and not any(self.engine.service(handle) for handle in self.services):
            self._fail_unended(TaskRejected(f"the map's service on swarm '{self.host}' is gone (removed by hand?)"))
            return
        running_nodes = {str(task.get("NodeID") or "") for task in tasks if task_state(task) == "running"}
        down = down_nodes(self.engine) if running_nodes else set()
        live = [task for task in tasks if task_state(task) in WAITING or (task_state(task) == "running" and str(task.get("NodeID") or "") not in down)]
        gone = [task for task in tasks if str(task.get("ID")) not in self.looked_at and (str(task.get("NodeID") or "") in down or task_failed(task))]
        lost_nodes: list[str] = []
        for task in gone:
            self.looked_at.add(str(task.get("ID")))
            node = str(task.get("NodeID") or "")
            for run in self._runs_of(task):
                if node in down:
                    lost_nodes += self._start_again(run, node)
                else:
                    run.fail(TaskRejected(f"its worker on swarm '{self.host}' failed ({task_state(task)}): {task_error(task)}"))
        if lost_nodes:
            self._add_workers(len(lost_nodes), avoid=sorted({node for run in self.runs.values() for node in run.lost_nodes}))
        elif tasks and not live:
            why = "; ".join(sorted({task_error(task) for task in tasks if task_failed(task)})) or "its workers ended"
            self._fail_unended(TaskRejected(f"no worker of swarm '{self.host}' is left to run it: {why}"))

    def _fail_unended(self, failure: FireplugError) -> None:
        for run in list(self.runs.values()):
            if not run.ended.is_set():
                run.fail(failure)

    def _runs_of(self, task: dict[str, Any]) -> list[_Run]:
        """The unended runs the task's worker took (its claims name it)."""
        found = []
        for run in list(self.runs.values()):
            if run.ended.is_set():
                continue
            claim = self.store.read_optional(claim_key(self.place, self.map_id, run.seqs[-1]), "reading a claim")
            if claim and json.loads(claim).get("task") == task.get("ID"):
                found.append(run)
        return found

    def _start_again(self, run: _Run, node: str) -> list[str]:
        """Queue ``run`` again after its node went down; [node] when it was (it needs a worker)."""
        run.lost_nodes.append(node)
        lost = NodeLost(self.host, node)
        if len(run.lost_nodes) > NODE_LOSS_RESTARTS:
            run.fail(lost)
            return []
        events.warn(f"{lost.message}: starting run {run.run_id} again on another node")
        run.marked.clear()
        self._queue(run)
        return [node]
