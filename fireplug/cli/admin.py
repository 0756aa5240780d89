"""fp's own verbs about projects and hosts: init, base, hosts, s3."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

from fireplug import hosts
from fireplug.backends import kind_of, kind_of_url_scheme
from fireplug.cli import console
from fireplug.cli.parsers import MAX_PROBE_TIMEOUT, base_parser, hosts_parser, init_parser, s3_parser
from fireplug.cli.process import load_invocation, local_side
from fireplug.cli.render import verbose_from
from fireplug.config import scaffold, user_config_path
from fireplug.config import user as userconfig
from fireplug.errors import UsageError
from fireplug.hosts.inventory import LOCAL
from fireplug.image.base import ensure_base, record_file
from fireplug.invocation import LocalSide
from fireplug.support.units import human_bytes

if TYPE_CHECKING:
    from fireplug.sync import s3


def init(words: list[str], args: argparse.Namespace) -> int:
    """fp init: fireplug.toml and .dockerignore here, asking for what is not given on a terminal."""
    options = init_parser().parse_args(words)
    folder = Path(os.getcwd())
    interactive = not options.yes and sys.stdin.isatty()
    given = {"name": options.name, "data": options.data, "results": options.results, "base_image": options.base_image}
    answers = scaffold.ask_missing(scaffold.default_answers(folder), given, _ask if interactive else None)
    result = scaffold.init_project(folder, answers)
    for path in result.written:
        console.note(f"wrote {path}")
    for path in result.kept:
        console.note(f"kept the existing {path} (fp init never overwrites)")
    return 0


def _ask(question: str, default: str) -> str:
    answer = input(f"{question} [{default}]: ").strip()
    return answer or default


def base(words: list[str], args: argparse.Namespace) -> int:
    """fp base build: fp's base image on a host, now."""
    options = base_parser().parse_args(words)
    verbose_from(options)
    invocation = load_invocation(project_optional=True)
    engine = invocation.connect(invocation.host(options.host or args.host or LOCAL)).engine
    local = invocation.local
    image = ensure_base(engine, invocation.config.build.base_image, rebuild=options.rebuild, record=record_file(local.environ, local.home))
    state = "built" if image.built else "already present"
    console.note(f"base image {image.tag} ({image.id[:19]}) {state} on host '{engine.host}'")
    return 0


def s3_verb(words: list[str], args: argparse.Namespace) -> int:
    """fp s3 ls / gc: what the project staged in its bucket, and its clean-up."""
    from fireplug.sync import s3

    options = s3_parser().parse_args(words)
    invocation = load_invocation(sync=args.sync)
    config = invocation.config
    if not config.sync.s3:
        raise UsageError(
            "this project stages nothing in S3", hint='set s3 = "s3://bucket/prefix" in [sync] of fireplug.toml, or pass --sync s3://bucket/prefix'
        )
    store = s3.Store.for_project(config, invocation.state)
    if options.action == "ls":
        sides = s3.staged_sides(store)
        console.print_table(("SIDE", "FILES", "SIZE", "STAGED", "MANIFEST"), [_staged_row(side) for side in sides])
        if not sides:
            console.note(f"nothing staged for this project in {store.staging.url} yet")
        return 0
    if options.min_age < 0:
        raise UsageError(f"--min-age {options.min_age:g}: expected a number of seconds, 0 or more")
    garbage = s3.find_garbage(store, options.min_age)
    if garbage.recent:
        console.note(f"spared {garbage.recent} unreachable objects younger than --min-age {options.min_age:g} s (a push may be under way)")
    if not (garbage.objects or garbage.manifests or garbage.uploads or garbage.map_keys):
        console.note(f"nothing to remove in {store.staging.url}")
        return 0
    what = f"{len(garbage.objects)} objects ({human_bytes(garbage.object_bytes)}), {len(garbage.manifests)} old manifests, "
    what += f"{len(garbage.uploads)} unfinished uploads and {len(garbage.map_keys)} keys of ended maps from {store.staging.url}"
    if options.dry_run:
        console.note(f"would remove {what}")
        return 0
    console.note(f"removing {what}")
    s3.remove_garbage(store, garbage)
    return 0


def _staged_row(side: s3.StagedSide) -> tuple[str, ...]:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(side.at)) if side.at else "-"
    return (side.side, str(side.files), human_bytes(side.total_bytes), when, side.manifest.rsplit("/", 1)[-1][:12])


