"""Sizes in words, the same everywhere fp states one."""

from __future__ import annotations


def human_bytes(count: float) -> str:
    """``count`` bytes in decimal units: "512 B", "20.5 KB", "1.2 GB"."""
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"  # pragma: no cover
