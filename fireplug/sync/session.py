"""One two-way sync of a data folder with a host: lock, list both sides, plan, carry out, record.

The transport (rsync over ssh, or the Docker API) only lists the host, hashes files there,
moves entries into the host's trash or to conflict names, and copies listed paths each way.
Every decision is the planner's (``plan.py``); this module runs it in a safe order:

1. host moves (conflict copies renamed, deletions into the host trash), then local ones;
2. copies from the host, then to it; no file lands under its final name half-written
   (rsync's ``--partial-dir``, the API path's temporary names), and the version a copy
   replaces goes to that side's trash too (rsync's ``--backup-dir``): no content that was
   on either side before a sync is unreachable after it;
3. both sides are looked at again, and the record keeps only what is now the same on both.

Before anything changes, the record notes the recorded paths about to be copied
(``State.unconfirmed``). An interruption stops the transport (its whole process group) and
leaves the record as it was, with that note: what did arrive is found equal by content at the
next sync, and what did not is sent then, never taken for a deletion on the side that lacks
it. A sync that could not copy everything records only what verifiably arrived, and not as a
sync that agreed: the record's time (when the pair last agreed) stays as it was, and the host's
listing is read in full next time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from fireplug.support.locks import exclusive
from fireplug.support.signature import is_racy
from fireplug.support.state import save_bytes
from fireplug.sync import SyncError, SyncInterrupted
from fireplug.sync.plan import Plan, Sides, all_unchanged, digests_needed, make_plan, side_unchanged
from fireplug.sync.record import RACY, Common, PairFiles, Record, Signature, State, load_state, save_record
from fireplug.sync.report import SyncReport
from fireplug.sync.tree import (
    DIR,
    FILE,
    LINK,
    Entry,
    Listing,
    Tree,
    file_sha256,
    keep_aside,
    lstat_entry,
    parents,
    parse_listing,
    prune_batches,
    scan,
    within_any,
)


@dataclass(frozen=True)
class Moved:
    """What the host did with the moves it was asked for."""

    failed: frozenset[str] = frozenset()  # paths it could not move (left as they were)


@dataclass
class Transferred:
    files: int = 0
    file_bytes: int = 0
    wire_bytes: int = 0
    problem: str = ""  # a transfer that failed for some paths: the tool's own words
    digests: dict[str, str] = field(default_factory=dict)  # SHA-256 of files received here, made while writing them


class HostSide(Protocol):
    """What a transport does on the host; paths are relative to the host's data folder."""

    @property
    def host(self) -> str: ...

    @property
    def trash_folder(self) -> str:
        """Where the host's trash lives (beside the data folder, never inside)."""

    def list(self, previous: bytes = b"") -> tuple[Listing, str]:
        """The host's tree (the data folder is created when missing), and any listing problem.

        ``previous``: the raw listing of the last completed sync; a transport may answer with
        it (``Listing.raw``) rather than send the same bytes again."""

    def digests(self, paths: Sequence[str]) -> dict[str, str]:
        """SHA-256 of each file (files that vanished are left out)."""

    def move(self, renames: Sequence[tuple[str, str]], trash: Sequence[str], batch: str) -> Moved:
        """Rename conflict copies, then move ``trash`` into ``trash_folder/batch``."""

    def pull(self, paths: Sequence[str], local: Path, backup: Path, fresh: set[str]) -> Transferred:
        """Copy ``paths`` (files, links, folders) from the host into ``local``; a local entry
        that a copy replaces is moved under ``backup`` first (same relative path). ``fresh``:
        the paths this side does not have (no delta transfer can help them)."""

    def push(self, local: Path, paths: Sequence[str], batch: str, fresh: set[str]) -> Transferred:
        """Copy ``paths`` from ``local`` to the host; what a copy replaces there goes to
        ``trash_folder/batch``. ``fresh``: the paths the host does not have."""


