"""fp's command lines: the main one (fp's options, then the user's command, untouched) and each verb's."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import NoReturn

from fireplug import __version__, hosts
from fireplug.backends import KINDS
from fireplug.errors import UsageError

GC_MIN_AGE_SECONDS = 3600  # fp s3 gc spares what is younger: a push from elsewhere may be under way

MAX_PROBE_TIMEOUT = 3600

DESCRIPTION = """\
Run COMMAND in a container on a Docker host as if it ran here: the project's code is
built into a one-time image (rebuilt only when it changes), the data folder is mounted at
the same relative path, output streams live, and fp exits with the command's exit code.
On a remote host the data folder is copied there first (rsync over ssh, incremental) and
the results come back afterwards, also when the command failed or was interrupted.
Everything after fp's own options is the command, untouched; put -- first when the
command itself is called like one of fp's verbs (init, base, hosts, s3, map, ps, logs,
pull, stop, gc): `fp -- ps aux` runs ps, `fp ps` lists fp's runs."""

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

many runs, and runs after their start:
  fp map -p NAME=V1,V2 [-p ...] [--hosts A,B] [--per-host N|auto] [--retries K] -- COMMAND {NAME} ...
  fp map --args-file FILE -- COMMAND {1} {2} ...
                        one run per combination (per line), spread over hosts; see fp map --help
  fp -d COMMAND         start COMMAND and return (the last word printed is the run id)
  fp ps [--all] [--host H] [--json]
                        runs across hosts: id, host, project, parameters, state, times, exit code
  fp logs [-f] ID       a run's output (ID: a run id, a map id, a unique prefix or its 6 hex digits)
  fp pull ID            bring a run's results back (every run of a map id); an ended run is removed
  fp stop [-t S] ID     SIGINT, then kill after S seconds (default 10)
  fp gc [--host H] [--keep N] [--dry-run]
                        remove fp's leftovers on hosts: pulled runs, old images, old trash

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


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written, as wide as the terminal. argparse makes a formatter for every
    option it adds and reads the width through shutil, whose import (with bz2 and lzma) would
    cost every run 2 ms for a help text it seldom prints; the width is read the same way here."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position, width if width is not None else terminal_columns() - 2)


