"""The package's layers (ARCHITECTURE.md) are its folders; the rules between them, checked on the imports.

``plugins/rpu/<layer>/`` for each layer, from the bottom up: a layer imports only its own and the
ones under it; formats and flows never import Airflow; formats never open a database; nothing
but ``cli`` imports ``cli``; no import cycle at load time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "plugins" / "rpu"
# From the bottom up: each layer may import its own and the ones before it (the sandbox, for
# the demo and the tests only, is imported by nothing but the command line).
ORDER = ("formats", "config", "store", "flows", "airflow", "sandbox", "cli")
# A module a newcomer can read in one sitting: about 500 lines, 520 at the most.
MAX_LINES = 520
# Longer modules tolerated for now, each with why; remove an entry as soon as its module is split.
def modules(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).glob("*.py"))


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def layers_imported(path: Path) -> set[str]:
    return {m.split(".")[1] for m in imports(path) if m.startswith("rpu.") and m.split(".")[1] in ORDER}


def test_the_package_is_its_layers():
    loose = {p.name for p in PACKAGE.glob("*.py")} - {"__init__.py", "__main__.py"}
    assert not loose, f"modules outside a layer folder: {sorted(loose)} (place them, and say so in ARCHITECTURE.md)"
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(ORDER)


@pytest.mark.parametrize("layer", [layer for layer in ORDER if layer not in ("airflow", "cli")])
def test_only_the_airflow_layer_imports_airflow(layer):
    for path in modules(layer):
        found = {m for m in imports(path) if m == "airflow" or m.startswith("airflow.")}
        assert not found, f"{layer}/{path.name} imports {sorted(found)}"


def test_formats_need_no_database():
    for path in modules("formats"):
        found = {m for m in imports(path) if m.split(".")[0] in ("psycopg", "sqlalchemy")}
        assert not found, f"formats/{path.name} imports {sorted(found)}"


@pytest.mark.parametrize("layer", ORDER)
def test_layers_import_only_their_own_or_lower(layer):
    allowed = set(ORDER[: ORDER.index(layer) + 1])
    if layer not in ("sandbox", "cli"):
        allowed.discard("sandbox")
    for path in modules(layer):
        wrong = layers_imported(path) - allowed
        assert not wrong, f"{layer}/{path.name} imports {sorted(wrong)} from a higher layer"


def test_nothing_below_the_command_line_imports_it():
    for layer in ORDER[:-1]:
        for path in modules(layer):
            assert "cli" not in layers_imported(path), f"{layer}/{path.name} imports rpu.cli"


def top_level_imports(path: Path) -> set[str]:
    """The rpu modules a file imports when it is loaded (not those imported inside functions)."""
    found = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rpu."):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("rpu."))
    return found


def _first_cycle(imports_of) -> list[str] | None:
    graph = {f"rpu.{layer}.{path.stem}": imports_of(path) for layer in ORDER for path in modules(layer)}
    graph = {name: {m for m in found if m in graph and m != name} for name, found in graph.items()}
    done, path = set(), []

    def visit(name):
        if name in path:
            return [*path[path.index(name):], name]
        if name not in done:
            path.append(name)
            for other in sorted(graph[name]):
                if cycle := visit(other):
                    return cycle
            path.pop()
            done.add(name)
        return None

    for name in sorted(graph):
        if cycle := visit(name):
            return cycle
    return None


def test_no_import_cycle():
    """A cycle of imports at load time breaks depending on which module is imported first."""
    cycle = _first_cycle(top_level_imports)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_import_cycle_hidden_in_a_function():
    """An import inside a function does not break at load time, but two modules that need each
    other are one concern badly cut: the lower one takes what it needs as an argument."""
    cycle = _first_cycle(lambda path: {m for m in imports(path) if m.startswith("rpu.")})
    assert cycle is None, "import cycle (through an import inside a function): " + " -> ".join(cycle or [])


def test_the_layers_are_described():
    text = (PACKAGE.parent.parent / "ARCHITECTURE.md").read_text(encoding="utf-8")
    for layer in ORDER:
        assert f"`{layer}/`" in text, f"ARCHITECTURE.md says nothing of {layer}/"
        for path in modules(layer):
            if path.stem != "__init__":
                assert f"`{path.stem}`" in text, f"ARCHITECTURE.md does not place {layer}/{path.name}"


def test_no_module_is_too_long():
    """A long module is several concerns: split it (ARCHITECTURE.md names each new module)."""
    lengths = {path.relative_to(PACKAGE).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
               for path in PACKAGE.rglob("*.py")}
    too_long = {name: n for name, n in lengths.items() if n > MAX_LINES}
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long} (split them by concern)"
