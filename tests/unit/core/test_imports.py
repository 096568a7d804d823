"""The stockops modules import each other without cycles, only downwards through the layers, and
``stockops.registry`` is cheap to import.

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
from stockops.orchestration.dagcheck import HEAVY

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
                # `from stockops.core import audit` imports the module stockops.core.audit
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
    assert "stockops.registry" in graph["stockops.training.promote"]  # module level
    assert "stockops.registry.changes" in graph["stockops.training.promote"]  # inside promote_candidate
    assert "stockops.data" in graph["stockops.ingest.steps"]  # `from stockops.data import store_for`
    assert "stockops.data.decisions" in graph["stockops.ingest.steps"]  # `from stockops.data import decisions`


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


# ---- the layers --------------------------------------------------------------------------------------------
# Each package's rank: a module imports its own package and lower ranks only. Packages that share a rank are
# siblings and never import each other (the four stages read and write through data/ and registry/, not through
# each other). The portable model core travels alone with every model: it imports nothing of stockops outside it.
LAYERS = {
    "stockops.storage": -1,
    "stockops.core": 0,
    "stockops.model.portable": 1,
    "stockops.contracts": 2,
    "stockops.model": 3, "stockops.data": 3, "stockops.charts": 3,
    "stockops.registry": 4,
    "stockops.ingest": 5, "stockops.training": 5, "stockops.serving": 5, "stockops.monitoring": 5,
    "stockops.reporting": 6,
    "stockops.orchestration": 7,
    "stockops.launch": 8,
    "stockops.cli": 9,
    "stockops.__main__": 10,
}
AIRFLOW_PACKAGE = "stockops.orchestration"  # the only library package that imports Airflow


def layer_of(module: str) -> str:
    """The longest LAYERS package that ``module`` is (in)."""
    found = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    if not found:
        raise AssertionError(f"{module} is in no layer: add its package to LAYERS (and the README's tree)")
    return max(found, key=len)


def layer_violations(graph: dict[str, dict[str, str]]) -> list[str]:
    wrong = []
    for module, edges in graph.items():
        if module == "stockops":
            continue
        mine = layer_of(module)
        for target, where in edges.items():
            if target == "stockops":
                continue
            theirs = layer_of(target)
            if theirs == mine:
                continue
            if mine == "stockops.model.portable" or LAYERS[theirs] >= LAYERS[mine]:
                wrong.append(f"{where}: {module} ({mine}, rank {LAYERS[mine]}) imports {target} "
                             f"({theirs}, rank {LAYERS[theirs]})")
    return wrong


def airflow_imports() -> dict[str, str]:
    """stockops module -> "file:line" of its first import of airflow (any depth)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if any(n == "airflow" or n.startswith("airflow.") for n in names):
                found.setdefault(_module_name(path), f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    return found


def test_layer_rules_catch_an_upward_a_sibling_and_a_portable_import():
    graph = {"stockops.core.audit": {"stockops.ingest": "a:1"}, "stockops.training": {"stockops.serving": "b:2"},
             "stockops.model.portable.forecaster": {"stockops.core.settings": "c:3"},
             "stockops.serving.build": {"stockops.model.portable": "d:4", "stockops.serving.runtime": "d:5"}}
    assert [w.split(":")[0] for w in layer_violations(graph)] == ["a", "b", "c"]


def test_every_import_goes_down_the_layers():
    wrong = layer_violations(import_graph())
    assert not wrong, "imports against the layers:\n  " + "\n  ".join(wrong)


def test_only_the_orchestration_package_imports_airflow():
    found = airflow_imports()
    assert found, "the scan finds nothing: it is broken"
    outside = {m: w for m, w in found.items() if not (m == AIRFLOW_PACKAGE or m.startswith(AIRFLOW_PACKAGE + "."))}
    assert not outside, f"Airflow imported outside {AIRFLOW_PACKAGE}: {outside}"