@dataclass(frozen=True)
class Owner:
    """The project folder a sync is for. Its record says which folder it was made for: two
    copies of one project (a copied folder keeps ``project.id``) would share the host's copy
    and the record, and each sync would move the other's files to the trash."""

    folder: str
    is_copy: Callable[[str], bool]  # whether this other folder, the record's, is a live copy of the same project


@dataclass(frozen=True)
class SyncRequest:
    local: Path  # the local data folder (exists)
    pair: PairFiles
    host_name: str
    full: bool = False  # hash every file on both sides
    pull_scope: tuple[str, ...] = ()  # folders (relative to the data folder) host changes come back from; () = all
    accept_deletions: bool = False  # repeat here even a mass deletion on the host (see plan.host_lost_data)
    push: bool = True  # False: bring changes back only (see plan.make_plan)
    on_wait: Callable[[str], None] = lambda holder: None
    owner: Owner | None = None  # None: the record's folder is not checked (nor noted)


@dataclass
class _Progress:
    stage: str = "listing"
    pulled: Transferred = field(default_factory=Transferred)
    pushed: Transferred = field(default_factory=Transferred)


def sync(request: SyncRequest, host_side: HostSide) -> SyncReport:
    """Bring the local data folder and the host's into agreement (see the module docstring).

    Raises:
        SyncError: the host could not be listed or a copy failed (what did complete is recorded).
        SyncInterrupted: a signal stopped the sync; says what had finished.
        SshError, EngineError, EngineUnreachable: from the transport.
    """
    started = time.monotonic()
    progress = _Progress()
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(exclusive(request.pair.lock, request.on_wait))
        except OSError as e:
            raise _state_unusable(host_side.host, request.pair, e) from e
        try:
            return _sync_locked(request, host_side, progress, started)
        except KeyboardInterrupt as e:
            raise SyncInterrupted(host_side.host, _interrupted_story(progress), e) from e
        except OSError as e:  # the transports translate their own failures: this is a local file
            raise SyncError(host_side.host, f"{e}; it stopped {_interrupted_story(progress)}", hint="fix that, then sync again") from e


def _nothing_to_do(pair: PairFiles, started: float) -> SyncReport:
    """A sync that found both sides as the record says: the record is not written again, but its
    time says when this pair last agreed (fp gc tells by it which ended runs' results are here)."""
    with contextlib.suppress(OSError):
        os.utime(pair.record)
    return SyncReport(seconds=time.monotonic() - started)


def _state_unusable(host: str, pair: PairFiles, error: OSError) -> SyncError:
    return SyncError(
        host, f"fp's sync state folder {pair.folder} is unusable ({error.strerror or error})", hint="it must be a folder you can write to (see XDG_STATE_HOME)"
    )


