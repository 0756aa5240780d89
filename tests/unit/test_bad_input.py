"""Bad input to every parser of a file or an answer that someone else can write: generated
garbage must give a value, a warning or one line, never a traceback, and never take long.

Covered: fireplug.toml and the user config, docker-machine config.json, context meta.json,
fp's scan record, sync record and last-host file, the engine's HTTP answers (a fake engine
on a unix socket), and the command line.
"""

from __future__ import annotations

import hashlib
import json
import marshal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fireplug.cli import main
from fireplug.config import Config, Source, load, project_key_at
from fireplug.errors import ConfigError, FireplugError
from fireplug.hosts.engine import Engine
from fireplug.hosts.inventory import LOCAL, load_inventory
from fireplug.image.context import ScanRules
from fireplug.image.scan import scan
from fireplug.image.scancache import load_context, record_file
from fireplug.support.state import last_host, last_host_path, remember_host
from fireplug.sync import SyncError
from fireplug.sync.record import RECORD_MAGIC, Common, State, load_state, save_record
from tests.unit.fake_engine import FakeEngine
from tests.unit.test_sync_plan import Bench

QUICK = 3.0  # seconds any one bad input may cost
FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
ROOT = Path("/home/ada/proj")

KEYS = [
    "Name",
    "Driver",
    "IPAddress",
    "EnginePort",
    "SSHUser",
    "SSHPort",
    "SSHKeyPath",
    "HostOptions",
    "AuthOptions",
    "CaCertPath",
    "ClientCertPath",
    "ClientKeyPath",
    "Endpoints",
    "docker",
    "Host",
    "format",
    "key",
    "folders",
    "entries",
    "secrets",
    "Id",
    "StatusCode",
    "aux",
    "stream",
    "error",
]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12), st.sampled_from(["10.0.0.5", "ssh://u@h", "tcp://1.2.3.4:2376", "1e400"])
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=4)), inner, max_size=5)),
    max_leaves=25,
)
NASTY_BYTES = [
    b"",
    b"[" * 200_000,
    b"{" * 50_000,
    b'{"a":' * 20_000,
    b"\xff\xfe\x00garbage",
    b"null",
    b"[]",
    b'{"Driver": {"IPAddress": "10.0.0.5", "EnginePort": 1e400}}',
    b'{"Driver": {"IPAddress": "10.0.0.5", "SSHUser": "u", "SSHPort": "99999999"}}',
    b'{"Name": 7, "Driver": {"IPAddress": "10.0.0.5"}}',
    b'{"Driver": "x", "HostOptions": []}',
    b'{"Name": "c", "Endpoints": {"docker": {"Host": 5}}}',
    b'{"Name": "c", "Endpoints": {"docker": {"Host": "ssh://[::1"}}}',
    b"9" * 10_000,
]
documents = st.one_of(json_values.map(lambda value: json.dumps(value).encode()), st.sampled_from(NASTY_BYTES), st.binary(max_size=200))


@contextmanager
def quick() -> Iterator[None]:
    started = time.monotonic()
    yield
    assert time.monotonic() - started < QUICK, "a bad input must not keep fp busy"


def no_traceback(capsys: pytest.CaptureFixture[str]) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("fp: error:")]


# -- inventory sources: a warning and the source skipped; every other host stays usable ---------


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def empty_config() -> Config:
    return load([], {}, {}, root=ROOT)


@FUZZ
@given(document=documents)
def test_a_docker_machine_config_never_breaks_the_inventory(tmp_path: Path, document: bytes) -> None:
    store = tmp_path / "store"
    write(store / "machines" / "m1" / "config.json", document)
    with quick():
        inventory = load_inventory(empty_config(), {"MACHINE_STORAGE_PATH": str(store)}, tmp_path)
    assert LOCAL in inventory.names
    assert len(inventory.hosts) == 2 or len(inventory.problems) == 1
    assert all("\n" not in problem for problem in inventory.problems)


