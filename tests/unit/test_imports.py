"""The stockops modules import each other without cycles, and ``stockops.registry`` is cheap to import.

The graph counts every import of a stockops module anywhere in a file: at module level and
inside functions (a function-level import is still a dependency, and a cycle through one is a
tangle waiting for the first module-level import). MLflow plumbing belongs in ``stockops.registry``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import stockops
from stockops.dagcheck import HEAVY

PACKAGE = Path(stockops.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph() -> dict[str, dict[str, str]]:
    """module -> {imported stockops module: "file:line" of the first such import}."""
    files = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}

    def resolve(name: str) -> str | None:  # the module (or package) that an imported name lives in
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, str]] = {}
    for module, path in files.items():
        edges: dict[str, str] = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        package = package.rpartition(".")[0]
                    base = f"{package}.{base}".rstrip(".")
                # `from stockops import audit` imports the module stockops.audit
                names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base for alias in node.names]
            else:
                continue
            for name in names:
                if name != "stockops" and not name.startswith("stockops."):
                    continue
                target = resolve(name)
                if target and target != module:
                    edges.setdefault(target, f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, dict[str, str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, {})):
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


def test_the_graph_sees_function_level_imports():
    graph = import_graph()
    assert "stockops.registry" in graph["stockops.training"]  # module level
    assert "stockops.changes" in graph["stockops.training"]  # inside promote_candidate
    assert "stockops.data.store" in graph["stockops.ingest"]  # inside a function, a subpackage module
    assert "stockops.data.decisions" in graph["stockops.ingest"]  # `from stockops.data import decisions`


def test_find_cycle_reports_a_cycle():
    assert find_cycle({"a": {"b": ""}, "b": {"c": ""}, "c": {"a": ""}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": ""}, "b": {}, "c": {"a": ""}}) is None


def test_no_import_cycles_among_stockops_modules():
    graph = import_graph()
    cycle = find_cycle(graph)
    if cycle:
        steps = "\n".join(f"  {a} -> {b}  ({graph[a][b]})" for a, b in zip(cycle, cycle[1:], strict=False))
        raise AssertionError(f"import cycle: {' -> '.join(cycle)}\n{steps}")


def test_registry_imports_no_heavy_library():
    code = ("import sys, stockops.registry; "
            f"print(','.join(sorted(m for m in {list(HEAVY)!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"importing stockops.registry imported {out.stdout.strip()}"
    assert subprocess.run([sys.executable, "-c", "import stockops.registry, sys; assert 'mlflow' not in sys.modules"],
                          timeout=120).returncode == 0