def _sync_locked(request: SyncRequest, host_side: HostSide, progress: _Progress, started: float) -> SyncReport:
    state = load_state(request.pair.record)
    _refuse_the_record_of_another_copy(request, state, host_side.host)
    made_for = request.owner.folder if request.owner else state.made_for
    record = state.record
    listed_at = time.time_ns()
    local_scan = _ScanInBackground(request.local)
    previous = _listing_of_record(request.pair, state.host_listing)
    host_listing, listing_problem = host_side.list(previous)
    local_listing = Listing(local_scan.result(), listed_at)
    if host_listing.same:
        if not request.full and not listing_problem and _nothing_changed_here(record, local_listing.tree):
            return _nothing_to_do(request.pair, started)
        host_listing = replace(host_listing, tree=_parse_previous(host_side.host, previous), same=False)
    elif not request.full and not listing_problem and all_unchanged(record, local_listing.tree, host_listing.tree):
        return _nothing_to_do(request.pair, started)
    wanted_here, wanted_there = digests_needed(record, local_listing.tree, host_listing.tree, full=request.full)
    sides = Sides(local_listing.tree, host_listing.tree, local_digests(request.local, wanted_here), host_side.digests(wanted_there) if wanted_there else {})
    batch = time.strftime("%Y%m%dT%H%M%S")
    plan = make_plan(
        record,
        sides,
        host_name=request.host_name,
        stamp=batch,
        pull_scope=request.pull_scope,
        accept_deletions=request.accept_deletions,
        push=request.push,
        unconfirmed=state.unconfirmed,
    )
    unsafe = _drop_unsafe_pulls(plan, request.local, local_listing.tree)
    under_way = _note_copies_under_way(request.pair, replace(state, made_for=made_for), plan, host_side.host)
    progress.stage = "moving"
    moved = host_side.move(plan.host_renames, plan.host_trash, batch) if plan.host_renames or plan.host_trash else Moved()
    _drop_failed_renames(plan, moved.failed)
    local_trash = request.pair.trash / batch
    trashed_here = _move_to_trash(request.local, plan.local_trash, local_trash)
    prune_batches(str(request.pair.trash))
    progress.stage = "pulling"
    if plan.pull:
        trashed = set(plan.local_trash)
        fresh_here = {path for path in plan.pull if path not in local_listing.tree or within_any(path, trashed)}
        progress.pulled = host_side.pull(plan.pull, request.local, local_trash, fresh_here)
    progress.stage = "pushing"
    if plan.push:
        trashed_there = set(plan.host_trash) | {path for path, _ in plan.host_renames}
        fresh_there = {path for path in plan.push if path not in host_listing.tree or within_any(path, trashed_there)}
        progress.pushed = host_side.push(request.local, plan.push, batch, fresh_there)
    progress.stage = "recording"
    host_after = host_side.list()[0] if plan.push or plan.host_trash or plan.host_renames else host_listing
    local_after = _local_after(request.local, local_listing, plan)
    new_record = _new_record(record, plan, local_after, host_after, request.local, {**progress.pulled.digests, **progress.pushed.digests})
    problem = listing_problem or progress.pulled.problem or progress.pushed.problem
    still_under_way = under_way & set(plan.skipped)  # the record keeps their old entries, and so their note
    _save_state(request.pair, host_side.host, State(new_record, "", still_under_way, made_for), host_after.raw, agreed=not problem)
    report = _report(plan, progress, unsafe, local_trash, f"{host_side.trash_folder}/{batch}", moved.failed, trashed_here.failed, started)
    if problem:
        raise SyncError(host_side.host, problem, report=report)
    return report


def _save_state(pair: PairFiles, host: str, state: State, host_listing: bytes, *, agreed: bool) -> None:
    """The record after a sync. One that did not agree (a problem) keeps the record's time and
    no listing: the host is listed in full next time.

    Raises:
        SyncError: the state folder cannot be written (the copies are done; the next sync
        compares everything again).
    """
    try:
        if not agreed:
            _save_without_agreeing(pair, state)
        else:
            save_bytes(pair.host_listing, host_listing)
            listing_sha256 = hashlib.sha256(host_listing).hexdigest() if host_listing else ""
            save_record(pair.record, replace(state, host_listing=listing_sha256))
    except OSError as e:
        raise _state_unusable(host, pair, e) from e


def _report(
    plan: Plan,
    progress: _Progress,
    unsafe: list[str],
    local_trash: Path,
    host_trash: str,
    not_moved: frozenset[str],
    not_trashed: frozenset[str],
    started: float,
) -> SyncReport:
    return SyncReport(
        pushed=progress.pushed.files,
        pushed_bytes=progress.pushed.file_bytes,
        pulled=progress.pulled.files,
        pulled_bytes=progress.pulled.file_bytes,
        wire_bytes=progress.pushed.wire_bytes + progress.pulled.wire_bytes,
        trashed_here=tuple(sorted(set(plan.local_trash) - not_trashed)),
        trashed_there=tuple(sorted(set(plan.host_trash) - not_moved)),
        local_trash=str(local_trash),
        host_trash=host_trash,
        conflicts=tuple(plan.conflicts),
        kept=tuple(plan.kept),
        outside_links=tuple(sorted(plan.outside_links)),
        unsyncable=tuple(plan.unsyncable),
        unsafe=tuple(unsafe),
        restored=tuple(plan.restored),
        pulled_paths=tuple(plan.pull),
        replaced_here=tuple(path for path in plan.pull if (local_trash / path).is_file() and path not in plan.local_trash),
        seconds=time.monotonic() - started,
    )


