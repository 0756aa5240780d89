from __future__ import annotations

import os
from pathlib import Path

import pytest

from fireplug.image.context import ScanRules
from fireplug.image.scan import scan
from fireplug.image.scancache import load_context

RULES = ScanRules(data_folder="data", ignore_text="*.log\n")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "src").mkdir(parents=True)
    (root / "src" / "a.py").write_text("a = 1\n")
    (root / "src" / "b.py").write_text("b = 2\n")
    (root / "run.log").write_text("noise\n")
    return root


def load(root: Path, rules: ScanRules = RULES, **options: object) -> object:
    return load_context(root, rules, root.parent / "cache", racy_ns=0, **options)  # type: ignore[arg-type]


def test_unchanged_project_comes_from_the_record(tree: Path) -> None:
    first = load(tree)
    second = load(tree)
    assert not first.from_record and second.from_record  # type: ignore[attr-defined]
    assert second.digest == first.digest == scan(tree, RULES).digest  # type: ignore[attr-defined]


def test_same_size_same_mtime_edit_is_seen_through_ctime(tree: Path) -> None:
    first = load(tree)
    target = tree / "src" / "a.py"
    before = target.stat()
    target.write_text("a = 9\n")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    second = load(tree)
    assert second.digest != first.digest  # type: ignore[attr-defined]
    assert second.digest == scan(tree, RULES).digest  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda root: (root / "src" / "c.py").write_text("c\n"), id="new-file"),
        pytest.param(lambda root: (root / "src" / "b.py").unlink(), id="removed-file"),
        pytest.param(lambda root: (root / "src" / "b.py").rename(root / "src" / "b2.py"), id="renamed-file"),
        pytest.param(lambda root: (root / "src" / "a.py").chmod(0o700), id="mode"),
        pytest.param(lambda root: (root / "src" / "new").mkdir(), id="new-folder"),
        pytest.param(lambda root: (root / "src" / "link").symlink_to("a.py"), id="new-symlink"),
    ],
)
def test_any_shipped_change_is_seen(tree: Path, change) -> None:  # type: ignore[no-untyped-def]
    first = load(tree)
    change(tree)
    second = load(tree)
    assert second.digest != first.digest  # type: ignore[attr-defined]
    assert second.digest == scan(tree, RULES).digest  # type: ignore[attr-defined]


def test_ignored_and_data_changes_do_not_change_the_hash(tree: Path) -> None:
    first = load(tree)
    (tree / "run.log").write_text("more noise, longer\n")
    (tree / "data").mkdir()
    (tree / "data" / "x.csv").write_text("1,2\n")
    assert load(tree).digest == first.digest  # type: ignore[attr-defined]


def test_new_ignore_rules_force_a_scan(tree: Path) -> None:
    load(tree)
    stricter = ScanRules(data_folder="data", ignore_text="*.log\nsrc/b.py\n")
    again = load(tree, stricter)
    assert not again.from_record  # type: ignore[attr-defined]
    assert [entry.path for entry in again.entries if entry.kind == "file"] == ["src/a.py"]  # type: ignore[attr-defined]


def test_racy_entries_are_read_again(tree: Path) -> None:
    load_context(tree, RULES, tree.parent / "cache", racy_ns=10**12)  # everything is too recent to trust
    target = tree / "src" / "a.py"
    before = target.stat()
    target.write_text("a = 7\n")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert load(tree).digest == scan(tree, RULES).digest  # type: ignore[attr-defined]


def test_a_corrupt_record_means_a_fresh_scan(tree: Path) -> None:
    load(tree)
    for record in (tree.parent / "cache").iterdir():
        record.write_text("{not json")
    again = load(tree)
    assert not again.from_record  # type: ignore[attr-defined]
    assert again.digest == scan(tree, RULES).digest  # type: ignore[attr-defined]


def test_full_forces_a_scan_with_explanations(tree: Path) -> None:
    load(tree)
    full = load(tree, full=True)
    assert not full.from_record  # type: ignore[attr-defined]
    assert [exclusion.path for exclusion in full.exclusions] == ["run.log"]  # type: ignore[attr-defined]
