"""The one planner of a two-way sync: the record (last common state) against both sides now.

Pure: trees and the record in, decisions out; both transports (rsync, Docker API) carry them
out the same way. Per path:

- equal on both sides -> nothing to do;
- changed on one side only -> copied that way (a deletion becomes a move into that side's trash);
- changed on both -> a conflict: the host's version is renamed to a conflict copy on the host
  and brought back under that name, the local version takes the name on both sides;
  when one side deleted and the other changed, the changed copy is kept on both;
- with no record (a first sync) nothing is deleted and differing files are conflicts;
- a path an unfinished sync began to copy (``State.unconfirmed``) and that only one side has
  was not deleted by the other: the copy is made again. A deletion is only ever read from a
  side that received everything it was sent.

A side's file "maybe" changed when its size is the same but its signature is not (a touch,
an edit with the mtime put back): its content digest then decides (``states.py``). A folder is only removed
from a side when nothing under it stays there; otherwise the folder is kept, or, when the
other side holds a file or link by that name, that becomes a conflict.
"""

from __future__ import annotations

import bisect
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from fireplug.sync.record import Common, Record
from fireplug.sync.states import UNCHANGED, states
from fireplug.sync.tree import DIR, FILE, LINK, OTHER, Entry, Tree, is_inside, link_leaves, parents, within_any


class Action(Enum):
    SAME = "same"
    PUSH = "push"  # make the host's entry what the local one is (absent: remove it there)
    PULL = "pull"  # make the local entry what the host's is
    CONFLICT = "conflict"
    SKIP = "skip"  # leave both sides alone (host changes outside the result folders, unsyncable kinds)


@dataclass
class Plan:
    push: list[str] = field(default_factory=list)  # local -> host: files, links and folders
    pull: list[str] = field(default_factory=list)  # host -> local (host names: conflict copies after the rename)
    host_trash: list[str] = field(default_factory=list)  # moved into the host's trash before any copy
    local_trash: list[str] = field(default_factory=list)
    host_renames: list[tuple[str, str]] = field(default_factory=list)  # host path -> conflict copy name
    conflicts: list[tuple[str, str]] = field(default_factory=list)  # path, its conflict copy
    kept: list[str] = field(default_factory=list)  # deleted on one side, changed on the other: kept
    skipped: list[str] = field(default_factory=list)
    same: dict[str, Common] = field(default_factory=dict)  # paths equal on both sides (record entries)
    outside_links: list[str] = field(default_factory=list)  # symlinks sent that point outside the data folder
    unsyncable: list[str] = field(default_factory=list)  # device nodes, FIFOs, sockets: never synced
    restored: list[str] = field(default_factory=list)  # files the host lost en masse: sent again, not deleted here
    resumed: list[str] = field(default_factory=list)  # copies an unfinished sync began, made again (see State.unconfirmed)

    @property
    def changes_anything(self) -> bool:
        return bool(self.push or self.pull or self.host_trash or self.local_trash or self.host_renames)


@dataclass(frozen=True)
class Sides:
    """Both sides now, with the content digests fetched for the paths ``digests_needed`` named."""

    local: Tree
    host: Tree
    local_digests: dict[str, str] = field(default_factory=dict)
    host_digests: dict[str, str] = field(default_factory=dict)


