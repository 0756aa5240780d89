"""The engine API of a swarm manager: nodes, secrets, services, their tasks and logs."""

from __future__ import annotations

import base64
import json
from collections.abc import Generator, Iterable, Mapping
from typing import Any

from fireplug.hosts.engine.client import EngineClient
from fireplug.hosts.engine.wire import demultiplex


class ServiceApi(EngineClient):
    """A swarm on the engine (its manager)."""

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
