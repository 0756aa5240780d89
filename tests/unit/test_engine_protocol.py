"""The engine client's HTTP and stream framing, fed canned bytes over a socket pair."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fireplug.errors import EngineError, EngineUnreachable, FireplugError
from fireplug.hosts.engine import Attached, Engine, ProtocolError, Response, frames
from fireplug.hosts.engine import wire as engine_module
from tests.unit.fake_engine import FakeEngine


def response_from(raw: bytes) -> Response:
    ours, theirs = socket.socketpair()
    theirs.sendall(raw)
    theirs.close()
    return Response(ours)


def test_content_length_body() -> None:
    response = response_from(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"Id":"ab"}')
    assert (response.status, response.headers["content-type"], response.read()) == (200, "application/json", b'{"Id":"ab"}')


def test_chunked_body_is_reassembled_and_split_in_lines() -> None:
    raw = b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"a":\r\n4;ext=1\r\n1}\r\n\r\n6\r\n{"b":2\r\n3\r\n}\r\n\r\n0\r\nTrailer: x\r\n\r\n'
    assert list(response_from(raw).lines()) == [b'{"a":1}\r', b'{"b":2}\r']


def test_body_until_close_and_no_body_statuses() -> None:
    assert response_from(b"HTTP/1.0 200 OK\r\n\r\nstreamed until close").read() == b"streamed until close"
    assert response_from(b"HTTP/1.1 204 No Content\r\n\r\n").read() == b""


@pytest.mark.parametrize("raw", [b"garbage\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"])
def test_malformed_answers_raise(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        response_from(raw).read()


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


def test_frames_are_demultiplexed_across_arbitrary_reads() -> None:
    ours, theirs = socket.socketpair()
    payload = frame(1, b"out 1\n") + frame(2, b"err 1\n") + frame(1, b"x" * 100_000)
    pending, rest = payload[:3], payload[3:]

    def send_slowly() -> None:
        for start in range(0, len(rest), 7777):
            theirs.sendall(rest[start : start + 7777])
        theirs.close()

    threading.Thread(target=send_slowly).start()
    received = list(frames(Attached(ours, pending)))
    by_stream = {1: b"".join(data for stream, data in received if stream == 1), 2: b"".join(data for stream, data in received if stream == 2)}
    assert by_stream == {1: b"out 1\n" + b"x" * 100_000, 2: b"err 1\n"}


def serve_once(path: Path, answer: bytes) -> threading.Thread:
    """A one-shot unix-socket peer giving ``answer`` (what an engine would say) to one request."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        connection, _ = server.accept()
        connection.recv(65536)
        connection.sendall(answer)
        connection.close()
        server.close()

    thread = threading.Thread(target=serve)
    thread.start()
    return thread


def test_error_answers_become_one_line_engine_errors(tmp_path: Path) -> None:
    body = b'{"message":"No such container: x"}'
    serve_once(tmp_path / "e.sock", b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    engine = Engine("local", f"unix://{tmp_path / 'e.sock'}")
    with pytest.raises(EngineError) as raised:
        engine.start("x")
    assert str(raised.value) == "Docker engine of host 'local' failed while starting the container: No such container: x (HTTP 404)"


def test_missing_and_refusing_sockets_say_so(tmp_path: Path) -> None:
    with pytest.raises(EngineUnreachable, match="no engine socket there; start it") as raised:
        Engine("local", f"unix://{tmp_path / 'none.sock'}", unreachable_hint="start it").negotiate()
    assert raised.value.host == "local"
    bound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound.bind(str(tmp_path / "refusing.sock"))  # bound, never listening: connections are refused
    with pytest.raises(EngineUnreachable, match="connection refused"):
        Engine("local", f"unix://{tmp_path / 'refusing.sock'}").negotiate()
    bound.close()


def test_negotiation_picks_the_lower_api_version(tmp_path: Path) -> None:
    serve_once(tmp_path / "p.sock", b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 2\r\n\r\nOK")
    assert Engine("local", f"unix://{tmp_path / 'p.sock'}").negotiate() == "1.41"


def test_unsupported_url_scheme_is_refused() -> None:
    with pytest.raises(FireplugError, match="unsupported scheme 'ftp'"):
        Engine("local", "ftp://user@host")


class SilentWaitEngine(FakeEngine):
    """A fake engine whose /wait never answers; its /_ping answers only while ``pings_answered``."""

    def __init__(self, path: Path) -> None:
        self.pings_answered = True
        self.held: list[socket.socket] = []
        super().__init__(path)

    def respond(self, connection: socket.socket) -> None:
        request = connection.recv(65536)
        if b"/_ping" in request and self.pings_answered:
            connection.sendall(b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 2\r\n\r\nOK")
            connection.close()
        else:
            self.held.append(connection)  # silence: neither an answer nor a close

    def close(self) -> None:
        super().close()
        for connection in self.held:
            connection.close()


@pytest.fixture
def silent_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[SilentWaitEngine, Engine]]:
    monkeypatch.setattr(engine_module, "PING_INTERVAL", 0.2)
    monkeypatch.setattr(engine_module, "STALL_SECONDS", 0.5)
    fake = SilentWaitEngine(tmp_path / "engine.sock")
    yield fake, Engine("fake", fake.url, timeout=5)
    fake.close()


def test_a_stalled_engine_ends_a_silent_wait_and_every_later_request(silent_engine: tuple[SilentWaitEngine, Engine]) -> None:
    fake, engine = silent_engine
    fake.pings_answered = False
    started = time.monotonic()
    with pytest.raises(EngineUnreachable, match="stopped answering"):
        engine.wait("c")
    assert time.monotonic() - started < 3
    with pytest.raises(EngineUnreachable, match="stopped answering"):
        engine.info()  # at once: the stall is remembered


def test_a_silent_wait_on_an_engine_that_answers_pings_is_not_a_stall(silent_engine: tuple[SilentWaitEngine, Engine]) -> None:
    fake, engine = silent_engine
    outcome: list[object] = []
    waiter = threading.Thread(target=lambda: outcome.append(_attempt(engine.wait, "c")), daemon=True)
    waiter.start()
    waiter.join(2.0)  # several ping intervals
    assert waiter.is_alive() and not outcome, "still waiting: the command may run for hours"
    fake.pings_answered = False
    waiter.join(3.0)
    assert outcome and isinstance(outcome[0], EngineUnreachable)


def _attempt(action, *args):  # type: ignore[no-untyped-def]
    try:
        return action(*args)
    except EngineUnreachable as e:
        return e