@FUZZ
@given(document=documents)
def test_a_docker_context_never_breaks_the_inventory(tmp_path: Path, document: bytes) -> None:
    write(tmp_path / "docker" / "contexts" / "meta" / "abc" / "meta.json", document)
    with quick():
        inventory = load_inventory(empty_config(), {"DOCKER_CONFIG": str(tmp_path / "docker")}, tmp_path)
    assert LOCAL in inventory.names
    assert all("\n" not in problem for problem in inventory.problems)


def test_a_broken_source_is_a_warning_and_local_still_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "store" / "machines" / "m1" / "config.json", b"[]")
    monkeypatch.setenv("MACHINE_STORAGE_PATH", str(tmp_path / "store"))
    (tmp_path / "p").mkdir()
    monkeypatch.chdir(tmp_path / "p")
    assert main(["--host", "local", "--dry-run", "true"]) == 0
    err = capsys.readouterr().err
    assert "fp: warning: skipped" in err and "config.json: unreadable docker-machine config" in err


# -- fp's configuration files: the config or one ConfigError -------------------------------------

toml_fragments = st.sampled_from(
    [
        "[project]\n",
        'name = "p"\n',
        "[build]\n",
        'base_image = ""\n',
        'base_image = "a b"\n',
        "[hosts.x]\n",
        'url = "ssh://u@h"\n',
        "ssh_port = 99999999999999999999\n",
        "labels = { a = [1, {b = 2}] }\n",
        "[run]\n",
        "env = [1]\n",
        "a = " + "[" * 5000 + "]" * 5000 + "\n",
        "b = " + "{c = " * 2000 + "1" + "}" * 2000 + "\n",
        "[[project]]\n",
        "x = 1e400\n",
        "= =\n",
        "\x00\n",
    ]
)
toml_texts = st.one_of(st.lists(toml_fragments, max_size=8).map("".join), st.text(max_size=300))


@FUZZ
@given(text=toml_texts)
def test_a_config_file_is_the_config_or_one_config_error(text: str) -> None:
    with quick():
        try:
            config = load([Source("fireplug.toml", text)], {}, {}, root=ROOT)
        except ConfigError as e:
            assert "\n" not in str(e)
        else:
            assert isinstance(config, Config)


@FUZZ
@given(text=toml_texts)
def test_a_bad_project_file_is_one_line_through_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    project = tmp_path / "p"
    project.mkdir(exist_ok=True)
    (project / "fireplug.toml").write_text(text, errors="surrogateescape")
    monkeypatch.chdir(project)
    with quick():
        code = main(["--dry-run", "true"])
    lines = no_traceback(capsys)
    assert (code, len(lines)) in ((0, 0), (125, 1))


container_values = st.one_of(
    st.text(max_size=30),
    st.from_regex(r"\A[0-9]{1,40}(\.[0-9]{0,40})?[bkmgtBKMGT]?\Z"),
    st.sampled_from(["99999999999999999999999g", "1e400", "inf", "nan", "-1", "8388608t", "0.5", "all", "device=0", "host", "1\n"]),
)


@FUZZ
@given(key=st.sampled_from(["shm_size", "memory", "cpus", "gpus", "network"]), value=container_values)
def test_a_bad_run_setting_is_one_usage_error_before_any_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], key: str, value: str
) -> None:
    """A [run] value docker would not take (or could not even read, past 64 bits) is exit 2 in one line."""
    project = tmp_path / "p"
    project.mkdir(exist_ok=True)
    (project / "fireplug.toml").write_text(f"[run]\n{key} = {json.dumps(value)}\n")
    monkeypatch.chdir(project)
    with quick():
        code = main(["--dry-run", "true"])
    lines = no_traceback(capsys)
    assert (code, len(lines)) in ((0, 0), (2, 1), (125, 1)), (code, lines)


