"""The package's layout rules, read from the source: no import cycle between modules, no private name imported
from another module."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "facenet"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, list[ast.ImportFrom]]:
    """{module: its `from facenet… import …` statements, wherever they are (functions and TYPE_CHECKING too)}."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        found[_module_name(path)] = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                                     and node.module and node.module.split(".")[0] == "facenet"]
    return found


def _graph() -> dict[str, set[str]]:
    """{module: the package's modules it imports}: `from facenet.x import y` is facenet.x.y when that is a module,
    else facenet.x. A module's own packages are left out: their `__init__` runs before it anyway."""
    imports = _imports()
    graph = {}
    for module, statements in imports.items():
        targets = set()
        for node in statements:
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                targets.add(name if name in imports else node.module)
        graph[module] = {target for target in targets
                         if target in imports and target != module and not module.startswith(f"{target}.")}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph`, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_between_modules():
    """Counting imports inside functions and under TYPE_CHECKING: a cycle hidden there is still a cycle."""
    assert _cycle(_graph()) is None


def test_no_private_name_is_imported_from_another_module():
    offenders = [f"{module}: {node.module}.{alias.name}" for module, statements in _imports().items()
                 for node in statements for alias in node.names
                 if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert offenders == []
