"""The `fp` command line: fp's own options, then the user's command, passed through untouched.

This is the only module that prints errors and chooses exit codes: the command's own status
passes through unchanged; fp's failures exit 125; usage errors 2; interruptions 128 + signal.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

from fireplug import __version__, console, hosts, job, scaffold, userconfig
from fireplug.build import ensure_base
from fireplug.config import Config, discover, user_config_path
from fireplug.context import human_bytes
from fireplug.errors import EXIT_USAGE, BuildError, FireplugError, Interrupted, UsageError
from fireplug.inventory import LOCAL, load_inventory
from fireplug.job import LocalSide
from fireplug.run import Stdio
from fireplug.ssh import SshSettings
from fireplug.sync import SyncInterrupted

if TYPE_CHECKING:
    from fireplug.sync import s3

SUBCOMMANDS = ("init", "base", "hosts", "s3")
GC_MIN_AGE_SECONDS = 3600  # fp s3 gc spares what is younger: a push from elsewhere may be under way

DESCRIPTION = """\
Run COMMAND in a container on a Docker host as if it ran here: the project's code is
built into a one-time image (rebuilt only when it changes), the data folder is mounted at
the same relative path, output streams live, and fp exits with the command's exit code.
On a remote host the data folder is copied there first (rsync over ssh, incremental) and
the results come back afterwards, also when the command failed or was interrupted.
Everything after fp's own options is the command, untouched; put -- first when the
command itself is called init, base or hosts (`fp -- init`)."""

EPILOG = """\
subcommands:
  fp init [--name N] [--data DIR] [--results DIR...] [--base-image IMG] [--yes]
                        write fireplug.toml and .dockerignore (never overwrites)
  fp base build [--host H] [--rebuild]
                        build fp's base image on a host (fp does it on first use)
  fp hosts [--json] [--timeout S]
                        list hosts: source, URL, reachable or why not, CPUs, memory, jobs, disk
  fp hosts add NAME URL [--key PATH] [--data-root DIR] [--cert-path DIR]
                        add a host to your config (URL: ssh://user@host[:port] or tcp://host:port)
  fp hosts rm NAME      remove a host from your config
  fp s3 ls              what the project has staged in its bucket (--sync s3), per side
  fp s3 gc [--dry-run]  remove objects no side's manifest names, after saying how much

choosing a host:
  --host NAME, else FP_HOST, else [pool] default_host; else a host of the pool: the
  least loaded (fp jobs per CPU, counting the hosts other fp processes here just chose),
  preferring one that holds this project's data; local when the pool is empty. The pool:
  hosts in fp's config and docker-machine machines; Docker contexts only with
  `pool = true` in their [hosts.NAME]; or exactly the hosts of `[pool] hosts = [...]`.

exit status:
  the command's own   when it ran (137 when it was killed)
  125                 fp itself failed (unknown or unreachable host, ssh, engine, build, sync, config)
  2                   bad usage
  130                 interrupted (Ctrl-C) before the command could report a status
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fp",
        usage="fp [options] [--] COMMAND [ARG...]\n       fp {init,base,hosts} ...",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fp {__version__}")
    parser.add_argument("--host", metavar="NAME", help="the Docker host to run on (default: an idle remote host, else local; see below)")
    parser.add_argument("-e", "--env", action="append", default=[], metavar="NAME[=VALUE]", help="pass an environment variable (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="show what would be sent (files, bytes, exclusions) and do nothing")
    parser.add_argument(
        "-y", "--yes", action="store_true", help="ship a folder without fireplug.toml even when its code passes 1 GB or 100,000 files (else refused)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show each step (ssh, rsync and docker argv, secrets redacted), with timings")
    container = parser.add_argument_group("container options (docker's names and values; also [run] settings)")
    container.add_argument("--shm-size", metavar="SIZE", help="size of /dev/shm (default: half the memory the container may use, at most 8g)")
    container.add_argument("--memory", metavar="SIZE", help="memory limit, e.g. 16g")
    container.add_argument("--cpus", metavar="N", help="CPU limit, e.g. 4 or 1.5")
    container.add_argument("--gpus", metavar="GPUS", help="GPUs to use: all, a number, or device=ID[,ID] (needs the NVIDIA runtime on the host)")
    container.add_argument(
        "-p", "--publish", action="append", default=[], metavar="[IP:]PORT:CPORT", help="publish a container port; on an ssh host, forwarded to this machine"
    )
    container.add_argument("--network", metavar="NAME", help="the container's network: bridge (default), host, none or a network's name")
    steps = parser.add_argument_group("steps (build, sync in, run, sync out)")
    steps.add_argument("--no-build", action="store_true", help="run the project's newest image on the host without rebuilding")
    steps.add_argument("--no-sync", action="store_true", help="neither copy data to the host nor bring results back")
    steps.add_argument("--sync-in-only", action="store_true", help="only copy the data folder to the host")
    steps.add_argument("--sync-out-only", action="store_true", help="only bring the results back from the host")
    steps.add_argument("--no-run", action="store_true", help="build and copy the data, but do not run")
    steps.add_argument(
        "--sync",
        metavar="MODE",
        help="how data reaches a remote host: rsync (over ssh), api (the Docker API), s3 (through the bucket of [sync] s3) "
        "or s3://BUCKET/PREFIX; default: [sync] mode, else rsync when the host has ssh, else api",
    )
    steps.add_argument("--full-sync", action="store_true", help="compare the content of every data file on both sides, whatever sizes and times say")
    steps.add_argument(
        "--accept-deletions", action="store_true", help="repeat here even a mass deletion on the host (by default that is taken for lost data and sent again)"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def hosts_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fp hosts", description="List, add and remove Docker hosts.")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.add_argument("--timeout", type=float, default=hosts.DEFAULT_PROBE_TIMEOUT, metavar="S", help="seconds to wait for each host (in parallel)")
    actions = parser.add_subparsers(dest="action", metavar="{add,rm}")
    add = actions.add_parser("add", help="add a host to your config file")
    add.add_argument("name")
    add.add_argument("url", help="ssh://[user@]host[:port], or tcp://host:port with --cert-path")
    add.add_argument("--key", help="ssh private key")
    add.add_argument("--data-root", help="folder on the host holding projects' data (default: /data)")
    add.add_argument("--cert-path", help="folder with ca.pem, cert.pem, key.pem for a TLS tcp:// engine")
    add.add_argument("--ssh-user", help="ssh user for rsync to a tcp:// host")
    remove = actions.add_parser("rm", help="remove a host from your config file")
    remove.add_argument("name")
    return parser


def init_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fp init", description="Write fireplug.toml and .dockerignore here; existing files are kept.")
    parser.add_argument("--name", help="project name (default: this folder's name)")
    parser.add_argument("--data", help="data folder (default: data)")
    parser.add_argument("--results", nargs="*", metavar="DIR", help="folders inside the data folder that come back after a run (default: all of it)")
    parser.add_argument("--base-image", help="image fp's base image is built FROM (default: debian:bookworm-slim)")
    parser.add_argument("-y", "--yes", action="store_true", help="accept defaults for everything not given, without asking")
    return parser


def base_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fp base", description="Manage fp's base image.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="build")
    build = actions.add_parser("build", help="build the base image on a host (fp also does it on first use)")
    build.add_argument("--host", metavar="NAME", help="the Docker host (default: local)")
    build.add_argument("--rebuild", action="store_true", help="build again without the engine's cache (picks up Debian updates)")
    build.add_argument("-v", "--verbose", action="store_true", help="show the build's output")
    return parser


def s3_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fp s3", description="What the project has staged in S3 (--sync s3), and its clean-up.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="{ls,gc}")
    actions.add_parser("ls", help="each side's last staged manifest: files, bytes, when")
    gc = actions.add_parser("gc", help="remove objects and manifests no side's ref reaches, and unfinished uploads")
    gc.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    gc.add_argument(
        "--min-age", type=float, default=GC_MIN_AGE_SECONDS, metavar="S", help="spare what is younger than S seconds (a push may be under way; default 3600)"
    )
    return parser


MAX_PROBE_TIMEOUT = 3600


def entry() -> NoReturn:
    """The `fp` program: ``main`` in a process of its own, which ends with fp's own status."""
    sys.exit(main(final=True))


def main(argv: Sequence[str] | None = None, *, final: bool = False) -> int:
    """Run fp with ``argv`` (default: sys.argv[1:]); returns the exit status.

    ``final``: the process ends with this status, so signals that come once it is known (a
    late Ctrl-C) are ignored rather than turned into a traceback or a death by signal.
    """
    try:
        args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
        command, explicit = _split_command(args.command)
        if args.sync_in_only or args.sync_out_only:
            if command:
                flag = "--sync-in-only" if args.sync_in_only else "--sync-out-only"
                console.error(f"{flag} runs no command, but one was given ({command[0]} ...): drop {flag}, or the command")
                return EXIT_USAGE
            return _guarded(_run_command, command, args, final=final)
        if not command and args.no_run:
            return _guarded(_run_command, command, args, final=final)
        if not command:
            build_parser().print_usage(sys.stderr)
            console.error("no command given: try `fp python script.py`, or `fp --help`")
            return EXIT_USAGE
        if command[0] in SUBCOMMANDS and not explicit:
            return _guarded(_subcommand, command, args, final=final)
    except SystemExit as e:  # argparse: --help, --version, or a usage error
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    return _guarded(_run_command, command, args, final=final)


def _split_command(words: list[str]) -> tuple[list[str], bool]:
    """The user's command, and whether it followed an explicit ``--``."""
    if words[:1] == ["--"]:
        return words[1:], True
    return words, False


def _guarded(action: Callable[[list[str], argparse.Namespace], int], command: list[str], args: argparse.Namespace, *, final: bool = False) -> int:
    """Run ``action``, turning fp's failures and interruptions into a message and an exit status."""
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = {signum: signal.signal(signum, _interrupt) for signum in (signal.SIGTERM, signal.SIGHUP)} if on_main_thread else {}
    if on_main_thread and (sigint := signal.getsignal(signal.SIGINT)) is not None:
        previous[signal.SIGINT] = sigint  # the run may leave it ignored
    try:
        return action(command, args)
    except FireplugError as e:
        _report(e)
        return e.exit_code
    except KeyboardInterrupt as e:
        signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
        console.note(f"interrupted ({signal.Signals(signum).name}); {_what_was_left(e)}")
        return 128 + signum
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_IGN if final else handler)


def _what_was_left(interruption: KeyboardInterrupt) -> str:
    if isinstance(interruption, SyncInterrupted):
        where = f"--host {interruption.host}"
        return (
            f"syncing data with host '{interruption.host}' stopped {interruption.story}; nothing is left running "
            f"and no file is half-written; `fp {where} --sync-out-only` (or --sync-in-only) finishes the sync"
        )
    if isinstance(interruption, Interrupted) and interruption.left:
        return interruption.left
    return "nothing was left running"


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


def _report(error: FireplugError) -> None:
    if isinstance(error, BuildError) and error.output_tail:
        console.plain("\n".join(f"  | {line}" for line in error.output_tail))
    console.error(str(error))


def _local_side() -> LocalSide:
    stdin = _open_fd(0)
    if stdin is not None and os.isatty(stdin) and not in_foreground(stdin):
        stdin = None  # a background job (`fp cmd &`) reading the terminal would be stopped (SIGTTIN)
    return LocalSide(
        cwd=Path(os.getcwd()),
        environ=dict(os.environ),
        home=Path.home(),
        uid=os.getuid(),
        gid=os.getgid(),
        stdio=Stdio(stdin=stdin, stdout=1, stderr=2),
        stdin_is_terminal=stdin is not None and os.isatty(stdin),
        stdout_is_terminal=os.isatty(1),
    )


def in_foreground(terminal_fd: int) -> bool:
    """Whether this process is in the foreground process group of the terminal ``terminal_fd``."""
    try:
        return os.tcgetpgrp(terminal_fd) == os.getpgrp()
    except OSError:
        return False


def _open_fd(fd: int) -> int | None:
    try:
        os.fstat(fd)
    except OSError:
        return None
    return fd


def _load_config(local: LocalSide, *, project_optional: bool = False, sync: str | None = None) -> Config:
    return discover(local.cwd, local.environ, local.home, _sync_override(sync), project_optional=project_optional)


def _sync_override(given: str | None) -> dict[str, dict[str, str]]:
    """``--sync MODE`` or ``--sync s3://bucket/prefix`` as a [sync] override."""
    if not given:
        return {}
    if given.startswith("s3://"):
        return {"sync": {"mode": "s3", "s3": given}}
    return {"sync": {"mode": given}}


def _run_command(command: list[str], args: argparse.Namespace) -> int:
    local = _local_side()
    config = _load_config(local, sync=args.sync)
    steps = job.Steps.from_flags(
        no_build=args.no_build, no_sync=args.no_sync, sync_in_only=args.sync_in_only, sync_out_only=args.sync_out_only, no_run=args.no_run
    )
    if steps.run and not command:
        raise UsageError("no command given", hint="--no-run, --sync-in-only and --sync-out-only are the ones that need none")
    request = job.RunRequest(
        command=tuple(command),
        env=tuple(args.env),
        host=args.host,
        dry_run=args.dry_run,
        verbose=args.verbose,
        steps=steps,
        full_sync=args.full_sync,
        accept_deletions=args.accept_deletions,
        container=_container_flags(args),
        yes=args.yes,
    )
    if args.dry_run:
        print("\n".join(job.dry_run_report(config, request, local)), flush=True)
        return 0
    return job.run(config, request, local)


def _container_flags(args: argparse.Namespace) -> dict[str, object]:
    """The container options given on the command line (they win over [run] settings)."""
    given: dict[str, object] = {key: getattr(args, key) for key in ("shm_size", "memory", "cpus", "gpus", "network") if getattr(args, key)}
    if args.publish:
        given["publish"] = list(args.publish)
    return given


def _subcommand(command: list[str], args: argparse.Namespace) -> int:
    if command[0] == "init":
        return _init(init_parser().parse_args(command[1:]))
    if command[0] == "hosts":
        return _hosts(hosts_parser().parse_args(command[1:]))
    if command[0] == "s3":
        return _s3(s3_parser().parse_args(command[1:]), args)
    options = base_parser().parse_args(command[1:])
    return _base_build(options.host or args.host, rebuild=options.rebuild, verbose=options.verbose or args.verbose)


def _init(options: argparse.Namespace) -> int:
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


def _base_build(host_name: str | None, *, rebuild: bool, verbose: bool) -> int:
    local = _local_side()
    config = _load_config(local, project_optional=True)
    inventory = load_inventory(config, local.environ, local.home)
    settings = SshSettings.from_env(local.environ, local.uid)
    engine = hosts.connect(hosts.resolve(host_name or LOCAL, inventory), settings, verbose=verbose).engine
    image = ensure_base(engine, config.build.base_image, verbose=verbose, rebuild=rebuild)
    state = "built" if image.built else "already present"
    console.note(f"base image {image.tag} ({image.id[:19]}) {state} on host '{engine.host}'")
    return 0


def _s3(options: argparse.Namespace, args: argparse.Namespace) -> int:
    from fireplug.sync import s3

    local = _local_side()
    config = _load_config(local, sync=args.sync)
    if not config.sync.s3:
        raise UsageError(
            "this project stages nothing in S3", hint='set s3 = "s3://bucket/prefix" in [sync] of fireplug.toml, or pass --sync s3://bucket/prefix'
        )
    store = s3.Store(s3.Staging.of(config.sync, config.project.key, job.state_home(local.environ, local.home)))
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
    if not (garbage.objects or garbage.manifests or garbage.uploads):
        console.note(f"nothing to remove in {store.staging.url}")
        return 0
    what = f"{len(garbage.objects)} objects ({human_bytes(garbage.object_bytes)}), {len(garbage.manifests)} old manifests"
    what += f" and {len(garbage.uploads)} unfinished uploads from {store.staging.url}"
    if options.dry_run:
        console.note(f"would remove {what}")
        return 0
    console.note(f"removing {what}")
    s3.remove_garbage(store, garbage)
    return 0


def _staged_row(side: s3.StagedSide) -> tuple[str, ...]:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(side.at)) if side.at else "-"
    return (side.side, str(side.files), human_bytes(side.total_bytes), when, side.manifest.rsplit("/", 1)[-1][:12])


