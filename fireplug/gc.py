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

import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fireplug import console, hosts, labels
from fireplug.context import human_bytes
from fireplug.control import Hosts, keep_output_and_remove
from fireplug.engine import Engine
from fireplug.errors import FireplugError
from fireplug.execution import DockerExecutor, RunState
from fireplug.invocation import Invocation
from fireplug.locks import process_gone
from fireplug.runs import RunRecord
from fireplug.swarm import SECRET_LABEL, SwarmExecutor
from fireplug.sync.record import PairFiles
from fireplug.sync.tree import TRASH_DAYS, TRASH_FOLDER, old_batches, tree_bytes

HELPER_AGE_SECONDS = 3600  # a younger helper may belong to an fp that is running now
HERE = "this machine"
# $3 "remove": remove them first, so that what is printed is what is left (could not be removed)
TRASH_SCRIPT = f"""\
[ -d "$1" ] || exit 0
if [ "$3" = remove ]; then
  find "$1" -mindepth 3 -maxdepth 3 -path "$1/*/{TRASH_FOLDER}/*" -mtime +$2 -prune -exec rm -rf -- {{}} + 2>/dev/null
fi
find "$1" -mindepth 3 -maxdepth 3 -path "$1/*/{TRASH_FOLDER}/*" -mtime +$2 -prune -exec du -s -b -0 {{}} + 2>/dev/null
exit 0
"""


@dataclass(frozen=True)
class Garbage:
    kind: str  # run, helper, image, dangling image, trash; service, secret (a swarm's)
    handle: str  # container or image id, or a path
    name: str
    bytes: int
    why: str

    def describe(self) -> str:
        return f"{self.kind} {self.name} ({human_bytes(self.bytes)}): {self.why}"


@dataclass
class Found:
    items: list[Garbage] = field(default_factory=list)
    kept_runs: list[str] = field(default_factory=list)  # ended runs whose results did not come back

    @property
    def bytes(self) -> int:
        return sum(item.bytes for item in self.items)