def _note_copies_under_way(pair: PairFiles, state: State, plan: Plan, host: str) -> frozenset[str]:
    """Before anything changes: note in the record which recorded paths this sync is about to
    copy (with those an earlier unfinished sync noted), so that a side lacking one of them
    after an interruption is sent it again rather than taken to have deleted it. The record's
    time (when the pair last agreed) is kept.

    Raises:
        SyncError: the record cannot be written (fp's state folder).
    """
    copies = {*plan.push, *plan.pull, *(path for path, _ in plan.host_renames)}
    under_way = frozenset(state.unconfirmed | {path for path in copies if path in state.record})
    if under_way == state.unconfirmed:
        return under_way
    try:
        _save_without_agreeing(pair, State(state.record, "", under_way, state.made_for))
    except OSError as e:
        raise _state_unusable(host, pair, e) from e
    return under_way


def _save_without_agreeing(pair: PairFiles, state: State) -> None:
    """Write ``state`` without saying the pair agreed: no host listing to answer "same" to
    (``state.host_listing`` is ""), and the file's time left where it was (fp gc reads it as
    the last time the pair agreed; 0 for a pair that never did)."""
    try:
        agreed_ns = pair.record.stat().st_mtime_ns
    except FileNotFoundError:
        agreed_ns = 0
    save_record(pair.record, state)
    os.utime(pair.record, ns=(time.time_ns(), agreed_ns))


def _refuse_the_record_of_another_copy(request: SyncRequest, state: State, host: str) -> None:
    """Raises: SyncError: the record was made for another folder that is a live copy of this project."""
    owner = request.owner
    if owner is None or not state.made_for or state.made_for == owner.folder or not owner.is_copy(state.made_for):
        return
    raise SyncError(
        host,
        f"{state.made_for} holds this project too, with the same project id, and syncs with this host: "
        "the two copies would share the host's data and move each other's files to the trash",
        hint=f"give this copy an id of its own: change or delete `id` under [project] in {owner.folder}/fireplug.toml",
    )


