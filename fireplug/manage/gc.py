"""`fp gc`: what fp left on hosts and no longer needs, found, said, then removed.

Per host:
- ended runs whose results came back: the run's record here says it was pulled, or this
  machine synced that project with that host after the run ended. An ended run whose results
  did not come back is kept (and named), and a running one is never touched;
- fp's helper containers (sync helpers, command lookups) that a killed fp left, an hour old,
  and the network anchors of maps whose fp ended and whose runs all ended;
- one-time images of each project beyond the newest ``keep``, never one a container uses;
- dependency layers (fp-deps-<hash>) that no one-time image left is built on;
- dangling images that are fp's (its label, or built on an image that has it: an old base
  image after `fp base build --rebuild`, steps of a failed build on fp's base);
- trash batches older than their limit (TRASH_DAYS), of every project under the host's data
  root (a sync prunes only its own project's).
And here, the local trash batches past that limit.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from pathlib import Path

from fireplug.backends import backend_for
from fireplug.backends.base import HELPER_AGE_SECONDS, Found, Garbage
from fireplug.errors import FireplugError
from fireplug.hosts import Connection
from fireplug.hosts.engine import Engine
from fireplug.invocation import Invocation
from fireplug.manage.control import Hosts
from fireplug.run.records import RunRecord
from fireplug.support import events, labels
from fireplug.sync.tree import TRASH_DAYS, old_batches, tree_bytes

HERE = "this machine"


def find_garbage(invocation: Invocation, peers: Hosts, *, only: str | None, keep: int) -> dict[str, Found]:
    """What each host asked (``only``, else the pool and local) and this machine could lose."""
    names = [invocation.host(only).name] if only else list(dict.fromkeys([host.name for host in invocation.inventory.pool] + ["local"]))
    records = {record.id: record for record in invocation.runs.all()}
    answers = peers.each(names, lambda executor: _on_host(invocation, peers.connection(executor.host), records, keep))
    found: dict[str, Found] = {}
    for name, answer in answers.items():
        if isinstance(answer, FireplugError):
            events.warn(f"host '{name}' did not answer ({answer.message}): nothing removed there")
            continue
        found[name] = answer
        if answer.kept_runs:
            events.note(
                f"host '{name}': kept {len(answer.kept_runs)} ended runs whose results were not brought back (fp pull ID): {', '.join(answer.kept_runs[:5])}"
            )
    if not only:
        found[HERE] = Found(_local_trash(invocation.state / "trash"))
    return found


def remove_garbage(peers: Hosts, place: str, found: Found, base_image: str) -> int:
    """Remove what ``find_garbage`` found at ``place``; the bytes freed (what could be removed).

    Raises:
        FireplugError: the host failed (what was removed stays removed).
    """
    if place == HERE:
        for item in found.items:
            shutil.rmtree(item.handle, ignore_errors=True)
        return found.bytes
    connection = peers.connection(place)
    backend = backend_for(connection.host)
    engine, freed = connection.engine, 0
    for item in found.items:
        if item.kind == "trash":
            continue  # (all at once, below)
        if backend.remove_garbage(peers.invocation, connection, item):
            pass  # one of the backend's own kinds (a swarm's services and secrets)
        elif item.kind in ("run", "helper"):
            engine.remove_container(item.handle)
        elif item.kind in ("image", "dangling image") and not engine.remove_image(item.handle):
            events.note(f"host '{place}': kept image {item.name}: something uses it now")
            continue
        freed += item.bytes
    trash = [item for item in found.items if item.kind == "trash"]
    if trash:
        left = {path for _, path in backend.trash_left(connection, base_image)} & {item.handle for item in trash}
        for path in sorted(left):
            events.warn(f"host '{place}': could not remove the old trash {path} (its files are not the ssh user's?)")
        freed += sum(item.bytes for item in trash if item.handle not in left)
    return freed


def _on_host(invocation: Invocation, connection: Connection, records: Mapping[str, RunRecord], keep: int) -> Found:
    engine = connection.engine
    used = {str(container.get("ImageID", "")) for container in engine.containers([], running_only=False)}
    found = backend_for(connection.host).garbage(invocation, connection, records, keep)
    trash = [item for item in found.items if item.kind == "trash"]
    found.items = [item for item in found.items if item.kind != "trash"]
    sizes = engine.image_sizes()
    _old_images(engine, keep, used, sizes, found)
    _unused_layers(engine, used, sizes, found)
    _dangling(engine, used, sizes, found)
    found.items += trash
    return found


def _old_images(engine: Engine, keep: int, used: set[str], sizes: Mapping[str, int], found: Found) -> None:
    by_project: dict[str, list[dict[str, object]]] = {}
    for image in engine.images([labels.kind_is("project")], dangling=False):
        by_project.setdefault(str((image.get("Labels") or {}).get(labels.PROJECT_KEY, "")), []).append(image)
    for project, images in by_project.items():
        if len(images) <= keep:
            continue
        newest_first = sorted(images, key=lambda image: engine.image_created(str(image.get("Id", ""))), reverse=True)
        for image in newest_first[keep:]:
            image_id = str(image.get("Id", ""))
            if image_id in used:
                continue
            tags = image.get("RepoTags") or [image_id[:19]]
            name = str(tags[0]) if isinstance(tags, list) and tags else image_id[:19]
            found.items.append(Garbage("image", image_id, name, sizes.get(image_id, 0), f"{project}: older than its newest {keep}"))


def _unused_layers(engine: Engine, used: set[str], sizes: Mapping[str, int], found: Found) -> None:
    """Dependency layers no one-time image that stays is built on (an hour old: a build may be
    about to use a fresh one)."""
    leaving = {item.handle for item in found.items if item.kind == "image"}
    kept = engine.images([labels.kind_is("project")], dangling=False)
    wanted = {str((image.get("Labels") or {}).get(labels.DEPS, "")) for image in kept if image.get("Id") not in leaving}
    for layer in engine.images([labels.kind_is("deps")], dangling=False):
        image_id, tags = str(layer.get("Id", "")), [str(tag).removesuffix(":latest") for tag in layer.get("RepoTags") or []]
        recent = time.time() - int(layer.get("Created") or 0) < HELPER_AGE_SECONDS
        if image_id in used or recent or wanted.intersection(tags):
            continue
        name = tags[0] if tags else image_id[7:19]
        found.items.append(Garbage("image", image_id, name, sizes.get(image_id, 0), "a dependency layer no kept image is built on"))


def _dangling(engine: Engine, used: set[str], sizes: Mapping[str, int], found: Found) -> None:
    fps = {str(image.get("Id", "")) for image in engine.images([labels.KIND])}
    for image in engine.images([], dangling=True):
        image_id, parent = str(image.get("Id", "")), str(image.get("ParentId") or "")
        if image_id in used or not (image_id in fps or parent in fps):
            continue
        found.items.append(
            Garbage("dangling image", image_id, image_id[7:19], sizes.get(image_id, 0), "untagged, fp's (an old base image or a failed build's step)")
        )


def _local_trash(trash: Path) -> list[Garbage]:
    """Local trash batches (``<state>/trash/KEY/HOST/BATCH``) older than TRASH_DAYS."""
    found = []
    for pair in sorted(trash.glob("*/*")):
        for batch in old_batches(str(pair), TRASH_DAYS):
            found.append(Garbage("trash", batch, batch, tree_bytes(batch), f"older than {TRASH_DAYS} days"))
    return found
