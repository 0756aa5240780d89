"""The wording of what a sync and a run's results did: the summary lines `fp` prints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from fireplug.cli import console
from fireplug.support.units import human_bytes

if TYPE_CHECKING:
    from fireplug.sync.report import SyncReport
    from fireplug.sync.results import Landed


def report_sync(host: str, report: SyncReport, *, verbose: bool = False) -> None:
    """One summary line (and one line per conflict, removal and refusal, or the count of them)."""
    if verbose:
        console.detail(f"sync with '{host}': {report.wire_bytes} bytes over the wire")
    parts = []
    if report.pushed:
        parts.append(f"{report.pushed} files ({human_bytes(report.pushed_bytes)}) to host '{host}'")
    if report.pulled:
        source = "from it" if parts else f"from host '{host}'"
        parts.append(f"{report.pulled} files ({human_bytes(report.pulled_bytes)}) {source}")
    if report.trashed_there:
        parts.append(f"{len(report.trashed_there)} deleted here moved to the host's trash")
    if report.trashed_here:
        parts.append(f"{len(report.trashed_here)} deleted on the host moved to the local trash")
    if report.conflicts:
        parts.append(f"{len(report.conflicts)} conflicts")
    if parts:
        console.note(f"synced {', '.join(parts)} in {report.seconds:.1f} s")
    else:
        console.note(f"data and host '{host}' in sync: nothing changed ({report.seconds:.1f} s)")
    for path, copy in report.conflicts:
        console.warn(f"conflict: {path} changed here and on host '{host}'; kept yours, the host's version is {copy}")
    _list_some(f"moved to the host's trash ({report.host_trash}), deleted here:", report.trashed_there, verbose)
    _list_some(f"moved to the local trash ({report.local_trash}), deleted on host '{host}':", report.trashed_here, verbose)
    _list_some("kept, changed on one side though deleted on the other:", report.kept, True)
    if report.restored:
        console.warn(
            f"host '{host}' lacks {len(report.restored)} files it had at the last sync (lost or cleaned up?): sent them again, "
            "nothing was deleted here; to delete them here too, pass --accept-deletions"
        )
    _list_some("symlinks pointing outside the data folder (dangling on the other side):", report.outside_links, verbose, warn=False)
    _list_some("left out, not files, folders or symlinks:", report.unsyncable, verbose)
    _list_some("not copied here, the local path passes through a symlink or changed meanwhile:", report.unsafe, True)


def _list_some(title: str, paths: Sequence[str], show: bool, *, warn: bool = True) -> None:
    if paths and show:
        (console.warn if warn else console.note)(f"{title} {first_few(paths)}")


def first_few(paths: Sequence[str], limit: int = 5) -> str:
    return ", ".join(paths[:limit]) + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def report_landed(host: str, landed: Landed) -> None:
    """What a swarm run's results changed here, in one line (and its conflicts, kept files, refusals)."""
    console.note(
        f"results from swarm '{host}': {landed.files} files ({human_bytes(landed.file_bytes)}) changed, {len(landed.trashed)} deleted (to the local trash)"
    )
    for path, copy in landed.conflicts:
        console.warn(f"conflict: {path} changed here while the run changed it too; the run's version is {copy}")
    for path in landed.kept:
        console.warn(f"kept {path}: the run deleted it, but it changed here meanwhile")
    if landed.refused:
        console.warn(f"{len(landed.refused)} results were refused (a parent here is not a real folder): {', '.join(landed.refused[:3])}")