def find_garbage(invocation: Invocation, peers: Hosts, *, only: str | None, keep: int) -> dict[str, Found]:
    """What each host asked (``only``, else the pool and local) and this machine could lose."""
    names = [invocation.host(only).name] if only else list(dict.fromkeys([host.name for host in invocation.inventory.pool] + ["local"]))
    records = {record.id: record for record in invocation.runs.all()}
    answers = peers.each(names, lambda executor: _on_host(invocation, peers, executor, records, keep))
    found: dict[str, Found] = {}
    for name, answer in answers.items():
        if isinstance(answer, FireplugError):
            console.warn(f"host '{name}' did not answer ({answer.message}): nothing removed there")
            continue
        found[name] = answer
        if answer.kept_runs:
            console.note(
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
    engine, freed = connection.engine, 0
    for item in found.items:
        if item.kind == "service":
            _remove_service(peers, place, item)
        elif item.kind == "secret":
            engine.remove_secret(item.handle)
        elif item.kind in ("run", "helper"):
            engine.remove_container(item.handle)
        elif item.kind in ("image", "dangling image") and not engine.remove_image(item.handle):
            console.note(f"host '{place}': kept image {item.name}: something uses it now")
            continue
        freed += item.bytes
    trash = [item for item in found.items if item.kind == "trash"]
    if trash:
        left = {path for _, path in _host_trash(connection, base_image, remove=True)} & {item.handle for item in trash}
        for path in sorted(left):
            console.warn(f"host '{place}': could not remove the old trash {path} (its files are not the ssh user's?)")
        freed += sum(item.bytes for item in trash if item.handle not in left)
    return freed


def _remove_service(peers: Hosts, place: str, item: Garbage) -> None:
    """A swarm run's service, its output kept here first (fp logs still shows it)."""
    keep_output_and_remove(peers.invocation.runs, peers.executor(place), item.handle, item.name)


def _on_host(invocation: Invocation, peers: Hosts, executor: DockerExecutor | SwarmExecutor, records: Mapping[str, RunRecord], keep: int) -> Found:
    engine = executor.engine
    found = Found()
    used = {str(container.get("ImageID", "")) for container in engine.containers([], running_only=False)}
    if isinstance(executor, SwarmExecutor):
        _ended_services(executor, found)
    else:
        _ended_runs(invocation, executor, records, found)
    _helpers(DockerExecutor(engine), found)
    sizes = engine.image_sizes()
    _old_images(engine, keep, used, sizes, found)
    _unused_layers(engine, used, sizes, found)
    _dangling(engine, used, sizes, found)
    if isinstance(executor, SwarmExecutor):
        return found  # (a swarm's runs keep no data folder on it: their data is in the bucket)
    connection = peers.connection(executor.host)
    trash = _host_trash(connection, invocation.config.build.base_image, remove=False)
    found.items += [Garbage("trash", path, path, size, f"older than {TRASH_DAYS} days") for size, path in trash]
    return found


def _ended_runs(invocation: Invocation, executor: DockerExecutor, records: Mapping[str, RunRecord], found: Found) -> None:
    for listed in executor.find([labels.kind_is("run")], running_only=False):
        if listed.running:
            continue
        state = executor.state(listed.handle) or listed
        run_id = state.labels.get(labels.RUN, "")
        if _results_came_back(invocation, executor.host, state, records.get(run_id)):
            size = _container_bytes(executor.engine, state.handle)
            found.items.append(Garbage("run", state.handle, f"{run_id or state.name}", size, f"ended (exit {state.exit_code}), its results came back"))
        elif state.ended:
            found.kept_runs.append(run_id or state.name)


def _ended_services(executor: SwarmExecutor, found: Found) -> None:
    """A swarm run's ended service: its results stay in the bucket (fp pull ID brings them), its
    output is kept here when it goes; and the job secrets whose service is gone."""
    runs = set()
    services = executor.find([labels.kind_is("run")], running_only=False) + executor.find([labels.kind_is("sweep")], running_only=False)
    for state in services:  # (a map's sweep: its run label is the map's id, as its secret's)
        run_id = state.labels.get(labels.RUN, "")
        runs.add(run_id)
        if state.ended:
            found.items.append(Garbage("service", state.handle, run_id or state.name, 0, f"ended (exit {state.exit_code}); its results stay in the bucket"))
    for secret in executor.engine.secrets([SECRET_LABEL]):
        run_id = str(((secret.get("Spec") or {}).get("Labels") or {}).get(SECRET_LABEL, ""))
        if run_id not in runs:
            found.items.append(Garbage("secret", str(secret.get("ID", "")), f"of run {run_id}", 0, "a run's job secret, whose service is gone"))


def _results_came_back(invocation: Invocation, host: str, state: RunState, record: RunRecord | None) -> bool:
    """Whether this machine brought the run's results back after it ended: `fp pull` said so,
    or the project's last sync with the host came after the run's end."""
    if record is not None and record.pulled is not None:
        return True
    if state.finished_at is None:
        return False
    key = state.labels.get(labels.PROJECT_KEY, "")
    try:
        synced = PairFiles.of(invocation.state, key, host).record.stat().st_mtime
    except OSError:
        return False
    return bool(key) and synced > state.finished_at


def _helpers(executor: DockerExecutor, found: Found) -> None:
    now = time.time()
    for kind in ("sync", "lookup", "deps-build"):
        for state in executor.find([labels.kind_is(kind)], running_only=False):
            if not state.running and state.started_at is not None and now - state.started_at > HELPER_AGE_SECONDS:
                found.items.append(Garbage("helper", state.handle, state.name, 0, f"a {kind} helper an interrupted fp left"))
    for state in executor.find([labels.kind_is("anchor")], running_only=False):
        map_id = state.labels.get(labels.MAP, "")
        runs_on = executor.find([labels.kind_is("run"), f"{labels.MAP}={map_id}"]) if map_id else []
        if process_gone(state.labels.get(labels.OWNER, "")) and not runs_on:
            found.items.append(Garbage("helper", state.handle, state.name, 0, f"the network anchor of map {map_id}, whose fp ended"))


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
        recent = time.time() - int(layer.get("Created") or 0) < HELPER_AGE_SECONDS  # type: ignore[call-overload]
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


def _container_bytes(engine: Engine, container: str) -> int:
    inspected = engine.inspect_container(container, size=True) or {}
    size = inspected.get("SizeRw")
    return size if isinstance(size, int) and not isinstance(size, bool) else 0


def _host_trash(connection: hosts.Connection, base_image: str, *, remove: bool) -> list[tuple[int, str]]:
    """(bytes, path) of each old trash batch under the host's data root; ``remove``: remove them,
    and say which could not be."""
    host = connection.host
    if host.local:
        return []
    if connection.shell is not None:
        words = ["sh", "-c", TRASH_SCRIPT, "sh", host.data_root, str(TRASH_DAYS), "remove" if remove else "list"]
        completed = connection.shell.run(words, what="looking for old trash", timeout=600)
        return _parse_sizes(completed.stdout, b"\0", b"\t")
    from fireplug.build import ensure_base
    from fireplug.sync.api import MOUNT, ApiHost

    base = ensure_base(connection.engine, base_image, verbose=False)
    helper = ApiHost(connection.engine, base.tag, {}, host.data_root, ".")
    output = helper.run_helper(["trash", MOUNT, str(TRASH_DAYS), *(["remove"] if remove else [])])
    inside = _parse_sizes(output, b"\n", b" ")
    return [(size, host.data_root + path[len(MOUNT) :]) for size, path in inside]


def _parse_sizes(output: bytes, separator: bytes, between: bytes) -> list[tuple[int, str]]:
    found = []
    for item in output.split(separator):
        size, _, path = item.partition(between)
        if size.strip().isdigit() and path:
            found.append((int(size), os.fsdecode(path)))
    return found


def _local_trash(trash: Path) -> list[Garbage]:
    """Local trash batches (``<state>/trash/KEY/HOST/BATCH``) older than TRASH_DAYS."""
    found = []
    for pair in sorted(trash.glob("*/*")):
        for batch in old_batches(str(pair), TRASH_DAYS):
            found.append(Garbage("trash", batch, batch, tree_bytes(batch), f"older than {TRASH_DAYS} days"))
    return found
