"""The package's shape: what may import what, checked on the source, not by convention.

- No import circle among ``detector`` modules at import time (module-level imports; a
  function-level import runs only when called, and ``if TYPE_CHECKING:`` never).
- ``detector.pipeline`` and ``detector.drift`` are Kafka-free: no ``kafka`` or
  ``confluent_kafka`` import anywhere in them, not even a lazy one.
- prometheus-client's private fields are touched in ``detector/metrics.py`` only.
- No module is over 400 lines.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "detector"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _import_statements(body: list[ast.stmt], module_level: bool) -> Iterator[ast.stmt]:
    for stmt in body:
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            yield stmt
        elif isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test):
            continue  # for the type checker only: never executed
        elif isinstance(stmt, ast.If | ast.Try | ast.With):
            # executed at import time when at module level
            blocks = [stmt.body, getattr(stmt, "orelse", []), getattr(stmt, "finalbody", [])]
            blocks += [h.body for h in getattr(stmt, "handlers", [])]
            for block in blocks:
                yield from _import_statements(block, module_level)
        elif not module_level and hasattr(stmt, "body"):
            yield from _import_statements(stmt.body, module_level)


def imported(path: Path, module_level: bool) -> set[str]:
    """Absolute names a module imports (``pkg.mod`` and ``pkg.mod.name`` for a from-import)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: set[str] = set()
    for stmt in _import_statements(ast.parse(path.read_text()).body, module_level):
        if isinstance(stmt, ast.Import):
            names.update(alias.name for alias in stmt.names)
            continue
        assert isinstance(stmt, ast.ImportFrom)
        base = stmt.module or ""
        if stmt.level:
            anchor = package.split(".")[: len(package.split(".")) - stmt.level + 1]
            base = ".".join([*anchor, base] if base else anchor)
        names.add(base)
        names.update(f"{base}.{alias.name}" for alias in stmt.names)
    return names


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_at_import_time() -> None:
    # Given every detector module's module-level imports of other detector modules
    graph = {m: imported(p, module_level=True) & MODULES.keys() for m, p in MODULES.items()}
    # Then no module imports, directly or through others, itself
    assert cycles(graph) == []


def test_the_cycle_finder_sees_a_circle() -> None:
    # (the check above must be able to fail)
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_pipeline_and_drift_import_no_kafka_client() -> None:
    # Given every import in the pipeline and drift packages, lazy ones included
    offenders = {
        m: sorted(
            n for n in imported(p, module_level=False) if re.match(r"(kafka|confluent_kafka)\b", n)
        )
        for m, p in MODULES.items()
        if m.startswith(("detector.pipeline", "detector.drift"))
    }
    # Then none names a Kafka client
    assert {m: names for m, names in offenders.items() if names} == {}


# A metric's value object (`._value.get()`), a histogram's counters, a parent's children.
PRIVATE_PROMETHEUS = re.compile(
    r"\._value\.(get|set|inc)\(|\._(buckets|sum|upper_bounds|metrics|created)\b"
)


def test_prometheus_client_internals_are_read_in_metrics_py_only() -> None:
    # Given every Python file of the package, the bench and the tests
    files = [
        *PACKAGE.rglob("*.py"),
        *(ROOT / "bench").rglob("*.py"),
        *(ROOT / "tests").rglob("*.py"),
    ]
    # Then only detector/metrics.py (its BatchHistogram, tested against observe()) reads them
    readers = {
        str(f.relative_to(ROOT))
        for f in files
        if f != Path(__file__).resolve() and PRIVATE_PROMETHEUS.search(f.read_text())
    }
    assert readers == {"detector/metrics.py"}


MAX_MODULE_LINES = 400


def test_no_module_is_over_400_lines() -> None:
    # A module past this has grown two jobs (issue 18): split it along the data flow.
    over = {
        name: n
        for name, path in MODULES.items()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not over, over
