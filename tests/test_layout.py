"""The code's layout rules, checked on its source: dependencies point one way (jobs -> pipeline -> dagn), no module
imports one that imports it back (directly or round a longer circle), and no function body runs over 60 lines.

Imports count wherever they run, at the top or inside a function; those under ``if TYPE_CHECKING:`` never run and
name a type only, so they are left out."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dagn", "pipeline", "jobs")
LAYER = {"dagn": 0, "pipeline": 1, "jobs": 2}
MAX_BODY_LINES = 60


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports, at the top or inside functions (lazy imports count)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    typing_only = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for child in ast.walk(node)
    }
    out = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in out if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_the_graph_sees_the_project():
    graph = _graph()
    assert {"dagn", "pipeline.train.driver", "jobs.cli"} <= set(graph)
    assert "pipeline.train.config" in graph["pipeline.train.driver"]
    assert "jobs.options" in graph["jobs.train"]


def test_dependencies_point_one_way():
    wrong = [
        f"{a} imports {b}"
        for a, targets in _graph().items()
        for b in targets
        if LAYER[b.split(".")[0]] > LAYER[a.split(".")[0]]
    ]
    assert not wrong, "dagn must not import pipeline or jobs, pipeline must not import jobs:\n" + "\n".join(wrong)


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each circle found by a depth-first walk, as the path from a module back to itself."""
    circles, done, stack = [], set(), []

    def visit(node: str) -> None:
        stack.append(node)
        for target in sorted(graph[node]):
            if target in stack:
                circles.append([*stack[stack.index(target) :], target])
            elif target not in done:
                visit(target)
        stack.pop()
        done.add(node)

    for node in sorted(graph):
        if node not in done:
            visit(node)
    return circles


def test_no_module_imports_one_that_imports_it_back():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]  # the check works
    circles = _circles(_graph())
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = node.body
    if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:]  # the docstring does not count
    return body[-1].end_lineno - body[0].lineno + 1


def test_no_function_body_over_60_lines():
    sources = [p for folder in (*PACKAGES, "bench", "infra") for p in sorted((ROOT / folder).rglob("*.py"))]
    assert len(sources) > 20
    long = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({_body_lines(node)} lines)"
        for path in sources
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _body_lines(node) > MAX_BODY_LINES
    ]
    assert not long, f"split these into named steps (at most {MAX_BODY_LINES} lines each):\n" + "\n".join(long)