@FUZZ
@given(text=toml_texts)
def test_another_folders_fireplug_toml_gives_a_key_or_nothing(tmp_path: Path, text: str) -> None:
    """Read to tell a copy of this project (its sync record's folder): any content is a key or ""."""
    (tmp_path / "fireplug.toml").write_text(text, errors="surrogateescape")
    with quick():
        assert isinstance(project_key_at(tmp_path), str)


# -- fp's own cache and state: disposable, so unreadable means rebuilt -------------------------

RULES = ScanRules(data_folder="data")
record_like = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"format": st.just(1), "key": st.just(RULES.key()), "folders": json_values, "entries": json_values, "secrets": json_values, "root": st.text(max_size=5)}
    ),
    st.fixed_dictionaries(
        {
            "format": st.just(1),
            "key": st.just(RULES.key()),
            "folders": st.just([["", [-1, -1]]]),
            "entries": st.lists(
                st.tuples(
                    st.sampled_from(["a.py", "/etc/passwd", "../x", "a.py/", ""]),
                    st.sampled_from(["file", "dir", "symlink", "?"]),
                    json_values,
                    st.sampled_from(["", "0" * 64, "zz"]),
                    json_values,
                ).map(list),
                max_size=3,
            ),
            "secrets": st.just([]),
        }
    ),
)


@pytest.fixture
def small_project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "src").mkdir(parents=True, exist_ok=True)
    (root / "a.py").write_text("a = 1\n")
    (root / "src" / "b.py").write_text("b = 2\n")
    return root


def checksummed(payload: bytes) -> bytes:
    return payload + b"\n" + hashlib.sha256(payload).hexdigest().encode()


@FUZZ
@given(
    document=st.one_of(
        record_like.map(lambda value: json.dumps(value).encode()),
        record_like.map(lambda value: checksummed(json.dumps(value).encode())),
        st.sampled_from(NASTY_BYTES),
    )
)
def test_a_damaged_scan_record_only_costs_a_scan(small_project: Path, document: bytes) -> None:
    cache = small_project.parent / "cache"
    load_context(small_project, RULES, cache, racy_ns=0)  # a good record first: the bad one replaces it
    write(record_file(small_project, cache), document)
    with quick():
        context = load_context(small_project, RULES, cache, racy_ns=0)
    assert context.digest == scan(small_project, RULES).digest
    assert sorted(entry.path for entry in context.entries) == ["a.py", "src", "src/b.py"]


marshal_values = st.recursive(
    st.one_of(st.none(), st.integers(), st.text(max_size=5), st.sampled_from(["f", "d", "l"])),
    lambda inner: st.one_of(
        st.lists(inner, max_size=6).map(tuple),
        st.dictionaries(st.one_of(st.text(max_size=5), st.sampled_from(["format", "paths", "host_listing", "unconfirmed", "made_for"])), inner, max_size=4),
    ),
    max_leaves=30,
)


@FUZZ
@given(document=st.one_of(marshal_values.map(marshal.dumps), st.binary(max_size=300), st.sampled_from(NASTY_BYTES)))
def test_a_damaged_sync_record_reads_as_none(tmp_path: Path, document: bytes) -> None:
    write(tmp_path / "record", document)
    with quick():
        state = load_state(tmp_path / "record")
    assert isinstance(state.host_listing, str) and all(isinstance(path, str) for path in state.unconfirmed)
    for name, common in state.record.items():
        assert isinstance(name, str) and common.kind in ("f", "d", "l") and isinstance(common.size, int)


def signed(payload: bytes) -> bytes:
    return RECORD_MAGIC + hashlib.sha256(payload).digest() + payload


@FUZZ
@given(value=marshal_values)
def test_a_signed_sync_record_of_the_wrong_shape_reads_as_none(tmp_path: Path, value: Any) -> None:
    write(tmp_path / "record", signed(marshal.dumps(value)))
    with quick():
        state = load_state(tmp_path / "record")
    assert isinstance(state.host_listing, str) and all(common.kind in ("f", "d", "l") for common in state.record.values())


