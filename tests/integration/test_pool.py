"""Which hosts fp may choose by itself, on the real bench: the pool, FP_HOST, concurrent choices."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests import testbed
from tests.integration.conftest import Project, RemoteBench, docker, run_fp, start_in_group

pytestmark = pytest.mark.engine

CHOSEN_RE = re.compile(r"fp: host '([^']+)' \(")


def chosen_host(stderr: str) -> str:
    found = CHOSEN_RE.search(stderr)
    assert found, stderr
    return found.group(1)


def test_concurrent_auto_choices_spread_over_two_idle_hosts(fp, project: Project, remote: RemoteBench) -> None:
    for host in ("primary", "second"):  # built and synced on both: only the choice differs
        assert fp(project.root, "--host", host, "true").code == 0
    runs = []
    for _ in range(3):
        runs.append(start_in_group(project, "sh", "-c", "sleep 3"))
        time.sleep(0.3)
    hosts = []
    for started in runs:
        _, err = started.communicate(timeout=120)
        assert started.returncode == 0, err.decode()
        hosts.append(chosen_host(err.decode()))
    assert sorted(hosts[:2]) == ["primary", "second"], hosts  # the second fp saw the first one's lease
    leases = remote.home / ".local" / "state" / "fireplug" / "leases"
    assert not [path for path in leases.rglob("*") if path.is_file() and path.name != "choosing"]  # every fp released its lease


def test_docker_contexts_join_the_pool_only_when_named_and_fp_host_wins(project: Project, remote: RemoteBench, isolated_home: Path) -> None:
    context = ["docker", "--config", str(isolated_home / ".docker"), "context", "create", "ctx2", "--docker", "host=ssh://fp-second"]
    subprocess.run(context, check=True, capture_output=True)
    remote.config.write_text("")  # no config hosts: the pool is empty although a context exists
    here = run_fp(project.root, "sh", "-c", "echo local > data/where.txt")
    assert here.returncode == 0, here.stderr.decode()
    assert (project.root / "data/where.txt").read_text() == "local\n"
    assert not remote.data_on("ctx2", project).exists() and not CHOSEN_RE.search(here.stderr.decode())  # fp chose nothing: local, silently
    listed = json.loads(run_fp(project.root, "hosts", "--json", "--timeout", "10").stdout)
    assert {entry["name"]: entry["pool"] for entry in listed} == {"ctx2": False, "local": False}

    remote.add_hosts(f'[hosts.ctx2]\npool = true\ndata_root = "{remote.data_root("ctx2")}"\n')
    dry = run_fp(project.root, "--dry-run", "true")
    assert dry.returncode == 0 and "host      ctx2 (ssh://fp-second); data synced there with rsync over ssh (chosen: idle" in dry.stdout.decode()
    assert docker("ps", "-aq", "--filter", f"label=io.fireplug.project={project.name}", engine="second") == ""  # a dry run runs nothing
    there = run_fp(project.root, "sh", "-c", "echo remote > data/where.txt")
    assert there.returncode == 0, there.stderr.decode()
    assert chosen_host(there.stderr.decode()) == "ctx2"
    assert (remote.data_on("ctx2", project) / "where.txt").read_text() == (project.root / "data/where.txt").read_text() == "remote\n"

    forced = run_fp(project.root, "true", env={**os.environ, "FP_HOST": "local"})
    assert forced.returncode == 0 and "host 'local' (FP_HOST)" in forced.stderr.decode()


def test_a_host_that_did_not_answer_is_remembered_and_the_busy_one_still_runs(project: Project, remote: RemoteBench, isolated_home: Path) -> None:
    remote.add_hosts(f'[hosts.dead]\nurl = "ssh://{testbed.SSH_USER}@127.0.0.1:1"\n\n[pool]\nhosts = ["dead", "primary"]\n')  # refused at once
    labels = ["--label", "io.fireplug.kind=run", "--label", f"io.fireplug.project={project.name}"]
    busy = docker("run", "-d", *labels, "debian:bookworm-slim", "sleep", "120").strip()
    try:
        first = run_fp(project.root, "true")  # no idle host: fp waits for every answer
    finally:
        docker("rm", "-f", busy)
    assert first.returncode == 0, first.stderr.decode()
    assert "host 'primary' (least loaded: 1 fp jobs" in first.stderr.decode()
    memory = json.loads((isolated_home / ".cache" / "fireplug" / "unreachable-hosts.json").read_text())
    assert list(memory) == ["dead"] and memory["dead"][0] > time.time()
    again = run_fp(project.root, "true")
    assert again.returncode == 0 and chosen_host(again.stderr.decode()) == "primary"
