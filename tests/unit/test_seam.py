"""The scheduler and the management verbs on a fake backend (backend_doubles.py): queueing,
retries, host loss, and ps / logs / stop / pull, without Docker. Registered as one line in the
registry, it is also the proof that a backend needs nothing outside its own module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fireplug.backends import KINDS, Kind, backend_for
from fireplug.config import load
from fireplug.hosts.inventory import Inventory
from fireplug.invocation import Invocation, LocalSide
from fireplug.manage import control, logs, pull, stop
from fireplug.map.params import MapRun
from fireplug.map.request import MapRequest, MapResult
from fireplug.map.scheduler import run_map
from fireplug.run import pipeline
from fireplug.run.request import RunRequest
from fireplug.run.spec import Stdio
from fireplug.support.output import LineWriter
from tests.unit.backend_doubles import FakeBackend, World, fake_hosts


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setitem(KINDS, "fake", Kind("tests.unit.backend_doubles:FakeBackend"))
    fresh = World()
    monkeypatch.setattr(FakeBackend, "world", fresh)
    yield fresh


@pytest.fixture
def invocation(tmp_path: Path, world: World) -> Invocation:
    root = tmp_path / "proj"
    (root / "data").mkdir(parents=True)
    home = tmp_path / "home"
    home.mkdir()
    environ = {"HOME": str(home), "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    local = LocalSide(root, environ, home, os.getuid(), os.getgid(), Stdio(None), False, False)
    made = Invocation(local, load([], environ, {}, root=root))
    made._inventory = Inventory(fake_hosts("a", "b"))
    return made


def a_map(invocation: Invocation, commands: list[str], hosts: tuple[str, ...], *, retries: int = 0) -> MapResult:
    runs = tuple(MapRun(seq, {"i": str(seq)}, tuple(command.split())) for seq, command in enumerate(commands, 1))
    request = MapRequest("map-20261205-120000-abcdef", runs, hosts, 1, retries, invocation.state / "joblog", RunRequest(("true",)))
    with open(os.devnull, "wb") as sink:
        return run_map(invocation, request, LineWriter(sink.fileno(), sink.fileno(), colour=False))


def test_the_registry_finds_a_backend_by_the_hosts_kind(invocation: Invocation) -> None:
    assert isinstance(backend_for(invocation.host("a")), FakeBackend)


def test_map_runs_wait_in_one_queue_and_each_host_runs_its_slots(invocation: Invocation, world: World) -> None:
    result = a_map(invocation, ["exit 0"] * 6, ("a", "b"))
    assert sorted(outcome.exit_code for outcome in result.outcomes.values()) == [0] * 6
    assert world.most_at_once == {"a": 1, "b": 1}  # --per-host 1
    assert {host for host, _ in world.started} == {"a", "b"}


def test_a_failed_run_is_tried_again_on_another_host(invocation: Invocation, world: World) -> None:
    world.fail_first_on = {"a": {"exit 0"}, "b": {"exit 0"}}
    result = a_map(invocation, ["exit 0"], ("a", "b"), retries=1)
    assert len(world.started) == 2 and world.started[0][0] != world.started[1][0]  # the retry avoided the first host
    assert [outcome.exit_code for outcome in result.outcomes.values()] == [1]  # (it failed there too, the first time)


def test_a_failed_run_is_tried_again_on_the_same_host_when_it_is_the_only_one(invocation: Invocation, world: World) -> None:
    world.fail_first_on = {"a": {"exit 0"}}
    result = a_map(invocation, ["exit 0"], ("a",), retries=1)
    assert world.started == [("a", "exit 0"), ("a", "exit 0")]
    assert [outcome.exit_code for outcome in result.outcomes.values()] == [0]


def test_runs_of_a_lost_host_go_back_to_the_queue_for_another(invocation: Invocation, world: World) -> None:
    world.lose_after = {"a": 1}
    result = a_map(invocation, [f"exit {code}" for code in (0, 3, 0, 5)], ("a", "b"))
    assert sorted(outcome.exit_code for outcome in result.outcomes.values()) == [0, 0, 3, 5]  # every run ran, with its own status
    assert sum(1 for host, _ in world.started if host == "a") == 1
    assert any("lost host 'a'" in line for line in result.left)


def test_ps_logs_stop_and_pull_through_the_protocol(invocation: Invocation, world: World, tmp_path: Path) -> None:
    status = pipeline.run(invocation, RunRequest(("sleep",), host="a", detach=True))
    assert status == 0
    peers = control.Hosts(invocation)
    (running,) = control.list_runs(invocation, peers)
    assert (running.host, running.status) == ("a", "running")
    ((_, code),) = stop.stop_runs(invocation, peers, [running], grace=1.0)
    assert code == 130 and world.runs[running.state.handle].signals == ["SIGINT"]  # type: ignore[union-attr]
    log = tmp_path / "logs"
    with open(log, "wb") as out:
        logs.show_logs(invocation, peers, control.locate(invocation, peers, running.run_id), follow=False, out=LineWriter(out.fileno(), out.fileno()))
    assert log.read_bytes() == b"waiting\n"
    world.results["a"] = {"out/fold.csv": b"0.91\n"}
    (pulled,) = pull.pull_runs(invocation, peers, control.locate(invocation, peers, running.run_id))
    assert (invocation.config.root / "data" / "out" / "fold.csv").read_bytes() == b"0.91\n"
    assert world.removed == [running.state.handle] and pulled.still_running == ()  # type: ignore[union-attr]
    record = invocation.runs.load(running.run_id)
    assert record is not None and record.exit_code == 130 and record.pulled is not None


def test_a_new_source_of_hosts_is_one_more_source(tmp_path: Path) -> None:
    from fireplug.hosts.inventory import SOURCES, Host, load_inventory

    class Cloud:
        def hosts(self, env: object, home: Path, problems: list[str]) -> list[Host]:
            return [Host("gpu1", "ssh://ada@gpu1.example", "cloud", pool=True)]

    found = load_inventory(load([], {}, {}, root=tmp_path), {}, tmp_path, sources=(*SOURCES, Cloud()))
    assert [(host.name, host.source) for host in found.hosts] == [("gpu1", "cloud"), ("local", "default socket")]
