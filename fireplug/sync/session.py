"""One two-way sync of a data folder with a host: lock, list both sides, plan, carry out, record.

The transport (rsync over ssh, or the Docker API) only lists the host, hashes files there,
moves entries into the host's trash or to conflict names, and copies listed paths each way.
Every decision is the planner's (``plan.py``), what the transport provides is ``side.py``'s
``HostSide``; this module runs the plan in a safe order (a dry run's preview is ``preview.py``):

1. host moves (conflict copies renamed, deletions into the host trash), then local ones;
2. copies from the host, then to it; no file lands under its final name half-written
   (rsync's ``--partial-dir``, the API path's temporary names), and the version a copy
   replaces goes to that side's trash too (rsync's ``--backup-dir``): no content that was
   on either side before a sync is unreachable after it;
3. both sides are looked at again, and the record keeps only what is now the same on both
   (``agreed.py``).

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
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from fireplug.support.locks import exclusive
from fireplug.support.state import save_bytes
from fireplug.sync import SyncError, SyncInterrupted
from fireplug.sync.agreed import agreed_record, local_tree_after
from fireplug.sync.plan import Plan, Sides, make_plan
from fireplug.sync.record import RACY, PairFiles, Record, State, load_state, parse_saved_listing, save_record, saved_listing
from fireplug.sync.report import SyncReport
from fireplug.sync.side import HostSide, Moved, SyncRequest, Transferred
from fireplug.sync.states import all_unchanged, digests_needed, side_unchanged
from fireplug.sync.tree import DIR, FILE, Entry, Listing, Tree, file_sha256, keep_aside, lstat_entry, parents, prune_batches, scan, within_any


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
    previous = saved_listing(request.pair, state.host_listing)
    host_listing, listing_problem = host_side.list(previous)
    local_listing = Listing(local_scan.result(), listed_at)
    if host_listing.same:
        if not request.full and not listing_problem and _nothing_changed_here(record, local_listing.tree):
            return _nothing_to_do(request.pair, started)
        host_listing = replace(host_listing, tree=parse_saved_listing(host_side.host, previous), same=False)
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
    local_after = local_tree_after(request.local, local_listing, plan)
    new_record = agreed_record(record, plan, local_after, host_after, request.local, {**progress.pulled.digests, **progress.pushed.digests})
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


def _nothing_changed_here(record: Record, local: Tree) -> bool:
    """With the host's listing byte for byte the one the record was made from: whether the
    local side is unchanged too, and the record trusts every host signature (none racy)."""
    settled = all(common.kind != FILE or (common.there is not None and common.there[1] != RACY) for common in record.values())
    return settled and side_unchanged(record, local, here=True)


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
