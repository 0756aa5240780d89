"""A swarm task's own sync: the entrypoint wrapper of fp's runs on a swarm (in fp's base image).

    python3 -m fireplug.remote.task COMMAND [ARGS...]

A task may land on any node, where no data folder waits for it, so it brings its own: the job
(the bucket, its credentials, the run's input manifest) arrives as the Docker secret
``/run/secrets/fp-task`` (never in the environment or labels that `docker service inspect`
shows). The wrapper

1. downloads the input manifest's entries into the data folder (as the S3 helper's fetch does);
2. runs the command there, forwarding SIGINT/SIGTERM, and the signals fp leaves in the bucket
   (``fp stop`` / Ctrl-C: ``runs/<id>/signal``, looked at every second);
3. publishes the data folder as the run's manifest (ref ``run-<id>``) however the command
   ended;
4. exits with the command's status (128 + N for a signal N), which the task status reports.

A failure of its own (the bucket unreachable) exits 125 with one line on stderr.

    python3 -m fireplug.remote.task --serve

is a sweep's worker (``fp map`` on a swarm, see backends/swarm/sweep.py): the job names a map instead of
a run. The worker brings the data folder in once, then takes the map's runs from a queue in the
bucket (``maps/<map>/items/<seq>``, each taken by creating ``claims/<seq>``, which only one
worker can), one after another, until none is left for a while or it is asked to stop. Runs it
serves share its data folder, as runs on one host share the host's: each run's input side is
the folder as the previous run left it, so only what a run changed lands. Every line of a run's
output carries the run's id (``OUTPUT_TAG``), so that fp can tell the runs' output apart in
the service's; ``maps/<map>/ended/<run>`` says a run ended and published.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import IO, Any

from fireplug.remote.s3_layout import Manifest, Place, decode_manifest, manifest_key_of
from fireplug.remote.s3_objects import fetch, publish, stage_tree
from fireplug.remote.s3_transfer import DigestCache, make_client, put_if_absent, put_manifest, put_ref
from fireplug.sync.tree import FILE, lstat_entry, scan

JOB_FILE = "/run/secrets/fp-task"
OWN_FAILURE = 125
SIGNAL_POLL_SECONDS = 1.0
SERVE = "--serve"
TASK_ID_VARIABLE = "FP_TASK_ID"  # a sweep worker's swarm task (a template in its service's environment)
QUEUE_POLL_SECONDS = 0.25
DONE_POLL_SECONDS = 0.5
IDLE_EXIT_SECONDS = 60.0  # a worker with nothing to take for this long ends (its fp may be gone)
OUTPUT_TAG = b"\x1e"  # then the run id, then " " (a line), "+" (a piece of a longer line: no newline after it) or "." (the run's end)
OUTPUT_DRAIN_SECONDS = 5.0
PIECE = 8192  # a longer line goes in pieces (the engine's log would split it with no tag)


def input_side(run_id: str) -> str:
    return f"run-{run_id}-in"


def result_side(run_id: str) -> str:
    return f"run-{run_id}"


def signal_key(place: Place, run_id: str) -> str:
    return f"{place.root}/runs/{run_id}/signal"


def sweep_key(place: Place, map_id: str, part: str) -> str:
    return f"{place.root}/maps/{map_id}/{part}"


def item_key(place: Place, map_id: str, seq: int) -> str:
    return sweep_key(place, map_id, f"items/{seq:06d}")


def claim_key(place: Place, map_id: str, seq: int) -> str:
    return sweep_key(place, map_id, f"claims/{seq:06d}")  # (holds s3_helper.CLAIMS)


def ended_key(place: Place, map_id: str, run_id: str) -> str:
    return sweep_key(place, map_id, f"ended/{run_id}")


def done_key(place: Place, map_id: str) -> str:
    """The map is over: its workers end (fp leaves this key: a worker the engine starts after its service is gone ends too)."""
    return sweep_key(place, map_id, "done")


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python3 -m fireplug.remote.task COMMAND [ARGS...] | --serve", file=sys.stderr)
        return 2
    try:
        with open(JOB_FILE, "rb") as source:
            job = json.load(source)
        client = make_client(job)
        place = Place(job["bucket"], job["root"])
        if argv == [SERVE] and _exists(client, place.bucket, done_key(place, job["map"])):
            return 0
        inputs = bring_in(client, place, job)
    except Exception as e:  # one line, in the task's log: botocore's errors name the request
        print(f"fp task: the data could not be brought in: {type(e).__name__}: {e}", file=sys.stderr)
        return OWN_FAILURE
    if argv == [SERVE]:
        return serve(client, place, job, inputs)
    status = run_command(argv, client, place, job["run"])
    try:
        send_out(client, job, job["run"], digests_of(inputs))
    except Exception as e:
        print(f"fp task: the results could not be published: {type(e).__name__}: {e}", file=sys.stderr)
        return OWN_FAILURE
    return status


def digests_of(manifest: Manifest) -> set[str]:
    return {entry["digest"] for entry in manifest.values() if entry["kind"] == FILE}


def serve(client: Any, place: Place, job: Mapping[str, Any], inputs: Manifest) -> int:
    """Take the map's runs one after another (see the module's docstring); 0, or 125 when the
    bucket failed (the run it served then has no result: fp says so)."""
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda number, frame: stopping.set())  # (while a run runs, run_command forwards them)
    base, known = job["input"], digests_of(inputs)
    seq, idle_since, done_checked = 0, time.monotonic(), 0.0
    ending: _Background | None = None  # the last run's end, written while the next one starts
    try:
        while not stopping.is_set():
            seq = _first_unclaimed(client, place, job["map"], seq)
            item = _read_json(client, place.bucket, item_key(place, job["map"], seq))
            if item is None:
                if time.monotonic() - idle_since > IDLE_EXIT_SECONDS:
                    break
                if time.monotonic() - done_checked > DONE_POLL_SECONDS:
                    done_checked = time.monotonic()
                    if _exists(client, place.bucket, done_key(place, job["map"])):
                        break
                stopping.wait(QUEUE_POLL_SECONDS)
                continue
            claim = json.dumps({"task": os.environ.get(TASK_ID_VARIABLE, ""), "nonce": uuid.uuid4().hex}).encode()
            if put_if_absent(client, place.bucket, claim_key(place, job["map"], seq), claim):
                base, known, ending = serve_run(client, place, job, item, base, known, stopping, ending)
                idle_since = time.monotonic()
        if ending is not None:
            ending.join()
    except Exception as e:
        print(f"fp task: the bucket failed: {type(e).__name__}: {e}", file=sys.stderr)
        return OWN_FAILURE
    return 0


def serve_run(
    client: Any,
    place: Place,
    job: Mapping[str, Any],
    item: Mapping[str, Any],
    base: str,
    known: set[str],
    stopping: threading.Event,
    before: _Background | None,
) -> tuple[str, set[str], _Background]:
    """One run of the sweep: its input side is ``base`` (a manifest's key) and ``known`` the
    objects the bucket has; the same two after it, for the next run, and the writing of its
    end (its manifest, ref, ``ended`` key and output's end mark: nothing the next run's command
    changes), which goes on while the next run starts. ``before``: the previous run's, done
    before this one's is started."""
    run_id = str(item["run"])
    checked = job.get("request_checksum_calculation") != "when_required"
    pointing = _Background(lambda: put_ref(client, place, input_side(run_id), base, checked=checked))  # (read only after the run)
    env = {**os.environ, **{str(name): str(value) for name, value in item["env"]}}
    status = run_command([str(word) for word in item["argv"]], client, place, run_id, env=env, tag=run_id.encode(), on_signal=stopping.set)
    pointing.join()
    if before is not None:
        before.join()
    data = job["data"]
    manifest, _ = stage_tree({**job, "paths": sorted(scan(data)), "known": sorted(known)}, data, f"{_scratch(job)}/digests.json", client)
    ending = _Background(lambda: _write_end(client, place, job, run_id, status, manifest, checked=checked))
    return manifest_key_of(place, manifest)[0], digests_of(manifest), ending


def _write_end(client: Any, place: Place, job: Mapping[str, Any], run_id: str, status: int, manifest: Manifest, *, checked: bool) -> None:
    put_manifest(client, place, result_side(run_id), manifest, checked=checked)
    client.put_object(Bucket=place.bucket, Key=ended_key(place, job["map"], run_id), Body=json.dumps({"status": status}).encode())
    for out in (sys.stdout.buffer, sys.stderr.buffer):
        out.write(OUTPUT_TAG + run_id.encode() + b".\n")
        out.flush()


class _Background(threading.Thread):
    """``work()`` in a thread; ``join`` raises what it raised."""

    def __init__(self, work: Callable[[], None]) -> None:
        super().__init__(daemon=True)
        self.work = work
        self.error: Exception | None = None
        self.start()

    def run(self) -> None:
        try:
            self.work()
        except Exception as e:  # (handed to join)
            self.error = e

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        if self.error is not None:
            raise self.error


def _read_json(client: Any, bucket: str, key: str) -> Any:
    try:
        return json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    except client.exceptions.NoSuchKey:
        return None


def _first_unclaimed(client: Any, place: Place, map_id: str, seq: int) -> int:
    """The first run from ``seq`` on that no worker claimed (one listing, not a try at each)."""
    after = {"StartAfter": claim_key(place, map_id, seq - 1)} if seq else {}
    listed = client.list_objects_v2(Bucket=place.bucket, Prefix=sweep_key(place, map_id, "claims/"), **after)
    for entry in listed.get("Contents", ()):
        if entry["Key"] != claim_key(place, map_id, seq):
            break
        seq += 1
    return seq


def _exists(client: Any, bucket: str, key: str) -> bool:
    return _read_json(client, bucket, key) is not None


def bring_in(client: Any, place: Place, job: Mapping[str, Any]) -> Manifest:
    """The input manifest's entries, downloaded into the data folder; the manifest."""
    data = job["data"]
    os.makedirs(data, exist_ok=True)
    body = client.get_object(Bucket=place.bucket, Key=job["input"])["Body"].read()
    entries = decode_manifest(body)
    quiet = io.BytesIO()
    scratch = _scratch(job)
    fetch({**job, "entries": entries}, data, f"{scratch}/stage", f"{scratch}/backup", f"{scratch}/trash", quiet, sys.stderr.buffer, client)
    _remember_digests(data, entries, f"{scratch}/digests.json")
    return entries


def _scratch(job: Mapping[str, Any]) -> str:
    return f"/tmp/fp-task-{job['run']}"


def _remember_digests(data: str, entries: Manifest, state: str) -> None:
    """What was downloaded is known by content: the publish hashes and uploads only what the
    command changed (any write changes a file's mtime and ctime, so its signature)."""
    cache = DigestCache()
    for path, wanted in entries.items():
        here = lstat_entry(data, path) if wanted["kind"] == FILE else None
        if here is not None and here.kind == FILE and (here.size, here.mtime_ns) == (wanted["size"], wanted["mtime_ns"]):
            cache.entries[path] = [here.size, here.mtime_ns, here.ctime_ns, here.ino, wanted["digest"]]
    cache.save(state)


def run_command(
    argv: list[str],
    client: Any,
    place: Place,
    run_id: str,
    *,
    env: Mapping[str, str] | None = None,
    tag: bytes = b"",
    on_signal: Any = None,
) -> int:
    """Run the command to its end, forwarding signals; its exit status. ``tag``: its output goes
    through here, each line tagged (a sweep's run); ``on_signal``: also called on a signal."""
    piped = subprocess.PIPE if tag else None
    try:
        child = subprocess.Popen(argv, env=env, stdout=piped, stderr=piped)
    except OSError as e:
        message = f"fp task: cannot run {argv[0]}: {e.strerror}\n".encode()
        _write_tagged(sys.stderr.buffer, tag, message) if tag else sys.stderr.buffer.write(message)
        sys.stderr.flush()
        return 127 if isinstance(e, FileNotFoundError) else 126

    def forward(number: int, frame: Any) -> None:
        _send(child, number)
        if on_signal is not None:
            on_signal()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    ended = threading.Event()
    watcher = threading.Thread(target=_watch_signals, args=(client, place, run_id, child, ended), daemon=True)
    watcher.start()
    pumps = [
        threading.Thread(target=_pump, args=(source, out, tag), daemon=True)
        for source, out in ((child.stdout, sys.stdout.buffer), (child.stderr, sys.stderr.buffer))
        if source
    ]
    for pump in pumps:
        pump.start()
    status = child.wait()
    for pump in pumps:
        pump.join(OUTPUT_DRAIN_SECONDS)  # (a process the command left behind may hold its output open)
    ended.set()
    return status if status >= 0 else 128 - status


def _pump(source: IO[bytes], out: IO[bytes], tag: bytes) -> None:
    while piece := source.readline(PIECE):
        _write_tagged(out, tag, piece)


def _write_tagged(out: IO[bytes], tag: bytes, piece: bytes) -> None:
    """One line (or piece of one) of a run's output, tagged with its run id; a piece with no
    newline gets one here, marked "+" so that fp takes it off again."""
    whole = piece.endswith(b"\n")
    out.write(OUTPUT_TAG + tag + (b" " + piece if whole else b"+" + piece + b"\n"))
    out.flush()


def _send(child: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(OSError):
        child.send_signal(signum)


def _watch_signals(client: Any, place: Place, run_id: str, child: subprocess.Popen[bytes], ended: threading.Event) -> None:
    """Signals fp asked for through the bucket (a task's container is out of fp's reach)."""
    seen = ""
    key = signal_key(place, run_id)
    while not ended.wait(SIGNAL_POLL_SECONDS):
        with contextlib.suppress(Exception):
            answer = client.get_object(Bucket=place.bucket, Key=key)
            asked = answer["Body"].read().decode().strip()
            if asked and asked != seen:
                seen = asked
                name = asked.split()[0]
                _send(child, int(getattr(signal, name, signal.SIGINT)))


def send_out(client: Any, job: Mapping[str, Any], run_id: str, known: set[str]) -> None:
    """The data folder published as the run's manifest (``known``: objects the bucket has)."""
    data = job["data"]
    job = {**job, "paths": sorted(scan(data)), "side": result_side(run_id), "known": sorted(known)}
    publish(job, data, f"{_scratch(job)}/digests.json", io.BytesIO(), client)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
