"""One `fp COMMAND`: choose the host -> prepare it (its backend makes the image available) ->
sync in -> run -> sync out, as the request's steps say. Where the run executes is its
backend's business (``backends/``): nothing here knows a kind of host.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from fireplug import hosts
from fireplug.backends import backend_for
from fireplug.errors import ConnectionLost
from fireplug.image.scancache import cache_dir
from fireplug.run.request import container_options, resolve_env
from fireplug.support import events
from fireplug.support.locks import Leases
from fireplug.support.signals import ignore_late_signals
from fireplug.support.state import last_host

if TYPE_CHECKING:
    from pathlib import Path

    from fireplug.backends.base import Place
    from fireplug.hosts.inventory import Host
    from fireplug.invocation import Invocation
    from fireplug.run.request import RunRequest


def run(invocation: Invocation, request: RunRequest) -> int:
    """Build, sync in, run ``request.command``, sync out (as the request's steps say).

    Returns the command's exit status (0 when it was not asked to run).

    Raises:
        FireplugError: any failure of fp itself (host, engine, build, sync, configuration).
    """
    started = time.perf_counter()
    config = invocation.config
    resolve_env([*config.run.env, *request.env], invocation.local.environ)  # usage errors first, before any host is probed
    container_options(config, request)  # and a container option docker would refuse
    leases = Leases(invocation.state / "leases")
    host, why = choose_host(invocation, request, leases=leases)
    if why:
        events.note(f"host '{host.name}' ({why})")
    invocation.open_soon(host)  # while the backend is imported and the project scanned
    try:
        place = backend_for(host).prepare(invocation, request, host, started)
        return drive(place, request)
    finally:
        leases.release(host.name)


def drive(place: Place, request: RunRequest) -> int:
    """The steps on a prepared place; the command's exit status (0 when it did not run). The
    results come back however the run ended, except when it never started or its place was
    lost (syncing then would bring back half its results)."""
    steps = request.steps
    if steps.sync_in:
        place.sync_in()
    elif steps.run:
        place.ready_for_run()
    if not steps.run:
        if steps.sync_out:
            place.collect_left()
        return 0
    if request.detach:
        place.start_detached()
        return 0
    status: int | None = None
    ran = True
    try:
        status = place.run(last_step=not steps.sync_out)
    except (ConnectionLost, KeyboardInterrupt):
        ran = False
        raise
    finally:
        if steps.sync_out and ran:
            place.sync_out(status)
            ignore_late_signals()
    return status


def choose_host(invocation: Invocation, request: RunRequest, *, leases: Leases | None = None) -> tuple[Host, str]:
    """The host to run on, and why in words ("" when --host named it, or when fp runs here
    because the pool is empty and -v was not given).

    In order: --host, FP_HOST, ``[pool] default_host``; then, for a request that builds
    nothing (--sync-out-only, --no-build), the host this project last ran on (its results and
    its image are there); else an idle host of the pool, or local when the pool is empty.
    """
    config, local, inventory = invocation.config, invocation.local, invocation.inventory
    state = invocation.state
    wanted, why = request.host, ""
    if wanted is None and local.environ.get("FP_HOST"):
        wanted, why = local.environ["FP_HOST"], "FP_HOST"
    elif wanted is None and config.pool.default_host:
        wanted, why = config.pool.default_host, "default_host in [pool]"
    elif wanted is None and not request.steps.build:
        wanted, why = last_host(state, config.project.key), "where this project last ran; --host picks another"
    choice = hosts.Choice(
        leases=leases,
        holds_data=lambda name: _holds_data(state, config.project.key, name),
        memory=hosts.UnreachableMemory(cache_dir(local.environ, local.home).parent / "unreachable-hosts.json"),
    )
    host, chosen_why = hosts.choose(wanted, inventory, invocation.settings, choice=choice)
    if wanted is None:
        return host, chosen_why if inventory.pool or request.verbose else ""
    return host, why


def _holds_data(state: Path, project_key: str, host: str) -> bool:
    """Whether the project's data was synced with ``host`` (its sync record exists)."""
    from fireplug.sync.record import PairFiles

    return PairFiles.of(state, project_key, host).record.exists()
