"""`fp map`, the running part: runs spread over hosts, a few at a time on each.

- Each host is prepared once, in a thread of its own: connected, its one-time image built
  (or found), the data folder synced in (two-way, as for one run). A host that cannot be
  prepared is left out with a warning; with no host left, fp fails (125).
- Each host then runs at most ``per_host`` runs at once. The runs wait in one queue and the
  next goes to the first host that frees up; a run whose host is lost goes back to the front
  of the queue (for another host), and a run whose command failed is run again with
  ``--retries``, on another host when there is one.
- How a run starts, streams and ends there is its host's backend's (``Lane``: on a Docker
  engine, containers sharing one network anchor; on a swarm, a sweep's workers).
- A run's output goes to the screen line by line with its parameters and host in front, and
  to ``runs/RUN_ID.log`` under fp's state folder (for `fp logs`); its container is removed
  when it ends; its results come back as it ends (``results.py``: changes made on its host
  only, one host at a time, never two syncs of the local data folder at once), and once more
  at the end.
- Ctrl-C (SIGINT, SIGTERM, SIGHUP): the first stops handing out runs and forwards the signal
  to every running run, the second kills them; either way no container is left, and the
  results that exist come back.
"""

from __future__ import annotations

import contextlib
import json
import select
import signal
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from fireplug.backends import backend_for
from fireplug.backends.base import Lane, NotStarted, Place
from fireplug.errors import EngineUnreachable, FireplugError, SshError
from fireplug.invocation import Invocation
from fireplug.map.board import Board, Pending, RunGate
from fireplug.map.params import MapRun, Outcome, joblog_header
from fireplug.map.request import MapRequest, MapResult
from fireplug.map.results import Results
from fireplug.run.records import new_id, run_record
from fireplug.run.spec import ContainerSpec
from fireplug.support import events, labels
from fireplug.support.output import LineWriter, run_prefix
from fireplug.support.secrets import display
from fireplug.support.signals import HeldSignals
from fireplug.sync import SyncInterrupted

if TYPE_CHECKING:
    from fireplug.run.records import RunRecord
    from fireplug.sync.results import Landed


LOST = -1  # a run's exit code when it never reported one

STATUS_EVERY_SECONDS = 0.5

HOST_LOST = (EngineUnreachable, SshError)


