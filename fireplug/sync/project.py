"""The project's data folder synced with one host: the request the sync session needs
(record, owner, scope), and its outcome in words.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import TYPE_CHECKING

from fireplug.config import Config, project_key_at
from fireplug.support import events

if TYPE_CHECKING:  # (the session is imported when a sync happens: a run on the local engine has none)
    from fireplug.invocation import Invocation
    from fireplug.sync.report import SyncReport
    from fireplug.sync.side import HostSide, Owner


def sync_data(invocation: Invocation, host_side: HostSide, *, full: bool = False, accept_deletions: bool = False, push: bool = True) -> SyncReport:
    """One sync of the project's data folder with the host of ``host_side`` (two-way, or with
    ``push`` False only bringing changes back), said in one summary line.

    Raises:
        SyncError, SyncInterrupted: see ``sync.session.sync``.
    """
    config, host = invocation.config, host_side.host
    from fireplug.sync.record import PairFiles
    from fireplug.sync.session import sync
    from fireplug.sync.side import SyncRequest

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
    events.synced(host, report)
    return report


def project_owner(config: Config) -> Owner:
    """This project folder, as the sync record's owner: another folder whose fireplug.toml gives
    the same project key (a copied project keeps its id) is a copy, not this project moved."""
    root = str(config.root)
    from fireplug.sync.side import Owner

    return Owner(root, lambda folder: folder != root and project_key_at(Path(folder)) == config.project.key)


def pull_scope(config: Config) -> tuple[str, ...]:
    """The result folders relative to the data folder; () when the whole data folder comes back."""
    folders = [posixpath.relpath(folder, config.project.data) for folder in config.project.result_folders]
    return () if "." in folders else tuple(folders)


def ensure_data_folder(folder: Path) -> None:
    """Create a missing data folder here, so that it is the user's and not made by the engine as root."""
    if not folder.is_dir():
        folder.mkdir(parents=True)
        events.note(f"created the data folder {folder} (mounted into the container)")


def local_data_folder(config: Config) -> Path:
    return config.root / config.project.data
