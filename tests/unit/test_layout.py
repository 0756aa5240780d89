"""The seam holds: the package has no import circle, and only backends/ knows a kind of host."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "fireplug"
KIND_WORDS = re.compile(r"\.swarm\b|\bkind\s*[!=]=\s*[\"'](docker|swarm)|[\"']swarm[\"']|swarm://|backends\.(docker|swarm)\b")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(name: str) -> set[str]:
    """Every fireplug module ``name`` imports when it runs, at module level or inside a
    function (what only a type checker reads, under ``if TYPE_CHECKING:``, is not an import)."""
    tree = ast.parse(MODULES[name].read_text())
    found: set[str] = set()
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if _type_checking_only(node):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            submodules = {f"{base}.{alias.name}" for alias in node.names} & MODULES.keys()
            found.update(submodules)  # (a package whose submodules are imported by name: only they count)
            if len(submodules) < len(node.names):
                found.add(base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {target for target in found if target in MODULES and target != name}


def import_circles() -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    graph = {name: imports_of(name) for name in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def connect(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        for target in graph[name]:
            if target not in index:
                connect(target)
                low[name] = min(low[name], low[target])
            elif target in stack:
                low[name] = min(low[name], index[target])
        if low[name] == index[name]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == name:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for name in graph:
        if name not in index:
            connect(name)
    return circles


def test_the_package_has_no_import_circle() -> None:
    assert import_circles() == []


def test_import_circles_are_found() -> None:
    """(The check itself sees a function-level import.)"""
    assert "fireplug.backends" in imports_of("fireplug.hosts")  # hosts.probe asks backend_for, inside the function


@pytest.mark.parametrize("name", sorted(name for name in MODULES if not name.startswith("fireplug.backends")))
def test_only_backends_know_a_kind_of_host(name: str) -> None:
    """Outside backends/, nothing imports a backend's own modules or asks whether a host is a
    swarm: the registry (backends/__init__.py) and the protocol (backends/base.py) are the seam.
    What the settings, the inventory and `fp hosts add` need of a kind (its required settings,
    whether it sees local files or joins the pool, its URL scheme) is its entry in KINDS."""
    source = MODULES[name].read_text()
    code = "\n".join(line.split("  # ")[0] for line in source.splitlines() if not line.lstrip().startswith("#"))
    assert not KIND_WORDS.findall(code), f"{name} names a kind of host"


@pytest.mark.parametrize("name", sorted(name for name in MODULES if not name.startswith("fireplug.backends")))
def test_a_host_being_local_is_the_transports_business(name: str) -> None:
    """``host.local`` (the engine sees this machine's files) is read where fp connects (hosts.py)
    and inside backends/ only."""
    if name in ("fireplug.hosts.inventory", "fireplug.hosts"):
        return
    assert not re.search(r"\bhost\.local\b", MODULES[name].read_text()), f"{name} branches on a local host"


def test_a_new_backend_is_one_registry_line() -> None:
    from fireplug.backends import KINDS
    from fireplug.config import HOST_KINDS

    assert tuple(KINDS) == HOST_KINDS  # the settings accept exactly the kinds a backend serves
    assert all(MODULES.get(kind.backend.partition(":")[0]) for kind in KINDS.values())


@pytest.mark.parametrize("path", sorted((PACKAGE.parent / "tests" / "integration").glob("test_*.py")), ids=lambda path: path.name)
def test_every_integration_file_needs_the_bench_by_its_marker(path: Path) -> None:
    """`pytest -m "not engine"` runs exactly what needs no test bench."""
    assert "pytestmark = pytest.mark.engine" in path.read_text()
