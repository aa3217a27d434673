"""The kernel stays readable in one sitting (issue 13): no kernel module longer than
``MAX_MODULE_LINES``, no function longer than ``MAX_FUNCTION_LINES``, and no import circle
among the kernel's modules at run time (imports under ``if TYPE_CHECKING:`` do not count)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

KERNEL = Path(__file__).parent.parent / "kernel"
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60
MODULES = sorted(KERNEL.glob("*.py"))


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _length(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the ``def`` (decorators excluded) to the function's last line."""
    assert node.end_lineno is not None
    return node.end_lineno - node.lineno + 1


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_kernel_module_is_short(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"kernel/{path.name} has {lines} lines"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_kernel_functions_are_short(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    long = {f"{f.name} (line {f.lineno})": _length(f) for f in _functions(tree)}
    long = {name: n for name, n in long.items() if n > MAX_FUNCTION_LINES}
    assert long == {}, f"kernel/{path.name}: functions over {MAX_FUNCTION_LINES} lines: {long}"


def _runtime_imports(path: Path) -> set[str]:
    """The kernel modules ``path`` imports when it is imported (module level, not under
    ``if TYPE_CHECKING:``, not inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found & {p.stem for p in MODULES}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle_in_the_kernel() -> None:
    graph = {p.stem: _runtime_imports(p) - {p.stem} for p in MODULES if p.stem != "__init__"}
    assert _cycle(graph) is None, f"import circle: {' -> '.join(_cycle(graph) or [])}"


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
