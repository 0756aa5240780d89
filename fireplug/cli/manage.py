"""fp's verbs about runs after their start: ps, logs, pull, stop, gc."""

from __future__ import annotations

import argparse
import contextlib
import json
import time

from fireplug.cli import console
from fireplug.cli.parsers import gc_parser, logs_parser, ps_parser, pull_parser, stop_parser
from fireplug.cli.process import load_invocation
from fireplug.cli.render import verbose_from
from fireplug.errors import UsageError
from fireplug.manage.control import Hosts, Located, list_runs, locate
from fireplug.manage.logs import show_logs
from fireplug.manage.pull import pull_runs
from fireplug.manage.stop import stop_map_process, stop_runs
from fireplug.support import labels
from fireplug.support.output import LineWriter
from fireplug.support.units import human_bytes

PS_COLUMNS = ("RUN", "HOST", "PROJECT", "PARAMS", "COMMAND", "STATE", "STARTED", "DURATION", "EXIT")


def ps(words: list[str], args: argparse.Namespace) -> int:
    """fp ps: fp's runs across hosts, from their labels and this machine's records."""
    options = ps_parser().parse_args(words)
    invocation = load_invocation(project_optional=True)
    found = list_runs(invocation, Hosts(invocation), only=options.host or args.host, everything=options.all)
    if options.json:
        print(json.dumps([_as_json(located) for located in found], indent=2), flush=True)
    else:
        console.print_table(PS_COLUMNS, [_row(located) for located in found])
    return 0


def logs(words: list[str], args: argparse.Namespace) -> int:
    """fp logs [-f] ID: a run's output (each run of a map, prefixed)."""
    options = logs_parser().parse_args(words)
    invocation = load_invocation(project_optional=True)
    peers = Hosts(invocation)
    show_logs(invocation, peers, locate(invocation, peers, options.id, only=options.host or args.host), follow=options.follow, out=LineWriter())
    return 0


def pull(words: list[str], args: argparse.Namespace) -> int:
    """fp pull ID: bring the results of a run (every run of a map) back."""
    options = pull_parser().parse_args(words)
    verbose_from(options)
    invocation = load_invocation(project_optional=True, sync=args.sync)
    peers = Hosts(invocation)
    runs = locate(invocation, peers, options.id, only=options.host or args.host)
    for pulled in pull_runs(invocation, peers, runs):
        for run_id in pulled.still_running:
            console.note(f"run {run_id} is still running on host '{pulled.host}': what it wrote so far came back; fp pull {run_id} again once it ended")
        ended = len(pulled.runs) - len(pulled.still_running)
        if ended:
            console.note(f"{ended} ended runs on host '{pulled.host}' done with: output kept here (fp logs), containers removed")
    return 0


def stop(words: list[str], args: argparse.Namespace) -> int:
    """fp stop [-t S] ID: stop a run, or every run of a map."""
    options = stop_parser().parse_args(words)
    if not 0 <= options.time <= 3600:
        raise UsageError(f"-t {options.time:g}: expected seconds from 0 to 3600")
    invocation = load_invocation(project_optional=True)
    peers = Hosts(invocation)
    map_id = stop_map_process(invocation.runs, options.id, grace=options.time)
    if map_id:
        console.note(f"map {map_id} in the background was told to stop: no new run starts, and its running runs were stopped")
        with contextlib.suppress(UsageError):  # its runs may all be gone already
            stop_runs(invocation, peers, locate(invocation, peers, map_id, only=options.host or args.host), grace=options.time)
        return 0
    runs = locate(invocation, peers, options.id, only=options.host or args.host)
    stopped = stop_runs(invocation, peers, runs, grace=options.time)
    for located, code in stopped:
        console.note(f"stopped run {located.run_id} on host '{located.host}' (exit status {code if code is not None else 'unknown'})")
    if not stopped:
        console.note(f"nothing to stop: {', '.join(sorted({located.run_id for located in runs}))} not running")
    return 0


def gc(words: list[str], args: argparse.Namespace) -> int:
    """fp gc: remove what fp left on hosts and no longer needs."""
    from fireplug.manage import gc as cleanup

    options = gc_parser().parse_args(words)
    if options.keep < 1:
        raise UsageError(f"--keep {options.keep}: keep at least the newest image of each project (1 or more)")
    invocation = load_invocation(project_optional=True)
    peers = Hosts(invocation)
    total = 0
    for host, found in cleanup.find_garbage(invocation, peers, only=options.host or args.host, keep=options.keep).items():
        if not found.items:
            console.note(f"host '{host}': nothing to remove")
            continue
        for item in found.items:
            console.note(f"host '{host}': {'would remove' if options.dry_run else 'removing'} {item.describe()}")
        if not options.dry_run:
            total += cleanup.remove_garbage(peers, host, found, invocation.config.build.base_image)
        else:
            total += found.bytes
    said = "would free" if options.dry_run else "freed"
    console.note(f"{said} {human_bytes(total)} in all (images share layers: what the disk gains may be less)")
    return 0


def _row(located: Located) -> tuple[str, ...]:
    started, ended = located.started, located.ended
    duration = (ended if ended else time.time()) - started if started else None
    code = located.exit_code
    return (
        located.run_id,
        located.host,
        located.record.project if located.record else (located.state.labels.get(labels.PROJECT, "") if located.state else ""),
        " ".join(f"{name}={value}" for name, value in located.params.items()) or "-",
        _command(located),
        located.status,
        time.strftime("%m-%d %H:%M:%S", time.localtime(started)) if started else "-",
        _duration(duration) if duration is not None else "-",
        str(code) if code is not None and not located.running else "-",
    )


def _as_json(located: Located) -> dict[str, object]:
    return {
        "id": located.run_id,
        "host": located.host,
        "map": located.map_id or None,
        "params": located.params,
        "command": _command(located),
        "state": located.status,
        "started": located.started,
        "ended": located.ended,
        "exit_code": located.exit_code,
        "container": located.state.name if located.state else (located.record.container if located.record else None),
    }


def _command(located: Located) -> str:
    if located.record is not None:
        return located.record.command
    return located.state.labels.get(labels.COMMAND, "") if located.state else ""


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
