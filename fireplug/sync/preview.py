"""What a sync would do, for a dry run: the plan against the host as the last sync left it
(its saved listing, else the record), without contacting it.
"""

from __future__ import annotations

from dataclasses import dataclass

from fireplug.sync.plan import Plan, Sides, make_plan
from fireplug.sync.record import Common, load_state, parse_saved_listing, saved_listing
from fireplug.sync.session import local_digests
from fireplug.sync.side import SyncRequest
from fireplug.sync.states import digests_needed
from fireplug.sync.tree import FILE, Entry, scan


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
    previous = saved_listing(request.pair, state.host_listing)
    host_tree = parse_saved_listing(request.host_name, previous) if previous else {path: _as_recorded(common) for path, common in record.items()}
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
