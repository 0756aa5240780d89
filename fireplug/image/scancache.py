"""A per-project record of the last context scan, like git's index.

A warm run only lstat()s the shipped paths and the folders walked: when no folder gained
or lost a name and no file's stat signature (mode, size, mtime, ctime, inode) changed, the
context is known without reading files or loading the ignore matcher. Files and folders
changed within ``RACY_NS`` of the scan are recorded as unknown ("racily clean" in git's
words), so a change within one timestamp tick is never missed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fireplug.image.context import Context, Entry, ScanLimit, ScanRules, context_digest
from fireplug.support.signature import RACY_NS, is_racy, stat_signature

RECORD_FORMAT = 1
_KINDS = {"file": stat.S_ISREG, "dir": stat.S_ISDIR, "symlink": stat.S_ISLNK}
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
SIGNATURE_LENGTH = 5  # the fields of stat_signature


def cache_dir(env: Mapping[str, str], home: Path) -> Path:
    return Path(env.get("XDG_CACHE_HOME") or home / ".cache") / "fireplug" / "contexts"


def load_context(
    root: Path, rules: ScanRules, folder: Path, *, full: bool = False, racy_ns: int = RACY_NS, home: Path | None = None, limit: ScanLimit | None = None
) -> Context:
    """The project's context, revalidated from the record when possible, else scanned afresh.

    ``full`` forces a scan (which also explains every exclusion). Paths changed less than
    ``racy_ns`` before the scan are recorded as unknown. ``home``: the user's home folder, whose
    credential files no hard link may bring in. ``limit``: see ``scan.scan``.

    Raises:
        ProjectError: a shipped file cannot be read, or the context is over ``limit``.
    """
    record_path = record_file(root, folder)
    record = _read(record_path)
    usable = record is not None and record.get("key") == rules.key()
    started_ns = time.time_ns()
    if usable and not full and record is not None:
        revalidated = _revalidate(root, record)
        if revalidated is not None:
            context, reread = revalidated
            if reread:
                _write(record_path, context, rules, started_ns, racy_ns)
            return context
    known = _known_digests(record) if usable else {}
    from fireplug.image.scan import scan  # (a warm run needs no walk)

    context = scan(root, rules, known, home=home, limit=limit)
    _write(record_path, context, rules, started_ns, racy_ns)
    return context


def _revalidate(root: Path, record: dict[str, Any]) -> tuple[Context, bool] | None:
    """The context from the record, or None when the set of shipped paths may have changed.

    The flag says whether some file had to be read again (so the record is worth rewriting).
    """
    for folder, signature in record["folders"]:
        info = _lstat(root / folder)
        if info is None or not stat.S_ISDIR(info.st_mode) or [info.st_mtime_ns, info.st_ino] != signature:
            return None
    entries = []
    for path, kind, signature, digest, target in record["entries"]:
        info = _lstat(root / path)
        if info is None or not _KINDS[kind](info.st_mode):
            return None
        entry = _refresh(root, path, kind, info, signature, digest, target)
        if entry is None:
            return None
        entries.append(entry)
    reread = any(entry.digest != digest for entry, (_, kind, _, digest, _) in zip(entries, record["entries"], strict=True) if kind == "file")
    context = Context(
        root=root,
        entries=tuple(entries),
        secrets=tuple(record["secrets"]),
        digest=context_digest(entries),
        folders=tuple(folder for folder, _ in record["folders"]),
        from_record=True,
    )
    return context, reread


def _refresh(root: Path, path: str, kind: str, info: os.stat_result, signature: list[int], digest: str, target: str) -> Entry | None:
    """The entry as it is now; None when only a scan can tell (a changed file now reads as a
    secret, or a changed file has other names, which may be secrets)."""
    mode = stat.S_IMODE(info.st_mode)
    if kind == "file":
        if list(stat_signature(info)) == signature and digest:
            return Entry(path, kind, mode, info.st_size, info.st_mtime_ns, digest)
        if info.st_nlink > 1:
            return None
        from fireplug.image.scan import read_file

        fresh, secret = read_file(str(root / path))
        return None if secret else Entry(path, kind, mode, info.st_size, info.st_mtime_ns, fresh)
    if kind == "symlink":
        return Entry(path, kind, mode, mtime_ns=info.st_mtime_ns, target=os.readlink(root / path))
    return Entry(path, kind, mode, mtime_ns=info.st_mtime_ns)


def _known_digests(record: dict[str, Any] | None) -> dict[str, tuple[tuple[int, ...], str]]:
    if record is None:
        return {}
    return {path: (tuple(signature), digest) for path, kind, signature, digest, _ in record["entries"] if kind == "file"}


def _write(record_path: Path, context: Context, rules: ScanRules, scanned_ns: int, racy_ns: int) -> None:
    """Save the record; paths changed too close to ``scanned_ns`` (the racy rule) are marked unknown.

    A failure to write only costs the next run a full scan.
    """
    folders = []
    for folder in context.folders:
        info = _lstat(context.root / folder)
        settled_folder = info is not None and not is_racy(info.st_mtime_ns, 0, scanned_ns, racy_ns)
        folders.append([folder, [info.st_mtime_ns, info.st_ino] if info is not None and settled_folder else [-1, -1]])
    entries = []
    for entry in context.entries:
        info = _lstat(context.root / entry.path)
        signature = list(stat_signature(info)) if info is not None else []
        settled_entry = info is not None and not is_racy(info.st_mtime_ns, info.st_ctime_ns, scanned_ns, racy_ns)
        entries.append([entry.path, entry.kind, signature, entry.digest if settled_entry else "", entry.target])
    record = {
        "format": RECORD_FORMAT,
        "key": rules.key(),
        "root": str(context.root),
        "digest": context.digest,
        "folders": folders,
        "entries": entries,
        "secrets": list(context.secrets),
    }
    payload = json.dumps(record, separators=(",", ":")).encode()
    try:
        record_path.parent.mkdir(parents=True, exist_ok=True)
        partial = record_path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(payload + b"\n" + hashlib.sha256(payload).hexdigest().encode())
        partial.replace(record_path)
    except OSError:
        pass


def record_file(root: Path, folder: Path) -> Path:
    return folder / (hashlib.sha256(os.fsencode(root)).hexdigest()[:24] + ".json")


def forget(root: Path, folder: Path) -> None:
    """Drop the project's record (its digests disagreed with the files): the next run scans afresh."""
    with contextlib.suppress(OSError):
        record_file(root, folder).unlink()


