"""The pure parts of swarm runs: the service body, task states, registry credentials, and the
three-way landing of a run's results (on real files)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from fireplug.backends.swarm.service import GPU_RESOURCE, SwarmExecutor, newest_task, run_state, service_spec
from fireplug.image.registry import Repository, auth_header, credentials
from fireplug.run.options import ContainerOptions, Gpus
from fireplug.run.spec import ContainerSpec, Mount
from fireplug.support import labels
from fireplug.sync.results import changes, land
from fireplug.sync.tree import DIR, FILE, LINK

SPEC = ContainerSpec(
    image="",
    command=("python", "model.py", "-f0"),
    workdir="/p",
    name="fp-x-1",
    env=(("A", "1"),),
    mounts=(Mount("/ignored", "/p/data"),),
    labels={labels.RUN: "r1", labels.KIND: "run"},
    options=ContainerOptions(nano_cpus=1_500_000_000, memory=2 << 30, gpus=Gpus(count=2), network="host"),
)


def test_a_run_is_a_one_off_job_with_its_reservations_and_no_restart_of_a_failing_command() -> None:
    body = service_spec(SPEC, "reg:5000/t/fp-x:abc", ("sid", "sname"))
    task = body["TaskTemplate"]
    assert body["Mode"] == {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}}
    assert task["RestartPolicy"]["Condition"] == "none"
    assert task["ContainerSpec"]["Command"] == ["python3", "-m", "fireplug.remote.task"] and task["ContainerSpec"]["Args"] == ["python", "model.py", "-f0"]
    assert task["Resources"]["Reservations"]["NanoCPUs"] == 1_500_000_000 and task["Resources"]["Limits"]["MemoryBytes"] == 2 << 30
    assert task["Resources"]["Reservations"]["GenericResources"] == [{"DiscreteResourceSpec": {"Kind": GPU_RESOURCE, "Value": 2}}]
    assert task["ContainerSpec"]["Secrets"][0]["SecretID"] == "sid" and task["Networks"] == [{"Target": "host"}]
    assert "Mounts" not in task["ContainerSpec"], "no bind mount follows a task to its node"
    assert service_spec(SPEC, "i", ("s", "n"), retries=2)["TaskTemplate"]["RestartPolicy"] == {"Condition": "on-failure", "MaxAttempts": 2, "Delay": 0}
    assert service_spec(SPEC, "i", ("s", "n"), avoid_nodes=["n1"])["TaskTemplate"]["Placement"]["Constraints"] == ["node.id!=n1"]


def _task(state: str, created: str, code: int | None = None, node: str = "n1") -> dict[str, object]:
    status: dict[str, object] = {"State": state, "Timestamp": "2026-12-03T10:00:05.5Z"}
    if code is not None:
        status["ContainerStatus"] = {"ExitCode": code}
    return {"CreatedAt": created, "NodeID": node, "Status": status}


def test_the_newest_task_gives_the_runs_state_and_its_commands_exit_status() -> None:
    task = newest_task([_task("failed", "2026-12-03T10:00:00Z", 3, "old"), _task("complete", "2026-12-03T10:00:04Z", 0, "new")])
    assert task is not None and (task.state, task.exit_code, task.node, task.attempts) == ("complete", 0, "new", 2)
    state = run_state({"ID": "s1", "CreatedAt": "2026-12-03T10:00:00Z", "Spec": {"Name": "fp-x-1", "Labels": {labels.RUN: "r1"}}}, task)
    assert (state.state, state.exit_code, state.labels[labels.RUN]) == ("exited", 0, "r1")
    assert run_state({"ID": "s"}, newest_task([_task("preparing", "2026-12-03T10:00:00Z")])).state == "created"
    rejected = newest_task([_task("rejected", "2026-12-03T10:00:00Z")])
    assert rejected is not None and rejected.ended and rejected.exit_code is None


def test_registry_credentials_as_the_docker_cli_finds_them() -> None:
    config = {"auths": {"reg.example:5000": {"auth": base64.b64encode(b"ann:pw:with:colons").decode()}, "tok.example": {"identitytoken": "T"}}}
    assert credentials("reg.example:5000", config) == {"username": "ann", "password": "pw:with:colons", "serveraddress": "reg.example:5000"}
    assert credentials("tok.example", config) == {"identitytoken": "T", "serveraddress": "tok.example"}
    assert credentials("other:5000", config) == {}


def test_no_docker_config_is_an_anonymous_push(tmp_path: Path) -> None:
    assert json.loads(base64.urlsafe_b64decode(auth_header("127.0.0.1:5000", tmp_path))) == {}


@pytest.mark.parametrize(
    ("text", "image"),
    [("reg.example:5000/team", "reg.example:5000/team/fp-x"), ("127.0.0.1:22500", "127.0.0.1:22500/fp-x"), ("localhost/a/b", "localhost/a/b/fp-x")],
)
def test_a_registry_setting_names_where_images_go(text: str, image: str) -> None:
    assert Repository.parse(text).image("fp-x:abc") == (image, "abc")


def test_a_registry_setting_without_an_address_is_refused() -> None:
    with pytest.raises(ValueError, match="start with the registry's address"):
        Repository.parse("team/images")


def _file(content: bytes, mode: int = 0o644) -> dict[str, object]:
    return {"kind": FILE, "size": len(content), "mode": mode, "mtime_ns": 1_700_000_000_000_000_000, "digest": hashlib.sha256(content).hexdigest()}


class Bucket:
    def __init__(self, *contents: bytes) -> None:
        self.objects = {hashlib.sha256(content).hexdigest(): content for content in contents}

    def download(self, digest: str, size: int, out: BinaryIO) -> None:
        out.write(self.objects[digest])


def test_what_the_run_changed_lands_and_what_changed_here_too_is_a_conflict_with_both_kept(tmp_path: Path) -> None:
    local, trash = tmp_path / "data", tmp_path / "trash"
    local.mkdir()
    (local / "same.txt").write_bytes(b"v1")
    (local / "mine.txt").write_bytes(b"edited here")
    (local / "gone.txt").write_bytes(b"old")
    (local / "kept.txt").write_bytes(b"edited here too")
    base = {"same.txt": _file(b"v1"), "mine.txt": _file(b"v1"), "gone.txt": _file(b"old"), "kept.txt": _file(b"v1")}
    result = {
        "same.txt": _file(b"v2"),
        "mine.txt": _file(b"run"),
        "new/out.bin": _file(b"out"),
        "new": {"kind": DIR, "size": 0, "mode": 0o755, "mtime_ns": 0},
    }
    assert changes(base, result)[-2:] == ["kept.txt", "gone.txt"]
    landed = land(base, result, local, trash, Bucket(b"v2", b"run", b"out").download, side="lab", stamp="20261203T100000")
    assert (local / "same.txt").read_bytes() == b"v2" and (trash / "same.txt").read_bytes() == b"v1"
    assert (local / "new/out.bin").read_bytes() == b"out"
    assert (local / "mine.txt").read_bytes() == b"edited here"
    [(path, copy)] = landed.conflicts
    assert path == "mine.txt" and (local / copy).read_bytes() == b"run"
    assert not (local / "gone.txt").exists() and (trash / "gone.txt").read_bytes() == b"old"
    assert (local / "kept.txt").read_bytes() == b"edited here too" and landed.kept == ["kept.txt"]
    assert not any(name.startswith(".fp") for name in os.listdir(local)), "no scratch left in the data folder"


def test_a_hostile_result_cannot_write_through_a_link_or_outside_the_data_folder(tmp_path: Path) -> None:
    local, outside = tmp_path / "data", tmp_path / "outside"
    local.mkdir()
    outside.mkdir()
    link = {"kind": LINK, "size": 0, "mode": 0o777, "mtime_ns": 0, "target": str(outside)}
    result = {"escape": link, "escape/evil.txt": _file(b"x"), "../up.txt": _file(b"x")}
    landed = land({}, result, local, tmp_path / "trash", Bucket(b"x").download, side="lab", stamp="s")
    assert os.listdir(outside) == [] and not (tmp_path / "up.txt").exists()
    assert set(landed.refused) >= {"escape/evil.txt", "../up.txt"}


class _LogsEngine:
    """An engine whose service printed ``chunks`` (the follow brings only the first ``followed``)
    and whose task has ended."""

    host = "lab"

    def __init__(self, chunks: list[tuple[int, bytes]], followed: int) -> None:
        self.chunks, self.followed = chunks, followed

    def service_logs(self, handle: str, *, follow: bool) -> Iterator[tuple[int, bytes]]:
        yield from self.chunks[: self.followed] if follow else self.chunks

    def tasks(self, services: object) -> list[dict[str, object]]:
        return [_task("complete", "2026-12-03T10:00:00Z", 0)]


@pytest.mark.parametrize("followed", [0, 1, 3])
def test_a_followed_output_comes_once_and_ends_with_what_the_follow_missed(followed: int) -> None:
    chunks = [(1, b"abc"), (2, b"E1"), (1, b"def\n"), (2, b"E2\n")]
    executor = SwarmExecutor(_LogsEngine(chunks, followed))  # type: ignore[arg-type]
    got = list(executor.logs("s1", follow=True))
    assert b"".join(data for stream, data in got if stream == 1) == b"abcdef\n"
    assert b"".join(data for stream, data in got if stream == 2) == b"E1E2\n"