def test_a_sync_record_with_every_field_right_is_kept(tmp_path: Path) -> None:
    record = {"a": Common("f", 3, "", "0" * 64, (1, 2, 3), (4, 5, 6)), "d": Common("d")}
    save_record(tmp_path / "record", State(record, "ab", frozenset({"a"}), "/p"))
    assert load_state(tmp_path / "record") == State(record, "ab", frozenset({"a"}), "/p")
    damaged = (tmp_path / "record").read_bytes()[:-1] + b"x"
    write(tmp_path / "record", damaged)
    assert load_state(tmp_path / "record") == State({})


@given(document=st.one_of(st.binary(max_size=80), st.sampled_from([b"\xff\n", b"../../x\n", b"a b\n", b"ok-host\n"])))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_last_host_file_is_a_host_name_or_nothing(tmp_path: Path, document: bytes) -> None:
    remember_host(tmp_path, "proj-1234", "ok-host")
    write(last_host_path(tmp_path, "proj-1234"), document)
    found = last_host(tmp_path, "proj-1234")
    assert found is None or found == document.decode().strip()


def test_an_unwritable_cache_folder_only_costs_the_record(small_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = small_project.parent / "cache-is-a-file"
    blocker.write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{small_project.parent / 'none.sock'}")
    monkeypatch.chdir(small_project)
    assert main(["--dry-run", "true"]) == 0
    assert no_traceback(capsys) == []


# -- engine answers: a value of the right type, or EngineUnreachable / EngineError --------------

statuses = st.sampled_from(
    [b"HTTP/1.1 200 OK", b"HTTP/1.1 201 Created", b"HTTP/1.1 404 Not Found", b"HTTP/1.1 500 Oops", b"HTTP/1.0 204 x", b"SSH-2.0-OpenSSH", b"", b"HTTP/1.1 abc"]
)
bodies = st.one_of(
    json_values.map(lambda value: json.dumps(value).encode()), st.binary(max_size=100), st.sampled_from([b"OK", b"<html>hi</html>", b"[" * 5000])
)


@st.composite
def answers(draw: st.DrawFn) -> bytes:
    body = draw(bodies)
    framing = draw(st.sampled_from(["length", "short-length", "bad-length", "chunked", "cut-chunked", "bad-chunk", "close"]))
    headers = [b"Api-Version: " + draw(st.sampled_from([b"1.41", b"1.24", b"x.y", b"99999999999.1", b""]))]
    if framing == "length":
        headers.append(b"Content-Length: %d" % len(body))
    elif framing == "short-length":
        headers.append(b"Content-Length: %d" % (len(body) + 10))
    elif framing == "bad-length":
        headers.append(b"Content-Length: -5x")
    elif framing in ("chunked", "cut-chunked", "bad-chunk"):
        headers.append(b"Transfer-Encoding: chunked")
        size = b"zz" if framing == "bad-chunk" else b"%x" % len(body)
        body = size + b"\r\n" + body + b"\r\n" + (b"" if framing == "cut-chunked" else b"0\r\n\r\n")
    return draw(statuses) + b"\r\n" + b"\r\n".join(headers) + b"\r\n\r\n" + body


class SameAnswerEngine(FakeEngine):
    """Answers every connection with the same bytes, then closes it."""

    answer = b""

    def respond(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(2)
            try:
                connection.recv(65536)
                connection.sendall(self.answer)
            except OSError:
                pass


@pytest.fixture(scope="module")
def fake_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SameAnswerEngine, str]]:
    engine = SameAnswerEngine(tmp_path_factory.mktemp("engine") / "docker.sock")
    yield engine, engine.url
    engine.close()


