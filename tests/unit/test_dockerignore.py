"""fp's .dockerignore matcher against docker-py's implementation of Docker's rules (the reference,
installed for the tests only), on generated patterns and paths, plus the cases where fp follows
Docker rather than docker-py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from docker.utils.build import PatternMatcher
from hypothesis import given, settings
from hypothesis import strategies as st

from fireplug.errors import ProjectError
from fireplug.image.context import ScanRules
from fireplug.image.dockerignore import IGNORE_FILE_KEPT, Pattern, clean_parts, deciding, excludes
from fireplug.image.scan import scan

# docker-py lowercases names and patterns (Docker does not): the generated ones are lowercase.
NAME = st.text(alphabet="ab.-_", min_size=1, max_size=4).filter(lambda name: name not in (".", ".."))
PATH = st.lists(NAME, min_size=1, max_size=4).map("/".join)
PATTERN_PART = st.text(alphabet="ab.*?[]!-/", min_size=1, max_size=7)
PATTERN = st.tuples(st.sampled_from(["", "!", "/", "**/"]), PATTERN_PART, st.sampled_from(["", "/", "/**", "/*"])).map("".join)


def ours(lines: list[str], path: str) -> bool:
    patterns = [pattern for pattern in map(Pattern, lines) if pattern.dirs] + [IGNORE_FILE_KEPT]
    return excludes(patterns, path)


@settings(max_examples=400, deadline=None)
@given(st.lists(PATTERN, min_size=1, max_size=4), st.lists(PATH, min_size=1, max_size=6))
def test_decisions_match_docker_py(lines: list[str], paths: list[str]) -> None:
    try:
        reference = PatternMatcher(lines)
        reference.matches("a")  # docker-py compiles its patterns when first used
    except re.error:
        with pytest.raises(re.error):
            ours(lines, "a")
        return
    for path in paths:
        assert ours(lines, path) == bool(reference.matches(path)), (lines, path)


@pytest.mark.parametrize(
    ("lines", "path", "excluded"),
    [
        pytest.param(["build"], "build/out/x.o", True, id="a-folder-leaves-out-what-is-below"),
        pytest.param(["/build/"], "build/x", True, id="slashes-are-irrelevant"),
        pytest.param(["a/../build"], "build/x", True, id="dot-dot-cancels-the-part-before"),
        pytest.param(["**/*.pyc"], "x.pyc", True, id="double-star-includes-no-folder"),
        pytest.param(["**/*.pyc"], "a/b/x.pyc", True, id="double-star-any-folders"),
        pytest.param(["docs/**"], "docs/a/b.md", True, id="trailing-double-star-everything-below"),
        pytest.param(["*.md", "!README.md"], "README.md", False, id="the-last-match-decides"),
        pytest.param(["*"], ".dockerignore", False, id="the-ignore-file-always-ends-in-an-exception"),
        pytest.param(["file(1).txt"], "file(1).txt", True, id="regex-characters-stand-for-themselves"),
        pytest.param(["file(1).txt"], "file1.txt", False, id="regex-characters-are-no-groups"),
        pytest.param(["[!a]x"], "bx", True, id="class-complement"),
        pytest.param(["[]]x"], "]x", True, id="closing-bracket-first-is-a-member"),
        pytest.param(["a[b"], "a[b", True, id="an-unclosed-bracket-stands-for-itself"),
        pytest.param(["*.MD"], "notes.md", False, id="case-matters-as-in-docker-not-docker-py"),
        pytest.param(["?"], "a/b", True, id="question-mark-one-character-of-a-part"),
    ],
)
def test_docker_rules(lines: list[str], path: str, excluded: bool) -> None:
    assert ours(lines, path) is excluded


def test_a_pattern_docker_refuses_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("")
    with pytest.raises(ProjectError, match=r"^.dockerignore line 2: '\[z-a\]' is no pattern \(bad character range"):
        scan(tmp_path, ScanRules(data_folder="data", ignore_text="*.log\n[z-a]\n"))


def test_cleaning_and_the_deciding_pattern() -> None:
    assert clean_parts(" ./a//b/../c/ ") == ["a", "c"]
    assert Pattern("!").dirs == [] and Pattern(".").dirs == []
    patterns = [Pattern("*.md"), Pattern("!README*.md"), Pattern("docs")]
    assert deciding(patterns, "README-x.md") is patterns[1]
    assert deciding(patterns, "docs/README.md") is patterns[2]
    assert deciding(patterns, "main.py") is None
