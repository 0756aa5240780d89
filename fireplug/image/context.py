"""The build context as data: what is shipped (``Context``, its ``Entry`` list), what decides
it (``ScanRules``), its content hash, and the tar stream that sends it. ``scan.py`` makes it
from the project folder; ``scancache.py`` from the scan record.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from fireplug.errors import ContextChanged, ProjectError
from fireplug.support.secrets import SNIFF_RULES
from fireplug.support.units import human_bytes

if TYPE_CHECKING:
    from fireplug.image.scan import Exclusion

DOCKERIGNORE = ".dockerignore"
LARGE_CONTEXT_FILES = 10_000
LARGE_CONTEXT_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class ScanLimit:
    """Where a folder with no fireplug.toml stops looking like one project (several, or a home)."""

    files: int = 100_000
    bytes: int = 1_000_000_000

    def check(self, root: Path, files: int, size: int, sizes: Mapping[str, int]) -> None:
        """Raises: ProjectError: over the limit, naming the biggest top-level folders."""
        if files <= self.files and size <= self.bytes:
            return
        over = f"over {human_bytes(self.bytes)} of code" if size > self.bytes else f"over {self.files:,} files of code"
        biggest = ", ".join(f"{name} {human_bytes(count)}" for name, count in sorted(sizes.items(), key=lambda item: -item[1])[:3])
        raise ProjectError(
            f"{root} holds {over} and no fireplug.toml, so it looks like more than one project (biggest: {biggest})",
            hint="cd into the project, add those folders to .dockerignore, run `fp init` here, or pass --yes to ship it all",
        )


TAR_BLOCK = 512
_EMPTY_DIGEST = ""


@dataclass(frozen=True)
class Entry:
    """One shipped path. ``digest`` is the SHA-256 of a file's bytes; ``target`` a symlink's."""

    path: str
    kind: str  # "file", "dir" or "symlink"
    mode: int
    size: int = 0
    mtime_ns: int = 0
    digest: str = _EMPTY_DIGEST
    target: str = ""


@dataclass(frozen=True)
class ScanRules:
    """What decides the context besides the files themselves."""

    data_folder: str
    ignore_text: str = ""
    ship_dockerignore: bool = False
    allow: tuple[str, ...] = ()  # [build] allow: paths (or globs) of secret-looking files to ship anyway

    def key(self) -> str:
        text = "\0".join([SCAN_FORMAT, SNIFF_RULES, IGNORE_MATCHER, self.data_folder, self.ignore_text, str(self.ship_dockerignore), *self.allow])
        return hashlib.sha256(text.encode()).hexdigest()

    def allows(self, path: str) -> bool:
        """Whether ``[build] allow`` names ``path`` or a folder above it."""
        parts = path.split("/")
        prefixes = ["/".join(parts[: end + 1]) for end in range(len(parts))]
        return any(fnmatch.fnmatchcase(prefix, pattern.strip("/")) for pattern in self.allow for prefix in prefixes)


@dataclass(frozen=True)
class Context:
    root: Path
    entries: tuple[Entry, ...]
    secrets: tuple[str, ...] = ()
    exclusions: tuple[Exclusion, ...] = ()  # filled by a full scan only
    digest: str = ""
    folders: tuple[str, ...] = ()  # folders walked: a new or removed name changes their mtime
    from_record: bool = False  # revalidated from the scan record rather than walked

    @property
    def file_count(self) -> int:
        return sum(1 for entry in self.entries if entry.kind == "file")

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.entries)

    def largest(self, count: int = 5) -> list[Entry]:
        files = [entry for entry in self.entries if entry.kind == "file"]
        return sorted(files, key=lambda entry: (-entry.size, entry.path))[:count]

    def size_warnings(self) -> list[str]:
        """LESSONS 1: say so when the code alone is big enough to make every build slow."""
        found = []
        if self.file_count > LARGE_CONTEXT_FILES:
            found.append(f"the build context holds {self.file_count:,} files (over {LARGE_CONTEXT_FILES:,})")
        if self.total_bytes > LARGE_CONTEXT_BYTES:
            found.append(f"the build context holds {human_bytes(self.total_bytes)} of code (over 100 MB)")
        return found


SCAN_FORMAT = "fireplug-context-2"  # 2: secret rules by content and hard link, [build] allow
IGNORE_MATCHER = "fp-1"  # which .dockerignore matcher decided: a scan record made by another is not trusted


def context_digest(entries: Iterable[Entry]) -> str:
    """One hash over exactly what is shipped: path, kind, mode and content of every entry."""
    digest = hashlib.sha256(SCAN_FORMAT.encode())
    for entry in entries:
        digest.update(f"\n{entry.kind}\0{entry.path}\0{entry.mode:o}\0{entry.size}\0{entry.digest}\0{entry.target}".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def tar_stream(context: Context, extra_files: Sequence[tuple[str, bytes]] = (), chunk_size: int = 256 * 1024, *, prefix: str = "") -> Iterator[bytes]:
    """The context as an uncompressed tar, in chunks: memory stays bounded whatever the size;
    ``prefix``: a folder its paths are placed in (relative, without a trailing slash).

    Each file is hashed again while it is read; bytes that differ from the scan raise,
    so an image never carries content other than what its tag's hash covers.

    Raises:
        ContextChanged: a file changed since the scan.
    """
    buffer = bytearray()
    for entry in context.entries:
        buffer += _tar_header(replace(entry, path=f"{prefix}/{entry.path}") if prefix else entry)
        if entry.kind == "file":
            for block in _verified_blocks(context.root / entry.path, entry, chunk_size):
                buffer += block
                if len(buffer) >= chunk_size:
                    yield bytes(buffer)
                    buffer.clear()
            buffer += _padding(entry.size)
        if len(buffer) >= chunk_size:
            yield bytes(buffer)
            buffer.clear()
    for name, data in extra_files:
        buffer += _tar_header(Entry(name, "file", 0o644, len(data))) + data + _padding(len(data))
    buffer += b"\0" * (2 * TAR_BLOCK)
    yield bytes(buffer)


def _tar_header(entry: Entry) -> bytes:
    import tarfile  # only builds need it

    info = tarfile.TarInfo(entry.path)
    info.mode = entry.mode
    info.mtime = entry.mtime_ns // 1_000_000_000
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
    elif entry.kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = entry.target
    else:
        info.size = entry.size
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _padding(size: int) -> bytes:
    return b"\0" * (-size % TAR_BLOCK)


def _verified_blocks(path: Path, entry: Entry, chunk_size: int) -> Iterator[bytes]:
    digest = hashlib.sha256()
    remaining = entry.size
    try:
        with open(path, "rb") as handle:
            while remaining:
                block = handle.read(min(chunk_size, remaining))
                if not block:
                    break
                remaining -= len(block)
                digest.update(block)
                yield block
    except OSError as e:
        raise ContextChanged(entry.path) from e
    if remaining or digest.hexdigest() != entry.digest:
        raise ContextChanged(entry.path)
