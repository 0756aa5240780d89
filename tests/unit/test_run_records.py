"""Runs after their start, without services: local records, ids, the engine's view of a run,
output of several runs on one screen, and the map's queue."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from fireplug.backends.docker.executor import inspected_state, listed_state
from fireplug.backends.docker.lane import slots_for
from fireplug.errors import UsageError
from fireplug.hosts.engine import engine_time
from fireplug.map.board import Board
from fireplug.map.params import Outcome, parse_param, runs_from_params
from fireplug.run.records import RunBook, RunRecord, matching, new_id
from fireplug.support.output import LineWriter, run_prefix


def record(run_id: str, *, map_id: str = "", host: str = "aws02", started: float = 1000.0, ended: float | None = None) -> RunRecord:
    return RunRecord(run_id, host, "churn", "churn-1234abcd", "/home/ada/churn", f"fp-churn-{run_id}", "python m.py", started, map_id=map_id, ended=ended)


def test_a_record_round_trips_and_a_damaged_one_is_skipped(tmp_path: Path) -> None:
    book = RunBook(tmp_path / "runs")
    saved = record("20261203-071500-a1b2c3")
    book.save(saved)
    book.save(saved.with_end(3, now=2000.0))
    assert book.load(saved.id) == saved.with_end(3, now=2000.0)
    for name, text in {
        "20261203-071501-000000.json": "{not json",
        "20261203-071502-000000.json": json.dumps({"id": "../../etc"}),
        "20261203-071503-000000.json": json.dumps({**json.loads((tmp_path / "runs" / f"{saved.id}.json").read_text()), "id": "x;y"}),
        "20261203-071504-000000.json": json.dumps({**json.loads((tmp_path / "runs" / f"{saved.id}.json").read_text()), "detached": 1}),
        "20261203-071505-000000.json": "[" * 100_000,
    }.items():
        (tmp_path / "runs" / name).write_text(text)
    assert [found.id for found in book.all()] == [saved.id]


def test_runs_are_named_by_id_prefix_six_hex_digits_or_map(tmp_path: Path) -> None:
    records = [
        record("20261203-071500-a1b2c3"),
        record("20261203-071500-d4e5f6", map_id="map-20261203-071459-0a0b0c"),
        record("20261203-071501-777777", map_id="map-20261203-071459-0a0b0c"),
    ]
    assert [found.id for found in matching(records, "a1b2c3")] == ["20261203-071500-a1b2c3"]
    assert [found.id for found in matching(records, "20261203-071500-a")] == ["20261203-071500-a1b2c3"]
    assert len(matching(records, "map-20261203-071459-0a0b0c")) == 2
    assert len(matching(records, "0a0b0c")) == 2  # the map's hex digits name all its runs
    assert matching(records, "ffffff") == []
    with pytest.raises(UsageError, match="names several runs"):
        matching(records, "20261203-0715")


def test_old_records_of_ended_runs_are_pruned_with_their_output(tmp_path: Path) -> None:
    book = RunBook(tmp_path / "runs")
    old, running = record(new_id(), ended=1000.0), record(new_id(), started=500.0)
    book.save(old)
    book.save(running)
    book.log_path(old.id).write_bytes(b"output")
    book.prune(now=1000.0 + 31 * 86400)
    assert [found.id for found in book.all()] == [running.id] and not book.log_path(old.id).exists()


def test_the_engine_says_how_a_run_ended() -> None:
    listed = listed_state(
        {"Id": "c1", "Names": ["/fp-churn-x"], "State": "exited", "Status": "Exited (137) 5 minutes ago", "Created": 1733212345, "Labels": {"a": "b"}}
    )
    assert (listed.name, listed.exit_code, listed.ended, listed.running, listed.labels) == ("fp-churn-x", 137, True, False, {"a": "b"})
    inspected = inspected_state(
        {
            "Id": "c1",
            "Name": "/fp-churn-x",
            "Image": "sha256:abc",
            "Config": {"Labels": {"io.fireplug.run": "r"}},
            "State": {"Status": "exited", "ExitCode": 3, "StartedAt": "2026-12-03T07:15:00.25Z", "FinishedAt": "2026-12-03T07:15:02.5Z"},
        }
    )
    assert inspected.exit_code == 3 and inspected.finished_at is not None and inspected.started_at is not None
    assert inspected.finished_at - inspected.started_at == pytest.approx(2.25)
    running = inspected_state({"State": {"Status": "running", "ExitCode": 0, "StartedAt": "2026-12-03T07:15:00Z", "FinishedAt": "0001-01-01T00:00:00Z"}})
    assert running.running and running.exit_code is None and running.finished_at is None
    assert inspected_state({"State": "nonsense", "Config": []}).state == ""
    assert engine_time("0001-01-01T00:00:00Z") is None and engine_time("garbage") is None


def test_lines_of_several_runs_never_mix_and_carry_their_prefix(tmp_path: Path) -> None:
    out_path, err_path = tmp_path / "out", tmp_path / "err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        writer = LineWriter(out.fileno(), err.fileno(), colour=False)
        a, b = run_prefix({"fold": "0"}, "aws02"), run_prefix({"fold": "1"}, "aws03")
        writer.write(1, b"par", prefix=a, key="a")
        writer.write(1, b"tial\nline", prefix=b, key="b")
        writer.write(1, b"tial and more\nnext\n", prefix=a, key="a")
        writer.write(2, b"warning\n", prefix=a, key="a")
        writer.flush("b", b)
    assert out_path.read_bytes() == b"[fold=1 @aws03] tial\n[fold=0 @aws02] partial and more\n[fold=0 @aws02] next\n[fold=1 @aws03] line\n"
    assert err_path.read_bytes() == b"[fold=0 @aws02] warning\n"


def test_a_single_runs_output_without_a_prefix_is_written_as_it_comes(tmp_path: Path) -> None:
    with open(tmp_path / "out", "wb") as out:
        LineWriter(out.fileno(), out.fileno(), colour=False).write(1, b"\x00no newline", prefix="")
    assert (tmp_path / "out").read_bytes() == b"\x00no newline"


def board_of(count: int, hosts: set[str]) -> Board:
    board = Board(runs_from_params([parse_param("i=" + ",".join(str(index) for index in range(count)))], ["x", "{i}"]))
    board.live = set(hosts)
    return board


def test_the_queue_hands_runs_out_in_order_and_ends_when_all_are_done() -> None:
    board = board_of(2, {"a", "b"})
    first, second = board.take("a"), board.take("b")
    assert first is not None and second is not None and (first.run.seq, second.run.seq) == (1, 2)
    waiting: list[object] = []
    waiter = threading.Thread(target=lambda: waiting.append(board.take("a")))
    waiter.start()
    time.sleep(0.05)
    assert waiter.is_alive(), "a host waits while runs are in flight elsewhere (one may come back)"
    board.finish(first, Outcome(1, "a", 0.0, 1.0, 0))
    board.finish(second, Outcome(2, "b", 0.0, 1.0, 0))
    waiter.join(2)
    assert waiting == [None] and board.finished() and board.tally.done == 2


def test_a_run_given_back_goes_to_another_host_when_there_is_one() -> None:
    board = board_of(1, {"a", "b"})
    item = board.take("a")
    assert item is not None
    item.avoid.add("a")
    board.give_back(item, front=True)
    taken: list[object] = []
    again = threading.Thread(target=lambda: taken.append(board.take("a")))
    again.start()
    time.sleep(0.05)
    assert again.is_alive(), "host a failed it: host b gets it"
    assert board.take("b") is item
    board.finish(item, Outcome(1, "b", 0.0, 1.0, 0))
    again.join(2)
    assert taken == [None]


def test_a_run_that_failed_everywhere_usable_runs_again_where_it_can() -> None:
    board = board_of(1, {"a"})
    item = board.take("a")
    assert item is not None
    item.avoid.add("a")
    board.give_back(item, front=False)
    assert board.take("a") is item


def test_a_lost_host_takes_no_more_runs() -> None:
    board = board_of(2, {"a", "b"})
    board.lose("a")
    assert board.take("a") is None
    assert board.take("b") is not None


def test_ids_are_unique_and_well_formed() -> None:
    ids = {new_id() for _ in range(200)}
    assert len(ids) == 200 and all(len(found) == 22 for found in ids)
    assert new_id("map-").startswith("map-") and os.sep not in new_id()


def test_a_processs_start_time_is_psutils_without_importing_it() -> None:
    import psutil

    from fireplug.support.locks import process_gone, start_time, this_process

    for pid in (os.getpid(), 1, os.getppid()):
        assert start_time(pid) == int(psutil.Process(pid).create_time())
    assert not process_gone(this_process())


def test_a_run_fp_itself_fails_is_a_failed_run_and_the_map_still_ends() -> None:
    from fireplug.map.scheduler import LOST, _Lane

    board = board_of(2, {"a"})

    class Broken:  # a scheduler whose every run fails inside fp (a full disk, a bug)
        def __init__(self) -> None:
            self.board = board

        def run_one(self, lane: object, item: object) -> None:
            raise RuntimeError("no space left")

    lane = _Lane(Broken(), "a")  # type: ignore[arg-type]
    lane.work()
    assert board.finished() and board.tally.failed == 2
    assert [outcome.exit_code for outcome in board.tally.outcomes.values()] == [LOST, LOST]


def test_a_signal_during_a_create_request_takes_effect_once_it_is_answered_and_the_thing_made_is_undone() -> None:
    import signal as signals

    from fireplug.errors import Interrupted
    from fireplug.support.signals import made_uninterrupted

    undone = []

    def make() -> str:
        os.kill(os.getpid(), signals.SIGINT)
        time.sleep(0.05)  # the request goes on, and its answer is kept
        return "id"

    before = signals.getsignal(signals.SIGINT)  # (Python's default, unless this process began with SIGINT ignored)
    with pytest.raises(Interrupted) as stopped:
        made_uninterrupted(make, undone.append)
    assert undone == ["id"] and stopped.value.signum == signals.SIGINT
    assert signals.getsignal(signals.SIGINT) is before
    assert made_uninterrupted(lambda: "quiet", undone.append) == "quiet" and undone == ["id"]


def test_per_host_auto_fits_the_runs_cpus_into_the_host_s() -> None:
    assert slots_for(8, None) == 8
    assert slots_for(8, 3_000_000_000) == 2
    assert slots_for(8, 500_000_000) == 16
    assert slots_for(2, 4_000_000_000) == 1, "a run bigger than the host still runs, alone"