def make_plan(
    record: Record,
    sides: Sides,
    *,
    host_name: str,
    stamp: str,
    pull_scope: tuple[str, ...] = (),
    accept_deletions: bool = False,
    push: bool = True,
    unconfirmed: frozenset[str] = frozenset(),
) -> Plan:
    """Decide every path. ``pull_scope``: folders host changes may come back from (empty: all).
    ``push`` False (`fp pull`, a map bringing a run's results back): changes made here are
    left for the next two-way sync (skipped: the record keeps what it had), except the local
    version of a conflict, which takes its name on the host as always.

    ``stamp`` (YYYYmmddTHHMMSS) and ``host_name`` name conflict copies. When the host lost
    many of the files it had (``host_lost_data``), that is taken for a wiped or cleaned-up
    host rather than deletions to repeat here: the files are sent again, unless
    ``accept_deletions``. ``unconfirmed``: paths whose copy an unfinished sync began (see
    ``record.State``); one side lacking such a path is sent it again.
    """
    local, host = _syncable(sides.local), _syncable(sides.host)
    blocked = (sides.local.keys() - local.keys()) | (sides.host.keys() - host.keys())
    plan = Plan(unsyncable=sorted(blocked))
    decisions: dict[str, Action] = {}
    paths = sorted(local.keys() | host.keys() | record.keys())
    for path in paths:
        if within_any(path, blocked):
            decisions[path] = Action.SKIP
            continue
        action = _resume(path, record, local, host) if path in unconfirmed else None
        if action is not None:
            plan.resumed.append(path)
        else:
            action = _decide(path, record, sides, local, host)
        if action in (Action.PULL, Action.CONFLICT) and pull_scope and not _in_scope(path, pull_scope):
            action = Action.SKIP
        decisions[path] = action
    if not accept_deletions:
        _restore_lost_files(record, decisions, local, host, plan)
    _keep_folders_that_stay(paths, decisions, local, host, plan)
    if not push:
        decisions.update({path: Action.SKIP for path, action in decisions.items() if action is Action.PUSH})
    _carry_out(paths, decisions, record, sides, local, host, plan, _namer(host_name, stamp, local, host))
    return plan


MASS_DELETION_FILES = 50

MASS_DELETION_SHARE = 0.25


def host_lost_data(deleted: int, recorded: int) -> bool:
    """Whether ``deleted`` of the ``recorded`` files missing on the host look like lost data."""
    return recorded > 0 and deleted >= min(MASS_DELETION_FILES, recorded) and deleted >= MASS_DELETION_SHARE * recorded


def _restore_lost_files(record: Record, decisions: dict[str, Action], local: Tree, host: Tree, plan: Plan) -> None:
    """When the host lacks many of its recorded files (whatever became of them here: one
    changed here is missing there all the same), the ones that would be deleted here are sent again."""
    recorded = [path for path, common in record.items() if common.kind == FILE]
    missing = sum(1 for path in recorded if path not in host)
    gone = [path for path, action in decisions.items() if action is Action.PULL and path not in host and path in local and local[path].kind == FILE]
    if gone and host_lost_data(missing, len(recorded)):
        for path in gone:
            decisions[path] = Action.PUSH
            for parent in parents(path):
                if decisions.get(parent) is Action.PULL and parent not in host:
                    decisions[parent] = Action.PUSH
        plan.restored[:] = sorted(gone)


def _resume(path: str, record: Record, local: Tree, host: Tree) -> Action | None:
    """An unfinished copy of ``path`` made again: the side lacking it never got it, whatever
    the record says (None: both sides or neither have it, and the usual rules decide)."""
    if path not in record or (path in local) == (path in host):
        return None
    return Action.PUSH if path in local else Action.PULL


def _syncable(tree: Tree) -> Tree:
    return {path: entry for path, entry in tree.items() if entry.kind != OTHER}


def _decide(path: str, record: Record, sides: Sides, local: Tree, host: Tree) -> Action:
    mine, theirs, common = local.get(path), host.get(path), record.get(path)
    state_here, state_there = states(path, record, local, host)
    digest_here, digest_there = sides.local_digests.get(path, ""), sides.host_digests.get(path, "")
    changed_here = _changed(state_here, digest_here, common)
    changed_there = _changed(state_there, digest_there, common)
    if _equal(mine, theirs, digest_here, digest_there):
        return Action.SAME
    if not changed_here and not changed_there:
        # Both match the record, yet they differ: only digests can say so (a full sync
        # without a recorded digest). Neither copy may be overwritten.
        return Action.CONFLICT if digest_here and digest_there else Action.SAME
    if not changed_here:
        return Action.PULL
    if not changed_there:
        return Action.PUSH
    if mine is None:
        return Action.PULL  # deleted here, changed there: the changed copy is kept
    if theirs is None:
        return Action.PUSH
    return Action.CONFLICT


