"""fireplug.serialize.pipeline: jobs run on workers, results come back in order, errors surface."""

from __future__ import annotations

import threading
import time

import pytest

from fireplug.serialize.pipeline import Pool


def test_results_come_back_in_submission_order_on_the_calling_thread() -> None:
    pool, seen, threads = Pool(), [], set()

    def slow_first(value: int) -> int:
        time.sleep(0.02 if value == 0 else 0)
        return value

    for value in range(10):
        pool.submit(lambda value=value: slow_first(value), lambda result: (seen.append(result), threads.add(threading.get_ident())))
    pool.submit(lambda: "last", seen.append)  # its ``then`` comes after every earlier job's
    pool.drain()
    pool.close()
    assert seen == [*range(10), "last"] and threads == {threading.get_ident()}


def test_a_failing_job_raises_in_the_caller_and_the_pool_still_closes() -> None:
    pool = Pool()

    def fail() -> None:
        raise ValueError("chunk 3 is damaged")

    pool.submit(fail)
    with pytest.raises(ValueError, match="chunk 3 is damaged"):
        pool.drain()
    pool.close()
    assert pool.map(lambda value: value * 2, [1, 2, 3]) == [2, 4, 6]  # usable again after close
    pool.close()
