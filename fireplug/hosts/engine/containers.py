"""The engine API on containers: create, attach, start, wait, signal, archives, logs, commit, remove."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Generator, Iterable, Mapping
from typing import Any

from fireplug.errors import EngineError
from fireplug.hosts.engine.client import EngineClient, engine_time
from fireplug.hosts.engine.wire import Attached, demultiplex, error_detail


class ContainerApi(EngineClient):
    """Containers on the engine."""

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
            detail = error_detail(response)
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
