"""Scanning the project: which files are shipped, every exclusion with its reason, and the
secrets that stay out (by name, by content, or hard-linked to a credential of the home folder).

The context is the project folder minus the data folder, minus ``.dockerignore`` matches
(Docker's rules, dockerignore.py), minus fp's built-in exclusions that keep secrets, version
control, virtualenvs and caches out. Imported when a project is scanned or a changed file is
read again: a warm run knows its context from the scan record (scancache.py).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fireplug.errors import ProjectError
from fireplug.image.context import DOCKERIGNORE, Context, Entry, ScanLimit, ScanRules, context_digest
from fireplug.image.dockerignore import IGNORE_FILE_KEPT, Pattern, deciding, excludes
from fireplug.support.secrets import ContentSniffer, secret_name
from fireplug.support.signature import stat_signature

READ_SIZE = 1 << 20


@dataclass(frozen=True)
class Exclusion:
    path: str
    is_dir: bool
    reason: str
    secret: bool = False


@functools.cache
def _builtin_names() -> tuple[tuple[re.Pattern[str], str], ...]:
    """Name-based built-in exclusions that are not secrets, at any depth: (regex on the name, reason)."""
    return tuple(
        (re.compile(pattern), reason)
        for pattern, reason in (
            (r"\.git|\.hg|\.svn", "version control"),
            (r"__pycache__|\.pytest_cache|\.mypy_cache|\.ruff_cache|\.ipynb_checkpoints", "cache"),
        )
    )


# The usual credential files and folders in a home folder (hard links to them stay out).
HOME_CREDENTIALS: tuple[str, ...] = (".aws", ".ssh", ".gnupg", ".docker", ".kube", ".azure", ".kaggle", ".config/gcloud")
HOME_CREDENTIALS += (".netrc", ".pgpass", ".pypirc", ".git-credentials", ".npmrc", ".s3cfg")
MAX_SECRET_FOLDER_ENTRIES = 10_000  # walked only to know their files' inodes (hard links to them)
_VENV_MARKERS = ("pyvenv.cfg", "conda-meta")


@dataclass(frozen=True)
class IgnoreRule:
    line: int
    text: str
    pattern: Pattern


class IgnoreRules:
    """A ``.dockerignore`` file, matched by Docker's rules (dockerignore.py)."""

    def __init__(self, text: str) -> None:
        """Raises: ProjectError: a pattern Docker refuses too."""
        lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1)]
        kept = [(number, line) for number, line in lines if line and not line.startswith("#")]
        self._rules = [IgnoreRule(number, line, _pattern(number, line)) for number, line in kept]
        self._rules = [rule for rule in self._rules if rule.pattern.dirs]
        self._patterns = [rule.pattern for rule in self._rules] + [IGNORE_FILE_KEPT]

    def excludes(self, path: str) -> bool:
        return excludes(self._patterns, path)

    def may_include_below(self, folder: str) -> bool:
        """Whether an exception rule (``!``) may re-include something under an excluded folder."""
        return any(rule.pattern.exclusion and rule.pattern.cleaned.startswith(folder) for rule in self._rules)

    def explain(self, path: str) -> IgnoreRule | None:
        """The rule that decided ``path``: the last one matching it or one of its parents."""
        decided = deciding([rule.pattern for rule in self._rules], path)
        return next((rule for rule in self._rules if rule.pattern is decided), None)


def _pattern(number: int, line: str) -> Pattern:
    try:
        return Pattern(line)
    except re.error as e:
        raise ProjectError(f"{DOCKERIGNORE} line {number}: {line!r} is no pattern ({e.msg})", hint="Docker refuses it too; fix or remove the line") from e


def builtin_reason(name: str, full_path: str, is_dir: bool) -> tuple[str, bool] | None:
    """Why fp never ships this path whatever .dockerignore says, and whether it is a secret; or None."""
    for pattern, reason in _builtin_names():
        if pattern.fullmatch(name):
            return reason, False
    if secret := secret_name(name, is_dir):
        return f"secret ({secret})", True
    if is_dir and any(os.path.exists(os.path.join(full_path, marker)) for marker in _VENV_MARKERS):
        return "virtualenv", False
    return None


