"""The record a sync leaves: the new last common state, made of what both sides agree on after
its copies (a path whose copy failed, or changed meanwhile, keeps its old state).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from fireplug.support.signature import is_racy
from fireplug.sync.plan import Plan
from fireplug.sync.record import RACY, Common, Record, Signature
from fireplug.sync.tree import DIR, FILE, LINK, Entry, Listing, file_sha256, lstat_entry, within_any


def local_tree_after(root: Path, before: Listing, plan: Plan) -> Listing:
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


def agreed_record(old: Record, plan: Plan, local: Listing, host: Listing, root: Path, known: dict[str, str]) -> Record:
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
