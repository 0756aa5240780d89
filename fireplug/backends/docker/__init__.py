"""Runs as containers on one Docker engine: the local engine, or a remote one reached over ssh,
TLS (docker-machine) or a unix socket. The transports stay behind ``hosts.connect``
(``connector_for``, ``SshConnection``); the data moves with rsync, the Docker API or a bucket.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from fireplug.backends.docker.executor import DockerExecutor
from fireplug.backends.docker.place import DockerPlace, data_on_host, elapsed, fit_to_host, make_host_side
from fireplug.image.build import own_recipe, project_dockerfile
from fireplug.image.ready import project_limit, ready_image, scan
from fireplug.run.options import has_gpus
from fireplug.run.records import new_id
from fireplug.run.request import Placement, container_spec, in_image_workdir
from fireplug.support import labels
from fireplug.support.units import human_bytes
from fireplug.sync.project import ensure_data_folder, local_data_folder, sync_data

if TYPE_CHECKING:
    from fireplug.backends.base import Found, Garbage, Pulling, Reading
    from fireplug.hosts import Connection
    from fireplug.hosts.engine import Engine
    from fireplug.hosts.inventory import Host
    from fireplug.invocation import Invocation
    from fireplug.run.records import RunRecord
    from fireplug.run.request import RunRequest, Steps
    from fireplug.sync.s3 import Store


class DockerBackend:
    kind = "docker"

    def prepare(self, invocation: Invocation, request: RunRequest, host: Host, started: float) -> DockerPlace:
        """Connect to ``host``, check the container options against it, and make the image to run
        (built as needed) with the command checked to be in it: all before any data moves."""
        from fireplug.support import events

        config, local = invocation.config, invocation.local
        store = staging_store(invocation, host, request.steps)
        own = own_recipe(config) if request.steps.build else None
        context = scan(config, local, own, limit=None if request.yes else project_limit(config)) if request.steps.build else None
        if context is not None:
            how = "unchanged files known from the last scan" if context.from_record else "scanned"
            events.detail(f"context: {context.file_count} files, {human_bytes(context.total_bytes)}, hash {context.digest[:12]}, {how} ({elapsed(started)})")
        connection = invocation.connect(host)
        placement = self.placement(invocation, host)
        if connection.shell is not None and not host.local:  # files written there must stay the ssh user's, for rsync
            placement = replace(placement, owner=connection.shell.identity())
        spec = container_spec(config, request, local, placement, new_id())
        if request.steps.run:
            spec = fit_to_host(spec, connection)
        image = ready_image(connection.engine, invocation, request, own, context, spec)
        if image is not None and project_dockerfile(config) and not config.project.workdir:
            spec = in_image_workdir(spec, config, local, connection.engine.image_config(image.id))
        return DockerPlace(invocation, request, connection, replace(spec, image=image.tag if image else ""), started, store)

    def connect(self, invocation: Invocation, host: Host, *, timeout: float) -> Connection:
        return invocation.connect(host, timeout=timeout)

    def executor(self, invocation: Invocation, connection: Connection) -> DockerExecutor:
        return DockerExecutor(connection.engine)

    def pull(self, pulling: Pulling) -> None:
        project = pulling.project
        ensure_data_folder(local_data_folder(project.config))
        host_side = make_host_side(pulling.connection, project.config, locks=project.locks)
        sync_data(project, host_side, push=False)
        for handle, record in pulling.ended:
            pulling.done_with(handle, record)

    def garbage(self, invocation: Invocation, connection: Connection, records: Mapping[str, RunRecord], keep: int) -> Found:
        from fireplug.backends.base import Found, Garbage
        from fireplug.backends.docker.garbage import TRASH_DAYS, ended_runs, helpers, host_trash

        found = Found()
        executor = DockerExecutor(connection.engine)
        ended_runs(invocation, executor, records, found)
        helpers(executor, found)
        trash = host_trash(connection, invocation.config.build.base_image, remove=False)
        found.items += [Garbage("trash", path, path, size, f"older than {TRASH_DAYS} days") for size, path in trash]
        return found

    def remove_garbage(self, invocation: Invocation, connection: Connection, item: Garbage) -> bool:
        return False  # (its kinds are the engine's: containers, images, trash)

    def trash_left(self, connection: Connection, base_image: str) -> list[tuple[int, str]]:
        from fireplug.backends.docker.garbage import host_trash

        return host_trash(connection, base_image, remove=True)

    def read(self, connection: Connection, info: Mapping[str, Any], local_folder: str | None, timeout: float) -> Reading:
        jobs = running_jobs(connection.engine)
        free = free_space(connection, local_folder, timeout) if local_folder is not None else None
        from fireplug.backends.base import Reading

        return Reading(cpus=int(info.get("NCPU") or 0), memory=int(info.get("MemTotal") or 0), jobs=jobs, gpus=has_gpus(info), free_bytes=free)

    def data_words(self, invocation: Invocation, host: Host) -> str | None:
        if host.local:
            return None
        mode = invocation.config.sync.mode
        if mode == "s3":
            return f"through {invocation.config.sync.s3}"
        return "with rsync over ssh" if host.ssh and mode != "api" else "through the Docker API"

    def placement(self, invocation: Invocation, host: Host) -> Placement:
        local = invocation.local
        return Placement(data_on_host(host, invocation.config), (local.uid, local.gid) if host.local else None)


def staging_store(invocation: Invocation, host: Host, steps: Steps) -> Store | None:
    """With ``--sync s3`` and a remote host, the bucket, checked before anything is built.

    Raises:
        S3Error: no credentials, no such bucket, or access denied.
    """
    from fireplug.support import events

    config = invocation.config
    if config.sync.mode != "s3" or not (steps.sync_in or steps.sync_out):
        return None
    if host.local:
        events.note(f"host 'local' uses the data folder in place: {config.sync.s3} is not used")
        return None
    from fireplug.sync.s3 import Store

    store = Store.for_project(config, invocation.state)
    store.check()
    return store


def running_jobs(engine: Engine) -> frozenset[str]:
    """The fp runs going on ``engine``: each as the fp process that started it (or its container)."""
    found = engine.containers([labels.kind_is("run")])
    return frozenset(str((container.get("Labels") or {}).get(labels.OWNER) or container.get("Id", "")) for container in found)


def free_space(connection: Connection, local_folder: str, timeout: float) -> int | None:
    """Free bytes where the host keeps fp's data (its data root; here: the local folder)."""
    if connection.host.local:
        import shutil

        return shutil.disk_usage(local_folder).free
    if connection.shell is None:
        return None  # only the Docker API reaches this host
    script = 'd="$1"; while [ ! -e "$d" ]; do d=$(dirname "$d"); done; df -Pk "$d"'
    completed = connection.shell.run(["sh", "-c", script, "sh", connection.host.data_root], what="df", timeout=timeout)
    return parse_df_available(completed.stdout.decode(errors="replace")) if completed.returncode == 0 else None


def parse_df_available(output: str) -> int | None:
    """Available bytes from `df -Pk` output (POSIX format: the 4th field, in KiB)."""
    lines = output.strip().splitlines()
    if len(lines) < 2:
        return None
    fields = lines[-1].split()
    return int(fields[3]) * 1024 if len(fields) >= 4 and fields[3].isdigit() else None
