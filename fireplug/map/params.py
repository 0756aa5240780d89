"""`fp map`, the pure part: parameters into runs, placeholders into command lines, and the
joblog (GNU parallel's format) that says how each run ended and what `--resume` reruns.

    fp map -p fold=0,1,2 -p seed=1,2 -- python model.py -f{fold} --seed {seed}
    fp map --args-file sweep.tsv -- python model.py {1} {2}

The cartesian product of the ``-p`` lists, the first list varying slowest (as GNU parallel's
``:::``), or one run per line of a file (tab-separated columns ``{1}``, ``{2}``..., the whole
line ``{}``), becomes the runs. ``{name}`` is replaced inside the command's words only, never
through a shell; a placeholder that names no parameter is refused, so that a typo cannot run.
"""

from __future__ import annotations

import itertools
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from fireplug.errors import UsageError

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*|[0-9]+|)\}")
PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
WHOLE_LINE = ""  # the name of ``{}``: the args file's whole line
JOBLOG_COLUMNS = ("Seq", "Host", "Starttime", "JobRuntime", "Send", "Receive", "Exitval", "Signal", "Command")
MAX_RUNS = 100_000


@dataclass(frozen=True)
class MapRun:
    seq: int  # from 1, the joblog's Seq
    params: Mapping[str, str]
    argv: tuple[str, ...]

    @property
    def index(self) -> int:
        """FP_RUN_INDEX: from 0, in the order the runs were made."""
        return self.seq - 1

    @property
    def command_line(self) -> str:
        return shlex.join(self.argv)

    def env(self) -> list[tuple[str, str]]:
        """FP_RUN_INDEX and each parameter as FP_PARAM_NAME (FP_PARAM_1... for an args file's columns)."""
        found = [("FP_RUN_INDEX", str(self.index))]
        found += [(f"FP_PARAM_{name.upper()}", value) for name, value in self.params.items() if name != WHOLE_LINE]
        return found

    @property
    def shown_params(self) -> dict[str, str]:
        return {name: value for name, value in self.params.items() if name != WHOLE_LINE}


def parse_param(text: str) -> tuple[str, list[str]]:
    """``-p fold=0,1,2`` (or ``fold=0..2``) as ("fold", ["0", "1", "2"]).

    Raises:
        UsageError: not NAME=VALUE[,VALUE...].
    """
    name, has_values, values = text.partition("=")
    if not has_values or not PARAM_NAME.fullmatch(name):
        raise UsageError(f"-p {text!r}: expected NAME=VALUE[,VALUE...] with NAME a letter or _ then letters, digits or _")
    items = values.split(",")
    if any(item == "" for item in items):
        raise UsageError(f"-p {text!r}: an empty value (two commas, or one at an end)")
    return name, [value for item in items for value in _expanded(item)]


def _expanded(item: str) -> list[str]:
    """``0..9`` (integers, both ends included, either way round) as its values; any other item as itself."""
    found = _RANGE.fullmatch(item)
    if found is None:
        return [item]
    first, last = int(found.group(1)), int(found.group(2))
    step = 1 if last >= first else -1
    return [str(value) for value in range(first, last + step, step)]


_RANGE = re.compile(r"(-?\d+)\.\.(-?\d+)")


def runs_from_params(params: Sequence[tuple[str, list[str]]], template: Sequence[str]) -> list[MapRun]:
    """One run per combination of the ``-p`` values (the first parameter varies slowest).

    Raises:
        UsageError: a parameter given twice, too many runs, or a placeholder that names none.
    """
    names = [name for name, _ in params]
    if len(set(names)) != len(names):
        raise UsageError(f"-p {next(name for name in names if names.count(name) > 1)} is given twice: give all its values in one -p")
    total = 1
    for _, values in params:
        total *= len(values)
    _check_count(total)
    combos = itertools.product(*(values for _, values in params))
    return _runs(({name: value for name, value in zip(names, combo, strict=True)} for combo in combos), template)


def runs_from_lines(lines: Iterable[str], template: Sequence[str]) -> list[MapRun]:
    """One run per non-empty line: ``{1}``, ``{2}``... its tab-separated columns, ``{}`` the whole line.

    Raises:
        UsageError: no line, too many, or a placeholder that names no column.
    """
    rows = [line.rstrip("\r\n") for line in lines]
    rows = [row for row in rows if row.strip()]
    if not rows:
        raise UsageError("the args file has no line: nothing to run")
    _check_count(len(rows))
    return _runs(({WHOLE_LINE: row, **{str(number): column for number, column in enumerate(row.split("\t"), 1)}} for row in rows), template)