def _changed(state: str, digest: str, common: Common | None) -> bool:
    if digest and common is not None and common.kind == FILE and common.digest:
        return digest != common.digest
    return state != UNCHANGED


def _equal(mine: Entry | None, theirs: Entry | None, digest_here: str, digest_there: str) -> bool:
    if mine is None or theirs is None:
        return mine is theirs
    if mine.kind != theirs.kind:
        return False
    if mine.kind == LINK:
        return mine.target == theirs.target
    if mine.kind == FILE:
        return mine.size == theirs.size and bool(digest_here) and digest_here == digest_there
    return True


def _in_scope(path: str, scope: tuple[str, ...]) -> bool:
    return any(path == folder or is_inside(path, folder) or is_inside(folder, path) for folder in scope)


def _after(action: Action, mine: Entry | None, theirs: Entry | None) -> tuple[Entry | None, Entry | None]:
    """What each side holds at the path once ``action`` is done (local, host)."""
    if action is Action.PUSH:
        return mine, mine
    if action is Action.PULL:
        return theirs, theirs
    if action is Action.CONFLICT:
        return mine, mine  # the host's copy moves to the conflict name
    return mine, theirs


def _keep_folders_that_stay(paths: list[str], decisions: dict[str, Action], local: Tree, host: Tree, plan: Plan) -> None:
    """A folder is removed from a side only if nothing under it stays there (deepest paths first)."""
    stays_here: set[str] = set()  # folders with something under them that stays locally
    stays_there: set[str] = set()
    for path in reversed(paths):
        mine, theirs = local.get(path), host.get(path)
        action = decisions[path]
        after_here, after_there = _after(action, mine, theirs)
        if path in stays_here and not _is_dir(after_here):
            action = Action.PUSH if theirs is None else Action.CONFLICT  # the local folder stays
        elif path in stays_there and not _is_dir(after_there) and not (action is Action.CONFLICT and _is_dir(theirs)):
            action = Action.PULL if mine is None else Action.CONFLICT  # the host's folder stays
        if action is not decisions[path]:
            decisions[path] = action
            after_here, after_there = _after(action, mine, theirs)
        parent = posixpath.dirname(path)
        if parent and after_here is not None:
            stays_here.add(parent)
        if parent and after_there is not None:
            stays_there.add(parent)


def _is_dir(entry: Entry | None) -> bool:
    return entry is not None and entry.kind == DIR


class _Namer:
    def __init__(self, host_name: str, stamp: str, taken: Iterable[str]) -> None:
        self.suffix = f".fp-conflict-{_safe(host_name)}-{stamp}"
        self.taken = set(taken)

    def __call__(self, path: str) -> str:
        folder, name = posixpath.split(path)
        stem, ext = _split_extension(name)
        for attempt in range(1, 1000):
            extra = "" if attempt == 1 else f"-{attempt}"
            candidate = posixpath.join(folder, f"{stem}{self.suffix}{extra}{ext}")
            if candidate not in self.taken:
                self.taken.add(candidate)
                return candidate
        raise AssertionError("no free conflict name")  # 999 conflict copies of one file in one second


def _namer(host_name: str, stamp: str, local: Tree, host: Tree) -> _Namer:
    return _Namer(host_name, stamp, local.keys() | host.keys())


def conflict_name(path: str, host_name: str, stamp: str) -> str:
    """``a/r.txt`` -> ``a/r.fp-conflict-HOST-STAMP.txt`` (when that name is free)."""
    return _Namer(host_name, stamp, ())(path)