def _hosts(options: argparse.Namespace) -> int:
    local = _local_side()
    if options.action == "add":
        _check_new_host(options.name, options.url)
        key, cert_path = (_absolute(local, given) for given in (options.key, options.cert_path))
        values = {"url": options.url, "ssh_key": key, "data_root": options.data_root, "cert_path": cert_path, "ssh_user": options.ssh_user}
        path = user_config_path(local.environ, local.home)
        userconfig.add_host(path, options.name, {name: value for name, value in values.items() if value})
        console.note(f"added host '{options.name}' to {path}")
        if options.url.startswith("tcp://") and not cert_path:
            console.warn(f"host '{options.name}' has no --cert-path: its engine is reached without TLS, unencrypted and unauthenticated")
        return 0
    if options.action == "rm":
        path = user_config_path(local.environ, local.home)
        userconfig.remove_host(path, options.name)
        console.note(f"removed host '{options.name}' from {path}")
        return 0
    if not 0 < options.timeout <= MAX_PROBE_TIMEOUT:
        raise UsageError(f"--timeout {options.timeout:g}: expected a number of seconds above 0, at most {MAX_PROBE_TIMEOUT}")
    config = _load_config(local, project_optional=True)
    inventory = load_inventory(config, local.environ, local.home)
    settings = SshSettings.from_env(local.environ, local.uid, connect_timeout=options.timeout)
    probes = hosts.probe_all(inventory.hosts, settings, timeout=options.timeout, local_folder=str(local.cwd))
    if options.json:
        print(json.dumps([found.as_json() for found in probes], indent=2), flush=True)
    else:
        console.print_table(HOST_COLUMNS, [_host_row(found) for found in probes])
    for problem in inventory.problems:
        console.warn(problem)
    return 0


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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
