"""Each side of a path against the record: unchanged, changed, or "maybe" changed (its size the
same but its signature not: a touch, an edit with the mtime put back), and so which files'
content digests the planner needs before it can decide.
"""

from __future__ import annotations

from fireplug.sync.record import Common, Record, Signature
from fireplug.sync.tree import FILE, LINK, Entry, Tree

UNCHANGED, MAYBE, CHANGED = "unchanged", "maybe", "changed"


def side_state(entry: Entry | None, common: Common | None, signature: Signature | None) -> str:
    """How one side's entry compares with the record: unchanged, changed, or maybe (content decides)."""
    if entry is None or common is None:
        return UNCHANGED if entry is None and common is None else CHANGED
    if entry.kind != common.kind:
        return CHANGED
    if entry.kind == LINK:
        return UNCHANGED if entry.target == common.target else CHANGED
    if entry.kind != FILE:
        return UNCHANGED
    if entry.size != common.size:
        return CHANGED
    if signature is None or (entry.mtime_ns, entry.ctime_ns, entry.ino) != signature:
        return MAYBE
    return UNCHANGED


def states(path: str, record: Record, local: Tree, host: Tree) -> tuple[str, str]:
    common = record.get(path)
    return (
        side_state(local.get(path), common, common.here if common else None),
        side_state(host.get(path), common, common.there if common else None),
    )


def all_unchanged(record: Record, local: Tree, host: Tree) -> bool:
    """Whether both sides hold exactly what the record says, by signature (the no-op re-sync)."""
    return side_unchanged(record, local, here=True) and side_unchanged(record, host, here=False)


def side_unchanged(record: Record, tree: Tree, *, here: bool) -> bool:
    """Whether one side (``here``: the local one) holds exactly what the record says, by signature."""
    if not record or len(tree) != len(record):
        return False
    for path, common in record.items():
        entry = tree.get(path)
        if entry is None or side_state(entry, common, common.here if here else common.there) != UNCHANGED:
            return False
    return True


def digests_needed(record: Record, local: Tree, host: Tree, *, full: bool = False) -> tuple[list[str], list[str]]:
    """The files whose content digest the plan needs, here and on the host (sorted).

    A file that maybe changed is hashed: alone when the record has the digest to compare it
    with and the other side is unchanged, else with the other side's copy when the sizes
    match (to tell an identical copy from a change). Files that changed on both sides with the
    same size are both hashed; ``full`` hashes every file present on both sides.
    """
    here: list[str] = []
    there: list[str] = []
    for path in sorted(local.keys() | host.keys()):
        mine, theirs = local.get(path), host.get(path)
        pair = states(path, record, local, host)
        sides = _sides_to_hash(pair, mine, theirs, record.get(path), full=full)
        if "here" in sides:
            here.append(path)
        if "there" in sides:
            there.append(path)
    return here, there


def _sides_to_hash(pair: tuple[str, str], mine: Entry | None, theirs: Entry | None, common: Common | None, *, full: bool) -> set[str]:
    both_files = mine is not None and theirs is not None and mine.kind == FILE == theirs.kind
    same_size = both_files and mine.size == theirs.size  # type: ignore[union-attr]
    known = common is not None and common.kind == FILE and bool(common.digest)
    if (full and both_files) or (same_size and pair == (CHANGED, CHANGED)):
        wanted = {"here", "there"}
    elif MAYBE not in pair:
        wanted = set()
    elif known and UNCHANGED in pair:
        wanted = {"here"} if pair[0] == MAYBE else {"there"}
    elif same_size:
        wanted = {"here", "there"}
    elif known:
        wanted = {side for side, state in zip(("here", "there"), pair, strict=True) if state == MAYBE}
    else:
        wanted = set()
    return {side for side in wanted if (mine if side == "here" else theirs) is not None and (mine if side == "here" else theirs).kind == FILE}  # type: ignore[union-attr]
