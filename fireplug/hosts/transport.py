"""How fp opens a connection to an engine: a unix socket, TCP, or TCP with TLS.

A ``Connector`` is a function from a timeout to a connected socket; the engine client calls
it once per request and knows nothing else about the way there. (ssh engines use a unix
socket forwarded through the ssh master connection: see ``ssh.py``.)
"""

from __future__ import annotations

import contextlib
import socket
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fireplug.errors import FireplugError
from fireplug.errors import TlsSetupError as TlsSetupError

if TYPE_CHECKING:
    import ssl

Connector = Callable[[float | None], socket.socket]
DEFAULT_TLS_PORT = 2376
DEFAULT_TCP_PORT = 2375


@dataclass(frozen=True)
class TlsFiles:
    """Client-side TLS material, as in DOCKER_CERT_PATH: the CA, our certificate and key."""

    ca: str
    cert: str
    key: str

    @classmethod
    def in_folder(cls, folder: str) -> TlsFiles:
        return cls(str(Path(folder) / "ca.pem"), str(Path(folder) / "cert.pem"), str(Path(folder) / "key.pem"))

    def missing(self) -> list[str]:
        return [path for path in (self.ca, self.cert, self.key) if not Path(path).is_file()]


def unix_connector(path: str) -> Connector:
    def connect(timeout: float | None) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            raise
        return sock

    return connect


def tcp_connector(address: str, port: int, tls: ssl.SSLContext | None) -> Connector:
    def connect(timeout: float | None) -> socket.socket:
        sock = socket.create_connection((address, port), timeout=timeout)
        if tls is None:
            return sock
        try:
            return TlsStream(sock, tls, address)  # type: ignore[return-value]  # quacks like a socket
        except OSError:
            sock.close()
            raise

    return connect


class TlsStream:
    """TLS over a socket, through memory buffers, so that fp can close its sending side alone.

    An attached container learns that its stdin ended when fp half-closes the connection.
    ``ssl.SSLSocket.shutdown`` tears TLS down in both directions (the output still to come
    would then arrive as raw encrypted bytes), so this sends TLS's close_notify and a TCP
    half-close while reading on. Reading and writing may happen on two threads: the TLS
    state is only touched under a lock, never held across a blocking socket call.
    """

    def __init__(self, raw: socket.socket, context: ssl.SSLContext, server_hostname: str) -> None:
        import ssl

        self._ssl = ssl
        self.raw = raw
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=server_hostname)
        self._state = threading.Lock()
        self._sending = threading.Lock()
        self._write_closed = False
        self._handshake()

    def _handshake(self) -> None:
        while True:
            try:
                with self._state:
                    self._tls.do_handshake()
                self._flush()
                return
            except self._ssl.SSLWantReadError:
                self._flush()
                if not self._receive():
                    raise ConnectionResetError("the engine closed the connection during the TLS handshake") from None

    def _flush(self) -> None:
        with self._sending:
            with self._state:
                data = self._outgoing.read()
            if data:
                self.raw.sendall(data)

    def _receive(self) -> bool:
        data = self.raw.recv(65536)
        with self._state:
            if data:
                self._incoming.write(data)
            else:
                self._incoming.write_eof()
        return bool(data)

    def recv(self, size: int) -> bytes:
        while True:
            try:
                with self._state:
                    return self._tls.read(size)
            except self._ssl.SSLWantReadError:
                self._flush()
                if not self._receive():
                    return b""
            except (self._ssl.SSLZeroReturnError, self._ssl.SSLEOFError):
                return b""  # the engine's close_notify, or a close without one

    def sendall(self, data: bytes) -> None:
        with self._state:
            self._tls.write(data)
        self._flush()

    def shutdown(self, how: int) -> None:
        if how in (socket.SHUT_WR, socket.SHUT_RDWR) and not self._write_closed:
            self._write_closed = True
            try:
                with self._state:
                    self._tls.unwrap()  # queues close_notify; the peer's answer may never come
            except (self._ssl.SSLError, ValueError):
                pass
            with contextlib.suppress(OSError):
                self._flush()
        self.raw.shutdown(how)

    def settimeout(self, timeout: float | None) -> None:
        self.raw.settimeout(timeout)

    def close(self) -> None:
        self.raw.close()


def tls_context(host: str, files: TlsFiles) -> ssl.SSLContext:
    """A client context trusting only ``files.ca`` and presenting our certificate.

    Raises:
        TlsSetupError: a file is missing or not a valid certificate or key.
    """
    import ssl  # ~20 ms of start-up, paid only for TLS engines

    if missing := files.missing():
        raise TlsSetupError(host, f"missing {', '.join(missing)}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=files.ca)
        context.load_cert_chain(files.cert, files.key)
    except (ssl.SSLError, OSError) as e:
        raise TlsSetupError(host, str(e)) from e
    return context


def connector_for(host: str, url: str, tls: TlsFiles | None) -> Connector:
    """The connector for a unix:// or tcp:// engine URL (ssh:// is handled by ``ssh.py``).

    Raises:
        FireplugError: the URL's scheme is not one fp can dial directly.
        TlsSetupError: see ``tls_context``.
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "unix":
        return unix_connector(parsed.path)
    if parsed.scheme in ("tcp", "https", "http"):
        if not parsed.hostname:
            raise FireplugError(f"engine URL {url!r} of host '{host}' has no address")
        context = tls_context(host, tls) if tls is not None else None
        port = parsed.port or (DEFAULT_TLS_PORT if context else DEFAULT_TCP_PORT)
        return tcp_connector(parsed.hostname, port, context)
    raise FireplugError(f"engine URL {url!r} of host '{host}': unsupported scheme '{parsed.scheme}'", hint="use unix://, tcp:// or ssh://")
