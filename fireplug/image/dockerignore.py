"""Docker's ``.dockerignore`` rules: which paths of a build context a list of patterns leaves out.

The rules, as Docker documents them (and docker-py implements them; tests compare the two):
- a pattern is cleaned like a path: empty and ``.`` parts dropped, ``..`` cancels the part
  before it, leading and trailing slashes are irrelevant (``/build/`` is ``build``);
- ``*`` matches any run of characters except ``/``, ``?`` one such character, ``[...]`` one
  of a class (``[!...]`` one outside it); ``**`` matches any number of folders, none
  included, and a trailing ``**`` everything below; every other character stands for itself;
- a pattern matches a path, or the path's first folders when it has no more parts than the
  path has folders (``build`` leaves out ``build/out/x.o``);
- the last matching pattern decides: a ``!`` exception keeps the path, any other leaves it out;
  ``.dockerignore`` itself always ends in an exception.

Loaded only when a project is scanned (a warm run knows its context from the scan record).
"""

from __future__ import annotations

import re
from collections.abc import Sequence


class Pattern:
    """One pattern of a ``.dockerignore`` file (its line, stripped)."""

    __slots__ = ("_regex", "cleaned", "dirs", "exclusion")

    def __init__(self, line: str) -> None:
        """Raises: re.error: a class Docker refuses too (a reversed range such as ``[z-a]``)."""
        self.exclusion = line.startswith("!")
        self.dirs = clean_parts(line[1:] if self.exclusion else line)
        self.cleaned = "/".join(self.dirs)
        self._regex = re.compile(translate(self.cleaned))

    def match(self, path: str) -> bool:
        """Whether the pattern matches ``path`` itself (a context-relative path with ``/``)."""
        return self._regex.fullmatch(path) is not None

    def decides(self, path: str, folders: Sequence[str]) -> bool:
        """Whether the pattern matches ``path`` or its first folders (``folders``: the path's)."""
        if self.match(path):
            return True
        return bool(folders) and len(self.dirs) <= len(folders) and self.match("/".join(folders[: len(self.dirs)]))


def clean_parts(text: str) -> list[str]:
    """The parts of a pattern cleaned like a path."""
    parts: list[str] = []
    for part in text.strip().split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part and part != ".":
            parts.append(part)
    return parts


def translate(pattern: str) -> str:
    """The regular expression of a cleaned pattern (matched against a whole path)."""
    out, at = [], 0
    while at < len(pattern):
        char, at = pattern[at], at + 1
        if char == "*" and pattern.startswith("*", at):
            at += 2 if pattern.startswith("*/", at) else 1
            out.append(".*" if at >= len(pattern) else "(.*/)?")
        elif char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            text, at = _character_class(pattern, at)
            out.append(text)
        else:
            out.append(re.escape(char))
    return "".join(out)


def _character_class(pattern: str, start: int) -> tuple[str, int]:
    """The class opened by the ``[`` before ``start``, and where the pattern goes on after it.

    ``[!...]`` is the complement; a ``]`` right after the opening is a member; a ``[`` never
    closed stands for itself.
    """
    end = start + (1 if pattern.startswith("!", start) else 0)
    end += 1 if pattern.startswith("]", end) else 0
    end = pattern.find("]", end)
    if end < 0:
        return r"\[", start
    members = pattern[start:end].replace("\\", "\\\\").replace("[", "\\[")  # a "[" inside is a member, never a nested set
    if members.startswith("!"):
        members = "^" + members[1:]
    elif members.startswith("^"):
        members = "\\" + members
    return f"[{members}]", end + 1


IGNORE_FILE_KEPT = Pattern("!.dockerignore")


def deciding(patterns: Sequence[Pattern], path: str) -> Pattern | None:
    """The pattern that decides ``path``: the last one matching it or its first folders."""
    folders = [part for part in path.split("/")[:-1] if part and part != "."]
    decided = None
    for pattern in patterns:
        if pattern.decides(path, folders):
            decided = pattern
    return decided


def excludes(patterns: Sequence[Pattern], path: str) -> bool:
    """Whether ``patterns`` (a file's, then ``IGNORE_FILE_KEPT``) leave ``path`` out."""
    decided = deciding(patterns, path)
    return decided is not None and not decided.exclusion
