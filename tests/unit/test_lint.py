"""The code base stays ruff-clean (lint and format), like the house style asks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def ruff(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ruff", *argv, "fireplug", "tests", "bench"], cwd=REPO, capture_output=True, text=True)


def test_ruff_check() -> None:
    done = ruff("check")
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format() -> None:
    done = ruff("format", "--check")
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy() -> None:
    """The package type-checks at the strictness pyproject.toml's [tool.mypy] sets (py.typed ships)."""
    done = subprocess.run([sys.executable, "-m", "mypy", "fireplug"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
