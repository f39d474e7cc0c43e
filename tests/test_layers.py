"""The package's layers, read off its source with ``ast``: no import circle, counting imports
inside functions and the names a package exports lazily, and no layer importing one above it.

The layers, bottom up (each subpackage's ``__init__`` says the same in words):

* the base: ``errors``, ``_version``, ``_lazy``, ``progress``, ``interrupts``;
* ``storage``, with the revision scripts (``alembic/versions``, shipped as ``farm_merge._alembic``);
* ``consolidate`` and ``logging``, side by side, neither importing the other;
* ``query`` (which may read ``logging.liveness``) and ``samples``, side by side;
* ``ui`` (the web page of ``farm-merge serve``), above ``query``;
* the command line, the AgentFarm entry point (``farm_merge.agentfarm``), the package's public names,
  and the Alembic environment on top.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SMALL

ROOT = Path(__file__).resolve().parent.parent

#: What each part may import, besides itself.  "*" is anything.
ALLOWED = {
    "base": set(),
    "storage": {"base"},
    "consolidate": {"base", "storage"},
    "logging": {"base", "storage"},
    "query": {"base", "storage", "farm_merge.logging.liveness"},
    "samples": {"base", "storage", "logging"},
    "ui": {"base", "storage", "query", "farm_merge.logging.liveness"},
    "top": {"*"},
}
BASE = {"farm_merge.errors", "farm_merge._version", "farm_merge._lazy", "farm_merge.progress", "farm_merge.interrupts"}
TOP = {"farm_merge", "farm_merge.cli", "farm_merge.cli_flags", "farm_merge.cli_interrupts", "farm_merge.__main__",
       "farm_merge.agentfarm", "farm_merge._alembic.env"}


def module_files() -> dict[str, Path]:
    """Every module of the package, by its dotted name (the migration scripts as installed)."""
    files = {}
    for path in (ROOT / "farm_merge").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in (ROOT / "alembic").rglob("*.py"):
        parts = ("farm_merge", "_alembic", *path.relative_to(ROOT / "alembic").with_suffix("").parts)
        files[".".join(parts)] = path
    files["farm_merge._alembic"] = ROOT / "alembic"
    return files


def part_of(module: str) -> str:
    if module in BASE:
        return "base"
    if module in TOP:
        return "top"
    if module.startswith("farm_merge._alembic"):
        return "storage"  # the revision scripts; env.py is on top (TOP)
    return module.split(".")[1]


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``module`` imports anywhere in its code, and those its lazy
    exports name (the dict literal given to ``exports``, or assigned to the name given)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def add(name: str) -> None:
        if name.startswith("farm_merge"):
            found.add(name)

    literals = {target.id: node.value for node in tree.body if isinstance(node, ast.Assign)
                for target in node.targets if isinstance(target, ast.Name) and isinstance(node.value, ast.Dict)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "exports":
            mapping = node.args[1]
            mapping = literals.get(mapping.id, mapping) if isinstance(mapping, ast.Name) else mapping
            assert isinstance(mapping, ast.Dict), f"{module}: exports() needs a dict literal the test can read"
            for value in mapping.values:
                add(ast.literal_eval(value))
    return {name for name in found if name != module}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    edges = {module: imports_of(module, path, known) for module, path in files.items() if path.is_file()}
    unknown = {(m, t) for m, targets in edges.items() for t in targets if t not in known}
    assert not unknown, f"imports of modules that do not exist: {sorted(unknown)}"
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), and self-imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_circle(graph):
    assert cycles(graph) == []


def test_the_circle_finder_finds_circles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_layer_imports_one_above_it(graph):
    wrong = []
    for module, targets in graph.items():
        part = part_of(module)
        allowed = ALLOWED[part]
        for target in targets:
            other = part_of(target)
            if other != part and "*" not in allowed and other not in allowed and target not in allowed:
                wrong.append(f"{module} ({part}) imports {target} ({other})")
    assert wrong == []


def test_the_layer_test_reads_imports_in_functions_and_lazy_exports():
    """A module's imports inside functions count, and so do the names its package exports lazily."""
    files = module_files()
    known = set(files)
    cli = imports_of("farm_merge.cli", files["farm_merge.cli"], known)
    assert {"farm_merge.consolidate.engine", "farm_merge.query.tool", "farm_merge.storage.versions"} <= cli
    package = imports_of("farm_merge", files["farm_merge"], known)
    assert {"farm_merge.logging.experiment", "farm_merge.storage.schema", "farm_merge._lazy"} <= package


def test_each_part_says_what_lives_there_and_what_it_may_import():
    for package in ("storage", "consolidate", "logging", "query", "samples", "ui"):
        doc = ast.get_docstring(ast.parse((ROOT / "farm_merge" / package / "__init__.py").read_text()))
        assert doc and "May import" in doc, package


def test_no_module_is_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "farm_merge").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500}
    assert long == {}


def loaded_by(*argv: str) -> set[str]:
    """The modules a ``farm-merge`` command line loads, run in a fresh interpreter."""
    code = ("import sys; sys.argv = ['farm-merge', *sys.argv[1:]]\n"
            "from farm_merge.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(' '.join(sorted(sys.modules)), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT)
    return set(result.stderr.split())


HEAVY = ("sqlalchemy", "alembic", "matplotlib", "tqdm", "farm_merge.consolidate.engine", "farm_merge.query.tool",
         "farm_merge.storage.migrations", "farm_merge.storage.schema")


def test_help_loads_no_database_code():
    loaded = loaded_by("--help")
    assert "click" in loaded
    assert sorted(m for m in loaded if m.startswith(HEAVY)) == []


def test_current_reads_a_sqlite_file_without_alembic_sqlalchemy_or_the_merge(tmp_path):
    from farm_merge import samples

    run = samples.write_run_file(tmp_path / "run.db", "2025-09", seed=1, **SMALL)
    loaded = loaded_by("current", str(run.path))
    assert "farm_merge.storage.versions" in loaded
    assert sorted(m for m in loaded if m.startswith((*HEAVY, "farm_merge.consolidate"))) == []
