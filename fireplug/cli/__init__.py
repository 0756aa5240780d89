"""The `fp` command line: fp's own options, then the user's command, passed through untouched.

The only package that prints errors and chooses exit codes: the command's own status passes
through unchanged; fp's failures exit 125; usage errors 2; interruptions 128 + signal
(``program.py``: main, the verbs, the reports; the verbs in their own modules).

This module stays light: ``entry``, the `fp` program, holds the signals fp acts on from its
first instruction, while the rest of fp is imported, and lets them through once ``main`` can
answer them (a Ctrl-C at any moment is an exit 130 in one line, never a traceback). It imports
nothing that costs time before that (``_signal`` is the interpreter's own, already loaded;
``signal`` and ``typing`` take milliseconds).
"""

from __future__ import annotations

import _signal

TYPE_CHECKING = False  # typing's import would come before the first instruction
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from fireplug.cli.program import build_parser, in_foreground, main, sync_override

__all__ = ["HELD_SIGNALS", "build_parser", "entry", "in_foreground", "main", "sync_override"]

HELD_SIGNALS = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP)


def entry() -> NoReturn:
    """The `fp` program (its console script, `python -m fireplug`, a detached map's process)."""
    _signal.pthread_sigmask(_signal.SIG_BLOCK, HELD_SIGNALS)  # pending, not lost: main lets them through
    from fireplug.cli.program import run_program

    run_program(HELD_SIGNALS)


def __getattr__(name: str) -> Any:
    """``main`` and the rest of ``program``, imported when first asked for."""
    import importlib

    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(importlib.import_module("fireplug.cli.program"), name)
