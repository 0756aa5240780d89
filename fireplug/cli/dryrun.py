"""`fp --dry-run`: what a run would send and do, in words (it builds, sends and runs nothing)."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from fireplug.backends import backend_for
from fireplug.cli.reports import first_few
from fireplug.image.base import base_image_tag, record_file, remembered_digest
from fireplug.image.build import generated_recipe, own_recipe
from fireplug.image.ready import declared_dependencies, layer_dependencies, project_limit, scan
from fireplug.run.pipeline import choose_host
from fireplug.run.request import container_spec
from fireplug.support.units import human_bytes
from fireplug.sync.preview import preview
from fireplug.sync.project import local_data_folder, pull_scope
from fireplug.sync.record import PairFiles
from fireplug.sync.side import SyncRequest

if TYPE_CHECKING:
    from fireplug.config import Config
    from fireplug.hosts.inventory import Host
    from fireplug.image.build import Recipe
    from fireplug.image.deps import Dependencies
    from fireplug.invocation import Invocation
    from fireplug.run.request import RunRequest


def dry_run_report(invocation: Invocation, request: RunRequest) -> list[str]:
    """What a run would send and do, for `fp --dry-run`: it probes the pool as a run would
    (to name the host and why), and builds, sends and runs nothing."""
    config, local = invocation.config, invocation.local
    own = own_recipe(config)
    context = scan(config, local, own, full=True, limit=None if request.yes else project_limit(config))
    base_tag = base_image_tag(config.build.base_image, remembered_digest(record_file(local.environ, local.home)))
    host, why = choose_host(invocation, request)
    backend = backend_for(host)
    spec = container_spec(config, request, local, backend.placement(invocation, host), "(run id)", image="(one-time image)")
    route = backend.data_words(invocation, host)
    lines = [
        "fp dry run: nothing is built, sent or run.",
        f"project   {config.project.name} at {config.root}",
        f"context   {context.file_count} files, {human_bytes(context.total_bytes)} (content hash {context.digest[:16]})",
    ]
    lines += [f"  largest {human_bytes(entry.size):>9}  {entry.path}" for entry in context.largest()]
    lines += [f"warning   {warning}" for warning in context.size_warnings()]
    lines.append(f"left out  {len(context.exclusions)} paths:")
    for exclusion in context.exclusions:
        shown = exclusion.path + ("/" if exclusion.is_dir else "")
        lines.append(f"  {shown:<40} {exclusion.reason}")
    deps = layer_dependencies(config, own)
    lines += dependency_lines(config, deps, own)
    chosen = own or generated_recipe(config, "fp-deps-<hash> (on each host)" if deps else base_tag)
    source = f"the project's {own.name}" if own else f"generated, on fp's base image {base_tag}"
    lines.append(f"recipe    {source}:")
    lines += [f"  {line}" for line in chosen.text.splitlines()]
    lines += data_plan(invocation, request, host) if route is not None else []
    mounts = ", ".join(f"{mount.source} -> {mount.target}" for mount in spec.mounts)
    where = "mounted in place" if route is None else f"synced there {route}"
    picked = f" (chosen: {why})" if why else ""
    lines += [
        f"host      {host.name} ({host.url}); data {where}{picked}",
        f"command   {shlex.join(request.command)}",
        f"  in {spec.workdir} as {spec.user or 'the image user (root)'}; data: {mounts}",
        f"  environment: {', '.join(name for name, _ in spec.env)}",
    ]
    return lines


def dependency_lines(config: Config, deps: Dependencies | None, own: Recipe | None) -> list[str]:
    """The dry run's words on the dependency layer: what was found, and the hash of its inputs."""
    if own is not None and not own.needs_base:
        declared = declared_dependencies(config)
        return [f"deps      {declared}: left to the project's {own.name} (it does not build FROM ${{FP_BASE}})"] if declared else []
    if deps is None:
        return ["deps      none (no requirements.txt, pyproject.toml dependencies or [build] pip/apt)"]
    lines = [f"deps      {deps.summary()}; layer inputs hash {deps.inputs_digest()[:16]} (image fp-deps-<hash with the base image id>)"]
    lines += [f"  file    {name}" for name, _ in deps.files]
    lines += [f"  pip     {setting}" for setting in deps.index.redacted()]
    lines += [f"  network {deps.network}"] if deps.network else []
    lines += [f"  note    {note}" for note in deps.notes]
    return lines


def data_plan(invocation: Invocation, request: RunRequest, host: Host) -> list[str]:
    """The dry run's data lines: what the sync in would send, against the host as the last sync left it."""
    config = invocation.config
    if not request.steps.sync_in or not local_data_folder(config).is_dir():
        return []
    pair = PairFiles.of(invocation.state, config.project.key, host.name)
    request_ = SyncRequest(local=local_data_folder(config), pair=pair, host_name=host.name, pull_scope=pull_scope(config))
    found = preview(request_)
    plan = found.plan
    against = (
        f"first sync with host '{host.name}'" if found.first else f"against host '{host.name}' as the last sync left it; it is listed again when the run syncs"
    )
    lines = [
        f"data      {config.project.data}/: {found.local_files} files, {human_bytes(found.local_bytes)}; in: "
        f"{len(plan.push)} entries ({human_bytes(found.push_bytes)}) to send, {len(plan.host_trash)} deleted here to move to the host's trash ({against})",
        f"  back: what the run changes under {', '.join(config.project.result_folders)}/ (and any other change on the host, after the run)",
    ]
    if plan.conflicts or plan.pull:
        lines.append(f"  also: {len(plan.pull)} entries to bring back, {len(plan.conflicts)} conflicts")
    if plan.outside_links:
        lines.append(f"warning   symlinks pointing outside the data folder (dangling on the host): {first_few(plan.outside_links)}")
    if plan.unsyncable:
        lines.append(f"warning   not files, folders or symlinks, never synced: {first_few(plan.unsyncable)}")
    return lines
