from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
from docker.utils.build import PatternMatcher

from fireplug.errors import ContextChanged, ProjectError
from fireplug.image.context import ScanLimit, ScanRules, tar_stream
from fireplug.image.scan import IgnoreRules, builtin_reason, scan


def make_tree(root: Path, paths: list[str]) -> None:
    for relative in paths:
        path = root / relative
        if relative.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"content of {relative}\n")


def shipped(root: Path, ignore: str = "", data: str = "data", **rules: object) -> set[str]:
    context = scan(root, ScanRules(data_folder=data, ignore_text=ignore, **rules))  # type: ignore[arg-type]
    return {entry.path for entry in context.entries if entry.kind == "file"}


# Docker's documented .dockerignore examples (docs.docker.com, "Dockerignore files").
DOCKER_TREE = [
    "Dockerfile",
    "main.go",
    "README.md",
    "README-secret.md",
    "README-other.md",
    "CHANGES.md",
    "docs/guide.md",
    "somedir/temporary.txt",
    "somedir/temp/x.txt",
    "somedir/keep.txt",
    "somedir/subdir/temporary.txt",
    "somedir/subdir/keep.txt",
    "tempa",
    "tempb",
    "tempab",
    "pkg/lib.go",
    "pkg/deep/er/x.go",
]


@pytest.mark.parametrize(
    ("ignore", "excluded"),
    [
        pytest.param("# comment\n*/temp*\n", {"somedir/temporary.txt", "somedir/temp/x.txt"}, id="one-level-temp"),
        pytest.param("*/*/temp*\n", {"somedir/subdir/temporary.txt"}, id="two-levels-temp"),
        pytest.param("temp?\n", {"tempa", "tempb"}, id="root-temp-one-char"),
        pytest.param("**/*.go\n", {"main.go", "pkg/lib.go", "pkg/deep/er/x.go"}, id="double-star"),
        pytest.param("*.md\n!README.md\n", {"README-secret.md", "README-other.md", "CHANGES.md"}, id="md-except-readme"),
        pytest.param("*.md\n!README*.md\nREADME-secret.md\n", {"README-secret.md", "CHANGES.md"}, id="readmes-but-secret"),
        pytest.param("*.md\nREADME-secret.md\n!README*.md\n", {"CHANGES.md"}, id="last-rule-wins"),
        pytest.param("/somedir/subdir\n", {"somedir/subdir/temporary.txt", "somedir/subdir/keep.txt"}, id="leading-slash-anchors"),
        pytest.param(
            "somedir\n!somedir/keep.txt\n",
            {"somedir/temporary.txt", "somedir/temp/x.txt", "somedir/subdir/temporary.txt", "somedir/subdir/keep.txt"},
            id="exception-inside-excluded-dir",
        ),
    ],
)
def test_docker_documented_examples(tmp_path: Path, ignore: str, excluded: set[str]) -> None:
    make_tree(tmp_path, DOCKER_TREE)
    assert shipped(tmp_path, ignore) == set(DOCKER_TREE) - excluded


def test_decisions_match_docker_py(tmp_path: Path) -> None:
    make_tree(tmp_path, DOCKER_TREE)
    ignore = "*/temp*\n**/*.go\n*.md\n!README*.md\nREADME-secret.md\nsomedir\n!somedir/keep.txt\n"
    matcher = PatternMatcher([line for line in ignore.splitlines() if line])
    expected = {path for path in DOCKER_TREE if not matcher.matches(path)}
    assert shipped(tmp_path, ignore) == expected


@pytest.mark.parametrize(
    ("ignore", "kept", "dropped"),
    [
        pytest.param("data/*\n", "src/pkg/data/__init__.py", "notes.txt", id="data-star-is-anchored"),
        pytest.param("log*\n", "src/logging.py", "logs/today.txt", id="log-star-is-anchored"),
    ],
)
def test_lessons_rules_do_not_surprise(tmp_path: Path, ignore: str, kept: str, dropped: str) -> None:
    make_tree(tmp_path, [kept, dropped, "logs/today.txt"])
    files = shipped(tmp_path, ignore + ("notes.txt\n" if dropped == "notes.txt" else ""), data="inputs")
    assert kept in files
    assert dropped not in files


