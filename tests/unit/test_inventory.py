"""Host inventory: docker-machine store, docker contexts, fp's config, local; merging and choosing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from fireplug.config import Source, load
from fireplug.errors import FireplugError
from fireplug.hosts import Probe, choose, parse_df_available, pick_idle_host
from fireplug.inventory import Host, Inventory, load_inventory, local_host
from fireplug.ssh import SshSettings, SshTarget
from fireplug.transport import TlsFiles

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
    assert found.get("b") == Host("b", "ssh://b", "config", ssh=SshTarget("b"))


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
    return Probe(Host(name, f"ssh://{name}", "config"), reachable, reason=reason, cpus=cpus, running_jobs=jobs)


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


def test_choose_without_remote_hosts_is_local_and_unknown_names_list_the_known(tmp_path: Path) -> None:
    inventory = inventory_of(tmp_path, '[hosts.aws02]\nurl = "ssh://aws02"\n')
    settings = SshSettings()
    assert choose(None, inventory_of(tmp_path), settings)[0].name == "local"
    with pytest.raises(FireplugError, match=r"unknown host 'aws03' \(known hosts: aws02, local\)"):
        choose("aws03", inventory, settings)
    dead = [probe("aws02", reachable=False, reason="connection refused")]
    with pytest.raises(FireplugError, match=r"no remote host is reachable \(aws02: connection refused\)"):
        choose(None, inventory, settings, prober=lambda hosts, settings, timeout, local_folder: dead)


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
