"""A project's name and id: an image-name-safe name from any folder name (transliterated to
ASCII), the id derived from the project's path or drawn for ``fp init``."""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from pathlib import Path


def derived_id(root: Path) -> str:
    """A project's id when fireplug.toml names none: from its absolute path (moving it makes a new project)."""
    return hashlib.sha256(os.fsencode(root)).hexdigest()[:8]


def new_id() -> str:
    import secrets

    return secrets.token_hex(4)


def sanitize_name(folder_name: str) -> str:
    """An image-name-safe project name derived from a folder name, transliterated to ASCII."""
    ascii_name = transliterate(folder_name).lower()
    cleaned = re.sub(r"[^a-z0-9_.-]+", "-", ascii_name).strip("-._")
    return cleaned or "project"


_CYRILLIC = dict(
    zip(
        "абвгдеёжзийклмнопрстуфхцчшщъыьэюяєіїґ",
        [
            "a",
            "b",
            "v",
            "g",
            "d",
            "e",
            "e",
            "zh",
            "z",
            "i",
            "y",
            "k",
            "l",
            "m",
            "n",
            "o",
            "p",
            "r",
            "s",
            "t",
            "u",
            "f",
            "kh",
            "ts",
            "ch",
            "sh",
            "shch",
            "-",
            "y",
            "-",
            "e",
            "yu",
            "ya",
            "ye",
            "i",
            "yi",
            "g",
        ],
        strict=True,
    )
)

_GREEK = dict(
    zip(
        "αβγδεζηθικλμνξοπρσςτυφχψω",
        ["a", "v", "g", "d", "e", "z", "i", "th", "i", "k", "l", "m", "n", "x", "o", "p", "r", "s", "s", "t", "y", "f", "ch", "ps", "o"],
        strict=True,
    )
)

_LATIN = {"ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "ı": "i"}


def transliterate(text: str) -> str:
    """A readable ASCII rendering: accents dropped, Cyrillic and Greek spelled out, the rest left out."""
    out = []
    for character in text:
        for part in (character,) if _spelled(character) is not None else unicodedata.normalize("NFKD", character):
            spelled = _spelled(part)
            out.append(spelled if spelled is not None else part if part.isascii() else "")
    return "".join(out)


def _spelled(character: str) -> str | None:
    lower = character.lower()
    spelled = _CYRILLIC.get(lower) or _GREEK.get(lower) or _LATIN.get(lower)
    return None if spelled is None else "" if spelled == "-" else spelled