def test_every_exclusion_is_explained(tmp_path: Path) -> None:
    make_tree(tmp_path, ["app.py", "build/out.bin", "data/x.csv", ".git/HEAD", ".env", "notes/a.md"])
    ignore = "# junk\nbuild\n\n*.md\nnotes\n"
    (tmp_path / ".dockerignore").write_text(ignore)
    context = scan(tmp_path, ScanRules(data_folder="data", ignore_text=ignore))
    reasons = {exclusion.path: exclusion.reason for exclusion in context.exclusions}
    assert reasons == {
        ".dockerignore": "read by fp, not shipped",
        ".env": "built-in: secret (environment file)",
        ".git": "built-in: version control",
        "build": ".dockerignore line 2: build",
        "data": "data folder (mounted at run time, never built in)",
        "notes": ".dockerignore line 5: notes",
    }
    assert context.secrets == (".env",)
    assert [entry.path for entry in context.entries] == ["app.py"]
    quiet = scan(tmp_path, ScanRules(data_folder="data", ignore_text=ignore + ".env\n"))
    assert quiet.secrets == (), "a secret .dockerignore already excludes needs no notice"
    assert ".env" in {exclusion.path for exclusion in quiet.exclusions}


def test_explain_names_the_deciding_rule() -> None:
    rules = IgnoreRules("*.md\n!README*.md\nREADME-secret.md\n")
    assert rules.explain("README-secret.md").line == 3  # type: ignore[union-attr]
    assert rules.explain("README.md").text == "!README*.md"  # type: ignore[union-attr]
    assert rules.explain("main.go") is None


SECRETS = [
    ".env",
    ".env.local",
    "config/.envrc",
    "id_rsa",
    "keys/id_ed25519",
    "server.pem",
    "tls/server.key",
    ".aws/credentials",
    ".ssh/config",
    ".netrc",
    "cert.p12",
]
NOT_SECRETS = ["id_utils.py", "environment.yml", "keyboard.py", "keys.py", "secrets.py", "src/envelope.py", "pem_reader.py"]


def test_secrets_are_never_shipped_even_when_re_included(tmp_path: Path) -> None:
    make_tree(tmp_path, SECRETS + NOT_SECRETS)
    ignore = "".join(f"!{path}\n" for path in SECRETS)
    files = shipped(tmp_path, ignore)
    assert files == set(NOT_SECRETS)


def test_virtualenvs_and_caches_are_left_out(tmp_path: Path) -> None:
    make_tree(tmp_path, ["env2/pyvenv.cfg", "env2/lib/x.py", "conda/conda-meta/history", "src/__pycache__/a.pyc", "env/plain.py", "main.py"])
    assert shipped(tmp_path) == {"env/plain.py", "main.py"}


@pytest.mark.parametrize(
    ("name", "secret"),
    [(".git", False), ("__pycache__", False), (".ssh", True), (".env.prod", True), ("id_ecdsa_sk", True), ("id_rsa.py", None), ("my.key", True)],
)
def test_builtin_reasons(tmp_path: Path, name: str, secret: bool | None) -> None:
    found = builtin_reason(name, str(tmp_path / name), is_dir=False)
    assert (found[1] if found else None) == secret


def test_project_dockerfile_and_ignore_file_are_always_shipped(tmp_path: Path) -> None:
    from fireplug.config import load
    from fireplug.image.build import scan_rules

    make_tree(tmp_path, ["docker/Dockerfile", "docker/notes.txt", "app.py"])
    (tmp_path / ".dockerignore").write_text("docker\n.dockerignore\n")
    rules = scan_rules(load([], {}, {}, root=tmp_path), "docker/Dockerfile", generated=False)
    files = {entry.path for entry in scan(tmp_path, rules).entries if entry.kind == "file"}
    assert files == {"docker/Dockerfile", ".dockerignore", "app.py"}


def digest_of(root: Path) -> str:
    return scan(root, ScanRules(data_folder="data")).digest


