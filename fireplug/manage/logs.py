"""`fp logs`: a run's output, from its host while it is there, else from the copy kept here
when it ended; followed live with -f.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from fireplug.errors import FireplugError
from fireplug.invocation import Invocation
from fireplug.manage.control import Hosts, Located, in_live_map
from fireplug.manage.stop import POLL_SECONDS
from fireplug.run.records import RunBook
from fireplug.support.output import LineWriter, run_prefix


def show_logs(invocation: Invocation, peers: Hosts, runs: Sequence[Located], *, follow: bool, out: LineWriter) -> None:
    """Each run's output (its container's, else what fp kept), prefixed with its parameters for
    map runs; ``follow``: until the running ones end (several at once, each line whole).

    Raises:
        FireplugError: a run's output is nowhere (its container is gone and nothing was kept).
    """
    book = invocation.runs
    sources = [(located, _output_of(peers, book, located, follow)) for located in runs]
    prefixed = len(runs) > 1 or any(located.map_id for located in runs)
    if not follow or len(sources) == 1:
        for located, chunks in sources:
            _copy_output(chunks, out, run_prefix(located.params, located.host) if prefixed else "", located.run_id)
        return
    threads = [
        threading.Thread(target=_copy_output, args=(chunks, out, run_prefix(located.params, located.host), located.run_id), daemon=True)
        for located, chunks in sources
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _output_of(peers: Hosts, book: RunBook, located: Located, follow: bool) -> Iterator[tuple[int, bytes]]:
    kept = book.log_path(located.run_id)
    if located.state is not None:
        return peers.executor(located.host).logs(located.state.handle, follow=follow)
    record = located.record
    if located.in_live_map and follow and record is not None:
        return _kept_output(kept, lambda: in_live_map(book, book.load(record.id) or record))
    if kept.is_file():
        return _kept_output(kept)
    why = "its host did not answer" if not located.answered else "its container is gone and fp kept none of it"
    raise FireplugError(f"no output of run {located.run_id} on host '{located.host}': {why}")


def _kept_output(path: Path, going: Callable[[], bool] | None = None) -> Iterator[tuple[int, bytes]]:
    """What fp kept of a run's output; ``going``: followed while it says the run goes on (a map's
    process writes the file as the run's output comes)."""
    with contextlib.suppress(FileNotFoundError), open(path, "rb") as source:
        while True:
            still = going is not None and going()
            while block := source.read(65536):
                yield 1, block
            if not still:
                return
            time.sleep(POLL_SECONDS)


def _copy_output(chunks: Iterator[tuple[int, bytes]], out: LineWriter, prefix: str, key: str) -> None:
    for stream, data in chunks:
        out.write(stream, data, prefix=prefix, key=key)
    out.flush(key, prefix)
