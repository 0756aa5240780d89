"""Where runs execute: one backend per kind of host, found by ``backend_for``.

The registry (``KINDS``) maps a host's ``kind`` (``[hosts.NAME] kind``) to the class serving
it, imported only when a host of that kind is used (a run on the local engine never imports the
swarm's), and to the few traits the settings, the inventory and `fp hosts add` read without
importing it. A new kind is one folder here and one entry below.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

from fireplug.errors import BackendError

if TYPE_CHECKING:
    from fireplug.backends.base import Backend
    from fireplug.hosts.inventory import Host


class Kind:
    """What fp knows of a kind of host without importing its backend (a plain class: this module
    is on every run's path)."""

    __slots__ = ("backend", "pooled", "required", "sees_local_files", "url_scheme")

    def __init__(
        self, backend: str, *, sees_local_files: bool = True, pooled: bool = True, url_scheme: str = "", required: Mapping[str, tuple[str, str]] | None = None
    ) -> None:
        self.backend = backend  # "module:Class" of the backend serving it
        self.sees_local_files = sees_local_files  # a unix:// engine of this kind runs on this machine's files
        self.pooled = pooled  # in fp's pool of idle hosts unless its [hosts.NAME] says otherwise
        self.url_scheme = url_scheme  # `fp hosts add NAME SCHEME://[user@]host`: an ssh:// host of this kind
        self.required = required or {}  # a setting its table must hold -> (why, the hint when missing)


KINDS = {
    "docker": Kind("fireplug.backends.docker:DockerBackend"),
    "swarm": Kind(
        "fireplug.backends.swarm:SwarmBackend",
        sees_local_files=False,  # (its nodes do not)
        pooled=False,  # (a run there is a deliberate choice)
        url_scheme="swarm",
        required={"registry": ("its nodes pull one-time images from a registry", 'add registry = "registry.example:5000/team"')},
    ),
}
DEFAULT_KIND = "docker"


def kind_of(name: str) -> Kind:
    """The kind ``name`` ("" for the default); an unknown one has the default's traits (the
    settings refuse it, and ``backend_for`` says so)."""
    return KINDS.get(name or DEFAULT_KIND) or KINDS[DEFAULT_KIND]


def kind_of_url_scheme(scheme: str) -> str:
    """The kind whose `fp hosts add` alias ``scheme`` is ("" for none)."""
    return next((name for name, kind in KINDS.items() if kind.url_scheme and kind.url_scheme == scheme), "")


def backend_for(host: Host) -> Backend:
    """The backend serving ``host``.

    Raises:
        BackendError: no backend serves its kind.
    """
    kind = KINDS.get(host.kind)
    if kind is None:
        raise BackendError(f"host '{host.name}' is of kind {host.kind!r}, which this fp cannot run on", hint=f"kinds: {', '.join(KINDS)}")
    module, _, name = kind.backend.partition(":")
    backend: Backend = getattr(importlib.import_module(module), name)()
    return backend
