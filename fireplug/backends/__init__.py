"""Where runs execute: one backend per kind of host, found by ``backend_for``.

The registry maps a host's ``kind`` (``[hosts.NAME] kind``) to the class serving it, imported
only when a host of that kind is used (a run on the local engine never imports the swarm's).
A new kind is one folder here and one line below.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from fireplug.errors import BackendError

if TYPE_CHECKING:
    from fireplug.backends.base import Backend
    from fireplug.hosts.inventory import Host

REGISTRY = {
    "docker": "fireplug.backends.docker:DockerBackend",
    "swarm": "fireplug.backends.swarm:SwarmBackend",
}
# What a kind's [hosts.NAME] table must hold, and why (checked when the settings are read,
# without importing the backend): setting -> the hint when it is missing.
REQUIRED_SETTINGS = {
    "swarm": {"registry": ("its nodes pull one-time images from a registry", 'add registry = "registry.example:5000/team"')},
}


def backend_for(host: Host) -> Backend:
    """The backend serving ``host``.

    Raises:
        BackendError: no backend serves its kind.
    """
    where = REGISTRY.get(host.kind)
    if where is None:
        raise BackendError(f"host '{host.name}' is of kind {host.kind!r}, which this fp cannot run on", hint=f"kinds: {', '.join(REGISTRY)}")
    module, _, name = where.partition(":")
    backend: Backend = getattr(importlib.import_module(module), name)()
    return backend