def terminal_columns() -> int:
    """As shutil.get_terminal_size: $COLUMNS, else standard output's terminal, else 80."""
    with contextlib.suppress(ValueError):
        if int(os.environ.get("COLUMNS", "0")) > 0:
            return int(os.environ["COLUMNS"])
    stream = sys.__stdout__
    try:
        columns = os.get_terminal_size(stream.fileno()).columns if stream is not None else 0
    except (AttributeError, ValueError, OSError):  # no terminal, or no such descriptor
        columns = 0
    return columns or 80


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fp",
        usage="fp [options] [--] COMMAND [ARG...]\n       fp {init,base,hosts,s3,map,ps,logs,pull,stop,gc} ...",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fp {__version__}")
    parser.add_argument("--host", metavar="NAME", help="the Docker host to run on (default: an idle remote host, else local; see below)")
    add_run_options(parser)
    parser.add_argument("--dry-run", action="store_true", help="show what would be sent (files, bytes, exclusions) and do nothing")
    parser.add_argument(
        "-d", "--detach", action="store_true", help="start the command and return: fp logs, fp pull and fp stop follow it (the last word printed is its id)"
    )
    add_container_options(parser, publish=True)
    steps = parser.add_argument_group("steps (build, sync in, run, sync out)")
    add_step_options(steps)
    steps.add_argument("--sync-in-only", action="store_true", help="only copy the data folder to the host")
    steps.add_argument("--sync-out-only", action="store_true", help="only bring the results back from the host")
    steps.add_argument("--no-run", action="store_true", help="build and copy the data, but do not run")
    steps.add_argument(
        "--accept-deletions", action="store_true", help="repeat here even a mass deletion on the host (by default that is taken for lost data and sent again)"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """What every run takes: environment, size limits, verbosity (fp's main options, and fp map's)."""
    parser.add_argument("-e", "--env", action="append", default=[], metavar="NAME[=VALUE]", help="pass an environment variable (repeatable)")
    parser.add_argument(
        "-y", "--yes", action="store_true", help="ship a folder without fireplug.toml even when its code passes 1 GB or 100,000 files (else refused)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show each step (ssh, rsync and docker argv, secrets redacted), with timings")


def add_container_options(parser: argparse.ArgumentParser, *, publish: bool) -> None:
    container = parser.add_argument_group("container options (docker's names and values; also [run] settings)")
    container.add_argument("--shm-size", metavar="SIZE", help="size of /dev/shm (default: half the memory the container may use, at most 8g)")
    container.add_argument("--memory", metavar="SIZE", help="memory limit, e.g. 16g")
    container.add_argument("--cpus", metavar="N", help="CPU limit, e.g. 4 or 1.5")
    container.add_argument("--gpus", metavar="GPUS", help="GPUs to use: all, a number, or device=ID[,ID] (needs the NVIDIA runtime on the host)")
    if publish:
        container.add_argument(
            "-p",
            "--publish",
            action="append",
            default=[],
            metavar="[IP:]PORT:CPORT",
            help="publish a container port; on an ssh host, forwarded to this machine",
        )
    container.add_argument("--network", metavar="NAME", help="the container's network: bridge (default), host, none or a network's name")


def add_step_options(steps: argparse._ArgumentGroup) -> None:
    steps.add_argument("--no-build", action="store_true", help="run the project's newest image on the host without rebuilding")
    steps.add_argument("--no-sync", action="store_true", help="neither copy data to the host nor bring results back")
    steps.add_argument(
        "--sync",
        metavar="MODE",
        help="how data reaches a remote host: rsync (over ssh), api (the Docker API), s3 (through the bucket of [sync] s3) "
        "or s3://BUCKET/PREFIX; default: [sync] mode, else rsync when the host has ssh, else api",
    )
    steps.add_argument("--full-sync", action="store_true", help="compare the content of every data file on both sides, whatever sizes and times say")


class VerbParser(argparse.ArgumentParser):
    """A verb's parser: a usage error is a UsageError that says how to run a command of that
    name instead (`fp -- ps aux`)."""

    def error(self, message: str) -> NoReturn:
        verb = self.prog.split()[1] if len(self.prog.split()) > 1 else self.prog
        raise UsageError(f"{self.prog}: {message}", hint=f"to run a command called {verb} in a container instead, put -- first: fp -- {verb} ...")


def verb_parser(verb: str, description: str) -> VerbParser:
    return VerbParser(prog=f"fp {verb}", description=description, formatter_class=HelpFormatter)


def hosts_parser() -> argparse.ArgumentParser:
    parser = verb_parser("hosts", "List, add and remove Docker hosts.")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.add_argument("--timeout", type=float, default=hosts.DEFAULT_PROBE_TIMEOUT, metavar="S", help="seconds to wait for each host (in parallel)")
    actions = parser.add_subparsers(dest="action", metavar="{add,rm}")
    add = actions.add_parser("add", help="add a host to your config file")
    add.add_argument("name")
    own_schemes = ", ".join(f"{kind.url_scheme}://[user@]host[:port] for a {name}" for name, kind in KINDS.items() if kind.url_scheme)
    add.add_argument("url", help=f"ssh://[user@]host[:port], or tcp://host:port with --cert-path; {own_schemes}")
    add.add_argument("--key", help="ssh private key")
    add.add_argument("--data-root", help="folder on the host holding projects' data (default: /data)")
    add.add_argument("--cert-path", help="folder with ca.pem, cert.pem, key.pem for a TLS tcp:// engine")
    add.add_argument("--ssh-user", help="ssh user for rsync to a tcp:// host")
    add.add_argument("--kind", choices=tuple(KINDS), help="which kind of place runs there (swarm: the engine is a swarm manager, runs become its services)")
    add.add_argument("--registry", help="where one-time images go for a swarm's nodes to pull, e.g. registry.example:5000/team")
    remove = actions.add_parser("rm", help="remove a host from your config file")
    remove.add_argument("name")
    return parser


def init_parser() -> argparse.ArgumentParser:
    parser = verb_parser("init", "Write fireplug.toml and .dockerignore here; existing files are kept.")
    parser.add_argument("--name", help="project name (default: this folder's name)")
    parser.add_argument("--data", help="data folder (default: data)")
    parser.add_argument("--results", nargs="*", metavar="DIR", help="folders inside the data folder that come back after a run (default: all of it)")
    parser.add_argument("--base-image", help="image fp's base image is built FROM (default: debian:bookworm-slim)")
    parser.add_argument("-y", "--yes", action="store_true", help="accept defaults for everything not given, without asking")
    return parser


def base_parser() -> argparse.ArgumentParser:
    parser = verb_parser("base", "Manage fp's base image.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="build")
    build = actions.add_parser("build", help="build the base image on a host (fp also does it on first use)")
    build.add_argument("--host", metavar="NAME", help="the Docker host (default: local)")
    build.add_argument("--rebuild", action="store_true", help="build again without the engine's cache (picks up Debian updates)")
    build.add_argument("-v", "--verbose", action="store_true", help="show the build's output")
    return parser


def s3_parser() -> argparse.ArgumentParser:
    parser = verb_parser("s3", "What the project has staged in S3 (--sync s3), and its clean-up.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="{ls,gc}")
    actions.add_parser("ls", help="each side's last staged manifest: files, bytes, when")
    gc = actions.add_parser("gc", help="remove objects and manifests no side's ref reaches, and unfinished uploads")
    gc.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    gc.add_argument(
        "--min-age", type=float, default=GC_MIN_AGE_SECONDS, metavar="S", help="spare what is younger than S seconds (a push may be under way; default 3600)"
    )
    return parser


STOP_GRACE_SECONDS = 10.0
GC_KEEP_IMAGES = 3


def ps_parser() -> argparse.ArgumentParser:
    parser = verb_parser("ps", "fp's runs across hosts (the pool, local, and every host this machine started a run on).")
    parser.add_argument("-a", "--all", action="store_true", help="also runs that ended, and those whose container is gone")
    parser.add_argument("--host", metavar="NAME", help="only this host (any known host, in the pool or not)")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    return parser


def logs_parser() -> argparse.ArgumentParser:
    parser = verb_parser("logs", "A run's output: from its container, or what fp kept once the container was removed.")
    parser.add_argument("-f", "--follow", action="store_true", help="go on until the run ends")
    parser.add_argument("--host", metavar="NAME", help="look for the run on this host only")
    parser.add_argument("id", metavar="ID", help="a run id, a map id (all its runs), a unique prefix, or the six hex digits at its end")
    return parser


def pull_parser() -> argparse.ArgumentParser:
    parser = verb_parser("pull", "Bring a run's results back (only changes made on the host travel), then remove it if it ended.")
    parser.add_argument("--host", metavar="NAME", help="look for the run on this host only")
    parser.add_argument("-v", "--verbose", action="store_true", help="show each step")
    parser.add_argument("id", metavar="ID", help="a run id, or a map id for every run of the map")
    return parser


def stop_parser() -> argparse.ArgumentParser:
    parser = verb_parser("stop", "Stop a run (or every run of a map): SIGINT, then SIGKILL after a grace time, like docker stop.")
    parser.add_argument("-t", "--time", type=float, default=STOP_GRACE_SECONDS, metavar="S", help="seconds to wait after SIGINT (default 10)")
    parser.add_argument("--host", metavar="NAME", help="look for the run on this host only")
    parser.add_argument("id", metavar="ID")
    return parser


def gc_parser() -> argparse.ArgumentParser:
    parser = verb_parser("gc", "Remove what fp left on hosts and is no longer needed; says what, and the bytes freed.")
    parser.add_argument("--host", metavar="NAME", help="only this host (default: the pool and local)")
    parser.add_argument("--keep", type=int, default=GC_KEEP_IMAGES, metavar="N", help="one-time images kept per project and host, newest first (default 3)")
    parser.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    return parser


MAP_EPILOG = """\
placeholders:
  {NAME}    a -p parameter's value; with --args-file, {1} {2} ... its tab-separated columns, {} the line
            (replaced inside the command's words, never through a shell; one naming nothing is an error)
  each run also has FP_RUN_INDEX (0, 1, ...) and FP_PARAM_NAME (FP_PARAM_1 ...) in its environment

what happens:
  each host is prepared once (image built, data synced in), then runs at most --per-host runs at
  a time; the next run goes to the first host that frees up. Output lines start with the run's
  parameters and host. Results come back as runs end (changes made on the host only) and at the
  end. A lost host's runs go to the others; a failed command runs again only with --retries.
  Ctrl-C stops handing out runs and forwards SIGINT to the running ones; a second Ctrl-C kills them.

exit status:
  0 every run succeeded and its results came back; 1 some did not (they are listed, and in the
  joblog); 125 fp itself failed (no host could be prepared); 130 after Ctrl-C.
"""


def map_parser() -> argparse.ArgumentParser:
    parser = verb_parser("map", "Run a command once per parameter value (or line of a file), spread over hosts.")
    parser.usage = "fp map (-p NAME=V1,V2... [-p ...] | --args-file FILE) [options] -- COMMAND [ARG...]"
    parser.epilog = MAP_EPILOG
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME=V1,V2", help="a parameter and its values (repeatable: all combinations)")
    parser.add_argument("--args-file", metavar="FILE", help="one run per line, tab-separated columns as {1} {2} ... ('-': standard input)")
    parser.add_argument("--hosts", metavar="A,B", help="the hosts to run on (default: the pool; local when it is empty)")
    parser.add_argument("--per-host", default="1", metavar="N|auto", help="runs at once on each host (default 1; auto: its CPUs / --cpus)")
    parser.add_argument(
        "--retries", type=int, default=0, metavar="K", help="run a command that failed again, up to K times (on another host when there is one)"
    )
    parser.add_argument("--joblog", metavar="FILE", help="GNU parallel's joblog, one line per run as it ends (default: in fp's state folder)")
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument("--resume", metavar="JOBLOG", help="run only what that joblog does not list (and log there)")
    resume.add_argument("--resume-failed", metavar="JOBLOG", help="run what that joblog lists as failed, and what it does not list")
    parser.add_argument("-d", "--detach", action="store_true", help="go on in the background; the last word printed is the map's id")
    add_run_options(parser)
    add_container_options(parser, publish=False)
    add_step_options(parser.add_argument_group("steps"))
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command, with placeholders")
    return parser
