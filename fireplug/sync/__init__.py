"""Two-way sync of the data folder with a host: one planner, two transports.

- ``tree``: one side as data (local scan, or the host's ``find -printf`` / helper listing).
- ``record``: the last common state per (project, host), and the lock around a sync.
- ``plan``: the three-way decisions (copy, move to trash, conflict copy).
- ``session``: runs a plan in a safe order and records what both sides now share.
- ``report``: what one sync did (``SyncReport``).
- ``rsync``: the transport over the host's ssh master; ``api``: through the Docker API
  (``helper`` runs in a short-lived container on fp's base image).
"""

from __future__ import annotations

from fireplug.errors import SyncError as SyncError
from fireplug.errors import SyncInterrupted as SyncInterrupted

FILE, DIR, LINK, OTHER = "f", "d", "l", "o"  # the kinds of a side's entries (tree.py), as records and listings spell them
