"""The labels fp puts on the containers and images it makes, and reads back: how `fp ps`,
`fp gc`, the idle-host choice and the sync helpers' sweep find what is fp's (and whose)."""

from __future__ import annotations

LABEL = "io.fireplug"
KIND = f"{LABEL}.kind"  # run, lookup, sync, deps-build, assembly (containers); base, deps, project (images)
PROJECT = f"{LABEL}.project"
PROJECT_KEY = f"{LABEL}.project-key"
VERSION = f"{LABEL}.version"
FROM = f"{LABEL}.from"  # a base image's FROM
RUN = f"{LABEL}.run"  # the run id
COMMAND = f"{LABEL}.command"  # the command, secrets redacted
OWNER = f"{LABEL}.owner"  # the fp process that started a run (see locks.this_process)
SYNC_OWNER = f"{LABEL}.sync-owner"  # the fp process that made a sync helper
MAP = f"{LABEL}.map"  # the map a run belongs to
PARAMS = f"{LABEL}.params"  # a map run's parameters, as JSON
INDEX = f"{LABEL}.index"  # a map run's FP_RUN_INDEX
DEPS = f"{LABEL}.deps"  # a one-time image's dependency layer (an fp-deps-<hash> image name)
DETACHED = f"{LABEL}.detached"  # "1": started with -d, left running


def kind_is(kind: str) -> str:
    """The filter for containers or images of ``kind``."""
    return f"{KIND}={kind}"
