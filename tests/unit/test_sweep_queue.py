"""The pure parts of a map's sweep on a swarm: the run-tagged output, the workers a sweep gets,
and how a worker finds the next run to take."""

from __future__ import annotations

import io
from typing import Any

import pytest

from fireplug.backends.base import Node
from fireplug.backends.swarm.workers import untag, workers_for
from fireplug.remote.s3_layout import Place
from fireplug.remote.task import PIECE, _first_unclaimed, _pump, claim_key
from fireplug.run.options import ContainerOptions
from fireplug.run.spec import ContainerSpec

RUN = "20261203-150715-bf84c3"
OTHER = "20261203-150715-c491dc"


def _through_the_log(output: bytes, run: str = RUN) -> list[tuple[str, bytes | None]]:
    """What fp reads back of ``output`` pumped by a worker (the log splits it at newlines)."""
    tagged = io.BytesIO()
    _pump(io.BytesIO(output), tagged, run.encode())
    lines = tagged.getvalue().split(b"\n")
    assert lines.pop() == b""
    return [found for line in lines if (found := untag(line + b"\n")) is not None]


@pytest.mark.parametrize(
    "output",
    [b"one\ntwo\n", b"no newline at the end", b"x" * (3 * PIECE + 5) + b"\nshort\n", b"", b"\n\n", "\u00e9t\u00e9\n".encode()],
)
def test_a_runs_output_comes_back_byte_for_byte_through_the_tagged_log(output: bytes) -> None:
    found = _through_the_log(output)
    assert {run for run, _ in found} <= {RUN}
    assert b"".join(part or b"" for _, part in found) == output


def test_a_command_cannot_pass_its_lines_off_as_another_runs_or_end_it() -> None:
    spoof = f"\x1e{OTHER} not mine\n\x1e{OTHER}.\n".encode()
    found = _through_the_log(spoof)
    assert [run for run, _ in found] == [RUN, RUN]
    assert b"".join(part or b"" for _, part in found) == spoof


def test_the_end_mark_and_lines_of_no_run() -> None:
    assert untag(f"\x1e{RUN}.\n".encode()) == (RUN, None)
    assert untag(b"fp task: the bucket failed\n") is None


def _node(state: str = "ready", cpus: float = 2.0, memory: int = 4 << 30) -> Node:
    return Node("n", "h", "worker", state, "20.10", cpus, memory, "", 0)


def _spec(cpus: float = 0.0, memory: int = 0) -> ContainerSpec:
    return ContainerSpec(image="", command=(), workdir="/p", name="fp-x", options=ContainerOptions(nano_cpus=int(cpus * 1e9) or None, memory=memory or None))


@pytest.mark.parametrize(
    ("nodes", "spec", "runs", "workers"),
    [
        ([_node(), _node()], _spec(cpus=1), 16, 4),
        ([_node(), _node()], _spec(cpus=1.5), 16, 2),
        ([_node(), _node()], _spec(memory=3 << 30), 16, 2),
        ([_node(), _node()], _spec(cpus=1, memory=3 << 30), 16, 2),
        ([_node(), _node()], _spec(), 16, 16),  # nothing reserved: the swarm starts them all
        ([_node(), _node()], _spec(cpus=1), 3, 3),  # at most one per run
        ([_node(), _node(state="down")], _spec(cpus=1), 16, 2),
        ([_node(cpus=0.5)], _spec(cpus=1), 16, 1),  # (none fits: check_fits refuses such a run first)
    ],
)
def test_a_sweep_gets_as_many_workers_as_the_ready_nodes_hold_at_once(nodes: list[Node], spec: ContainerSpec, runs: int, workers: int) -> None:
    assert workers_for(nodes, spec, runs) == workers


class _Listing:
    """A bucket's listing as list_objects_v2 gives it (sorted keys, Prefix, StartAfter)."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = sorted(keys)

    def list_objects_v2(self, *, Bucket: str, Prefix: str, StartAfter: str = "") -> dict[str, Any]:
        return {"Contents": [{"Key": key} for key in self.keys if key.startswith(Prefix) and key > StartAfter]}


@pytest.mark.parametrize(("start", "first"), [(0, 3), (3, 3), (4, 6), (7, 7)])
def test_a_worker_goes_to_the_first_run_no_one_claimed_in_one_listing(start: int, first: int) -> None:
    place = Place("b", "stage/p")
    claims = [claim_key(place, "map-1", seq) for seq in (0, 1, 2, 4, 5)] + [claim_key(place, "map-2", 3)]
    assert _first_unclaimed(_Listing(claims), place, "map-1", start) == first
