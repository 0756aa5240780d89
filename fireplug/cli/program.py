"""fp's main: the command line parsed, the verb or the command run, fp's failures and
interruptions turned into one line and an exit status (see the package's docstring)."""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from types import FrameType
from typing import NoReturn

from fireplug.cli import console
from fireplug.cli.parsers import build_parser
from fireplug.cli.process import in_foreground, load_invocation, sync_override
from fireplug.cli.render import ConsoleSink
from fireplug.errors import EXIT_USAGE, BuildError, FireplugError, Interrupted, SyncInterrupted, UsageError
from fireplug.run.request import RunRequest, Steps
from fireplug.support import events

__all__ = ["build_parser", "in_foreground", "main", "run_program", "sync_override"]

Verb = Callable[[list[str], argparse.Namespace], int]


def _verb(module: str, name: str) -> Verb:
    """A verb of ``fireplug.cli.<module>``, imported when it is used: `fp COMMAND` pays for none of them."""

    def call(words: list[str], args: argparse.Namespace) -> int:
        verb: Verb = getattr(importlib.import_module(f"fireplug.cli.{module}"), name)
        return verb(words, args)

    return call


VERBS: dict[str, Verb] = {
    "init": _verb("admin", "init"),
    "base": _verb("admin", "base"),
    "hosts": _verb("admin", "hosts_verb"),
    "s3": _verb("admin", "s3_verb"),
    "map": _verb("sweep", "map_verb"),
    "ps": _verb("manage", "ps"),
    "logs": _verb("manage", "logs"),
    "pull": _verb("manage", "pull"),
    "stop": _verb("manage", "stop"),
    "gc": _verb("manage", "gc"),
}
SUBCOMMANDS = tuple(VERBS)


def run_program(held: Sequence[int]) -> NoReturn:
    """The `fp` program: ``main`` in a process of its own, which ends with fp's own status;
    ``held``: signals blocked since the process began (see ``fireplug.cli.entry``)."""
    status = main(final=True, held=held)
    gc.freeze()  # the interpreter's last collection would walk every object of boto3's models (0.15 s at each exit); they are freed all the same
    if _nothing_left_at_exit():
        os._exit(status)  # without tearing down every module: ~10 ms, a tenth of fp's own time in a warm run
    sys.exit(status)


def _nothing_left_at_exit() -> bool:
    """Whether the interpreter's exit would only tear down: no exit callback, no thread to wait
    for, fp's output flushed (a closed pipe is left to the interpreter's own report)."""
    others = [thread for thread in threading.enumerate() if thread is not threading.main_thread() and not thread.daemon]
    if atexit._ncallbacks() or others:
        return False
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return False
    return True


def main(argv: Sequence[str] | None = None, *, final: bool = False, held: Sequence[int] = ()) -> int:
    """Run fp with ``argv`` (default: sys.argv[1:]); returns the exit status. fp's failures and
    interruptions become one line and a status here, and only here.

    ``final``: the process ends with this status, so signals that come once it is known (a
    late Ctrl-C) are ignored rather than turned into a traceback or a death by signal.
    ``held``: blocked signals, let through here, where an interruption is answered (one that
    came meanwhile is taken now).
    """
    events.use(ConsoleSink())  # the library's events become fp's lines on stderr
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = {signum: signal.signal(signum, _interrupt) for signum in (signal.SIGTERM, signal.SIGHUP)} if on_main_thread else {}
    if on_main_thread and (sigint := signal.getsignal(signal.SIGINT)) is not None:
        previous[signal.SIGINT] = sigint  # the run may leave it ignored
    try:
        if held:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
        return _main(argv)
    except FireplugError as e:
        _report(e)
        return e.exit_code
    except KeyboardInterrupt as e:
        signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
        console.note(f"interrupted ({signal.Signals(signum).name}); {_what_was_left(e)}")
        return 128 + signum
    finally:
        if final:  # the status is known: nothing may change it now
            previous = dict.fromkeys((signal.SIGINT, signal.SIGTERM, signal.SIGHUP), signal.SIG_IGN)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _main(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
        events.use(ConsoleSink(verbose=args.verbose))  # (a verb's own -v turns it on too)
        command, explicit = _split_command(args.command)
        if args.sync_in_only or args.sync_out_only or args.no_run:
            if command:
                flag = "--sync-in-only" if args.sync_in_only else "--sync-out-only" if args.sync_out_only else "--no-run"
                console.error(f"{flag} runs no command, but one was given ({command[0]} ...): drop {flag}, or the command")
                return EXIT_USAGE
            return _run_command(command, args)
        if not command:
            build_parser().print_usage(sys.stderr)
            console.error("no command given: try `fp python script.py`, or `fp --help`")
            return EXIT_USAGE
        if command[0] in SUBCOMMANDS and not explicit:
            return _subcommand(command, args)
    except SystemExit as e:  # argparse (fp's or a verb's): --help, --version, or a usage error
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    return _run_command(command, args)


def _split_command(words: list[str]) -> tuple[list[str], bool]:
    """The user's command, and whether it followed an explicit ``--``."""
    if words[:1] == ["--"]:
        return words[1:], True
    return words, False


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


def _run_command(command: list[str], args: argparse.Namespace) -> int:
    invocation = load_invocation(sync=args.sync)
    steps = Steps.from_flags(no_build=args.no_build, no_sync=args.no_sync, sync_in_only=args.sync_in_only, sync_out_only=args.sync_out_only, no_run=args.no_run)
    if steps.run and not command:
        raise UsageError("no command given", hint="--no-run, --sync-in-only and --sync-out-only are the ones that need none")
    if args.detach and not steps.run:
        raise UsageError("-d starts a command and returns, but --no-run, --sync-in-only or --sync-out-only runs none")
    if args.detach:
        steps = replace(steps, sync_out=False)  # fp pull brings the results back
    request = RunRequest(
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
        detach=args.detach,
    )
    if args.dry_run:
        from fireplug.cli.dryrun import dry_run_report

        print("\n".join(dry_run_report(invocation, request)), flush=True)
        return 0
    from fireplug.run.pipeline import run

    return run(invocation, request)


def _container_flags(args: argparse.Namespace) -> dict[str, object]:
    """The container options given on the command line (they win over [run] settings)."""
    given: dict[str, object] = {key: getattr(args, key) for key in ("shm_size", "memory", "cpus", "gpus", "network") if getattr(args, key)}
    if args.publish:
        given["publish"] = list(args.publish)
    return given


def _subcommand(command: list[str], args: argparse.Namespace) -> int:
    return VERBS[command[0]](command[1:], args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
