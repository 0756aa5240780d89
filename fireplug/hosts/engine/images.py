"""The engine API on images: inspect, build, list, tag, push, remove."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from fireplug.hosts.engine.client import EngineClient, engine_time
from fireplug.hosts.engine.wire import quote


class ImageApi(EngineClient):
    """Images on the engine."""

    def _inspect_image(self, reference: str) -> dict[str, Any] | None:
        response = self._request("GET", f"/images/{quote(reference)}/json", action=f"inspecting image {reference}", allowed=(404,))
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
        answer = self._json("GET", f"/images/{quote(reference)}/json", action=f"inspecting image {reference}")
        config = answer.get("Config")
        return config if isinstance(config, dict) else {}

    def image_created(self, reference: str) -> float:
        """When the image was made, to the nanosecond (the image list's Created is in whole
        seconds); 0 for an image gone meanwhile."""
        answer = self._inspect_image(reference) or {}
        return engine_time(str(answer.get("Created") or "")) or 0.0

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
        response = self._request("DELETE", f"/images/{quote(image)}", action="removing an image", allowed=(404, 409))
        self._body(response)
        return response.status not in (404, 409)

    def tag_image(self, image: str, repository: str, tag: str) -> None:
        self._call("POST", f"/images/{quote(image)}/tag", params={"repo": repository, "tag": tag}, action=f"tagging {repository}:{tag}")

    def push(self, repository: str, tag: str, registry_auth: str) -> Iterator[dict[str, Any]]:
        """Push ``repository:tag`` (``registry_auth``: the X-Registry-Auth header); the engine's
        progress messages (one with "error" when the push failed)."""
        headers = {"X-Registry-Auth": registry_auth}
        response = self._request(
            "POST", f"/images/{quote(repository)}/push", params={"tag": tag}, headers=headers, timeout=None, action=f"pushing {repository}:{tag}"
        )
        try:
            for line in response.lines():
                if line.strip():
                    yield self._decode(line, "POST /images/push")
        except OSError as e:
            raise self._unreachable(e) from e
        finally:
            response.close()
