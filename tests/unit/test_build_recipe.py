from __future__ import annotations

from pathlib import Path

from fireplug.config import load
from fireplug.image.build import base_files, base_image_tag, generated_recipe, image_hash, project_image_tag
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
    tag = base_image_tag("debian:bookworm-slim", list(files.items()))
    assert tag.startswith("fireplug-base:")
    assert base_image_tag("debian:trixie-slim", list(files.items())) != tag
    changed = {**files, "fireplug/serialize/store.py": files["fireplug/serialize/store.py"] + b"#"}
    assert base_image_tag("debian:bookworm-slim", list(changed.items())) != tag