def test_hash_covers_content_mode_and_path_but_not_mtime(tmp_path: Path) -> None:
    make_tree(tmp_path, ["src/a.py", "data/big.csv"])
    first = digest_of(tmp_path)
    os.utime(tmp_path / "src" / "a.py", (1, 1))
    assert digest_of(tmp_path) == first, "mtime is not shipped identity"
    (tmp_path / "data" / "big.csv").write_text("changed data")
    assert digest_of(tmp_path) == first, "data is not code"
    (tmp_path / "src" / "a.py").chmod(0o755)
    assert digest_of(tmp_path) != first
    (tmp_path / "src" / "a.py").chmod(0o644)
    assert digest_of(tmp_path) == first
    (tmp_path / "src" / "a.py").write_text("content of src/a.pz\n")
    assert digest_of(tmp_path) != first
    (tmp_path / "src" / "a.py").write_text("content of src/a.py\n")
    (tmp_path / "src" / "a.py").rename(tmp_path / "src" / "b.py")
    assert digest_of(tmp_path) != first


def test_hash_covers_symlinks_and_empty_folders(tmp_path: Path) -> None:
    make_tree(tmp_path, ["a.py"])
    first = digest_of(tmp_path)
    (tmp_path / "empty").mkdir()
    second = digest_of(tmp_path)
    (tmp_path / "link").symlink_to("a.py")
    third = digest_of(tmp_path)
    (tmp_path / "link").unlink()
    (tmp_path / "link").symlink_to("empty")
    assert len({first, second, third, digest_of(tmp_path)}) == 4


def test_tar_stream_holds_exactly_the_entries(tmp_path: Path) -> None:
    make_tree(tmp_path, ["src/a.py", "run.sh", "data/x.csv", ".env"])
    (tmp_path / "run.sh").chmod(0o755)
    (tmp_path / "link").symlink_to("src/a.py")
    context = scan(tmp_path, ScanRules(data_folder="data"))
    with tarfile.open(fileobj=io.BytesIO(b"".join(tar_stream(context, [("extra.txt", b"hi")])))) as archive:
        contents = archive.extractfile("src/a.py").read()  # type: ignore[union-attr]
        members = {member.name: member for member in archive.getmembers()}
    assert set(members) == {"src", "src/a.py", "run.sh", "link", "extra.txt"}
    assert contents == b"content of src/a.py\n"
    assert members["run.sh"].mode == 0o755 and members["link"].linkname == "src/a.py"
    assert members["src/a.py"].uid == 0 and members["src/a.py"].uname == ""


def test_tar_stream_chunks_stay_bounded(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(os.urandom(3_000_000))
    context = scan(tmp_path, ScanRules(data_folder="data"))
    sizes = [len(chunk) for chunk in tar_stream(context, chunk_size=65536)]
    assert max(sizes) < 2 * 65536
    assert sum(sizes) > 3_000_000


def test_a_file_changed_after_the_scan_is_never_sent(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("print(1)\n")
    context = scan(tmp_path, ScanRules(data_folder="data"))
    (tmp_path / "a.py").write_text("print(2)\n")
    with pytest.raises(ContextChanged, match=r"a\.py changed"):
        b"".join(tar_stream(context))


def test_size_warnings(tmp_path: Path) -> None:
    make_tree(tmp_path, ["a.py"])
    assert scan(tmp_path, ScanRules(data_folder="data")).size_warnings() == []


def test_a_scan_over_its_limit_stops_at_once_naming_the_biggest_folders(tmp_path: Path) -> None:
    (tmp_path / "proj_a").mkdir()
    with open(tmp_path / "proj_a" / "huge.bin", "wb") as sparse:
        sparse.truncate(3 << 30)  # 3 GiB that take no disk; never read, the limit comes first
    (tmp_path / "proj_b").mkdir()
    (tmp_path / "proj_b" / "x.py").write_text("x = 1\n")
    (tmp_path / "small.py").write_text("print(1)\n")
    rules = ScanRules(data_folder="data", ignore_text="")
    with pytest.raises(ProjectError, match=r"holds over 1.0 GB of code and no fireplug.toml.*\(biggest: proj_a/ 3.2 GB\)") as caught:
        scan(tmp_path, rules, limit=ScanLimit())
    assert "--yes" in caught.value.hint
    with pytest.raises(ProjectError, match="over 2 files of code"):
        scan(tmp_path, rules, limit=ScanLimit(files=2, bytes=1 << 40))
    del_huge = tmp_path / "proj_a" / "huge.bin"
    del_huge.unlink()
    assert scan(tmp_path, rules, limit=ScanLimit()).file_count == 2
