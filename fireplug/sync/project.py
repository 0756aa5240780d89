"""The project's data folder synced with one host: the request the sync session needs
(record, owner, scope), and its outcome in words.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fireplug.config import Config, project_key_at
from fireplug.support import events
from fireplug.support.units import human_bytes
from fireplug.sync import SyncReport
from fireplug.sync.record import PairFiles

if TYPE_CHECKING:  # (the session is imported when a sync happens: a run on the local engine has none)
    from fireplug.invocation import Invocation
    from fireplug.sync.session import HostSide, Owner


def sync_data(
    invocation: Invocation, host_side: HostSide, *, full: bool = False, accept_deletions: bool = False, push: bool = True, verbose: bool = False
) -> SyncReport:
    """One sync of the project's data folder with the host of ``host_side`` (two-way, or with
    ``push`` False only bringing changes back), said in one summary line.

    Raises:
        SyncError, SyncInterrupted: see ``sync.session.sync``.
    """
    config, host = invocation.config, host_side.host
    from fireplug.sync.session import SyncRequest, sync

    request = SyncRequest(
        local=local_data_folder(config),
        pair=PairFiles.of(invocation.state, config.project.key, host),
        host_name=host,
        full=full,
        accept_deletions=accept_deletions,
        pull_scope=pull_scope(config),
        push=push,
        on_wait=lambda holder: events.note(f"waiting for {holder}, which is syncing this project with host '{host}'"),
        owner=project_owner(config),
    )
    report = sync(request, host_side)
    report_sync(host, report, verbose=verbose)
    return report


def project_owner(config: Config) -> Owner:
    """This project folder, as the sync record's owner: another folder whose fireplug.toml gives
    the same project key (a copied project keeps its id) is a copy, not this project moved."""
    root = str(config.root)
    from fireplug.sync.session import Owner

    return Owner(root, lambda folder: folder != root and project_key_at(Path(folder)) == config.project.key)


def pull_scope(config: Config) -> tuple[str, ...]:
    """The result folders relative to the data folder; () when the whole data folder comes back."""
    folders = [posixpath.relpath(folder, config.project.data) for folder in config.project.result_folders]
    return () if "." in folders else tuple(folders)


def report_sync(host: str, report: SyncReport, *, verbose: bool = False) -> None:
    """One summary line (and one line per conflict, removal and refusal, or the count of them)."""
    if verbose:
        events.detail(f"sync with '{host}': {report.wire_bytes} bytes over the wire")
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
        events.note(f"synced {', '.join(parts)} in {report.seconds:.1f} s")
    else:
        events.note(f"data and host '{host}' in sync: nothing changed ({report.seconds:.1f} s)")
    for path, copy in report.conflicts:
        events.warn(f"conflict: {path} changed here and on host '{host}'; kept yours, the host's version is {copy}")
    _list_some(f"moved to the host's trash ({report.host_trash}), deleted here:", report.trashed_there, verbose)
    _list_some(f"moved to the local trash ({report.local_trash}), deleted on host '{host}':", report.trashed_here, verbose)
    _list_some("kept, changed on one side though deleted on the other:", report.kept, True)
    if report.restored:
        events.warn(
            f"host '{host}' lacks {len(report.restored)} files it had at the last sync (lost or cleaned up?): sent them again, "
            "nothing was deleted here; to delete them here too, pass --accept-deletions"
        )
    _list_some("symlinks pointing outside the data folder (dangling on the other side):", report.outside_links, verbose, warn=False)
    _list_some("left out, not files, folders or symlinks:", report.unsyncable, verbose)
    _list_some("not copied here, the local path passes through a symlink or changed meanwhile:", report.unsafe, True)


def _list_some(title: str, paths: Sequence[str], show: bool, *, warn: bool = True) -> None:
    if paths and show:
        (events.warn if warn else events.note)(f"{title} {first_few(paths)}")


def first_few(paths: Sequence[str], limit: int = 5) -> str:
    return ", ".join(paths[:limit]) + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def ensure_data_folder(folder: Path) -> None:
    """Create a missing data folder here, so that it is the user's and not made by the engine as root."""
    if not folder.is_dir():
        folder.mkdir(parents=True)
        events.note(f"created the data folder {folder} (mounted into the container)")


def local_data_folder(config: Config) -> Path:
    return config.root / config.project.data