def _add_host(options: argparse.Namespace, local: LocalSide) -> int:
    """fp hosts add NAME URL: the host in the user's config file (a URL of a kind's own scheme
    is an ssh:// host of that kind)."""
    scheme, _, rest = options.url.partition("://")
    aliased = kind_of_url_scheme(scheme)
    url = f"ssh://{rest}" if aliased else options.url
    kind = options.kind or aliased
    _check_new_host(options.name, url)
    for setting, (why, _) in kind_of(kind).required.items():
        if not getattr(options, setting, None):
            raise UsageError(f"host '{options.name}' is a {kind}: {why}: add --{setting.replace('_', '-')} to fp hosts add {options.name}")
    key, cert_path = (_absolute(local, given) for given in (options.key, options.cert_path))
    values = {"url": url, "kind": kind, "ssh_key": key, "data_root": options.data_root, "cert_path": cert_path}
    values |= {"ssh_user": options.ssh_user, "registry": options.registry}
    path = user_config_path(local.environ, local.home)
    userconfig.add_host(path, options.name, {name: value for name, value in values.items() if value})
    console.note(f"added host '{options.name}' to {path}")
    if url.startswith("tcp://") and not cert_path:
        console.warn(f"host '{options.name}' has no --cert-path: its engine is reached without TLS, unencrypted and unauthenticated")
    return 0


def hosts_verb(words: list[str], args: argparse.Namespace) -> int:
    """fp hosts [add|rm]: list every host with its state, or edit the user's config."""
    options = hosts_parser().parse_args(words)
    local = local_side()
    if options.action == "add":
        return _add_host(options, local)
    if options.action == "rm":
        path = user_config_path(local.environ, local.home)
        userconfig.remove_host(path, options.name)
        console.note(f"removed host '{options.name}' from {path}")
        return 0
    if not 0 < options.timeout <= MAX_PROBE_TIMEOUT:
        raise UsageError(f"--timeout {options.timeout:g}: expected a number of seconds above 0, at most {MAX_PROBE_TIMEOUT}")
    invocation = load_invocation(project_optional=True, connect_timeout=options.timeout)
    probes = hosts.probe_all(invocation.inventory.hosts, invocation.settings, timeout=options.timeout, local_folder=str(invocation.local.cwd))
    if options.json:
        print(json.dumps([found.as_json() for found in probes], indent=2), flush=True)
    else:
        console.print_table(HOST_COLUMNS, [row for found in probes for row in (_host_row(found), *_node_rows(found))])
    return 0


def _node_rows(found: hosts.Probe) -> list[tuple[str, ...]]:
    """A swarm's nodes, under its row."""
    return [
        (
            f"  node {node.hostname}",
            "",
            node.role,
            node.id[:12],
            node.state,
            node.version,
            f"{node.cpus:g}",
            human_bytes(node.memory),
            node.gpus or "-",
            str(node.tasks),
            "",
        )
        for node in found.nodes
    ]


HOST_COLUMNS = ("NAME", "POOL", "SOURCE", "URL", "STATE", "ENGINE", "CPUS", "MEMORY", "GPUS", "FP JOBS", "FREE DISK")


def _host_row(found: hosts.Probe) -> tuple[str, ...]:
    pool = "yes" if found.host.pool else "-"
    if not found.reachable:
        return (found.host.name, pool, found.host.source, found.host.url, f"unreachable: {found.reason}", "", "", "", "", "", "")
    free = human_bytes(found.free_bytes) if found.free_bytes is not None else "-"
    return (
        found.host.name,
        pool,
        found.host.source,
        found.host.url,
        "reachable",
        found.version,
        str(found.cpus),
        human_bytes(found.memory),
        "nvidia" if found.gpus else "-",
        str(found.running_jobs),
        free,
    )


def _absolute(local: LocalSide, path: str | None) -> str:
    """A path given on the command line, made absolute (the config is read from other folders)."""
    return str((local.cwd / Path(path).expanduser()).resolve()) if path else ""


def _check_new_host(name: str, url: str) -> None:
    if name == LOCAL:
        raise UsageError("'local' is reserved for the local engine")
    if not url.startswith(("ssh://", "tcp://", "unix://")):
        raise UsageError(f"{url!r} is not an engine URL", hint="use ssh://user@host[:port], tcp://host:port or unix:///path")
    if not url.startswith("unix://"):
        parts = urllib.parse.urlsplit(url)
        try:
            port = parts.port  # None when not given; raises on a port out of range or not a number
        except ValueError:
            port = 0
        if port == 0:
            raise UsageError(f"{url!r}: the port is not a number from 1 to 65535")
        if not parts.hostname:
            raise UsageError(f"{url!r} names no host", hint="use ssh://user@host[:port] or tcp://host:port")