def _read(record_path: Path) -> dict[str, Any] | None:
    """The record, or None when it is missing, unreadable or not exactly what ``_write`` writes
    (the cache is disposable: any doubt costs one full scan)."""
    try:
        payload, _, checksum = record_path.read_bytes().rpartition(b"\n")
        if hashlib.sha256(payload).hexdigest().encode() != checksum:
            return None  # cut short, damaged, or not written by fp: a record that lost an entry would lose a file
        record = json.loads(payload)
    except (OSError, ValueError, RecursionError):
        return None
    return record if well_formed(record) else None


def well_formed(record: Any) -> bool:
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT or not isinstance(record.get("key"), str):
        return False
    folders, entries, secrets = record.get("folders"), record.get("entries"), record.get("secrets")
    if not isinstance(folders, list) or not isinstance(entries, list) or not isinstance(secrets, list):
        return False
    if not folders or not isinstance(folders[0], list) or folders[0][:1] != [""]:
        return False  # the walk starts at the project root
    return (
        all(_folder_ok(item) for item in folders)
        and all(_entry_ok(item) for item in entries)
        and all(isinstance(item, str) and _relative(item) for item in secrets)
    )


def _folder_ok(item: Any) -> bool:
    return isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and (item[0] == "" or _relative(item[0])) and _ints(item[1], 2)


def _entry_ok(item: Any) -> bool:
    if not isinstance(item, list) or len(item) != 5:
        return False
    path, kind, signature, digest, target = item
    return (
        isinstance(path, str)
        and _relative(path)
        and kind in _KINDS
        and (signature == [] or _ints(signature, SIGNATURE_LENGTH))
        and isinstance(digest, str)
        and (digest == "" or _DIGEST_RE.fullmatch(digest) is not None)
        and isinstance(target, str)
    )


def _ints(value: Any, length: int) -> bool:
    return isinstance(value, list) and len(value) == length and all(type(number) is int for number in value)


def _relative(path: str) -> bool:
    parts = path.split("/")
    return bool(path) and not path.startswith("/") and "" not in parts and "." not in parts and ".." not in parts and "\0" not in path


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None