class _Lane:
    """One host of the map: its preparation, its workers, and its results coming back."""

    def __init__(self, scheduler: _Scheduler, host_name: str) -> None:
        self.scheduler = scheduler
        self.name = host_name
        self.place: Place | None = None
        self.lane: Lane | None = None

    def _left_out(self, why: str) -> None:
        events.warn(f"host '{self.name}' is left out of the map: {why}")
        board = self.scheduler.board
        with board.cond:
            board.preparing -= 1
            board.cond.notify_all()

    def prepare(self) -> None:
        """Connect, build, sync in, then start the workers (in this thread)."""
        scheduler = self.scheduler
        try:
            invocation, request = scheduler.invocation, scheduler.request.run
            host = invocation.host(self.name)
            place = backend_for(host).prepare(invocation, request, host, time.perf_counter())
            scheduler.check_commands(place)
            with scheduler.results.local_sync:
                place.sync_in() if request.steps.sync_in else place.ready_for_run()
            map_request = scheduler.request
            self.lane = place.open_lane(
                map_request.map_id,
                len(map_request.runs),
                per_host=map_request.per_host,
                retries=map_request.retries,
                live=lambda: self.name in scheduler.board.live,
            )
            self.place = place
        except (FireplugError, SyncInterrupted) as e:
            self._left_out(str(e))
            return
        except Exception as e:  # a failure of fp's own must not leave the map waiting for this host
            self._left_out(f"fp failed ({type(e).__name__}: {e})")
            return
        self._serve(self.lane)

    def _serve(self, lane: Lane) -> None:
        """Take runs from the board, ``lane.slots`` at a time, until none is left for this host."""
        board = self.scheduler.board
        with board.cond:
            board.live.add(self.name)
            board.preparing -= 1
            board.cond.notify_all()
        events.note(lane.ready_words)
        workers = [threading.Thread(target=self.work, name=f"fp-map-{self.name}-{slot}", daemon=True) for slot in range(lane.slots)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        self.scheduler.left += lane.close()

    def work(self) -> None:
        board = self.scheduler.board
        while (item := board.take(self.name)) is not None:
            try:
                self.scheduler.run_one(self, item)
            except Exception as e:  # a local failure (or a bug) fails this run; the map goes on and ends
                events.warn(f"run {item.run.seq} failed on host '{self.name}' because of fp: {type(e).__name__}: {e}")
                if item.taken:
                    board.finish(item, Outcome(item.run.seq, self.name, time.time(), 0.0, LOST, 0, item.run.command_line))


class _Scheduler:
    def __init__(self, invocation: Invocation, request: MapRequest, writer: LineWriter) -> None:
        self.invocation = invocation
        self.request = request
        self.writer = writer
        self.board = Board(request.runs)
        self.lanes = {name: _Lane(self, name) for name in request.hosts}
        self.results = Results(invocation, self.board, lambda host: self.lanes[host].lane)
        self.left: list[str] = []  # see MapResult.left
        self.joblog_lock = threading.Lock()

    # -- per host ----------------------------------------------------------------------------

    def check_commands(self, place: Place) -> None:
        """Every distinct program the runs start is in the image (before any data moves)."""
        for program in dict.fromkeys(run.argv[0] for run in self.request.runs):
            place.check_command(program)

    # -- one run ---------------------------------------------------------------------------

    def run_one(self, lane: _Lane, item: Pending) -> None:
        assert lane.place is not None and lane.lane is not None
        run, host = item.run, lane.name
        item.tries += 1
        spec = self._spec(lane.place.spec, run)
        prefix = run_prefix(run.shown_params, host)
        started = time.time()
        try:
            status, signalled = self._execute(lane, spec, prefix)
        except HOST_LOST as e:
            self._host_lost(lane, item, spec, e)
            return
        except NotStarted:
            item.tries -= 1
            self.board.give_back(item, front=True)  # the map stops: it stays queued, and --resume runs it
            return
        except FireplugError as e:
            self.writer.note(f"fp could not run it on host '{host}': {e}", key=spec.name, prefix=prefix)
            status, signalled = LOST, 0
        outcome = Outcome(run.seq, host, started, time.time() - started, status, signalled, run.command_line)
        self.results.want(host)
        if not outcome.succeeded and item.tries <= self.request.retries and not self.board.stopping:
            item.avoid.add(host)
            elsewhere = " on another host" if self.board.live - item.avoid else ""
            self.writer.note(f"exited {status}: trying again{elsewhere} ({item.tries} of {self.request.retries + 1})", key=spec.name, prefix=prefix)
            self._log(outcome)
            self.board.give_back(item, front=False)
            return
        self._log(outcome)
        self.board.finish(item, outcome)
        if not events.interactive():
            how = f"stopped by {signal.Signals(signalled).name}" if signalled else f"exited {status}"
            self.writer.note(
                f"run {run.seq} {how} after {outcome.runtime:.1f} s; {self.board.tally.summary()}",
                key=spec.name,
                prefix=prefix,
            )

    def _spec(self, base: ContainerSpec, run: MapRun) -> ContainerSpec:
        run_id = new_id()
        config = self.invocation.config
        return replace(
            base,
            command=run.argv,
            env=(*base.env, *run.env()),
            name=f"fp-{config.project.name}-{run_id}",
            tty=False,
            stdin=False,
            labels={
                **base.labels,
                labels.RUN: run_id,
                labels.MAP: self.request.map_id,
                labels.PARAMS: json.dumps(dict(run.shown_params)),
                labels.INDEX: str(run.index),
                labels.COMMAND: display(run.argv)[:512],
            },
        )

    def _execute(self, host: _Lane, spec: ContainerSpec, prefix: str) -> tuple[int, int]:
        """Run it to its end, its output to the screen and to its log, and land its results
        when its place brings them back one by one; (its exit status, the signal fp sent it or 0).

        Raises:
            EngineUnreachable, SshError: its host was lost (the run may go on there).
            NotStarted: the map stopped before it started.
            FireplugError: the place refused or failed it.
        """
        lane, book = host.lane, self.invocation.runs
        assert lane is not None
        record = run_record(self.invocation, spec, host.name)
        kept = book.log_path(record.id)
        kept.parent.mkdir(parents=True, exist_ok=True)
        gate = RunGate(self.board)
        try:
            with open(kept, "ab") as log:

                def write(stream: int, data: bytes) -> None:
                    log.write(data)
                    log.flush()  # (`fp logs` reads it while the run goes on)
                    self.writer.write(stream, data, prefix=prefix, key=spec.name)

                status = lane.execute(spec, record, write, gate)
        finally:
            self.writer.flush(spec.name, prefix)
            signalled = gate.leave()
        landed = self._land(lane, record, status, spec.name, prefix)
        for path, copy in landed.conflicts if landed else ():
            self.writer.note(f"conflict: {path} changed here meanwhile (another run?); this run's version is {copy}", key=spec.name, prefix=prefix)
        return status, signalled

    def _land(self, lane: Lane, record: RunRecord, status: int, key: str, prefix: str) -> Landed | None:
        try:
            return self.results.land(lane, record, status)
        except FireplugError as e:
            self.writer.note(f"its results could not be brought back ({e}): fp pull {record.id} tries again", key=key, prefix=prefix)
            return None

    def _host_lost(self, lane: _Lane, item: Pending, spec: ContainerSpec, error: FireplugError) -> None:
        self.board.lose(lane.name)
        run_id = spec.labels[labels.RUN]
        self.left.append(f"run {run_id} may still run on lost host '{lane.name}' (container {spec.name}): fp pull {run_id} once the host is back")
        prefix = run_prefix(item.run.shown_params, lane.name)
        others = "; it goes back to the queue for another host" if self.board.live else ""
        self.writer.note(f"lost host '{lane.name}' ({error}){others}", key=spec.name, prefix=prefix)
        item.tries -= 1  # a lost host is not the command's failure
        self.board.give_back(item, front=True)

    def _log(self, outcome: Outcome) -> None:
        try:
            with self.joblog_lock, open(self.request.joblog, "a", encoding="utf-8") as log:
                log.write(outcome.line() + "\n")
        except OSError as e:
            events.warn(f"run {outcome.seq} could not go into the joblog {self.request.joblog} ({e.strerror or e})")

    # -- the whole map --------------------------------------------------------------------

    def run(self) -> MapResult:
        request = self.request
        with open(request.joblog, "a", encoding="utf-8") as log:
            if log.tell() == 0:
                log.write(joblog_header() + "\n")
        self.board.preparing = len(self.lanes)
        collector = threading.Thread(target=self.results.collect, name="fp-map-collector", daemon=True)
        interrupted = 0
        with HeldSignals(tty=False) as held:
            lanes = [threading.Thread(target=self._lane, args=(lane, held), name=f"fp-map-{lane.name}", daemon=True) for lane in self.lanes.values()]
            collector.start()
            for thread in lanes:
                thread.start()
            interrupted = self._supervise(held)
            for thread in lanes:
                thread.join()
            self.results.finish()
            collector.join()
            events.status(None)
            if not any(lane.place for lane in self.lanes.values()):
                raise FireplugError("no host of the map could be prepared (see the warnings above)", hint="check them with `fp hosts`")
            self.results.final_pulls()
        self._fail_the_stranded()
        outcomes = dict(self.board.tally.outcomes)
        return MapResult(request.map_id, request.runs, outcomes, request.joblog, interrupted, sorted(self.results.not_back), self.left, self.results.conflicts)

    def _lane(self, lane: _Lane, held: HeldSignals) -> None:
        try:
            lane.prepare()
        finally:
            held.notify_exited()  # the main loop looks at once whether the map is done

    def _supervise(self, held: HeldSignals) -> int:
        """Wait for the map to end, acting on signals; the first signal received (0: none)."""
        first = 0
        last_status = 0.0
        while not self.board.finished():
            ready, _, _ = select.select([held.read_fd], [], [], STATUS_EVERY_SECONDS)
            if ready:
                for signum in held.take():
                    first = first or signum
                    self._on_signal(signum)
            prepared = not self.board.preparing  # until then, builds and syncs show their own progress
            if prepared and events.interactive() and time.monotonic() - last_status >= STATUS_EVERY_SECONDS:
                events.status(f"fp map {self.request.map_id}: {self.board.tally.summary()}")
                last_status = time.monotonic()
        return first

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        board = self.board
        with board.cond:
            again = board.stopping
            board.stopping = True
            running = dict(board.running)
            for handle, (executor, _) in running.items():
                board.running[handle] = (executor, signal.SIGKILL if again else signum)
            board.cond.notify_all()
        for handle, (executor, _) in running.items():
            with contextlib.suppress(FireplugError):
                executor.signal(handle, "SIGKILL" if again else name)
        if again:
            events.note(f"second {name}: killing {len(running)} running runs")
        else:
            events.note(f"{name}: no new run starts; forwarded to {len(running)} running runs (Ctrl-C again kills them)")

    def _fail_the_stranded(self) -> None:
        """Runs still queued when every host was lost: failed, said so."""
        board = self.board
        if board.stopping or board.live:
            return
        for item in list(board.queue):
            outcome = Outcome(item.run.seq, "-", time.time(), 0.0, LOST, 0, item.run.command_line)
            self._log(outcome)
            board.tally.outcomes[item.run.seq] = outcome
            board.tally.failed += 1
        if board.queue:
            events.warn(f"{len(board.queue)} runs did not run: no host of the map is left")
        board.queue.clear()


def run_map(invocation: Invocation, request: MapRequest, writer: LineWriter | None = None) -> MapResult:
    """Run every run of ``request`` (see the module docstring).

    Raises:
        FireplugError: no host could be prepared.
        SyncInterrupted: a signal stopped the results' coming back at the end.
    """
    request.joblog.parent.mkdir(parents=True, exist_ok=True)
    return _Scheduler(invocation, request, writer or LineWriter()).run()
