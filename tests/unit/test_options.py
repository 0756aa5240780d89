"""Container options: docker's names and values, parsed into the create body, checked against a host."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fireplug.config import Source, load
from fireplug.errors import FireplugError, UsageError
from fireplug.run.options import MAX_SIZE_BYTES, ContainerOptions, Gpus, Publish, check_against_host, default_shm_size, parse_options, through_ssh
from fireplug.run.spec import ContainerSpec, container_config, docker_run_argv

GIB = 1 << 30


def test_every_option_lands_in_the_create_body_with_dockers_meaning() -> None:
    options = parse_options(
        {"shm_size": "2g", "memory": "16g", "cpus": "1.5", "gpus": "all", "network": "host", "publish": ["8888:8888", "127.0.0.1:6006:6006/tcp", "9000"]}
    )
    spec = ContainerSpec(image="i", command=("true",), workdir="/w", name="n", options=options, host_memory=64 * GIB)
    body = container_config(spec)
    host_config = body["HostConfig"]
    assert host_config["ShmSize"] == 2 * GIB and host_config["Memory"] == 16 * GIB and host_config["NanoCpus"] == 1_500_000_000
    assert host_config["DeviceRequests"] == [{"Driver": "", "Count": -1, "DeviceIDs": [], "Capabilities": [["gpu"]]}]
    assert host_config["NetworkMode"] == "host"
    assert host_config["PortBindings"] == {
        "8888/tcp": [{"HostIp": "", "HostPort": "8888"}],
        "6006/tcp": [{"HostIp": "127.0.0.1", "HostPort": "6006"}],
        "9000/tcp": [{"HostIp": "", "HostPort": ""}],
    }
    assert body["ExposedPorts"] == {"8888/tcp": {}, "6006/tcp": {}, "9000/tcp": {}}
    argv = docker_run_argv(spec)
    assert argv[argv.index("--gpus") + 1] == "all" and argv[argv.index("--cpus") + 1] == "1.5"
    assert parse_options({"gpus": "2"}).gpus == Gpus(count=2)
    assert parse_options({"gpus": "device=0,GPU-3a"}).gpus == Gpus(device_ids=("0", "GPU-3a"))


@pytest.mark.parametrize(
    ("host_memory", "limit", "expected"),
    [
        pytest.param(64 * GIB, None, 8 * GIB, id="capped-at-8g"),
        pytest.param(8 * GIB, None, 4 * GIB, id="half-the-host"),
        pytest.param(64 * GIB, 2 * GIB, GIB, id="half-the-memory-limit"),
        pytest.param(0, None, 64 << 20, id="unknown-host-docker-default"),
        pytest.param(64 << 20, None, 64 << 20, id="never-below-docker-default"),
    ],
)
def test_the_default_shm_size_is_half_the_usable_memory_capped(host_memory: int, limit: int | None, expected: int) -> None:
    assert default_shm_size(host_memory, limit) == expected


@pytest.mark.parametrize(
    ("values", "named"),
    [
        pytest.param({"shm_size": "lots"}, "--shm-size", id="shm-words"),
        pytest.param({"shm_size": "0"}, "--shm-size", id="shm-zero"),
        pytest.param({"memory": "1m"}, "--memory", id="memory-too-small"),
        pytest.param({"cpus": "0"}, "--cpus", id="cpus-zero"),
        pytest.param({"cpus": "four"}, "--cpus", id="cpus-words"),
        pytest.param({"gpus": "some"}, "--gpus", id="gpus-words"),
        pytest.param({"gpus": "device=a;b"}, "--gpus", id="gpus-bad-id"),
        pytest.param({"publish": ["99999:80"]}, "-p", id="port-out-of-range"),
        pytest.param({"publish": ["80:0"]}, "-p", id="port-zero"),
        pytest.param({"publish": ["1.2.3.4:80"]}, "-p", id="ip-without-host-port"),
        pytest.param({"network": "bad name"}, "--network", id="network-name"),
        pytest.param({"shm_size": "99999999999999999999999g"}, "--shm-size", id="shm-past-what-the-engine-holds"),
        pytest.param({"memory": "9" * 30}, "--memory", id="memory-past-what-the-engine-holds"),
        pytest.param({"shm_size": "9" * 400}, "--shm-size", id="shm-digits-past-a-float"),
        pytest.param({"shm_size": "0.0001b"}, "--shm-size", id="shm-below-a-byte"),
        pytest.param({"cpus": "inf"}, "--cpus", id="cpus-inf"),
        pytest.param({"cpus": "nan"}, "--cpus", id="cpus-nan"),
    ],
)
def test_bad_values_are_one_line_usage_errors_naming_the_option(values: dict[str, object], named: str) -> None:
    with pytest.raises(UsageError, match=rf"^{named} ") as caught:
        parse_options(values)
    assert "\n" not in str(caught.value)


def test_host_checks_come_before_any_work() -> None:
    info = {"NCPU": 2, "MemTotal": 4 * GIB, "Runtimes": {"runc": {}}}
    check_against_host(parse_options({"cpus": "2", "memory": "2g", "network": "lab"}), "h", info, ["bridge", "lab"])
    for values, message in (
        ({"cpus": "8"}, "has 2 CPUs"),
        ({"memory": "16g"}, "has 4096 MiB"),
        ({"gpus": "all"}, "no NVIDIA runtime"),
        ({"network": "elsewhere"}, "no such network"),
    ):
        with pytest.raises(FireplugError, match=message):
            check_against_host(parse_options(values), "h", info, ["bridge"])
    check_against_host(parse_options({"gpus": "1"}), "h", {**info, "Runtimes": {"nvidia": {}}}, [])


def test_ports_on_an_ssh_host_stay_on_its_loopback_and_udp_is_refused() -> None:
    forwarded = through_ssh(parse_options({"publish": ["0.0.0.0:8080:80", "8888"]}), "h")
    assert forwarded.publish == (Publish(80, 0, "127.0.0.1"), Publish(8888, 0, "127.0.0.1"))  # the host's engine picks its ports
    with pytest.raises(FireplugError, match="UDP"):
        through_ssh(ContainerOptions(publish=(Publish(53, 53, "", "udp"),)), "h")


def test_run_settings_hold_the_options_and_flags_win(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = load([Source("fireplug.toml", '[run]\nshm_size = "1g"\ncpus = "2"\npublish = ["8888"]\n')], {}, {}, root=tmp_path)
    assert config.run.container == {"shm_size": "1g", "cpus": "2", "publish": ["8888"]}
    merged = parse_options({**config.run.container, "cpus": "1"})
    assert (merged.shm_size, merged.nano_cpus) == (GIB, 1_000_000_000)


SIZE_TEXT = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"\A\s*[0-9]{1,45}(\.[0-9]{0,45})?\s*[bkmgtBKMGT]?([iI]?[bB])?\s*\Z"),
)


@settings(max_examples=300, deadline=None)
@given(shm=SIZE_TEXT, memory=SIZE_TEXT, cpus=st.one_of(st.text(max_size=12), st.floats(allow_nan=True).map(str)))
def test_fuzz_any_option_value_is_one_the_engine_takes_or_a_one_line_usage_error(shm: str, memory: str, cpus: str) -> None:
    """The engine reads sizes as 64-bit numbers: nothing bigger, and no float's inf or rounding, ever reaches it."""
    try:
        options = parse_options({"shm_size": shm, "memory": memory, "cpus": cpus})
    except UsageError as e:
        assert "\n" not in str(e) and str(e).startswith(("--shm-size", "--memory", "--cpus"))
        return
    for size in (options.shm_size, options.memory):
        assert size is None or 0 < size <= MAX_SIZE_BYTES
    assert options.nano_cpus is None or 0 < options.nano_cpus <= 4096 * 10**9


@pytest.mark.parametrize(("text", "size"), [("512m", 512 << 20), ("1.5g", 3 << 29), ("0.5k", 512), ("2GiB", 2 * GIB), ("8388607t", 8388607 << 40)])
def test_sizes_are_exact(text: str, size: int) -> None:
    assert parse_options({"shm_size": text}).shm_size == size
