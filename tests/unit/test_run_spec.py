from __future__ import annotations

from pathlib import Path

import pytest

from fireplug.backends.docker.place import data_on_host
from fireplug.config import Config, load
from fireplug.errors import UsageError
from fireplug.hosts.inventory import Host
from fireplug.invocation import LocalSide
from fireplug.run.request import Placement, RunRequest, container_spec, container_user, container_workdir, resolve_env
from fireplug.run.spec import ContainerSpec, Mount, Stdio, container_config

ROOT = Path("/home/ada/proj")
LOCAL_HOST = Host("local", "unix:///var/run/docker.sock", "default socket", local=True)
REMOTE_HOST = Host("aws02", "ssh://ada@aws02", "config", data_root="/scratch")


def spec_for(config: Config, image: str, request: RunRequest, side: LocalSide, *, host: Host, owner: tuple[int, int] | None = None) -> ContainerSpec:
    """The spec the docker backend makes for ``host`` (its placement: the data folder there, its owner)."""
    default_owner = (side.uid, side.gid) if host.local else None
    return container_spec(config, request, side, Placement(data_on_host(host, config), owner or default_owner), "20261205-120000-abcdef", image=image)


def local(cwd: Path = ROOT, uid: int = 1000, stdin_tty: bool = False, stdout_tty: bool = False, stdin: int | None = 0) -> LocalSide:
    return LocalSide(
        cwd=cwd,
        environ={"TOKEN": "s3cret", "OTHER": "x"},
        home=Path("/home/ada"),
        uid=uid,
        gid=100,
        stdio=Stdio(stdin=stdin),
        stdin_is_terminal=stdin_tty,
        stdout_is_terminal=stdout_tty,
    )


def test_container_config_runs_under_init_and_is_never_auto_removed() -> None:
    spec = ContainerSpec(
        image="fp-p:abc",
        command=("python", "model.py", "-v", "-f0"),
        workdir="/w/p/src",
        name="fp-p-1",
        env=(("A", "1"), ("B", "x=y")),
        mounts=(Mount("/l/data", "/w/p/data"), Mount("/l/ro", "/w/ro", read_only=True)),
        labels={"io.fireplug.run": "1"},
        user="1000:100",
        stdin=True,
    )
    config = container_config(spec)
    assert config["Cmd"] == ["python", "model.py", "-v", "-f0"]
    assert config["Env"] == ["A=1", "B=x=y"]
    assert config["HostConfig"] == {
        "Init": True,
        "AutoRemove": False,
        "Mounts": [
            {"Type": "bind", "Source": "/l/data", "Target": "/w/p/data", "ReadOnly": False},
            {"Type": "bind", "Source": "/l/ro", "Target": "/w/ro", "ReadOnly": True},
        ],
        "ShmSize": 64 << 20,  # the host's memory is not known here: docker's own size
    }
    assert (config["OpenStdin"], config["StdinOnce"], config["AttachStdin"], config["Tty"]) == (True, True, True, False)
    assert (config["User"], config["WorkingDir"], config["Labels"]) == ("1000:100", "/w/p/src", {"io.fireplug.run": "1"})


def test_spec_mirrors_the_project_and_passes_only_asked_env() -> None:
    config = load([], {}, {"run": {"env": ["FIXED=1"]}}, root=ROOT)
    spec = spec_for(config, "img", RunRequest(("env",), env=("TOKEN",)), local(ROOT / "src" / "pkg"), host=LOCAL_HOST)
    assert spec.workdir == "/home/ada/proj/src/pkg"
    assert spec.mounts == (Mount("/home/ada/proj/data", "/home/ada/proj/data"),)
    assert dict(spec.env) == {"PYTHONUNBUFFERED": "1", "HOME": "/tmp", "FIXED": "1", "TOKEN": "s3cret"}
    assert spec.user == "1000:100"
    assert spec.labels["io.fireplug.command"] == "env"
    assert spec.name.startswith("fp-proj-")
    assert (spec.tty, spec.stdin) == (False, True)


def test_terminal_only_when_both_ends_are_terminals() -> None:
    config = load([], {}, {}, root=ROOT)
    request = RunRequest(("bash",))
    assert spec_for(config, "i", request, local(stdin_tty=True, stdout_tty=True), host=LOCAL_HOST).tty
    assert not spec_for(config, "i", request, local(stdin_tty=True, stdout_tty=False), host=LOCAL_HOST).tty
    assert not spec_for(config, "i", request, local(stdin=None), host=LOCAL_HOST).stdin


def test_workdir_setting_moves_the_project_in_the_container() -> None:
    config = load([], {}, {"project": {"workdir": "/work/p", "data": "inputs"}}, root=ROOT)
    spec = spec_for(config, "i", RunRequest(("x",)), local(ROOT / "inputs"), host=LOCAL_HOST)
    assert spec.workdir == "/work/p/inputs"
    assert spec.mounts[0].target == "/work/p/inputs"


@pytest.mark.parametrize(
    ("setting", "owner", "user"),
    [
        ("auto", (1000, 100), "1000:100"),
        ("auto", (0, 0), ""),
        ("auto", None, ""),
        ("root", (1000, 100), "0:0"),
        ("42:7", (1000, 100), "42:7"),
    ],
)
def test_container_user(setting: str, owner: tuple[int, int] | None, user: str) -> None:
    assert container_user(setting, owner) == user


def test_workdir_outside_the_root_falls_back_to_the_root() -> None:
    assert container_workdir("/c/p", ROOT, Path("/elsewhere")) == "/c/p"
    assert container_workdir("/c/p", ROOT, ROOT) == "/c/p"


def test_resolve_env() -> None:
    assert resolve_env(["TOKEN", "A=1", "B=", "C=x=y"], {"TOKEN": "t"}) == [("TOKEN", "t"), ("A", "1"), ("B", ""), ("C", "x=y")]
    with pytest.raises(UsageError, match="MISSING is not set"):
        resolve_env(["MISSING"], {})
    with pytest.raises(UsageError, match="expected NAME"):
        resolve_env(["=x"], {})


def test_a_remote_host_mounts_the_data_copy_under_its_data_root_as_its_ssh_user() -> None:
    config = load([], {}, {"project": {"name": "proj", "data": "inputs", "id": "abcd1234"}}, root=ROOT)
    spec = spec_for(config, "i", RunRequest(("x",)), local(ROOT), host=REMOTE_HOST)
    assert spec.mounts == (Mount("/scratch/proj-abcd1234/inputs", "/home/ada/proj/inputs"),)
    assert spec.labels["io.fireplug.project-key"] == "proj-abcd1234"
    assert spec.user == ""  # not known yet: root
    owned = spec_for(config, "i", RunRequest(("x",)), local(ROOT), host=REMOTE_HOST, owner=(1001, 1001))
    assert owned.user == "1001:1001" and ("HOME", "/tmp") in owned.env


def test_the_command_label_holds_the_redacted_command() -> None:
    config = load([], {}, {}, root=ROOT)
    spec = spec_for(config, "img", RunRequest(("python", "x.py", "--password=hunter2", "--token", "t0k")), local(), host=LOCAL_HOST)
    assert spec.labels["io.fireplug.command"] == "python x.py '--password=***' --token '***'"
