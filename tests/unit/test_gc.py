"""fp gc's finders that need no engine: old trash on a host (the ssh script and the API helper)
and here."""

from __future__ import annotations

import io
import os
import subprocess
import time
from pathlib import Path

from fireplug.backends.base import Found, Garbage
from fireplug.backends.docker.garbage import TRASH_SCRIPT
from fireplug.backends.docker.garbage import parse_sizes as _parse_sizes
from fireplug.manage.gc import _local_trash, _unused_layers
from fireplug.remote.sync_helper import old_trash
from fireplug.support import labels
from fireplug.sync.tree import TRASH_DAYS

OLD = time.time() - (TRASH_DAYS + 2) * 86400


def data_root(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    """Two projects' folders with trash batches old and new; the old ones' paths and bytes."""
    root = tmp_path / "data-root"
    old = {}
    for project, batch, size, age in (("a-1", "20261101T000000", 5000, OLD), ("a-1", "20261202T000000", 7, None), ("b-2", "20261102T000000", 300, OLD)):
        folder = root / project / ".fp-trash" / batch
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "f.bin").write_bytes(b"x" * size)
        if age is not None:
            os.utime(folder, (age, age))
            old[str(folder)] = size
    (root / "a-1" / "data").mkdir()
    (root / "a-1" / "data" / "keep.bin").write_bytes(b"data")
    return root, old


def test_the_ssh_script_lists_then_removes_only_trash_past_its_limit(tmp_path: Path) -> None:
    root, old = data_root(tmp_path)

    def script(action: str) -> list[tuple[int, str]]:
        done = subprocess.run(["sh", "-c", TRASH_SCRIPT, "sh", str(root), str(TRASH_DAYS), action], capture_output=True, check=True)
        return _parse_sizes(done.stdout, b"\0", b"\t")

    listed = script("list")
    assert {path for _, path in listed} == set(old)
    assert all(size >= old[path] for size, path in listed)  # du counts the folders' blocks too
    assert all(Path(path).exists() for path in old)
    assert script("remove") == [], "what is printed after a removal is what is left"
    assert not any(Path(path).exists() for path in old)
    assert (root / "a-1" / ".fp-trash" / "20261202T000000").is_dir() and (root / "a-1" / "data" / "keep.bin").is_file()
    assert script("list") == []


def test_the_api_helper_finds_the_same_with_the_bytes_of_their_files(tmp_path: Path) -> None:
    root, old = data_root(tmp_path)
    out = io.BytesIO()
    old_trash(str(root), TRASH_DAYS, out, remove=False)
    assert sorted((path, size) for size, path in _parse_sizes(out.getvalue(), b"\n", b" ")) == sorted(old.items())
    left = io.BytesIO()
    old_trash(str(root), TRASH_DAYS, left, remove=True)
    assert left.getvalue() == b""
    assert not any(Path(path).exists() for path in old) and (root / "a-1" / "data" / "keep.bin").is_file()


def test_local_trash_past_its_limit_is_found_per_project_and_host(tmp_path: Path) -> None:
    trash = tmp_path / "state" / "trash"
    kept, gone = trash / "p-1" / "aws02" / "20261202T000000", trash / "p-1" / "aws02" / "20261101T000000"
    for batch in (kept, gone):
        batch.mkdir(parents=True)
        (batch / "r.txt").write_bytes(b"12345")
    os.utime(gone, (OLD, OLD))
    found = _local_trash(trash)
    assert [(item.handle, item.bytes) for item in found] == [(str(gone), 5)]


class _Images:
    """An engine that only lists images (by the kind label)."""

    def __init__(self, images: list[dict[str, object]]) -> None:
        self.listed = images

    def images(self, wanted: list[str], *, dangling: bool | None = None) -> list[dict[str, object]]:
        kind = wanted[0].partition("=")[2]
        return [image for image in self.listed if image["Labels"].get(labels.KIND) == kind]  # type: ignore[attr-defined]


def test_a_dependency_layer_goes_once_no_kept_image_is_built_on_it_and_an_hour_passed() -> None:
    old, now = time.time() - 7200, time.time()

    def layer(name: str, created: float) -> dict[str, object]:
        return {"Id": f"sha256:{name}", "RepoTags": [f"{name}:latest"], "Created": created, "Labels": {labels.KIND: "deps"}}

    def project(image_id: str, on: str) -> dict[str, object]:
        return {"Id": image_id, "RepoTags": [f"fp-p:{image_id}"], "Created": old, "Labels": {labels.KIND: "project", labels.DEPS: on}}

    engine = _Images(
        [
            layer("fp-deps-kept", old),
            layer("fp-deps-orphan", old),
            layer("fp-deps-fresh", now),
            layer("fp-deps-inuse", old),
            layer("fp-deps-leaving", old),
            project("p1", "fp-deps-kept"),
            project("p2", "fp-deps-leaving"),
        ]
    )
    found = Found([Garbage("image", "p2", "fp-p:p2", 0, "older than its newest 1")])
    _unused_layers(engine, {"sha256:fp-deps-inuse"}, {}, found)  # type: ignore[arg-type]
    assert [item.name for item in found.items[1:]] == ["fp-deps-orphan", "fp-deps-leaving"]
