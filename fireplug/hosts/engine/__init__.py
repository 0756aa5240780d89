"""A small Docker Engine API client built on the standard library.

fp talks to engines directly rather than through docker-py's ``APIClient``: importing
docker-py costs 0.15-0.25 s of start-up (requests, urllib3, charset detection) on every run,
and its ssh transport needs paramiko. The API calls fp makes are few and stable.
Socket and HTTP errors are translated into fp's errors here, once.

The client is one class of mixins over ``client.EngineClient`` (the request and its errors):
``containers``, ``images``, ``services`` (a swarm manager's); ``wire`` is the HTTP underneath.
"""

from __future__ import annotations

from fireplug.hosts.engine.client import CLIENT_API_VERSION, DEFAULT_TIMEOUT, MIN_API_VERSION, engine_time, mapping_of
from fireplug.hosts.engine.containers import ContainerApi
from fireplug.hosts.engine.images import ImageApi
from fireplug.hosts.engine.services import ServiceApi
from fireplug.hosts.engine.wire import Attached, ProtocolError, Response, demultiplex, describe_socket_error, frames

__all__ = [
    "CLIENT_API_VERSION",
    "DEFAULT_TIMEOUT",
    "MIN_API_VERSION",
    "Attached",
    "Engine",
    "ProtocolError",
    "Response",
    "demultiplex",
    "describe_socket_error",
    "engine_time",
    "frames",
    "mapping_of",
]


class Engine(ContainerApi, ImageApi, ServiceApi):
    """One Docker engine, addressed by URL, named after the fp host it belongs to.

    Raises (every method):
        EngineUnreachable: the engine cannot be reached or the connection broke.
        EngineError: the engine refused the request.
    """