def _split_extension(name: str) -> tuple[str, str]:
    stem, ext = posixpath.splitext(name)
    return (stem, ext) if stem and ext and len(ext) <= 10 else (name, "")


def _safe(name: str) -> str:
    return "".join(character if (character.isalnum() and character.isascii()) or character in "._-" else "_" for character in name)


def _carry_out(
    paths: list[str], decisions: dict[str, Action], record: Record, sides: Sides, local: Tree, host: Tree, plan: Plan, name_conflict: _Namer
) -> None:
    rehomed: set[str] = set()  # host folders renamed to a conflict name: everything under them follows
    resumed = set(plan.resumed)
    for path in paths:
        if rehomed and within_any(path, rehomed):
            continue
        action = decisions[path]
        mine, theirs = local.get(path), host.get(path)
        if action is Action.SAME:
            if mine is not None and theirs is not None:
                plan.same[path] = _common_of(mine, theirs, sides, path, record.get(path))
        elif action is Action.SKIP:
            plan.skipped.append(path)
        elif action is Action.PUSH:
            _copy(path, mine, theirs, to_trash=plan.host_trash, copies=plan.push)
            _note_link(path, mine, plan)
            if mine is not None and path not in plan.restored and path not in resumed:
                _note_kept(path, record, theirs, plan)
        elif action is Action.PULL:
            _copy(path, theirs, mine, to_trash=plan.local_trash, copies=plan.pull)
            _note_link(path, theirs, plan)
            if theirs is not None and path not in resumed:
                _note_kept(path, record, mine, plan)
        else:
            copy = name_conflict(path)
            plan.host_renames.append((path, copy))
            plan.conflicts.append((path, copy))
            plan.pull.append(copy)
            if _is_dir(theirs):
                rehomed.add(path)
                plan.pull += [copy + under[len(path) :] for under in _descendants(paths, path) if under in host]
            if mine is not None:
                plan.push.append(path)
                _note_link(path, mine, plan)
    plan.host_trash[:] = _outermost(plan.host_trash)
    plan.local_trash[:] = _outermost(plan.local_trash)
    plan.kept[:] = sorted(set(plan.kept))


def _copy(path: str, source: Entry | None, target: Entry | None, *, to_trash: list[str], copies: list[str]) -> None:
    """Make ``target`` (the receiving side) what ``source`` is: into the trash when removed or of another kind."""
    if target is not None and (source is None or source.kind != target.kind):
        to_trash.append(path)
    if source is not None:
        copies.append(path)


def _note_kept(path: str, record: Record, target: Entry | None, plan: Plan) -> None:
    """A copy sent to a side that had deleted it: it changed on the other side, so it is kept."""
    if target is None and path in record:
        plan.kept.append(path)


def _note_link(path: str, entry: Entry | None, plan: Plan) -> None:
    if entry is not None and entry.kind == LINK and link_leaves(path, entry.target):
        plan.outside_links.append(path)


def _common_of(mine: Entry, theirs: Entry, sides: Sides, path: str, old: Common | None) -> Common:
    digest = sides.local_digests.get(path) or sides.host_digests.get(path) or (old.digest if old is not None and old.kind == FILE else "")
    if mine.kind != FILE:
        return Common(mine.kind, 0, mine.target)
    return Common(FILE, mine.size, "", digest, (mine.mtime_ns, mine.ctime_ns, mine.ino), (theirs.mtime_ns, theirs.ctime_ns, theirs.ino))


def _descendants(paths: list[str], folder: str) -> list[str]:
    start = bisect.bisect_right(paths, folder + "/")
    end = bisect.bisect_left(paths, folder + "0")  # "0" sorts right after "/"
    return paths[start:end]


def _outermost(paths: list[str]) -> list[str]:
    """``paths`` without those inside another one of them (moving a folder moves its contents)."""
    kept: list[str] = []
    for path in sorted(set(paths)):
        if not kept or not is_inside(path, kept[-1]):
            kept.append(path)
    return kept
