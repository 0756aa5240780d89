from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from fireplug.config import load
from fireplug.image import base
from fireplug.image.base import PACKAGE, base_files, base_image_tag, remembered_digest, sources_digest
from fireplug.image.build import generated_recipe, image_hash, project_image_tag
from fireplug.image.context import Context, Entry, context_digest


def context_with(*entries: Entry) -> Context:
    return Context(root=Path("/p"), entries=entries, digest=context_digest(entries))


def test_image_hash_covers_context_recipe_and_base() -> None:
    config = load([], {}, {}, root=Path("/home/ada/proj"))
    recipe = generated_recipe(config, "fireplug-base:1")
    one = context_with(Entry("a.py", "file", 0o644, 3, digest="d1"))
    baseline = image_hash(one, recipe, "sha256:base1")
    assert image_hash(one, recipe, "sha256:base1") == baseline
    assert image_hash(one, recipe, "sha256:base2") != baseline
    assert image_hash(context_with(Entry("a.py", "file", 0o644, 3, digest="d2")), recipe, "sha256:base1") != baseline
    moved = generated_recipe(load([], {}, {"project": {"workdir": "/w"}}, root=Path("/home/ada/proj")), "fireplug-base:1")
    assert image_hash(one, moved, "sha256:base1") != baseline
    assert project_image_tag("proj", baseline) == f"fp-proj:{baseline[:16]}"


def test_generated_recipe_copies_to_the_mirrored_path() -> None:
    config = load([], {}, {}, root=Path("/home/ada/my proj"))
    lines = generated_recipe(config, "fireplug-base:abc").text.splitlines()
    assert lines[:3] == ["FROM fireplug-base:abc", 'COPY [".", "/home/ada/my proj/"]', 'WORKDIR "/home/ada/my proj"']
    assert lines[3].startswith('LABEL io.fireplug.kind="project" io.fireplug.project="my-proj"')


def test_base_context_bundles_the_package_and_its_tag_tracks_it() -> None:
    files = dict(base_files())
    assert files["Dockerfile"].startswith(b"# fp's base image")
    assert "fireplug/serialize/store.py" in files and "fireplug/__init__.py" in files
    assert not any("__pycache__" in name for name in files)
    tag = base_image_tag("debian:bookworm-slim", sources_digest(list(files.items())))
    assert tag.startswith("fireplug-base:")
    assert base_image_tag("debian:trixie-slim", sources_digest(list(files.items()))) != tag
    changed = {**files, "fireplug/serialize/store.py": files["fireplug/serialize/store.py"] + b"#"}
    assert base_image_tag("debian:bookworm-slim", sources_digest(list(changed.items()))) != tag


def _package_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the package, and no digest in this process's memory."""
    root = tmp_path / "fireplug"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(base, "_remembered", {})
    return root


LATER = time.time_ns() + 3600 * 10**9  # a look long after the files changed: they may be remembered


def test_the_sources_digest_is_remembered_until_a_source_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, record = _package_copy(tmp_path, monkeypatch), tmp_path / "cache" / "base-sources"
    fresh = sources_digest(base_files(root))
    assert remembered_digest(record, root, now_ns=LATER) == fresh and record.is_file()
    monkeypatch.setattr(base, "_remembered", {})
    monkeypatch.setattr(base, "base_files", lambda root: pytest.fail("read the sources although none changed"))
    assert remembered_digest(record, root, now_ns=LATER) == fresh
    monkeypatch.undo()
    monkeypatch.setattr(base, "_remembered", {})
    store = root / "serialize" / "store.py"
    store.write_bytes(store.read_bytes() + b"#")
    changed = remembered_digest(record, root)  # looked at now: too recent to remember
    assert changed == sources_digest(base_files(root)) != fresh
    assert record.read_text().split()[1] == fresh  # the racy look was not recorded
    monkeypatch.setattr(base, "_remembered", {})
    (root / "extra.py").write_text("x = 1\n")
    assert remembered_digest(record, root, now_ns=LATER) not in (fresh, changed)


def test_a_damaged_record_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, record = _package_copy(tmp_path, monkeypatch), tmp_path / "base-sources"
    record.write_text("garbage\n")
    assert remembered_digest(record, root, now_ns=LATER) == sources_digest(base_files(root))
    assert record.read_text().split()[1] == sources_digest(base_files(root))
