"""The module graph: no import cycles, and the layers' dependencies point one way."""

from __future__ import annotations

import ast
from pathlib import Path

import hookline

PACKAGE = Path(hookline.__file__).parent


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph(*, lazy: bool) -> dict[str, set[str]]:
    """module -> the hookline modules it imports (at module level only, unless ``lazy``)."""
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        nodes = ast.walk(tree) if lazy else iter(tree.body)
        deps: set[str] = set()
        for node in nodes:
            if isinstance(node, ast.If):  # `if TYPE_CHECKING:` imports only annotate
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    deps.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles_at_module_level() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # it finds one
    assert _cycle(_graph(lazy=False)) is None


def test_the_cli_modules_import_the_composition_root_not_each_other() -> None:
    graph = _graph(lazy=True)
    assert "hookline.engine.cli" not in graph["hookline.engine.up"]
    assert "hookline.engine.up" not in graph["hookline.engine.app"]
    assert "hookline.engine.app" in graph["hookline.engine.up"]


def test_layers_point_one_way() -> None:
    graph = _graph(lazy=True)

    def reaches(prefix: str, forbidden: tuple[str, ...]) -> set[tuple[str, str]]:
        return {
            (m, d)
            for m, deps in graph.items()
            if m.startswith(prefix)
            for d in deps
            if d.startswith(forbidden)
        }

    upper = ("hookline.receiver", "hookline.flows", "hookline.engine")
    assert reaches("hookline.connectors", upper + ("hookline.recipes",)) == set()
    assert (
        reaches("hookline.recipes", ("hookline.receiver", "hookline.flows", "hookline.engine"))
        == set()
    )
    assert (
        reaches("hookline.receiver", ("hookline.flows", "hookline.engine", "hookline.connectors"))
        == set()
    )
