"""Work on many items from a few threads at once."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any


def in_parallel(work: Callable[[Any], None], items: list[Any], workers: int) -> None:
    """``work`` on each item, ``workers`` at a time; the first failure (or an interruption)
    cancels what has not started, and is raised once the running ones are done."""
    if len(items) <= 1 or workers == 1:
        for item in items:
            work(item)
        return
    pool = concurrent.futures.ThreadPoolExecutor(workers)
    try:
        for future in [pool.submit(work, item) for item in items]:
            future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
