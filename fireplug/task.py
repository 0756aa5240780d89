"""A swarm task's own sync: the entrypoint wrapper of fp's runs on a swarm (in fp's base image).

    python3 -m fireplug.task COMMAND [ARGS...]

A task may land on any node, where no data folder waits for it, so it brings its own: the job
(the bucket, its credentials, the run's input manifest) arrives as the Docker secret
``/run/secrets/fp-task`` (never in the environment or labels that `docker service inspect`
shows). The wrapper

1. downloads the input manifest's entries into the data folder (as the S3 helper's fetch does);
2. runs the command there, forwarding SIGINT/SIGTERM, and the signals fp leaves in the bucket
   (``fp stop`` / Ctrl-C: ``runs/<id>/signal``, looked at every second);
3. publishes the data folder as the run's manifest (ref ``run-<id>``) however the command
   ended, then ``runs/<id>/result`` (its exit status);
4. exits with the command's status (128 + N for a signal N), which the task status reports.

A failure of its own (the bucket unreachable) exits 125 with one line on stderr.
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
from collections.abc import Mapping
from typing import Any

from fireplug.sync.s3_helper import DigestCache, Manifest, Place, decode_manifest, fetch, make_client, publish
from fireplug.sync.tree import FILE, lstat_entry, scan

JOB_FILE = "/run/secrets/fp-task"
OWN_FAILURE = 125
SIGNAL_POLL_SECONDS = 1.0


def input_side(run_id: str) -> str:
    return f"run-{run_id}-in"


def result_side(run_id: str) -> str:
    return f"run-{run_id}"


def result_key(place: Place, run_id: str) -> str:
    return f"{place.root}/runs/{run_id}/result"


def signal_key(place: Place, run_id: str) -> str:
    return f"{place.root}/runs/{run_id}/signal"


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python3 -m fireplug.task COMMAND [ARGS...]", file=sys.stderr)
        return 2
    try:
        with open(JOB_FILE, "rb") as source:
            job = json.load(source)
        client = make_client(job)
        place = Place(job["bucket"], job["root"])
        inputs = bring_in(client, place, job)
    except Exception as e:  # one line, in the task's log: botocore's errors name the request
        print(f"fp task: the data could not be brought in: {type(e).__name__}: {e}", file=sys.stderr)
        return OWN_FAILURE
    status = run_command(argv, client, place, job["run"])
    try:
        send_out(client, place, job, status, {entry["digest"] for entry in inputs.values() if entry["kind"] == FILE})
    except Exception as e:
        print(f"fp task: the results could not be published: {type(e).__name__}: {e}", file=sys.stderr)
        return OWN_FAILURE
    return status


def bring_in(client: Any, place: Place, job: Mapping[str, Any]) -> Manifest:
    """The input manifest's entries, downloaded into the data folder; the manifest."""
    data = job["data"]
    os.makedirs(data, exist_ok=True)
    body = client.get_object(Bucket=place.bucket, Key=job["input"])["Body"].read()
    entries = decode_manifest(body)
    quiet = io.BytesIO()
    scratch = _scratch(job)
    fetch({**job, "entries": entries}, data, f"{scratch}/stage", f"{scratch}/backup", f"{scratch}/trash", quiet, sys.stderr.buffer)
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


def run_command(argv: list[str], client: Any, place: Place, run_id: str) -> int:
    try:
        child = subprocess.Popen(argv)
    except OSError as e:
        print(f"fp task: cannot run {argv[0]}: {e.strerror}", file=sys.stderr)
        return 127 if isinstance(e, FileNotFoundError) else 126
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda number, frame: _send(child, number))
    ended = threading.Event()
    watcher = threading.Thread(target=_watch_signals, args=(client, place, run_id, child, ended), daemon=True)
    watcher.start()
    status = child.wait()
    ended.set()
    return status if status >= 0 else 128 - status


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


def send_out(client: Any, place: Place, job: Mapping[str, Any], status: int, known: set[str]) -> None:
    """The data folder published as the run's manifest (``known``: objects the bucket has), then its status."""
    data = job["data"]
    paths = sorted(scan(data))
    publish({**job, "paths": paths, "side": result_side(job["run"]), "known": sorted(known)}, data, f"{_scratch(job)}/digests.json", io.BytesIO())
    result = {"status": status, "at": time.time()}
    client.put_object(Bucket=place.bucket, Key=result_key(place, job["run"]), Body=json.dumps(result).encode())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
