"""fp map: its command line, the background process of `fp map -d`, and the table at the end."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from fireplug.cli import console
from fireplug.cli.parsers import map_parser
from fireplug.cli.process import load_invocation
from fireplug.cli.render import verbose_from
from fireplug.errors import UsageError
from fireplug.invocation import Invocation
from fireplug.map.params import MapRun, parse_param, read_joblog, runs_from_lines, runs_from_params, to_rerun
from fireplug.map.request import MapRequest, MapResult, map_hosts, map_id_from
from fireplug.map.scheduler import run_map
from fireplug.run import request as run_request

EXIT_SOME_FAILED = 1
DETACH_FLAGS = ("-d", "--detach")
MAP_COLUMNS = ("SEQ", "PARAMS", "HOST", "DURATION", "EXIT")


def map_verb(words: list[str], args: argparse.Namespace) -> int:
    """fp map: the runs a sweep makes, run over the hosts; 0 only when every run succeeded."""
    options = map_parser().parse_args(words)
    verbose_from(options)
    template = options.command[1:] if options.command[:1] == ["--"] else options.command
    if not template:
        raise UsageError("no command given: put it after --, with placeholders (fp map -p fold=0,1 -- python model.py -f{fold})")
    if args.publish:
        raise UsageError("-p/--publish does not go with fp map (every run would want the same port); -p after map names a parameter")
    invocation = load_invocation(sync=options.sync or args.sync)
    runs = _runs(options, template)
    logged = options.resume or options.resume_failed
    if logged:
        runs = to_rerun(runs, read_joblog(_read(Path(logged), "joblog")), failed_too=bool(options.resume_failed))
        if not runs:
            console.note(f"{logged} lists every run as done: nothing to run")
            return 0
    map_id = map_id_from(os.environ)
    joblog = Path(options.joblog or logged or invocation.runs.folder / f"{map_id}.joblog").resolve()
    if options.detach or args.detach:
        return _detach(invocation, map_id, len(runs))
    request = MapRequest(
        map_id=map_id,
        runs=tuple(runs),
        hosts=map_hosts(invocation, [name for name in (options.hosts or args.host or "").split(",") if name]),
        per_host=_per_host(options.per_host),
        retries=_retries(options.retries),
        joblog=joblog,
        run=_run_request(runs, options, args),
    )
    console.note(f"map {map_id}: {len(runs)} runs on {', '.join(request.hosts)}")
    pid_file = invocation.runs.folder / f"{map_id}.pid"
    _write(pid_file, f"{os.getpid()}\n")
    try:
        result = run_map(invocation, request)
    finally:
        pid_file.unlink(missing_ok=True)
    return _report(result)


def _runs(options: argparse.Namespace, template: list[str]) -> list[MapRun]:
    if bool(options.param) == bool(options.args_file):
        raise UsageError("give the runs' values with -p NAME=V1,V2 (repeatable) or with --args-file FILE, one of the two")
    if options.args_file:
        text = sys.stdin.read() if options.args_file == "-" else _read(Path(options.args_file), "args file")
        return runs_from_lines(text.splitlines(), template)
    return runs_from_params([parse_param(text) for text in options.param], template)


def _run_request(runs: list[MapRun], options: argparse.Namespace, args: argparse.Namespace) -> run_request.RunRequest:
    no_sync = options.no_sync or args.no_sync
    steps = run_request.Steps(build=not (options.no_build or args.no_build), sync_in=not no_sync, run=True, sync_out=not no_sync)
    given = {key: getattr(options, key) or getattr(args, key) for key in ("shm_size", "memory", "cpus", "gpus", "network")}
    return run_request.RunRequest(
        command=runs[0].argv,
        env=tuple([*args.env, *options.env]),
        verbose=options.verbose or args.verbose,
        steps=steps,
        full_sync=options.full_sync or args.full_sync,
        accept_deletions=args.accept_deletions,
        container={key: value for key, value in given.items() if value},
        yes=options.yes or args.yes,
    )


def _per_host(text: str) -> int:
    if text == "auto":
        return 0
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise UsageError(f"--per-host {text}: expected a number from 1 to 1000, or auto")
    return int(text)


def _retries(count: int) -> int:
    if not 0 <= count <= 100:
        raise UsageError(f"--retries {count}: expected 0 to 100")
    return count


def _report(result: MapResult) -> int:
    """The table of every run that ran, the failures, the joblog; the exit status."""
    rows = []
    for run in result.runs:
        outcome = result.outcomes.get(run.seq)
        params = " ".join(f"{name}={value}" for name, value in run.shown_params.items())
        if outcome is None:
            rows.append((str(run.seq), params, "-", "-", "not run"))
        else:
            rows.append((str(run.seq), params, outcome.host, f"{outcome.runtime:.1f} s", str(outcome.exit_code) if outcome.exit_code >= 0 else "lost"))
    console.print_table(MAP_COLUMNS, rows, stderr=True)
    failed, not_run = result.failed, result.not_run
    for run in failed:
        outcome = result.outcomes[run.seq]
        how = f"was stopped by signal {outcome.signal}" if outcome.signal else "never reported a status" if outcome.exit_code < 0 else "failed"
        console.warn(f"run {run.seq} {how} on host '{outcome.host}' (exit {outcome.exit_code}): {run.command_line}")
    for line in result.left:
        console.warn(line)
    if result.conflicts:
        console.warn(f"{len(result.conflicts)} results were written by two runs; both versions are kept (conflict copies beside them)")
    for host in result.not_back:
        console.warn(f"results of host '{host}' did not come back: fp pull {result.map_id}")
    rerun = "--resume-failed" if failed else "--resume"
    if failed or not_run:
        console.note(f"joblog {result.joblog}; to run again what failed or did not run: fp map {rerun} {result.joblog} (same -p values and command)")
    else:
        console.note(f"joblog {result.joblog}")
    done = len(result.runs) - len(failed) - len(not_run)
    console.note(f"map {result.map_id}: {done} of {len(result.runs)} runs succeeded")
    if result.interrupted:
        return 128 + result.interrupted
    return EXIT_SOME_FAILED if failed or not_run or result.not_back else 0


def _detach(invocation: Invocation, map_id: str, count: int) -> int:
    """Run this same fp map in a process of its own that outlives this one; its messages go to a file."""
    argv = [sys.executable, "-c", "from fireplug.cli import entry; entry()", *_without_detach(sys.argv[1:])]
    folder = invocation.runs.folder
    folder.mkdir(parents=True, exist_ok=True)
    messages = folder / f"{map_id}.out"
    with open(messages, "ab") as out:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            cwd=invocation.local.cwd,
            env={**os.environ, "FP_MAP_ID": map_id},
            start_new_session=True,
        )
    console.note(
        f"{count} runs go on in the background (pid {process.pid}, its messages in {messages}): "
        f"fp ps, fp logs -f {map_id}, fp pull {map_id}, fp stop {map_id}; map {map_id}"
    )
    return 0


def _without_detach(words: list[str]) -> list[str]:
    """fp's own words without -d (before the command's --): the background process runs attached."""
    if "--" not in words:
        return [word for word in words if word not in DETACH_FLAGS]
    end = words.index("--")
    return [word for word in words[:end] if word not in DETACH_FLAGS] + words[end:]


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read the {what} {path}: {getattr(e, 'strerror', None) or e}") from e


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError:
        pass  # fp stop then finds the map's runs by their labels only
