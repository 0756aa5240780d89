"""A small Docker Engine API client built on the standard library.

fp talks to engines directly rather than through docker-py's ``APIClient``: importing
docker-py costs 0.15-0.25 s of start-up (requests, urllib3, charset detection) on every run,
and its ssh transport needs paramiko. The API calls fp makes are few and stable.
Socket and HTTP errors are translated into fp's errors here, once.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import socket
import struct
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from fireplug.errors import EngineError, EngineUnreachable, FireplugError
from fireplug.hosts.transport import Connector, TlsStream, connector_for

CLIENT_API_VERSION = (1, 45)  # the newest API version fp speaks; lowered to the engine's
MIN_API_VERSION = (1, 25)  # HostConfig.Init appeared in 1.25
DEFAULT_TIMEOUT = 30.0
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


class Engine:
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

    # -- plumbing ---------------------------------------------------------------------

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
        """Raises: EngineUnreachable: no answer within STALL_SECONDS."""
        self._call("GET", "/_ping", timeout=STALL_SECONDS, versioned=False, action="checking the engine")

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
        url = (self._prefix if versioned else "") + path + _query(params)
        request = _request_bytes(method, url, headers or {}, json_body, streamed=body is not None, upgrade=upgrade)
        sock = None
        try:
            sock = self._connect(self.timeout if timeout in ("default", None) else timeout)  # type: ignore[arg-type]
            if timeout is None:
                sock.settimeout(None)
                self.liveness.watch(sock)
            sock.sendall(request)
            if body is not None:
                _send_chunked(sock, body)
            response = Response(sock, self.liveness.release, has_body=method != "HEAD")
        except (BrokenPipeError, ConnectionResetError) as e:
            # The engine may have refused a streamed body and said why before closing.
            early = _answer_if_any(sock) if sock is not None else None
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
            detail = _error_detail(response)
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

    # -- images -----------------------------------------------------------------------

    def _inspect_image(self, reference: str) -> dict[str, Any] | None:
        response = self._request("GET", f"/images/{_quote(reference)}/json", action=f"inspecting image {reference}", allowed=(404,))
        if response.status == 404:
            self._body(response)
            return None
        answer: dict[str, Any] = self._decode(self._body(response), f"GET /images/{reference}/json")
        return answer

    def image_id(self, reference: str) -> str | None:
        """The ID of the image ``reference`` names on this engine, or None when absent."""
        answer = self._inspect_image(reference)
        return None if answer is None else self._field(answer, "Id", str, f"GET /images/{reference}/json")

    def image_config(self, reference: str) -> dict[str, Any]:
        """The image's run configuration (Env, Entrypoint, Cmd, WorkingDir...); {} when it has none."""
        answer = self._json("GET", f"/images/{_quote(reference)}/json", action=f"inspecting image {reference}")
        config = answer.get("Config")
        return config if isinstance(config, dict) else {}

    def image_created(self, reference: str) -> float:
        """When the image was made, to the nanosecond (the image list's Created is in whole
        seconds); 0 for an image gone meanwhile."""
        answer = self._inspect_image(reference) or {}
        return engine_time(str(answer.get("Created") or "")) or 0.0

    def path_kind(self, container: str, path: str) -> tuple[int, str] | None:
        """(mode, link target) of ``path`` in a container, which need not be running; None when absent."""
        response = self._request("HEAD", f"/containers/{container}/archive", params={"path": path}, action="looking up a path", allowed=(404,))
        self._body(response)
        if response.status == 404:
            return None
        try:
            stat = json.loads(base64.b64decode(response.headers.get("x-docker-container-path-stat", ""), validate=True))
            return int(stat["mode"]) & 0xFFFFFFFF, str(stat.get("linkTarget", ""))
        except (ValueError, TypeError, KeyError, RecursionError):
            raise self._not_an_engine("HEAD /containers/archive") from None

    def build(
        self,
        context: Iterator[bytes],
        *,
        tag: str,
        dockerfile: str,
        buildargs: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        nocache: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Send a tar context (streamed, chunked) and yield the engine's build messages."""
        params = {
            "t": tag,
            "dockerfile": dockerfile,
            "rm": 1,
            "forcerm": 1,
            "nocache": int(nocache),
            "buildargs": json.dumps(dict(buildargs or {})),
            "labels": json.dumps(dict(labels or {})),
        }
        response = self._request(
            "POST",
            "/build",
            params=params,
            body=context,
            headers={"Content-Type": "application/x-tar"},
            timeout=None,
            action=f"building {tag}",
        )
        try:
            for line in response.lines():
                if line.strip():
                    yield self._build_message(line)
        except OSError as e:
            raise self._unreachable(e) from e
        finally:
            response.close()

    def _build_message(self, line: bytes) -> dict[str, Any]:
        message = self._decode(line, "POST /build")
        if not isinstance(message.get("aux", {}), dict):
            raise self._not_an_engine("POST /build")
        return message

    def images(self, labels: Iterable[str], *, dangling: bool | None = None) -> list[dict[str, Any]]:
        """Images carrying every label in ``labels`` (``key=value`` or ``key``); ``dangling``:
        only untagged ones (True), or only tagged ones (False)."""
        filters: dict[str, list[str]] = {"label": list(labels)}
        if dangling is not None:
            filters["dangling"] = [str(dangling).lower()]
        params = {"filters": json.dumps(filters)}
        return self._json("GET", "/images/json", expect=list, params=params, action="listing images")

    def image_sizes(self) -> dict[str, int]:
        """Each image's own bytes (its size less the layers it shares with other images), from /system/df."""
        answer = self._json("GET", "/system/df", params={"type": "image"}, timeout=None, action="reading disk usage")
        found = {}
        for image in answer.get("Images") or []:
            size, shared = image.get("Size"), image.get("SharedSize")
            if isinstance(image, dict) and isinstance(size, int):
                found[str(image.get("Id", ""))] = size - shared if isinstance(shared, int) and 0 <= shared <= size else size
        return found

    def remove_image(self, image: str) -> bool:
        """Remove an image unless a container uses it or another image builds on it (False then)."""
        response = self._request("DELETE", f"/images/{_quote(image)}", action="removing an image", allowed=(404, 409))
        self._body(response)
        return response.status not in (404, 409)

    # -- the engine ---------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """The engine's /info: version, CPUs, memory, root folder..."""
        return self._json("GET", "/info", action="reading engine information")

    def network_names(self) -> list[str]:
        found = self._json("GET", "/networks", expect=list, action="listing networks")
        return [str(network.get("Name", "")) for network in found if isinstance(network, dict)]

    # -- containers -------------------------------------------------------------------

    def containers(self, labels: Iterable[str], *, running_only: bool = True) -> list[dict[str, Any]]:
        """Containers carrying every label in ``labels``."""
        filters: dict[str, list[str]] = {"label": list(labels)}
        if running_only:
            filters["status"] = ["running"]
        params = {"filters": json.dumps(filters), "all": int(not running_only)}
        return self._json("GET", "/containers/json", expect=list, params=params, action="listing containers")

    def inspect_container(self, container: str, *, size: bool = False) -> dict[str, Any] | None:
        """The engine's inspection of ``container`` (``size``: with its SizeRw); None when it is gone."""
        params = {"size": 1} if size else None
        response = self._request("GET", f"/containers/{container}/json", params=params, action="inspecting the container", allowed=(404,))
        if response.status == 404:
            self._body(response)
            return None
        return self._decode(self._body(response), "GET /containers/json")

    def logs(self, container: str, *, follow: bool) -> Generator[tuple[int, bytes], None, None]:
        """Its output so far (``follow``: and on until it ends) as (stream, bytes), 1 stdout and 2 stderr.

        Raises:
            EngineError, EngineUnreachable.
        """
        tty = bool(((self.inspect_container(container) or {}).get("Config") or {}).get("Tty"))
        params = {"stdout": 1, "stderr": 1, "follow": int(follow)}
        response = self._request("GET", f"/containers/{container}/logs", params=params, timeout=None if follow else "default", action="reading the output")
        try:
            chunks = response.chunks()
            if tty:  # one raw stream
                for chunk in chunks:
                    yield 1, chunk
            else:
                yield from demultiplex(chunks)
        except OSError as e:
            raise self._unreachable(e) from e
        finally:
            response.close()

    def seconds_since_exit(self, container: str) -> float | None:
        """How long ago ``container`` stopped; None while it runs (or was never started, or is gone)."""
        state = (self.inspect_container(container) or {}).get("State")
        if not isinstance(state, dict) or state.get("Status") not in ("exited", "dead"):
            return None
        finished = engine_time(str(state.get("FinishedAt", "")))
        return time.time() - finished if finished is not None else None

    def get_archive(self, container: str, path: str) -> Generator[bytes, None, None]:
        """A tar of ``path`` in the container (running or not), as it arrives.

        Raises:
            EngineError, EngineUnreachable.
        """
        response = self._request("GET", f"/containers/{container}/archive", params={"path": path}, timeout=None, action="copying files out")
        try:
            yield from response.chunks()
        except OSError as e:
            raise self._unreachable(e) from e
        finally:
            response.close()

    def put_archive(self, container: str, path: str, tar_stream: Iterable[bytes]) -> None:
        """Extract a tar stream (sent chunked, never held in memory) at ``path`` in the container."""
        params = {"path": path}
        headers = {"Content-Type": "application/x-tar"}
        self._call("PUT", f"/containers/{container}/archive", params=params, body=tar_stream, headers=headers, timeout=None, action="copying files")

    def create_container(self, config: Mapping[str, Any], name: str) -> str:
        created = self._json("POST", "/containers/create", params={"name": name}, json_body=config, action="creating the container")
        return self._field(created, "Id", str, "POST /containers/create")

    def published_ports(self, container: str) -> dict[str, int]:
        """The host port of each published container port ("8888/tcp" -> 49153), once it started."""
        inspected = self._json("GET", f"/containers/{container}/json", action="inspecting the container")
        ports = (inspected.get("NetworkSettings") or {}).get("Ports") or {}
        found = {}
        for key, bindings in ports.items() if isinstance(ports, dict) else ():
            for binding in bindings or ():
                if isinstance(binding, dict) and str(binding.get("HostPort", "")).isdigit():
                    found[str(key)] = int(binding["HostPort"])
                    break
        return found

    def attach(self, container: str, *, stdin: bool) -> Attached:
        """Hijack a connection carrying the container's stdio (before start, so nothing is missed)."""
        params = {"stream": 1, "stdout": 1, "stderr": 1, "stdin": int(stdin)}
        response = self._request("POST", f"/containers/{container}/attach", params=params, upgrade=True, action="attaching to the container")
        if response.status not in (101, 200):
            detail = _error_detail(response)
            response.close()
            raise EngineError(self.host, response.status, detail, action="attaching to the container")
        response.sock.settimeout(None)
        self.liveness.watch(response.sock)
        return Attached(response.sock, response.reader.take_buffered(), self.liveness.release)  # buffered bytes belong to the stream

    def start(self, container: str) -> None:
        self._call("POST", f"/containers/{container}/start", action="starting the container")

    def wait(self, container: str) -> int:
        """Block until the container stops; its exit status.

        Raises:
            EngineUnreachable: the connection broke or the engine stalled (the container may run on).
        """
        result = self._json("POST", f"/containers/{container}/wait", timeout=None, action="waiting for the container")
        return self._field(result, "StatusCode", int, "POST /containers/wait")

    def kill(self, container: str, signal_name: str) -> None:
        """Send a signal; a container that already stopped is not an error."""
        params = {"signal": signal_name}
        self._call("POST", f"/containers/{container}/kill", params=params, action="signalling the container", allowed=(404, 409))

    def resize(self, container: str, rows: int, columns: int) -> None:
        params = {"h": rows, "w": columns}
        self._call("POST", f"/containers/{container}/resize", params=params, action="resizing the terminal", allowed=(404, 409))

    def commit(self, container: str, repository: str, config: Mapping[str, Any], comment: str, *, tag: str = "latest") -> str:
        """Keep a stopped container's filesystem as image ``repository:tag``, with the run
        configuration ``config`` (the engine fills what it leaves out from the container's); its id."""
        params = {"container": container, "repo": repository, "tag": tag, "comment": comment, "pause": 0}
        committed = self._json("POST", "/commit", params=params, json_body=dict(config), timeout=None, action=f"keeping image {repository}")
        return self._field(committed, "Id", str, "POST /commit")

    def remove_container(self, container: str) -> None:
        params = {"force": 1, "v": 1}
        self._call("DELETE", f"/containers/{container}", params=params, action="removing the container", allowed=(404, 409))

    # -- images in a registry -----------------------------------------------------------

    def tag_image(self, image: str, repository: str, tag: str) -> None:
        self._call("POST", f"/images/{_quote(image)}/tag", params={"repo": repository, "tag": tag}, action=f"tagging {repository}:{tag}")

    def push(self, repository: str, tag: str, registry_auth: str) -> Iterator[dict[str, Any]]:
        """Push ``repository:tag`` (``registry_auth``: the X-Registry-Auth header); the engine's
        progress messages (one with "error" when the push failed)."""
        headers = {"X-Registry-Auth": registry_auth}
        response = self._request(
            "POST", f"/images/{_quote(repository)}/push", params={"tag": tag}, headers=headers, timeout=None, action=f"pushing {repository}:{tag}"
        )
        try:
            for line in response.lines():
                if line.strip():
                    yield self._decode(line, "POST /images/push")
        except OSError as e:
            raise self._unreachable(e) from e
        finally:
            response.close()

    # -- a swarm, through one of its managers -----------------------------------------

    def nodes(self) -> list[dict[str, Any]]:
        return self._json("GET", "/nodes", expect=list, action="listing the swarm's nodes")

    def create_secret(self, name: str, data: bytes, labels: Mapping[str, str]) -> str:
        body = {"Name": name, "Data": base64.b64encode(data).decode(), "Labels": dict(labels)}
        created = self._json("POST", "/secrets/create", json_body=body, action="creating a secret")
        return self._field(created, "ID", str, "POST /secrets/create")

    def secrets(self, labels: Iterable[str]) -> list[dict[str, Any]]:
        params = {"filters": json.dumps({"label": list(labels)})}
        return self._json("GET", "/secrets", expect=list, params=params, action="listing secrets")

    def remove_secret(self, secret: str) -> None:
        self._call("DELETE", f"/secrets/{secret}", action="removing a secret", allowed=(404,))

    def create_service(self, spec: Mapping[str, Any], registry_auth: str) -> str:
        headers = {"X-Registry-Auth": registry_auth}
        created = self._json("POST", "/services/create", json_body=dict(spec), headers=headers, action="creating the service")
        return self._field(created, "ID", str, "POST /services/create")

    def services(self, labels: Iterable[str]) -> list[dict[str, Any]]:
        params = {"filters": json.dumps({"label": list(labels)})}
        return self._json("GET", "/services", expect=list, params=params, action="listing services")

    def service(self, service: str) -> dict[str, Any] | None:
        response = self._request("GET", f"/services/{service}", action="inspecting the service", allowed=(404,))
        if response.status == 404:
            self._body(response)
            return None
        answer: dict[str, Any] = self._decode(self._body(response), "GET /services")
        return answer

    def remove_service(self, service: str) -> None:
        self._call("DELETE", f"/services/{service}", action="removing the service", allowed=(404,))

    def tasks(self, services: Iterable[str]) -> list[dict[str, Any]]:
        """The tasks of every service in ``services`` (ids), in one request."""
        wanted = list(services)
        if not wanted:
            return []  # (no service filter at all would list every task of the swarm)
        params = {"filters": json.dumps({"service": wanted})}
        return self._json("GET", "/tasks", expect=list, params=params, action="listing tasks")

    def service_logs(self, service: str, *, follow: bool) -> Generator[tuple[int, bytes], None, None]:
        """The output of the service's tasks as (stream, bytes); ``follow``: on as it comes
        (the engine never ends such a stream by itself: the caller closes it)."""
        params = {"stdout": 1, "stderr": 1, "follow": int(follow)}
        response = self._request("GET", f"/services/{service}/logs", params=params, timeout=None if follow else "default", action="reading the output")
        try:
            yield from demultiplex(response.chunks())
        except OSError as e:
            raise self._unreachable(e) from e
        finally:
            response.close()


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


def _send_chunked(sock: socket.socket, body: Iterable[bytes]) -> None:
    for chunk in body:
        if chunk:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    sock.sendall(b"0\r\n\r\n")


def _answer_if_any(sock: socket.socket) -> Response | None:
    try:
        return Response(sock)
    except OSError:
        return None


def _error_detail(response: Response) -> str:
    try:
        raw = response.read()
    except OSError:
        return response.reason
    try:
        message = json.loads(raw).get("message")
    except (ValueError, AttributeError, RecursionError):
        message = None
    return " ".join(str(message or raw.decode(errors="replace")[:300] or response.reason).split())


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


def _content_length(text: str) -> int:
    if not text.isdigit():
        raise ProtocolError(f"malformed Content-Length {text[:20]!r}")
    return int(text)


def _query(params: Mapping[str, Any] | None) -> str:
    return "?" + urllib.parse.urlencode(params) if params else ""


def _quote(reference: str) -> str:
    return urllib.parse.quote(reference, safe="")


_VERSION = re.compile(r"[0-9]{1,4}\.[0-9]{1,4}")


def _parse_version(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)


def _format_version(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def frames(attached: Attached) -> Iterator[tuple[int, bytes]]:
    """The container's multiplexed stdout/stderr stream as (stream, bytes)."""
    return demultiplex(iter(attached.recv, b""))


def mapping_of(value: object) -> dict[str, Any]:
    """``value`` when the engine's JSON gave an object there, else an empty one."""
    return value if isinstance(value, dict) else {}


def _request_bytes(method: str, url: str, headers: Mapping[str, str], json_body: Any, *, streamed: bool, upgrade: bool) -> bytes:
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
