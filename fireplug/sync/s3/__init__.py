"""The S3 transport of a sync (``--sync s3``): the data folder is staged in a bucket that the
Docker host pulls from and pushes to.

The planner, the record and the host's listing are the same as on the other paths
(``sync/session.py``); only the copies differ. A push uploads the objects the bucket lacks
(``staging.py``), then the client's manifest and ref, then a helper container on the host
(``remote/s3_objects.py fetch``) downloads what the plan sends and moves it into place
(``host.py``). A pull asks a helper to hash and upload what the plan brings back
(``s3_objects publish``); it prints the manifest of those paths, and the client downloads
them to temporary names and renames them. ``store.py`` is where fp meets boto3; ``garbage.py``
is `fp s3 ls` and `fp s3 gc`.
"""

from __future__ import annotations

from fireplug.sync.s3.garbage import Garbage, StagedSide, find_garbage, remove_garbage, staged_sides
from fireplug.sync.s3.host import S3Host
from fireplug.sync.s3.staging import LocalStaging, stage_local
from fireplug.sync.s3.store import Staging, Store

__all__ = ["Garbage", "LocalStaging", "S3Host", "StagedSide", "Staging", "Store", "find_garbage", "remove_garbage", "stage_local", "staged_sides"]