def scan(
    root: Path, rules: ScanRules, known: Mapping[str, tuple[tuple[int, ...], str]] | None = None, *, home: Path | None = None, limit: ScanLimit | None = None
) -> Context:
    """Walk the project and decide, for every path, whether it is shipped and why not.

    ``known`` maps a path to (stat signature, digest) from an earlier scan, so unchanged
    files are not read again. A file with several names is left out when another name is a
    secret: one in the project, or one of the credential files in ``home``. ``limit``: stop as
    soon as the shipped files pass it.

    Raises:
        ProjectError: a file that should be shipped cannot be read, or ``limit`` was passed.
    """
    walker = _Walker(root, rules, IgnoreRules(rules.ignore_text), known or {}, limit)
    walker.walk("")
    walker.drop_links_to_secrets(home)
    entries = tuple(walker.entries)
    return Context(
        root=root,
        entries=entries,
        secrets=tuple(walker.secrets),
        exclusions=tuple(walker.exclusions),
        digest=context_digest(entries),
        folders=tuple(walker.walked_dirs),
    )


class _Walker:
    def __init__(
        self, root: Path, rules: ScanRules, ignore: IgnoreRules, known: Mapping[str, tuple[tuple[int, ...], str]], limit: ScanLimit | None = None
    ) -> None:
        self.limit = limit
        self.shipped_files = 0
        self.shipped_bytes = 0
        self.top_sizes: dict[str, int] = {}  # bytes shipped under each top-level entry
        self.root = root
        self.rules = rules
        self.ignore = ignore
        self.known = known
        self.entries: list[Entry] = []
        self.exclusions: list[Exclusion] = []
        self.secrets: list[str] = []
        self.walked_dirs: list[str] = []
        self.secret_inodes: dict[tuple[int, int], str] = {}  # (device, inode) of secret files -> a path
        self.linked: dict[str, tuple[int, int]] = {}  # shipped files with more than one name

    def walk(self, folder: str) -> None:
        self.walked_dirs.append(folder)
        try:
            names = sorted(os.listdir(os.path.join(self.root, folder)))
        except OSError as e:
            raise ProjectError(f"cannot list {os.path.join(self.root, folder)}: {e.strerror}", hint="fix its permissions or add it to .dockerignore") from e
        for name in names:
            self.visit(f"{folder}/{name}" if folder else name, name)

    def visit(self, path: str, name: str) -> None:
        full = os.path.join(self.root, path)
        try:
            info = os.lstat(full)
        except FileNotFoundError:
            return  # removed since the folder was listed
        is_dir = stat.S_ISDIR(info.st_mode)
        reason = self.exclusion_reason(path, name, full, is_dir)
        if reason is not None:
            text, secret = reason
            self.exclude(path, is_dir, text, secret)
            if secret:
                self.remember_secret(full, info)
            if is_dir and text.startswith(".dockerignore") and self.ignore.may_include_below(path):
                self.walk(path)
            return
        if self.limit is not None and stat.S_ISREG(info.st_mode):  # before it is read: a 10 GB folder is refused at once
            self.count(path, info.st_size)
        entry = self.entry(path, full, info)
        if entry is None:
            self.exclusions.append(Exclusion(path, False, "not a regular file, folder or symlink"))
            return
        if isinstance(entry, str):  # its content is a secret
            self.exclude(path, False, f"built-in: secret (it {entry})", True)
            self.remember_secret(full, info)
            return
        self.entries.append(entry)
        if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
            self.linked[path] = (info.st_dev, info.st_ino)
        if is_dir:
            self.walk(path)

    def count(self, path: str, size: int) -> None:
        assert self.limit is not None
        self.shipped_files += 1
        self.shipped_bytes += size
        top = path.split("/")[0] + ("/" if "/" in path else "")
        self.top_sizes[top] = self.top_sizes.get(top, 0) + size
        self.limit.check(self.root, self.shipped_files, self.shipped_bytes, self.top_sizes)

    def exclude(self, path: str, is_dir: bool, reason: str, secret: bool) -> None:
        self.exclusions.append(Exclusion(path, is_dir, reason, secret))
        if secret and not self.ignore.excludes(path):  # worth a word only when .dockerignore lets it through
            self.secrets.append(path)

    def remember_secret_path(self, full: str) -> None:
        with contextlib.suppress(OSError):
            self.remember_secret(full, os.lstat(full))

    def remember_secret(self, full: str, info: os.stat_result) -> None:
        """Note the inodes of a secret file, or of the files in a secret folder, for hard links to them."""
        if not stat.S_ISDIR(info.st_mode):
            self.secret_inodes[(info.st_dev, info.st_ino)] = full
            return
        for count, (folder, _, names) in enumerate(os.walk(full)):
            if count > MAX_SECRET_FOLDER_ENTRIES:
                return
            for name in names:
                with contextlib.suppress(OSError):
                    found = os.lstat(os.path.join(folder, name))
                    if stat.S_ISREG(found.st_mode):
                        self.secret_inodes[(found.st_dev, found.st_ino)] = os.path.join(folder, name)

    def drop_links_to_secrets(self, home: Path | None) -> None:
        """A hard link is the same file under another name: one to a secret is a secret."""
        if self.linked and home is not None:
            for path in HOME_CREDENTIALS:
                self.remember_secret_path(str(home / path))
        linked = {path for path, inode in self.linked.items() if inode in self.secret_inodes and not self.rules.allows(path)}
        if linked:
            self.entries = [entry for entry in self.entries if entry.path not in linked]
            for path in sorted(linked):
                self.exclude(path, False, "built-in: secret (a hard link to a secret file)", True)

    def exclusion_reason(self, path: str, name: str, full: str, is_dir: bool) -> tuple[str, bool] | None:
        if path == self.rules.data_folder:
            return "data folder (mounted at run time, never built in)", False
        builtin = builtin_reason(name, full, is_dir)
        if builtin is not None and not (builtin[1] and self.rules.allows(path)):
            return f"built-in: {builtin[0]}", builtin[1]
        if path == DOCKERIGNORE:
            return None if self.rules.ship_dockerignore else ("read by fp, not shipped", False)
        if self.ignore.excludes(path):
            rule = self.ignore.explain(path)
            where = f"line {rule.line}: {rule.text}" if rule else "a rule"
            return f".dockerignore {where}", False
        return None

    def entry(self, path: str, full: str, info: os.stat_result) -> Entry | str | None:
        """The shipped entry; a reason (str) when a file's content is a secret; None for other kinds."""
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISDIR(info.st_mode):
            return Entry(path, "dir", mode, mtime_ns=info.st_mtime_ns)
        if stat.S_ISLNK(info.st_mode):
            return Entry(path, "symlink", mode, mtime_ns=info.st_mtime_ns, target=os.readlink(full))
        if not stat.S_ISREG(info.st_mode):
            return None
        signature = stat_signature(info)
        known = self.known.get(path)
        if known and known[0] == signature and known[1]:
            return Entry(path, "file", mode, info.st_size, info.st_mtime_ns, known[1])  # read (and found clean) before
        digest, secret = read_file(full)
        if secret and not self.rules.allows(path):
            return secret
        return Entry(path, "file", mode, info.st_size, info.st_mtime_ns, digest)


def read_file(path: str) -> tuple[str, str]:
    """SHA-256 of a file's bytes, read in blocks, and why its content shows it is a secret ("" if not;
    see secrets.ContentSniffer).

    Raises:
        ProjectError: the file cannot be read.
    """
    digest = hashlib.sha256()
    sniffer = ContentSniffer()
    try:
        with open(path, "rb") as handle:
            while block := handle.read(READ_SIZE):
                sniffer.feed(block)
                digest.update(block)
    except OSError as e:
        raise ProjectError(f"cannot read {path}: {e.strerror}", hint="fix its permissions or add it to .dockerignore") from e
    return digest.hexdigest(), sniffer.reason
