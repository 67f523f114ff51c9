"""The shape of the code: no import cycles among the project's own modules, node and
coordinator apart, and each room of ``fedmatch/`` importing only the rooms below it.

Every import counts, wherever it stands: at module level, inside a function (the lazy
imports of the command line) or under ``TYPE_CHECKING``. A cycle that only closes inside a
function still ties the modules together: neither can be read, tested or moved alone.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The tests are the project's modules too: checked for cycles, free to import any room,
# imported by none.
PACKAGES = ("fedmatch", "node", "coordinator", "tests")

# The rooms of the code, and which other rooms each may import (every room may import
# itself and "base": the few modules everything uses, and the generated stubs). The same
# rules are written in each package's docstring.
CORE = {"he", "grpcutil", "pki", "audit", "protocol"}
ALLOWED: dict[str, set[str]] = {
    "base": set(),
    "he": set(),
    "grpcutil": set(),
    "biometrics": set(),
    "evaluation": {"biometrics"},
    # The signed-note keys (audit), certificates (pki) and what parties exchange (protocol)
    # use one another; no module cycle runs through them (checked below).
    "pki": CORE,
    "audit": CORE,
    "protocol": CORE,
    "requester": CORE | {"biometrics"},
    "node": CORE | {"biometrics"},
    # The coordinator never holds biometrics: it cannot even import the face path.
    "coordinator": CORE,
    "ops": CORE | {"node", "coordinator"},
    # The verifier desk (a web application of the requesting state) works on the requester's
    # files and calls; the demo starts one.
    "desk": CORE | {"requester"},
    "demo": CORE | {"biometrics", "requester", "node", "coordinator", "ops", "desk"},
    "bench": CORE | {"biometrics", "requester", "node", "coordinator", "ops", "demo"},
    "cli": CORE
    | {"biometrics", "evaluation", "requester", "desk", "node", "coordinator", "ops", "demo"}
    | {"bench"},
}
SUBPACKAGES = {r for r in ALLOWED if r not in ("base", "node", "coordinator")} | {"rpc"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    """Every module of the project's packages (the generated stubs left out)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = _module_name(path)
            if not name.startswith("fedmatch.rpc"):
                found[name] = path
    return found


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The project modules an import statement loads, by their full names."""
    known = modules()
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".")
            if known[module].name != "__init__.py":
                package = package[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join([*package, base] if base else package)
        # `from pkg import mod` loads pkg.mod; `from mod import name` loads mod.
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    for name in names:
        parts = name.split(".")
        while parts and ".".join(parts) not in known:
            parts.pop()
        if parts:
            yield ".".join(parts)


@cache
def import_graph() -> dict[str, frozenset[str]]:
    graph = {}
    for module, path in modules().items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges = {
            target
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for target in _targets(module, node)
        }
        graph[module] = frozenset(edges - {module})
    return graph


def cycles(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each as a cycle
    path through them for the message."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(_cycle_through(sorted(component), graph))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _cycle_through(component: list[str], graph: dict[str, frozenset[str]]) -> list[str]:
    """One cycle inside a strongly connected component, from its first module and back."""
    members, start = set(component), component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    return component


def room(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "fedmatch":
        return parts[0]
    if module == "fedmatch.__main__":
        return "cli"
    if len(parts) > 1 and parts[1] in SUBPACKAGES:
        return "base" if parts[1] == "rpc" else parts[1]
    return "base"


def test_the_graph_sees_lazy_and_type_checking_imports() -> None:
    graph = import_graph()
    assert "fedmatch.he.engine" in graph["fedmatch.he.engines"]  # module level
    # Inside a function (the command line imports what a command needs when it runs).
    assert "node.servicer" in graph["fedmatch.cli.node"]
    # Under TYPE_CHECKING.
    assert "node.lifecycle" in graph["fedmatch.cli.node"]
    assert len(graph) > 100


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import() -> None:
    """The check itself, on the two cycles this test was written against (the command line
    and its sub-command modules; the engine factory and the engines built on it)."""
    graph = {
        "fedmatch.cli": frozenset({"fedmatch.case_cli", "fedmatch.domain"}),
        "fedmatch.case_cli": frozenset({"fedmatch.cli"}),
        "fedmatch.domain": frozenset(),
        "fedmatch.he.engine": frozenset({"fedmatch.he.sharded"}),
        "fedmatch.he.sharded": frozenset({"fedmatch.he.ray_engine"}),
        "fedmatch.he.ray_engine": frozenset({"fedmatch.he.engine"}),
    }
    assert cycles(graph) == [
        ["fedmatch.case_cli", "fedmatch.cli", "fedmatch.case_cli"],
        ["fedmatch.he.engine", "fedmatch.he.sharded", "fedmatch.he.ray_engine",
         "fedmatch.he.engine"],
    ]  # fmt: skip


def test_no_import_cycle_among_the_projects_modules() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


@pytest.mark.parametrize(("a", "b"), [("node", "coordinator"), ("coordinator", "node")])
def test_node_and_coordinator_never_import_each_other(a: str, b: str) -> None:
    offending = sorted(
        f"{m} imports {t}"
        for m, targets in import_graph().items()
        if room(m) == a
        for t in targets
        if room(t) == b
    )
    assert not offending, "\n".join(offending)


def test_each_room_imports_only_the_rooms_below_it() -> None:
    offending = sorted(
        f"{m} ({room(m)}) imports {t} ({room(t)})"
        for m, targets in import_graph().items()
        if room(m) != "tests"
        for t in targets
        if room(t) not in ALLOWED[room(m)] | {room(m), "base"}
    )
    assert not offending, "\n".join(offending)


def test_nothing_imports_the_command_lines_main_module_back() -> None:
    importers = sorted(
        m for m, t in import_graph().items() if "fedmatch.cli.main" in t and room(m) != "tests"
    )
    assert importers == ["fedmatch.__main__"]


def test_nothing_but_the_tests_imports_the_tests() -> None:
    offending = sorted(
        f"{m} imports {t}"
        for m, targets in import_graph().items()
        if room(m) != "tests"
        for t in targets
        if room(t) == "tests"
    )
    assert not offending, "\n".join(offending)


def test_only_the_he_package_imports_the_he_library() -> None:
    offending = []
    for module, path in modules().items():
        if room(module) == "tests":
            continue  # the tests of the he package build ciphertexts themselves
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            if any(n == "tenseal" or n.startswith("tenseal.") for n in names):
                offending.append(module)
    assert offending and all(room(m) == "he" for m in offending), offending


def test_every_package_says_what_lives_there_and_who_may_import_it() -> None:
    for module, path in modules().items():
        if path.name != "__init__.py" or room(module) == "tests":
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert len(doc) > 40, f"{module} has no docstring saying what lives there"
        assert "import" in doc.lower(), f"{module}'s docstring does not say who may import it"


def _closure(start: str) -> set[str]:
    graph, seen, todo = import_graph(), set(), [start]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph.get(module, ()))
    return seen


def test_no_node_or_coordinator_module_can_reach_a_secret_key() -> None:
    """Issue 15: the node's code cannot construct a decryptor. Nothing a node or the
    coordinator imports, however indirectly, is the module that holds a requester's secret
    key (fedmatch.he.keypair), and no other module of the product names SEAL's secret-key,
    key-generator or decryptor classes."""
    for module in modules():
        if room(module) in ("node", "coordinator"):
            assert "fedmatch.he.keypair" not in _closure(module), module
    secret = {"Decryptor", "SecretKey", "KeyGenerator"}
    naming = sorted(
        module
        for module, path in modules().items()
        if room(module) != "tests"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr in secret
    )
    assert set(naming) == {"fedmatch.he.keypair"}
