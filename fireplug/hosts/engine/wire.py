"""HTTP/1.1 on an engine's socket, read and written by hand: requests with JSON or streamed
chunked bodies, responses with Content-Length, chunked or close-delimited bodies, the attach
upgrade, the multiplexed output stream, and the watch that tells a stalled engine from a
silent request. The standard library only (``http.client`` would import the email package).
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from fireplug.errors import EngineUnreachable, FireplugError
from fireplug.hosts.transport import TlsStream

PING_INTERVAL = 10.0  # how often a long request's engine is pinged (see Liveness)
STALL_SECONDS = 20.0  # a ping unanswered this long means the engine stalled
MAX_HEADERS = 200
USER_AGENT = "fireplug"


@dataclass
class Attached:
    """A hijacked attach connection: raw stream of the container's stdio."""

    sock: socket.socket
    pending: bytes  # bytes that arrived with the response headers
    release: Callable[[Any], None] = lambda sock: None  # the engine stops watching the connection

    def recv(self, size: int = 65536) -> bytes:
        if self.pending:
            data, self.pending = self.pending, b""
            return data
        return self.sock.recv(size)

    def send_all(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close_stdin(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.release(self.sock)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv()
        self.sock.close()


class ProtocolError(OSError):
    """The engine's answer is not the HTTP fp expects."""


class _Reader:
    """Buffered reads from a socket that can hand back what it buffered (for hijacked streams)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def readline(self, limit: int = 65536) -> bytes:
        while (end := self.buffer.find(b"\n")) < 0:
            if len(self.buffer) > limit or not self._fill():
                return self.take_buffered()
        line = bytes(self.buffer[: end + 1])
        del self.buffer[: end + 1]
        return line

    def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise ProtocolError("the engine closed the connection mid-answer")
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def read_some(self) -> bytes:
        return self.take_buffered() if self.buffer else self.sock.recv(65536)

    def take_buffered(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


class Response:
    """An HTTP/1.1 response read straight off the socket (Content-Length, chunked or until close)."""

    def __init__(self, sock: socket.socket, release: Callable[[Any], None] = lambda sock: None, *, has_body: bool = True) -> None:
        self.sock = sock
        self.release = release
        self.has_body = has_body  # False for the answer to a HEAD request
        self.reader = _Reader(sock)
        status_line = self.reader.readline()
        parts = status_line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise ProtocolError(f"unexpected answer {status_line[:40]!r}")
        self.status = int(parts[1])
        self.reason = parts[2].strip() if len(parts) > 2 else ""
        self.headers: dict[str, str] = {}
        while (line := self.reader.readline()) not in (b"\r\n", b"\n", b""):
            if len(self.headers) >= MAX_HEADERS:
                raise ProtocolError(f"more than {MAX_HEADERS} header lines")
            name, _, value = line.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def chunks(self) -> Iterator[bytes]:
        """The body as it arrives.

        Raises:
            ProtocolError: the body is cut off or malformed (a broken connection reads as one).
        """
        if self.status in (101, 204, 304) or not self.has_body:
            return
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while size := self._chunk_size():
                yield self.reader.read_exactly(size)
                self.reader.readline()
            while self.reader.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
        elif "content-length" in self.headers:
            if length := _content_length(self.headers["content-length"]):
                yield self.reader.read_exactly(length)
        else:
            while block := self.reader.read_some():
                yield block

    def _chunk_size(self) -> int:
        line = self.reader.readline(limit=1024)
        if not line.endswith(b"\n"):
            raise ProtocolError("the engine closed the connection mid-answer")
        try:
            return int(line.split(b";")[0].strip(), 16)
        except ValueError:
            raise ProtocolError(f"malformed chunk header {line[:40]!r}") from None

    def read(self) -> bytes:
        return b"".join(self.chunks())

    def lines(self) -> Iterator[bytes]:
        pending = b""
        for chunk in self.chunks():
            pending += chunk
            *complete, pending = pending.split(b"\n")
            yield from complete
        if pending:
            yield pending

    def close(self) -> None:
        self.release(self.sock)
        self.sock.close()


class Liveness:
    """Watches an engine while requests without a read timeout are open.

    Waits, attaches, builds and archive copies may rightly be silent for hours, so their
    silence says nothing; instead, every ``PING_INTERVAL`` seconds the engine is pinged on a
    connection of its own. When a ping is not answered within ``STALL_SECONDS`` (a stalled
    engine, a frozen proxy, a dead network path), the open requests' connections are shut down,
    which wakes their readers and writers; ``stalled`` then says why, and stays set.
    """

    def __init__(self, ping: Callable[[], None]) -> None:
        self._ping = ping
        self._lock = threading.Lock()
        self._open: set[Any] = set()
        self._watching = False
        self.stalled = ""

    def watch(self, sock: Any) -> None:
        with self._lock:
            self._open.add(sock)
            if not self._watching:
                self._watching = True
                threading.Thread(target=self._run, name="fp-engine-liveness", daemon=True).start()

    def release(self, sock: Any) -> None:
        with self._lock:
            self._open.discard(sock)

    def _run(self) -> None:
        while True:
            time.sleep(PING_INTERVAL)
            with self._lock:
                if not self._open:
                    self._watching = False
                    return
            try:
                self._ping()
            except EngineUnreachable as e:
                self._give_up(e.cause)
                return
            except FireplugError:
                continue  # it answered: not a stall

    def _give_up(self, cause: str) -> None:
        with self._lock:
            self.stalled = f"the engine stopped answering (a ping got no answer within {STALL_SECONDS:g} s: {cause})"
            sockets, self._open = list(self._open), set()
            self._watching = False
        for sock in sockets:
            _abort(sock)


def _abort(sock: Any) -> None:
    """Shut a connection down under the feet of the thread blocked on it (TLS: at the TCP level)."""
    with contextlib.suppress(OSError):
        (sock.raw if isinstance(sock, TlsStream) else sock).shutdown(socket.SHUT_RDWR)


def demultiplex(chunks: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """The engine's multiplexed stdout/stderr stream: 8-byte headers (stream, size), then data."""
    buffer = b""
    pieces = iter(chunks)
    while True:
        while len(buffer) < 8:
            chunk = next(pieces, b"")
            if not chunk:
                return
            buffer += chunk
        stream, size = struct.unpack(">BxxxL", buffer[:8])
        buffer = buffer[8:]
        while size:
            if not buffer:
                buffer = next(pieces, b"")
                if not buffer:
                    return
            piece, buffer = buffer[:size], buffer[size:]
            size -= len(piece)
            yield stream, piece


def frames(attached: Attached) -> Iterator[tuple[int, bytes]]:
    """The container's multiplexed stdout/stderr stream as (stream, bytes)."""
    return demultiplex(iter(attached.recv, b""))


def describe_socket_error(error: BaseException) -> str:
    """A short, human cause for a failed connection."""
    if isinstance(error, FileNotFoundError):
        return "no engine socket there"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (is the engine running?)"
    if isinstance(error, PermissionError):
        return "permission denied on the socket (join the docker group: sudo usermod -aG docker $USER, then log in again)"
    if isinstance(error, (socket.timeout, TimeoutError)):
        return "timed out"
    ssl = sys.modules.get("ssl")  # imported only when a TLS engine was dialled
    if ssl is not None and isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate check failed ({error.verify_message})"
    if ssl is not None and isinstance(error, ssl.SSLError):
        return f"TLS failed ({error.reason or error})"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def send_chunked(sock: socket.socket, body: Iterable[bytes]) -> None:
    for chunk in body:
        if chunk:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    sock.sendall(b"0\r\n\r\n")


def answer_if_any(sock: socket.socket) -> Response | None:
    try:
        return Response(sock)
    except OSError:
        return None


def error_detail(response: Response) -> str:
    try:
        raw = response.read()
    except OSError:
        return response.reason
    try:
        message = json.loads(raw).get("message")
    except (ValueError, AttributeError, RecursionError):
        message = None
    return " ".join(str(message or raw.decode(errors="replace")[:300] or response.reason).split())


def _content_length(text: str) -> int:
    if not text.isdigit():
        raise ProtocolError(f"malformed Content-Length {text[:20]!r}")
    return int(text)


def query(params: Mapping[str, Any] | None) -> str:
    return "?" + urllib.parse.urlencode(params) if params else ""


def quote(reference: str) -> str:
    return urllib.parse.quote(reference, safe="")


def request_bytes(method: str, url: str, headers: Mapping[str, str], json_body: Any, *, streamed: bool, upgrade: bool) -> bytes:
    """An HTTP/1.1 request's head and (for a JSON body) its body; a streamed body follows chunked."""
    head = {"Host": "docker", "User-Agent": USER_AGENT, **headers}
    payload = json.dumps(json_body).encode() if json_body is not None else b""
    if json_body is not None:
        head["Content-Type"] = "application/json"
    if upgrade:
        head.update({"Connection": "Upgrade", "Upgrade": "tcp"})
    else:
        head["Connection"] = "close"
    if streamed:
        head["Transfer-Encoding"] = "chunked"
    else:
        head["Content-Length"] = str(len(payload))
    request = f"{method} {url} HTTP/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in head.items()) + "\r\n"
    return request.encode("latin-1") + payload
