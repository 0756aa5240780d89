"""fp's base image: Dockerfile.base built FROM ``build.base_image`` with the fireplug package
bundled, tagged by a hash of exactly that input.

Hashing the package's ~130 source files costs ~20 ms, a tenth of a warm run, so the digest is
remembered against the files' stat signatures (like the project's scan record): a run whose
fp is unchanged only stats them. A file changed within ``RACY_NS`` of the look is never
remembered, so an edit within one timestamp tick is not missed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Mapping
from pathlib import Path

from fireplug import __version__
from fireplug.errors import BaseImageMissing, BuildError
from fireplug.hosts.engine import Engine
from fireplug.image.build import Image, build_image, one_builder
from fireplug.image.context import Context, tar_stream
from fireplug.image.scancache import cache_dir
from fireplug.support import labels
from fireplug.support.signature import is_racy, stat_signature

BASE_REPOSITORY = "fireplug-base"
PACKAGE = Path(__file__).resolve().parents[1]  # the fireplug package
RECORD_FORMAT = "fireplug-base-sources-1"
_remembered: dict[Path, str] = {}  # this process's digests, by package root


def base_sources(root: Path = PACKAGE) -> list[tuple[str, Path]]:
    """(name in the build context, path) of Dockerfile.base and the package's sources, sorted."""
    found = [("Dockerfile", root / "Dockerfile.base")]
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(name for name in subfolders if name != "__pycache__")
        relative = Path(folder).relative_to(root).as_posix()
        prefix = "fireplug/" if relative == "." else f"fireplug/{relative}/"
        found += [(prefix + name, Path(folder, name)) for name in names if name.endswith(".py")]
    return sorted(found)


def base_files(root: Path = PACKAGE) -> list[tuple[str, bytes]]:
    """The base image's build context: Dockerfile.base and the package's sources, read."""
    return [(name, path.read_bytes()) for name, path in base_sources(root)] + [("fireplug/py.typed", b"")]


def sources_digest(files: list[tuple[str, bytes]]) -> str:
    """One hash over the base's build context: every name and its content."""
    digest = hashlib.sha256(RECORD_FORMAT.encode())
    for name, data in files:
        digest.update(b"\0" + name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def remembered_digest(record: Path | None, root: Path = PACKAGE, *, now_ns: int | None = None) -> str:
    """``sources_digest`` of the package at ``root``, read from ``record`` (a file) when no
    source's stat signature changed since it was written; else computed and recorded."""
    if root in _remembered:
        return _remembered[root]
    sources = base_sources(root)
    looked_at = time.time_ns() if now_ns is None else now_ns
    stats = [os.stat(path) for _, path in sources]
    signature = _signature(root, sources, stats)
    digest = _read_record(record, signature)
    if digest is None:
        digest = sources_digest(base_files(root))
        if record is not None and not any(is_racy(info.st_mtime_ns, info.st_ctime_ns, looked_at) for info in stats):
            _write_record(record, signature, digest)
    _remembered[root] = digest
    return digest


def _signature(root: Path, sources: list[tuple[str, Path]], stats: list[os.stat_result]) -> str:
    digest = hashlib.sha256(f"{RECORD_FORMAT}\0{root}".encode())
    for (name, _), info in zip(sources, stats, strict=True):
        digest.update(f"\n{name}\0{stat_signature(info)}".encode())
    return digest.hexdigest()


def _read_record(record: Path | None, signature: str) -> str | None:
    if record is None:
        return None
    try:
        lines = record.read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        return None
    return lines[1] if len(lines) == 2 and lines[0] == signature and len(lines[1]) == 64 else None


def _write_record(record: Path, signature: str, digest: str) -> None:
    """Written whole or not at all (a cache: a failure only costs the next run a hash)."""
    with contextlib.suppress(OSError):
        record.parent.mkdir(parents=True, exist_ok=True)
        partial = record.with_name(f"{record.name}.{os.getpid()}.tmp")
        partial.write_text(f"{signature}\n{digest}\n", encoding="ascii")
        os.replace(partial, record)


def record_file(environ: Mapping[str, str], home: Path) -> Path:
    """Where this user's fp remembers the digest of its sources."""
    return cache_dir(environ, home).parent / "base-sources"


def base_image_tag(base_image: str, digest: str) -> str:
    """The base image's tag: its FROM image and its sources' digest."""
    both = hashlib.sha256(base_image.encode() + b"\0" + digest.encode())
    return f"{BASE_REPOSITORY}:{both.hexdigest()[:16]}"


def ensure_base(engine: Engine, base_image: str, *, rebuild: bool = False, locks: Path | None = None, record: Path | None = None) -> Image:
    """fp's base image on ``engine``, built from Dockerfile.base when absent.

    ``rebuild`` builds it again without the engine's layer cache (fresh Debian packages);
    ``record``: where the sources' digest is remembered (see ``remembered_digest``).

    Raises:
        BaseImageMissing: ``base_image`` is not on the host and cannot be pulled.
        BuildError, EngineError, EngineUnreachable.
    """
    tag = base_image_tag(base_image, remembered_digest(record))
    existing = None if rebuild else engine.image_id(tag)
    if existing:
        return Image(tag, existing, built=False)
    with one_builder(locks, engine, tag):
        existing = None if rebuild else engine.image_id(tag)
        if existing:
            return Image(tag, existing, built=False)
        return _build_base(engine, base_image, tag, rebuild=rebuild)


def _build_base(engine: Engine, base_image: str, tag: str, *, rebuild: bool) -> Image:
    files = base_files()
    if base_image_tag(base_image, sources_digest(files)) != tag:  # changed since the digest was taken
        _remembered.clear()
        raise BuildError(engine.host, tag, "fp's own files changed while it ran; run it again", ())
    image_labels = {labels.KIND: "base", labels.FROM: base_image, labels.VERSION: __version__}
    title = f"building the base image {tag} from {base_image} on host '{engine.host}' (once per host and fp version)"
    try:
        image_id = build_image(
            engine,
            tar_stream(Context(root=Path("."), entries=()), files),
            tag=tag,
            dockerfile="Dockerfile",
            buildargs={"BASE_IMAGE": base_image},
            image_labels=image_labels,
            title=title,
            nocache=rebuild,
        )
    except BuildError as e:
        if engine.image_id(base_image) is None:
            raise BaseImageMissing(engine.host, base_image, e.detail) from e
        raise
    return Image(tag, image_id, built=True)
