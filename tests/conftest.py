"""Fixtures for every test: an isolated HOME, so the developer's own config never leaks in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME, XDG folders, DOCKER_CONFIG and ssh config of the test's own; no FP_* or DOCKER_* from outside."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("DOCKER_CONFIG", str(home / ".docker"))
    for name in ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "MACHINE_STORAGE_PATH", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):
        if name.startswith("FP_"):
            monkeypatch.delenv(name)
    ssh_config = home / "ssh_config"
    ssh_config.write_text("")
    monkeypatch.setenv("FP_SSH_CONFIG", str(ssh_config))  # ssh would read the real ~/.ssh/config (from passwd, not HOME)
    return home