def _runs(params: Iterable[dict[str, str]], template: Sequence[str]) -> list[MapRun]:
    runs = [MapRun(seq, values, fill(template, values)) for seq, values in enumerate(params, 1)]
    if runs and not any(PLACEHOLDER.search(word) for word in template):
        raise UsageError(
            f"the command {shlex.join(template)} has no placeholder: every run would be the same",
            hint="put {NAME} where each run's value goes (FP_RUN_INDEX and FP_PARAM_NAME are also in its environment)",
        )
    return runs


def fill(template: Sequence[str], values: Mapping[str, str]) -> tuple[str, ...]:
    """The command with each ``{name}`` replaced by its value, word by word.

    Raises:
        UsageError: a placeholder names no parameter.
    """

    def replace(found: re.Match[str]) -> str:
        name = found.group(1)
        if name not in values:
            known = ", ".join("{" + key + "}" for key in values) or "none"
            raise UsageError(f"the command names {{{name}}}, which is no parameter (there are: {known})")
        return values[name]

    return tuple(PLACEHOLDER.sub(replace, word) for word in template)


def _check_count(total: int) -> None:
    if total > MAX_RUNS:
        raise UsageError(f"{total} runs: fp map runs at most {MAX_RUNS} at once", hint="split the sweep (--args-file takes a part of it)")


# -- the joblog ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """How one run ended, as a line of the joblog (GNU parallel's --joblog)."""

    seq: int
    host: str
    start: float  # seconds since the epoch
    runtime: float
    exit_code: int  # the command's, or -1 when it never reported one (its host was lost, fp stopped)
    signal: int = 0
    command: str = ""
    send: int = 0
    receive: int = 0

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and self.signal == 0

    def line(self) -> str:
        fields = (self.seq, self.host, f"{self.start:.3f}", f"{self.runtime:.3f}", self.send, self.receive, self.exit_code, self.signal, self.command)
        return "\t".join(str(item).replace("\t", " ").replace("\n", " ") for item in fields)


def joblog_header() -> str:
    return "\t".join(JOBLOG_COLUMNS)


def read_joblog(text: str) -> dict[int, Outcome]:
    """The joblog's runs by Seq (a run logged twice: its last line).

    Raises:
        UsageError: it is not a joblog.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or lines[0].split("\t") != list(JOBLOG_COLUMNS):
        raise UsageError("not a joblog (its first line must be GNU parallel's header: " + " ".join(JOBLOG_COLUMNS) + ")")
    found: dict[int, Outcome] = {}
    for number, line in enumerate(lines[1:], 2):
        parts = line.split("\t", 8)
        try:
            seq, host, start, runtime, send, receive, exit_code, signal, command = parts
            outcome = Outcome(int(seq), host, float(start), float(runtime), int(exit_code), int(signal), command, int(send), int(receive))
        except ValueError:
            raise UsageError(f"line {number} of the joblog is damaged: {line[:80]!r}") from None
        found[outcome.seq] = outcome
    return found


def to_rerun(runs: Sequence[MapRun], logged: Mapping[int, Outcome], *, failed_too: bool) -> list[MapRun]:
    """The runs ``--resume`` (not in the joblog) or ``--resume-failed`` (also those that failed) runs.

    Raises:
        UsageError: the joblog's run at a Seq ran another command (another sweep).
    """
    for run in runs:
        outcome = logged.get(run.seq)
        if outcome is not None and outcome.command != run.command_line:
            raise UsageError(
                f"the joblog's run {run.seq} was `{outcome.command}`, this map's is `{run.command_line}`: not the same sweep",
                hint="give the same -p values (or args file) and command as the first time",
            )
    return [run for run in runs if run.seq not in logged or (failed_too and not logged[run.seq].succeeded)]


@dataclass
class Tally:
    """Where a map stands: for the live summary and the end."""

    queued: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0
    outcomes: dict[int, Outcome] = field(default_factory=dict)

    def summary(self) -> str:
        return f"{self.queued} queued, {self.running} running, {self.done} done, {self.failed} failed"