class _ScanInBackground:
    """``scan(root)`` in a thread of its own, while the host lists its side. Local and read-only:
    an interruption of the caller can leave it to finish by itself."""

    def __init__(self, root: Path) -> None:
        self._outcome: list[Tree | BaseException] = []
        self._thread = threading.Thread(target=self._work, args=(str(root),), daemon=True)
        self._thread.start()

    def _work(self, root: str) -> None:
        try:
            self._outcome.append(scan(root))
        except BaseException as e:  # raised in the caller by result()
            self._outcome.append(e)

    def result(self) -> Tree:
        """The tree (what the scan raised is raised here).

        Raises:
            OSError: the data folder could not be read.
        """
        self._thread.join()
        outcome = self._outcome[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


@dataclass(frozen=True)
class Preview:
    """What a sync would do, judged against the host as the last sync left it (no host contact)."""

    plan: Plan
    local_files: int
    local_bytes: int
    push_bytes: int
    first: bool  # no sync with this host yet: everything goes


def preview(request: SyncRequest) -> Preview:
    """The plan of a sync of ``request``, with the host's side as the last sync left it (the
    listing it saved, else the record): a dry run contacts no host, and the real sync lists it
    again. Reads local files only where their content decides."""
    state = load_state(request.pair.record)
    record = state.record
    previous = _listing_of_record(request.pair, state.host_listing)
    host_tree = _parse_previous(request.host_name, previous) if previous else {path: _as_recorded(common) for path, common in record.items()}
    local_tree = scan(str(request.local))
    wanted_here, _ = digests_needed(record, local_tree, host_tree)
    host_digests = {path: common.digest for path, common in record.items() if common.digest}
    sides = Sides(local_tree, host_tree, local_digests(request.local, wanted_here), host_digests)
    plan = make_plan(record, sides, host_name=request.host_name, stamp="dry-run", pull_scope=request.pull_scope, unconfirmed=state.unconfirmed)
    files = [entry for entry in local_tree.values() if entry.kind == FILE]
    pushed = sum(entry.size for path in plan.push if (entry := local_tree.get(path)) is not None and entry.kind == FILE)
    return Preview(plan, len(files), sum(entry.size for entry in files), pushed, first=not record)


def _as_recorded(common: Common) -> Entry:
    """The host's entry as the record holds it."""
    mtime_ns, ctime_ns, ino = common.there or (0, 0, 0)
    return Entry(common.kind, common.size, mtime_ns, ctime_ns, ino, target=common.target)


def _nothing_changed_here(record: Record, local: Tree) -> bool:
    """With the host's listing byte for byte the one the record was made from: whether the
    local side is unchanged too, and the record trusts every host signature (none racy)."""
    settled = all(common.kind != FILE or (common.there is not None and common.there[1] != RACY) for common in record.values())
    return settled and side_unchanged(record, local, here=True)


def _parse_previous(host: str, previous: bytes) -> Tree:
    try:
        return parse_listing(previous)
    except (ValueError, UnicodeDecodeError) as e:
        raise SyncError(host, f"fp's copy of the host listing is damaged ({e})", hint="run fp again") from e


def _listing_of_record(pair: PairFiles, recorded_sha256: str) -> bytes:
    """The host listing saved at the last sync, when it is the one the record was made from; else b""."""
    previous = _read(pair.host_listing)
    return previous if previous and hashlib.sha256(previous).hexdigest() == recorded_sha256 else b""


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _interrupted_story(progress: _Progress) -> str:
    stages = {
        "listing": "before anything was copied or moved",
        "moving": "while moving deleted files into the trash; nothing was copied",
        "pulling": "while copying from the host; every file that arrived is complete, the rest comes with the next sync",
        "pushing": "while copying to the host; every file that arrived is complete, the rest goes with the next sync",
        "recording": "after every copy was done",
    }
    return stages[progress.stage]


def local_digests(root: Path, paths: Sequence[str]) -> dict[str, str]:
    """SHA-256 of each local file; files that cannot be read are left out (they count as changed)."""
    return {path: digest for path in paths if (digest := file_sha256(str(root / path)))}


def _drop_unsafe_pulls(plan: Plan, root: Path, before: Tree) -> list[str]:
    """Refuse copies from the host whose local path would pass through a symlink, or whose local
    target changed since it was listed (the user edited it meanwhile: the next sync sees it)."""
    trashed = set(plan.local_trash)
    unsafe = []
    kept = []
    for path in plan.pull:
        through_link = any(before.get(parent, Entry(DIR)).kind != DIR and not within_any(parent, trashed) for parent in parents(path))
        changed = not within_any(path, trashed) and lstat_entry(str(root), path) != before.get(path)
        if through_link or changed:
            unsafe.append(path)
        else:
            kept.append(path)
    plan.pull[:] = kept
    return unsafe


def _drop_failed_renames(plan: Plan, failed: frozenset[str]) -> None:
    """A host copy that could not be moved aside is not overwritten, and its conflict copy is not fetched."""
    if not failed:
        return
    copies = {copy for path, copy in plan.host_renames if path in failed}
    plan.push[:] = [path for path in plan.push if path not in failed]
    plan.pull[:] = [path for path in plan.pull if path not in copies]


def _move_to_trash(root: Path, paths: Sequence[str], trash: Path) -> Moved:
    """Move local ``paths`` (never following a link) under ``trash``, keeping their relative paths."""
    failed = set()
    for path in paths:
        try:
            keep_aside(str(root / path), str(trash / path))
        except FileNotFoundError:
            continue
        except OSError:
            failed.add(path)
    return Moved(frozenset(failed))


def _local_after(root: Path, before: Listing, plan: Plan) -> Listing:
    """The local tree after the sync: the listing, with the paths copied here looked at again."""
    trashed = set(plan.local_trash)
    tree = {path: entry for path, entry in before.tree.items() if not within_any(path, trashed)}
    for path in plan.pull:
        entry = lstat_entry(str(root), path)
        if entry is None:
            tree.pop(path, None)
        else:
            tree[path] = entry
    return replace(before, tree=tree)  # the earlier time: the racy rule errs on the safe side


def _new_record(old: Record, plan: Plan, local: Listing, host: Listing, root: Path, known: dict[str, str]) -> Record:
    """What is now the same on both sides: equal paths, and every copy that verifiably arrived.

    A copy that cannot be verified (it failed, or its source changed meanwhile) records what
    the receiving side now holds, with no signature for the sending side: the next sync
    compares that side again (by content when the size is the same) and sends what differs.
    """
    record: Record = {}
    for path, common in plan.same.items():
        record[path] = _settled(common, local.tree.get(path), host.tree.get(path), local, host, root, path)
    for path in plan.skipped:
        if path in old:
            record[path] = old[path]
    pushed = set(plan.push)
    for path in pushed | set(plan.pull):
        mine, theirs = local.tree.get(path), host.tree.get(path)
        both = _agreed(mine, theirs)
        if both is not None:
            agreed = Common(both.kind, both.size, both.target, known.get(path, ""))
            record[path] = _settled(agreed, mine, theirs, local, host, root, path)
            continue
        receiver = theirs if path in pushed else mine
        if receiver is None or receiver.kind != FILE:
            continue
        signature = _signature(receiver, host if path in pushed else local)
        digest = "" if path in pushed else file_sha256(str(root / path))
        here, there = (None, signature) if path in pushed else (signature, None)
        record[path] = Common(FILE, receiver.size, "", digest, here, there)
    return record


def _agreed(mine: Entry | None, theirs: Entry | None) -> Common | None:
    """The common entry when both sides hold the same thing after a copy (None: not verifiably)."""
    if mine is None or theirs is None or mine.kind != theirs.kind:
        return None
    if mine.kind == LINK:
        return Common(LINK, 0, mine.target) if mine.target == theirs.target else None
    if mine.kind == DIR:
        return Common(DIR)
    if mine.size != theirs.size or mine.mtime_ns != theirs.mtime_ns:
        return None
    return Common(FILE, mine.size)


def _settled(common: Common, mine: Entry | None, theirs: Entry | None, local: Listing, host: Listing, root: Path, path: str) -> Common:
    """``common`` with both sides' signatures, racy ones marked untrusted; such files get a digest
    (of the local copy, which holds the common content), so that the next sync can tell an
    unchanged file by hashing one side only."""
    if common.kind != FILE or mine is None or theirs is None:
        return common
    here, there = _signature(mine, local), _signature(theirs, host)
    digest = common.digest
    if not digest and RACY in (here[1], there[1]):
        digest = file_sha256(str(root / path))
        if lstat_entry(str(root), path) != mine:  # changed while it was read: the next sync looks again
            digest, here = "", (mine.mtime_ns, RACY, mine.ino)
    return Common(FILE, common.size, "", digest, here, there)


def _signature(entry: Entry, listing: Listing) -> Signature:
    """``entry``'s signature as ``listing`` saw it (its ctime RACY when too recent to trust)."""
    ctime = RACY if is_racy(entry.mtime_ns, entry.ctime_ns, listing.now_ns, listing.racy_ns) else entry.ctime_ns
    return (entry.mtime_ns, ctime, entry.ino)
