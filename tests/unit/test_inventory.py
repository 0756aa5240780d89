"""Host inventory: docker-machine store, docker contexts, fp's config, local; merging and choosing."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path

import psutil
import pytest

from fireplug.backends import KINDS, Kind
from fireplug.backends.docker import parse_df_available
from fireplug.config import HostSettings, Source, load
from fireplug.errors import FireplugError
from fireplug.hosts import UNREACHABLE_MEMORY_SECONDS, Choice, Probe, UnreachableMemory, _enough, choose, pick_idle_host
from fireplug.hosts.address import SshSettings, SshTarget
from fireplug.hosts.inventory import Host, Inventory, apply_settings, load_inventory, local_host
from fireplug.hosts.transport import TlsFiles
from fireplug.support.locks import Leases

ROOT = Path("/home/ada/proj")


def machine(store: Path, name: str, **driver: object) -> None:
    folder = store / "machines" / name
    folder.mkdir(parents=True)
    config = {
        "ConfigVersion": 3,
        "Driver": {"IPAddress": "10.0.0.5", "SSHUser": "ubuntu", "SSHPort": 22, "SSHKeyPath": str(folder / "id_rsa"), "EnginePort": 2376, **driver},
        "DriverName": "generic",
        "HostOptions": {
            "AuthOptions": {"CaCertPath": str(folder / "ca.pem"), "ClientCertPath": str(folder / "cert.pem"), "ClientKeyPath": str(folder / "key.pem")}
        },
        "Name": name,
    }
    (folder / "config.json").write_text(json.dumps(config))


def context(docker_config: Path, name: str, url: str, *, tls: bool = False) -> None:
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta = docker_config / "contexts" / "meta" / digest
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(json.dumps({"Name": name, "Metadata": {}, "Endpoints": {"docker": {"Host": url, "SkipTLSVerify": False}}}))
    if tls:
        folder = docker_config / "contexts" / "tls" / digest / "docker"
        folder.mkdir(parents=True)
        (folder / "ca.pem").write_text("x")


def inventory_of(tmp_path: Path, config_text: str = "", env: dict[str, str] | None = None) -> Inventory:
    config = load([Source("user.toml", config_text)] if config_text else [], {}, {}, root=ROOT)
    return load_inventory(config, env or {}, tmp_path)


def test_docker_machine_store_gives_a_tls_engine_and_ssh(tmp_path: Path) -> None:
    machine(tmp_path / ".docker" / "machine", "aws01", EnginePort=2377)
    host = inventory_of(tmp_path).get("aws01")
    folder = tmp_path / ".docker" / "machine" / "machines" / "aws01"
    assert host == Host(
        "aws01",
        "tcp://10.0.0.5:2377",
        "docker-machine",
        tls=TlsFiles(str(folder / "ca.pem"), str(folder / "cert.pem"), str(folder / "key.pem")),
        ssh=SshTarget("10.0.0.5", "ubuntu", 22, str(folder / "id_rsa")),
        pool=True,
    )


def test_machine_storage_path_is_honoured_and_a_broken_machine_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    store = tmp_path / "elsewhere"
    machine(store, "good")
    (store / "machines" / "bad").mkdir()
    (store / "machines" / "bad" / "config.json").write_text("{not json")
    found = inventory_of(tmp_path, env={"MACHINE_STORAGE_PATH": str(store)})
    assert found.names == ["good", "local"]
    assert len(found.problems) == 1 and "bad/config.json" in found.problems[0]


def test_docker_contexts_give_ssh_and_tls_hosts(tmp_path: Path) -> None:
    docker_config = tmp_path / "dc"
    context(docker_config, "gpu1", "ssh://ada@gpu1.lan:2222")
    context(docker_config, "box", "tcp://10.0.0.9:2376", tls=True)
    found = inventory_of(tmp_path, env={"DOCKER_CONFIG": str(docker_config)})
    assert found.get("gpu1") == Host("gpu1", "ssh://ada@gpu1.lan:2222", "docker context", ssh=SshTarget("gpu1.lan", "ada", 2222))
    box = found.get("box")
    assert box is not None and box.tls is not None and box.tls.ca.endswith("/docker/ca.pem") and box.ssh is None


def test_config_wins_field_by_field_on_a_name_clash(tmp_path: Path) -> None:
    machine(tmp_path / ".docker" / "machine", "aws01")
    found = inventory_of(tmp_path, '[hosts.aws01]\ndata_root = "/scratch"\nssh_key = "/k"\n[hosts.aws01.labels]\ngpus = 2\n')
    host = found.get("aws01")
    assert host is not None
    assert (host.source, host.url, host.data_root, dict(host.labels)) == ("docker-machine + config", "tcp://10.0.0.5:2376", "/scratch", {"gpus": "2"})
    assert host.ssh == SshTarget("10.0.0.5", "ubuntu", 22, "/k")
    assert host.tls is not None


def test_config_hosts_and_local_last(tmp_path: Path) -> None:
    found = inventory_of(tmp_path, '[hosts.b]\nurl = "ssh://b"\n[hosts.a]\nurl = "tcp://a:2376"\ncert_path = "/c"\nssh_user = "me"\n')
    assert found.names == ["b", "a", "local"]
    a = found.get("a")
    assert a is not None and a.tls == TlsFiles("/c/ca.pem", "/c/cert.pem", "/c/key.pem") and a.ssh == SshTarget("a", "me")
    assert found.get("b") == Host("b", "ssh://b", "config", ssh=SshTarget("b"), pool=True)


def test_a_config_host_without_url_is_a_problem(tmp_path: Path) -> None:
    found = inventory_of(tmp_path, '[hosts.x]\ndata_root = "/d"\n')
    assert found.names == ["local"] and "no url" in found.problems[0]


@pytest.mark.parametrize(
    ("env", "url", "local", "tls"),
    [
        pytest.param({}, "unix:///var/run/docker.sock", True, None, id="default-socket"),
        pytest.param({"DOCKER_HOST": "unix:///run/user/1000/docker.sock"}, "unix:///run/user/1000/docker.sock", True, None, id="rootless"),
        pytest.param(
            {"DOCKER_HOST": "tcp://h:2376", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/certs"},
            "tcp://h:2376",
            False,
            TlsFiles("/certs/ca.pem", "/certs/cert.pem", "/certs/key.pem"),
            id="tcp-tls",
        ),
    ],
)
def test_local_host_follows_docker_host(env: dict[str, str], url: str, local: bool, tls: TlsFiles | None) -> None:
    host = local_host(env, Path("/home/ada"))
    assert (host.url, host.local, host.tls) == (url, local, tls)


def probe(name: str, jobs: int = 0, cpus: int = 4, reachable: bool = True, reason: str = "") -> Probe:
    return Probe(Host(name, f"ssh://{name}", "config", pool=True), reachable, reason=reason, cpus=cpus, jobs=frozenset(f"{name}-job{i}" for i in range(jobs)))


@pytest.mark.parametrize(
    ("probes", "chosen"),
    [
        pytest.param([probe("a", jobs=1), probe("b"), probe("c")], "b", id="first-idle"),
        pytest.param([probe("a", reachable=False), probe("b", jobs=2, cpus=2), probe("c", jobs=2, cpus=8)], "c", id="least-loaded-per-cpu"),
        pytest.param([probe("a", reachable=False, reason="timed out")], None, id="none-reachable"),
    ],
)
def test_pick_idle_host(probes: list[Probe], chosen: str | None) -> None:
    host, why = pick_idle_host(probes)
    assert (host.name if host else None) == chosen
    assert why


def test_leases_of_other_processes_count_once_and_the_data_holder_wins_a_tie(tmp_path: Path) -> None:
    leases = Leases(tmp_path)
    other = f"{socket.gethostname()}:1:{int(psutil.Process(1).create_time())}"  # a live process (pid 1)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / other).touch()
    a_running = Probe(Host("a", "ssh://a", "config", pool=True), True, cpus=4, jobs=frozenset({other}))  # its container, and its lease
    choice = Choice(leases=leases, holds_data=lambda name: name == "c")
    host, why = pick_idle_host([a_running, probe("b", jobs=1), probe("c", jobs=1)], choice)
    assert host is not None and host.name == "c" and "1 fp jobs on 4 CPUs, holds this project's data" in why
    host, _ = pick_idle_host([probe("a"), probe("b")], Choice(leases=leases))
    assert host is not None and host.name == "b"  # a's lease is a job
    gone = f"{socket.gethostname()}:999999999:1"
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / gone).touch()
    assert leases.owners("b") == frozenset() and not (tmp_path / "b" / gone).exists()
    leases.take("b")
    assert leases.owners("b") == {leases.owner}
    leases.release("b")
    assert leases.owners("b") == frozenset()


def test_three_choices_in_a_row_spread_over_the_idle_hosts(tmp_path: Path) -> None:
    inventory = inventory_of(tmp_path, '[hosts.a]\nurl = "ssh://a"\n[hosts.b]\nurl = "ssh://b"\n')
    chosen = []
    for number in range(3):
        leases = Leases(tmp_path / "leases")
        leases.owner = f"{socket.gethostname()}:{os.getpid()}:{int(psutil.Process().create_time())}-{number}"  # three processes, all alive

        def idle(hosts: list[Host], settings: SshSettings, **options: object) -> list[Probe]:
            return [Probe(host, True, cpus=1) for host in hosts]

        chosen.append(choose(None, inventory, SshSettings(), prober=idle, choice=Choice(leases=leases))[0].name)
    assert sorted(chosen[:2]) == ["a", "b"]


def test_the_pool_is_config_hosts_and_machines_contexts_only_when_named(tmp_path: Path) -> None:
    machine(tmp_path / ".docker" / "machine", "m1")
    context(tmp_path / ".docker", "prod", "ssh://ops@prod")
    context(tmp_path / ".docker", "lab", "ssh://ops@lab")
    found = inventory_of(tmp_path, '[hosts.c1]\nurl = "ssh://c1"\n[hosts.lab]\npool = true\n[hosts.m1]\npool = false\n')
    assert [host.name for host in found.pool] == ["lab", "c1"]
    named = inventory_of(tmp_path, '[hosts.c1]\nurl = "ssh://c1"\n[pool]\nhosts = ["prod", "gone"]\n')
    assert [host.name for host in named.pool] == ["prod"] and any("'gone'" in problem for problem in named.problems)
    only_contexts = inventory_of(tmp_path / "empty")
    assert only_contexts.pool == [] and choose(None, only_contexts, SshSettings())[0].name == "local"


def test_choose_stops_at_the_first_idle_answer_and_remembers_a_host_that_did_not_answer(tmp_path: Path) -> None:
    inventory = inventory_of(tmp_path, '[hosts.hung]\nurl = "ssh://hung"\n[hosts.ok]\nurl = "ssh://ok"\n')
    memory = UnreachableMemory(tmp_path / "unreachable.json")
    asked: list[list[str]] = []

    def hung_one(hosts: list[Host], settings: SshSettings, *, timeout: float, local_folder: str | None, enough) -> list[Probe]:  # type: ignore[no-untyped-def]
        asked.append([host.name for host in hosts])
        answered = {host.name: Probe(host, True, cpus=2) for host in hosts if host.name == "ok"}
        assert enough(answered)  # the idle answer is enough: fp does not wait for 'hung'
        return [answered.get(host.name) or Probe(host, False, reason="no answer within 5 s") for host in hosts]

    assert choose(None, inventory, SshSettings(), prober=hung_one, choice=Choice(memory=memory))[0].name == "ok"
    assert set(memory.recent()) == {"hung"}
    assert choose(None, inventory, SshSettings(), prober=hung_one, choice=Choice(memory=memory))[0].name == "ok"
    assert asked == [["hung", "ok"], ["ok"]]  # not asked again within the memory's time
    memory.clock = lambda: time.time() + UNREACHABLE_MEMORY_SECONDS + 1
    assert memory.recent() == {}


def test_a_data_holder_still_to_answer_is_waited_for(tmp_path: Path) -> None:
    hosts = [Host("x", "ssh://x", "config", pool=True), Host("y", "ssh://y", "config", pool=True)]
    x_answered = {"x": Probe(hosts[0], True, cpus=2)}
    assert not _enough(x_answered, hosts, Choice(holds_data=lambda name: name == "y"))
    assert _enough(x_answered, hosts, Choice(holds_data=lambda name: name == "x"))
    assert _enough(x_answered, hosts, Choice())


def test_choose_without_remote_hosts_is_local_and_unknown_names_list_the_known(tmp_path: Path) -> None:
    inventory = inventory_of(tmp_path, '[hosts.aws02]\nurl = "ssh://aws02"\n')
    settings = SshSettings()
    assert choose(None, inventory_of(tmp_path), settings)[0].name == "local"
    with pytest.raises(FireplugError, match=r"unknown host 'aws03' \(known hosts: aws02, local\)"):
        choose("aws03", inventory, settings)
    dead = [probe("aws02", reachable=False, reason="connection refused")]
    with pytest.raises(FireplugError, match=r"no host of the pool is reachable \(aws02: connection refused\)"):
        choose(None, inventory, settings, prober=lambda hosts, settings, **options: dead)


def test_df_output_is_parsed() -> None:
    output = "Filesystem     1024-blocks     Used Available Capacity Mounted on\n/dev/vda 264212084 27600552 78790360 26% /\n"
    assert parse_df_available(output) == 78790360 * 1024
    assert parse_df_available("garbage") is None


def test_a_broken_ssh_url_is_a_problem_of_its_source_only(tmp_path: Path) -> None:
    docker_config = tmp_path / "dc"
    context(docker_config, "broken", "ssh://user@:22")
    found = inventory_of(tmp_path, '[hosts.bad]\nurl = "ssh://"\n[hosts.good]\nurl = "ssh://good"\n', env={"DOCKER_CONFIG": str(docker_config)})
    assert found.names == ["good", "local"]
    assert len(found.problems) == 2


@pytest.mark.parametrize(
    ("kind", "local", "pool"),
    [("", True, True), ("swarm", False, False), ("roomy", True, False)],
)
def test_a_kinds_traits_decide_whether_its_host_sees_local_files_and_joins_the_pool(
    monkeypatch: pytest.MonkeyPatch, kind: str, local: bool, pool: bool
) -> None:
    """The inventory reads what it needs of a kind from the registry, so a new kind (here one
    that stays out of the pool) needs no edit of it."""
    monkeypatch.setitem(KINDS, "roomy", Kind("tests.unit.backend_doubles:FakeBackend", pooled=False))
    host = apply_settings(None, HostSettings("box", url="unix:///run/other.sock", kind=kind))
    assert (host.local, host.pool, host.kind) == (local, pool, kind or "docker")
    assert apply_settings(None, HostSettings("box", url="unix:///run/other.sock", kind=kind, pool=True)).pool  # (said in the settings)