CALLS: dict[str, Any] = {
    "negotiate": (lambda engine: engine.negotiate(), str),
    "info": (lambda engine: engine.info(), dict),
    "containers": (lambda engine: engine.containers(["a=b"]), list),
    "images": (lambda engine: engine.images(["a=b"]), list),
    "create": (lambda engine: engine.create_container({}, "n"), str),
    "wait": (lambda engine: engine.wait("c"), int),
    "image_id": (lambda engine: engine.image_id("i"), (str, type(None))),
    "since_exit": (lambda engine: engine.seconds_since_exit("c"), (float, type(None))),
    "build": (lambda engine: list(engine.build(iter([b"x"]), tag="t", dockerfile="D")), list),
}


@FUZZ
@given(answer=answers(), call=st.sampled_from(sorted(CALLS)))
def test_any_engine_answer_is_a_value_or_one_fireplug_error(fake_engine: tuple[SameAnswerEngine, str], answer: bytes, call: str) -> None:
    server, url = fake_engine
    server.answer = answer
    engine = Engine("fake", url, timeout=1.0)
    action, kind = CALLS[call]
    with quick():
        try:
            value = action(engine)
        except FireplugError as e:
            assert "\n" not in str(e)
        else:
            assert isinstance(value, kind)


def test_a_web_server_at_the_engine_url_is_named_as_not_an_engine(
    fake_engine: tuple[SameAnswerEngine, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, url = fake_engine
    server.answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 15\r\n\r\n<html>hi</html>"
    monkeypatch.setenv("DOCKER_HOST", url)
    (tmp_path / "p").mkdir()
    monkeypatch.chdir(tmp_path / "p")
    assert main(["true"]) == 125
    [line] = no_traceback(capsys)
    assert "is not a Docker engine's" in line


# -- the command line ---------------------------------------------------------------------------

option_words = st.sampled_from(
    ["-v", "-e", "A", "-e", "=x", "-e", "NOT_SET_ANYWHERE", "--host", "local", "--host", "nohost", "--full-sync", "--no-build", "--timeout", "inf"]
)
command_words = st.one_of(st.text(max_size=8), st.sampled_from(["\udcff\udcfe", "a\x00b", "-x", "--", "python", "é"]))


@FUZZ
@given(options=st.lists(option_words, max_size=5), command=st.lists(command_words, min_size=1, max_size=4))
def test_any_command_line_is_a_dry_run_or_one_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], options: list[str], command: list[str]
) -> None:
    (tmp_path / "p").mkdir(exist_ok=True)
    monkeypatch.chdir(tmp_path / "p")
    with quick():
        code = main(["--dry-run", *options, "--", *command])
    lines = no_traceback(capsys)
    assert (code, len(lines)) in ((0, 0), (2, 1), (125, 1)) or (code == 2 and not lines), (code, lines)


def test_hosts_timeout_inf_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hosts", "--timeout", "inf"]) == 2
    [line] = no_traceback(capsys)
    assert "--timeout inf" in line


def test_an_unusable_sync_state_folder_is_one_sync_error_and_nothing_moves(tmp_path: Path) -> None:
    bench = Bench(tmp_path)
    (tmp_path / "state").write_text("a file where fp's state folder should be")
    (bench.local / "a.txt").write_text("mine")
    with pytest.raises(SyncError, match=r"fp.s sync state folder .* is unusable") as raised:
        bench.sync()
    assert "\n" not in str(raised.value)
    assert list(bench.remote.iterdir()) == []
    assert (bench.local / "a.txt").read_text() == "mine"


def test_a_local_file_error_during_a_sync_is_one_sync_error(tmp_path: Path) -> None:
    bench = Bench(tmp_path)
    (bench.remote / "out").mkdir()
    (bench.remote / "out" / "r.txt").write_text("result")
    (bench.local / "out").mkdir()
    subprocess.run(["chattr", "+i", str(bench.local / "out")], check=True)  # immutable: even root cannot write there
    try:
        with pytest.raises(SyncError, match="stopped") as raised:
            bench.sync()
    finally:
        subprocess.run(["chattr", "-i", str(bench.local / "out")], check=True)
    assert "\n" not in str(raised.value)
    assert (bench.remote / "out" / "r.txt").read_text() == "result"
