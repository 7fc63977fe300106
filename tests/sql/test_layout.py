"""The layout of bananas_sql keeps its design: no import cycle between its modules, none of
them long, and SQLAlchemy out of the PostgreSQL runtime (it is for the schema and migrations)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import bananas_sql

PACKAGE = Path(bananas_sql.__file__).parent
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("bananas_sql", *path.relative_to(PACKAGE).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules ``path`` imports, at the top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bananas_sql"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in modules else node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("bananas_sql"))
    return {m for m in out if m in modules}


def test_no_import_cycle() -> None:
    modules = _modules()
    graph = {
        name: {m for m in _imports(path, modules) if m != name and not m.startswith(name + ".")}
        for name, path in modules.items()
    }
    cycles = []

    def visit(name: str, stack: list[str]) -> None:
        for dep in graph[name]:
            if dep in stack:
                cycles.append(" -> ".join([*stack[stack.index(dep) :], dep]))
            elif len(stack) < 20:
                visit(dep, [*stack, dep])

    for name in graph:
        visit(name, [name])
    assert not cycles, "\n".join(sorted(set(cycles)))


def test_no_long_module() -> None:
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_postgres_runtime_imports_no_sqlalchemy() -> None:
    code = "import sys, bananas_sql.pg; print(sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
