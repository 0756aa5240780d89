"""Fixtures for every test: an isolated HOME, so the developer's own config never leaks in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME, XDG folders and DOCKER_CONFIG of the test's own; no FP_* or DOCKER_HOST from outside."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("DOCKER_CONFIG", str(home / ".docker"))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    for name in list(os.environ):
        if name.startswith("FP_"):
            monkeypatch.delenv(name)
    return home
