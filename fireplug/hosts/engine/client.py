"""The engine client's core: the API version both sides speak, one request on a fresh
connection, and the translation of socket and HTTP failures into fp's errors (once, here).
The API's areas are mixins on it (containers.py, images.py, services.py), as in docker-py's ``api/``.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterable, Mapping
from typing import Any

from fireplug.errors import EngineError, EngineUnreachable
from fireplug.hosts.engine import wire
from fireplug.hosts.engine.wire import (
    Liveness,
    Response,
    answer_if_any,
    describe_socket_error,
    error_detail,
    query,
    request_bytes,
    send_chunked,
)
from fireplug.hosts.transport import Connector, connector_for

CLIENT_API_VERSION = (1, 45)  # the newest API version fp speaks; lowered to the engine's

MIN_API_VERSION = (1, 25)  # HostConfig.Init appeared in 1.25

DEFAULT_TIMEOUT = 30.0


class EngineClient:
    """One Docker engine, addressed by URL, named after the fp host it belongs to.

    Raises (every method):
        EngineUnreachable: the engine cannot be reached or the connection broke.
        EngineError: the engine refused the request.
    """

    def __init__(
        self,
        host: str,
        url: str,
        *,
        connector: Connector | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        unreachable_hint: str = "",
    ) -> None:
        """``connector`` opens a connection (default: dial ``url``, a unix:// or plain tcp:// URL)."""
        self.host = host
        self.url = url
        self.timeout = timeout
        self._connect = connector or connector_for(host, url, None)
        self._unreachable_hint = unreachable_hint
        self._prefix = ""
        self.liveness = Liveness(self.ping)

    def negotiate(self) -> str:
        """Ping the engine and settle the API version both sides speak; returns it."""
        response = self._request("GET", "/_ping", action="checking the engine", versioned=False)
        body = self._body(response)
        header = response.headers.get("api-version", "")
        if not _VERSION.fullmatch(header or "1.41") or (not header and body.strip() != b"OK"):
            raise self._not_an_engine("GET /_ping")
        server = _parse_version(header or "1.41")
        if server < MIN_API_VERSION:
            raise EngineError(self.host, 0, f"engine API {_format_version(server)} is too old (fp needs {_format_version(MIN_API_VERSION)}+)")
        version = min(server, CLIENT_API_VERSION)
        self._prefix = f"/v{_format_version(version)}"
        return _format_version(version)

    def ping(self) -> None:
        """Raises: EngineUnreachable: no answer within ``wire.STALL_SECONDS``."""
        self._call("GET", "/_ping", timeout=wire.STALL_SECONDS, versioned=False, action="checking the engine")

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        body: Iterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | str | None = "default",
        action: str = "",
        versioned: bool = True,
        allowed: tuple[int, ...] = (),
        upgrade: bool = False,
    ) -> Response:
        """Send one request on a fresh connection; the response, its status checked.

        ``body`` is an iterable of chunks sent with chunked transfer encoding, so a build
        context is never held in memory. ``timeout`` None: a request that may be silent for
        long (it still connects within the engine's timeout); ``Liveness`` watches it instead.
        """
        if self.liveness.stalled:
            raise EngineUnreachable(self.host, self.url, self.liveness.stalled)
        url = (self._prefix if versioned else "") + path + query(params)
        request = request_bytes(method, url, headers or {}, json_body, streamed=body is not None, upgrade=upgrade)
        sock = None
        try:
            sock = self._connect(self.timeout if timeout in ("default", None) else timeout)  # type: ignore[arg-type]
            if timeout is None:
                sock.settimeout(None)
                self.liveness.watch(sock)
            sock.sendall(request)
            if body is not None:
                send_chunked(sock, body)
            response = Response(sock, self.liveness.release, has_body=method != "HEAD")
        except (BrokenPipeError, ConnectionResetError) as e:
            # The engine may have refused a streamed body and said why before closing.
            early = answer_if_any(sock) if sock is not None else None
            if early is None or early.status < 400:
                self._drop(sock)
                raise self._unreachable(e) from e
            response = early
        except OSError as e:
            self._drop(sock)
            raise self._unreachable(e) from e
        except BaseException:  # a streamed body failed (ContextChanged) or fp was interrupted
            self._drop(sock)
            raise
        if response.status >= 400 and response.status not in allowed:
            detail = error_detail(response)
            response.close()
            raise EngineError(self.host, response.status, detail, action=action)
        return response

    def _drop(self, sock: socket.socket | None) -> None:
        if sock is not None:
            self.liveness.release(sock)
            sock.close()

    def _unreachable(self, error: BaseException) -> EngineUnreachable:
        if self.liveness.stalled:
            return EngineUnreachable(self.host, self.url, self.liveness.stalled)
        not_running = isinstance(error, (FileNotFoundError, ConnectionRefusedError))
        return EngineUnreachable(self.host, self.url, describe_socket_error(error), hint=self._unreachable_hint if not_running else "")

    def _not_an_engine(self, what: str) -> EngineUnreachable:
        return EngineUnreachable(self.host, self.url, f"its answer to {what} is not a Docker engine's (is something else listening there?)")

    def _body(self, response: Response) -> bytes:
        try:
            return response.read()
        except OSError as e:
            raise self._unreachable(e) from e
        finally:
            response.close()

    def _json(self, method: str, path: str, *, expect: type = dict, **kwargs: Any) -> Any:
        """The JSON answer, which must be an ``expect`` (a dict, or a list of dicts)."""
        return self._decode(self._body(self._request(method, path, **kwargs)), f"{method} {path}", expect)

    def _decode(self, data: bytes, what: str, expect: type = dict) -> Any:
        try:
            value = json.loads(data)
        except (ValueError, RecursionError):
            raise self._not_an_engine(what) from None
        if not isinstance(value, expect) or (isinstance(value, list) and not all(isinstance(item, dict) for item in value)):
            raise self._not_an_engine(what)
        return value

    def _field(self, answer: Mapping[str, Any], name: str, kind: type, what: str) -> Any:
        value = answer.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise self._not_an_engine(what)
        return value

    def _call(self, method: str, path: str, **kwargs: Any) -> int:
        """A request whose answer carries nothing but its status."""
        response = self._request(method, path, **kwargs)
        self._body(response)
        return response.status

    def info(self) -> dict[str, Any]:
        """The engine's /info: version, CPUs, memory, root folder..."""
        return self._json("GET", "/info", action="reading engine information")

    def network_names(self) -> list[str]:
        found = self._json("GET", "/networks", expect=list, action="listing networks")
        return [str(network.get("Name", "")) for network in found if isinstance(network, dict)]


def engine_time(stamp: str) -> float | None:
    """An engine time stamp (RFC 3339, UTC, nanoseconds) in seconds since the epoch; None for
    the engine's zero time ("0001-01-01T00:00:00Z": never started, never finished) or anything
    unreadable."""
    import datetime

    try:
        moment = datetime.datetime.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return None
    if moment.year < 2000:
        return None
    fraction = re.match(r"\.(\d+)", stamp[19:])
    return moment.timestamp() + (float("0." + fraction.group(1)) if fraction else 0.0)


def mapping_of(value: object) -> dict[str, Any]:
    """``value`` when the engine's JSON gave an object there, else an empty one."""
    return value if isinstance(value, dict) else {}


_VERSION = re.compile(r"[0-9]{1,4}\.[0-9]{1,4}")


def _parse_version(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)


def _format_version(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"
