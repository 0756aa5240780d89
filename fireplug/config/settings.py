"""What fp's settings are: frozen dataclasses, one per section of ``fireplug.toml``, and the
``Config`` that holds them (``__init__.py`` merges the sources into one)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_FILE = "fireplug.toml"

DEFAULT_BASE_IMAGE = "debian:bookworm-slim"


@dataclass(frozen=True)
class Source:
    """A configuration file's path and text, read by the caller so that ``load`` stays pure."""

    path: str
    text: str
    shipped: bool = False  # the project's fireplug.toml: it goes into the image with the code, so no value may hold a credential


@dataclass(frozen=True)
class ProjectSettings:
    name: str
    data: str = "data"
    results: tuple[str, ...] = ()
    workdir: str = ""
    id: str = ""  # from fireplug.toml (`fp init` writes one), else derived from the project's path

    @property
    def key(self) -> str:
        """What no two projects share: names its host folder, images and sync records."""
        return f"{self.name}-{self.id}"

    @property
    def result_folders(self) -> tuple[str, ...]:
        """Folders that come back after a run; the whole data folder unless configured."""
        return self.results or (self.data,)


@dataclass(frozen=True)
class BuildSettings:
    base_image: str = DEFAULT_BASE_IMAGE
    dockerfile: str = ""
    use_dockerfile: bool = True  # false: a project Dockerfile is ignored, fp generates its own
    allow: tuple[str, ...] = ()  # secret-looking paths to ship anyway (globs, relative to the project)
    requirements: str = ""  # the pip requirements file; "" finds one (see deps.find_dependencies)
    use_requirements: bool = True  # false: no dependency layer at all
    extras: tuple[str, ...] = ()  # [project.optional-dependencies] groups of pyproject.toml to install
    pip: tuple[str, ...] = ()  # more pip requirements
    apt: tuple[str, ...] = ()  # Debian packages
    pip_index_url: str = ""
    pip_extra_index_url: tuple[str, ...] = ()
    pip_find_links: tuple[str, ...] = ()
    pip_trusted_host: tuple[str, ...] = ()
    network: str = ""  # the dependency install's network: "" (the engine's default) or "host"


CONTAINER_OPTIONS = ("shm_size", "memory", "cpus", "gpus", "network", "publish")  # [run] keys with docker's names


@dataclass(frozen=True)
class RunSettings:
    env: tuple[str, ...] = ()
    user: str = "auto"
    container: Mapping[str, Any] = field(default_factory=dict)  # CONTAINER_OPTIONS given (see options.parse_options)


@dataclass(frozen=True)
class HostSettings:
    """A ``[hosts.NAME]`` table. Empty values are unset: they leave the docker-machine or
    docker-context value of a host with the same name (or fp's default) in place."""

    name: str
    url: str = ""
    ssh_user: str = ""
    ssh_port: int = 0
    ssh_key: str = ""
    cert_path: str = ""  # folder with ca.pem, cert.pem, key.pem for a tcp:// engine with TLS
    data_root: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    pool: bool | None = None  # whether fp may choose it without --host; None: by its source (see inventory)
    kind: str = ""  # which backend runs there (backends/__init__.py KINDS); "": docker
    registry: str = ""  # where one-time images go for its nodes to pull (a swarm): "registry.example:5000/team"


@dataclass(frozen=True)
class PoolSettings:
    """``[pool]``: the hosts fp may choose by itself, and the one it takes without --host."""

    hosts: tuple[str, ...] | None = None  # None: config hosts and docker-machine machines
    default_host: str = ""


SYNC_MODES = ("auto", "rsync", "api", "s3")

CHECKSUM_WHEN = ("when_supported", "when_required")


@dataclass(frozen=True)
class SyncSettings:
    """``[sync]``: how the data folder reaches a remote host.

    ``auto``: rsync over the host's ssh, else the Docker API; ``s3``: staged in the bucket
    ``s3`` names, which the host pulls from and pushes to. Region, profile and endpoint
    follow boto3's own chain (AWS_PROFILE, AWS_ENDPOINT_URL_S3, ~/.aws/config) unless set."""

    mode: str = "auto"
    s3: str = ""  # s3://bucket[/prefix]
    region: str = ""
    profile: str = ""
    endpoint: str = ""
    # botocore >= 1.36 adds CRC checksums to every PUT, which many S3-compatible stores reject
    request_checksum_calculation: str = ""
    response_checksum_validation: str = ""

    @property
    def bucket_and_prefix(self) -> tuple[str, str]:
        rest = self.s3.removeprefix("s3://")
        bucket, _, prefix = rest.partition("/")
        return bucket, prefix.strip("/")


@dataclass(frozen=True)
class Config:
    root: Path
    project: ProjectSettings
    build: BuildSettings
    run: RunSettings
    hosts: Mapping[str, HostSettings] = field(default_factory=dict)
    pool: PoolSettings = PoolSettings()
    sync: SyncSettings = SyncSettings()

    def container_root(self) -> str:
        """Where the project lives inside the container: the same absolute path by default."""
        return self.project.workdir or self.root.as_posix()
