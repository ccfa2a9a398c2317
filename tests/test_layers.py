"""The package's layers (ARCHITECTURE.md) and the rules between them, checked on the imports.

Every module of ``plugins/rpu`` belongs to one layer; a layer imports only the layers under it.
A new module must be placed here, in its layer, or this test fails.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "plugins" / "rpu"
# From the bottom up: each layer may import its own and the ones before it.
LAYERS = {
    "formats": ("oscour", "oscour_writer", "syrius", "validation", "rules", "nomenclature", "finess", "model",
                "schemas", "wording"),
    "config": ("region", "mail", "sizing"),
    "store": ("store", "loader", "sends", "registry", "extract", "quality", "timeliness"),
    "flows": ("ingest", "invs", "atih", "ars_export", "absence", "replay", "switch", "report", "health",
              "establishment_report", "timeliness_report", "templating", "charts"),
    "airflow": ("airflow_glue", "tasks", "outbound_tasks", "ars_tasks", "feedback_tasks", "access", "pools",
                "workers"),
    "sandbox": ("demo", "local_services", "generator"),
    "cli": ("cli", "build_cli", "region_cli", "monitor_cli", "files_cli", "feedback_cli"),
}
ORDER = ("formats", "config", "store", "flows", "airflow", "sandbox", "cli")
LAYER_OF = {module: layer for layer, modules in LAYERS.items() for module in modules}


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            if node.module == "rpu":
                found.update(f"rpu.{alias.name}" for alias in node.names)
    return found


def ours(path: Path) -> set[str]:
    return {m.split(".")[1] for m in imports(path) if m.startswith("rpu.") and m.split(".")[1] in LAYER_OF}


def test_every_module_has_its_layer():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert modules - set(LAYER_OF) == set(), "place the new module in a layer (here and in ARCHITECTURE.md)"
    assert set(LAYER_OF) - modules == set()


@pytest.mark.parametrize("layer", [layer for layer in ORDER if layer not in ("airflow", "cli")])
def test_only_the_airflow_layer_imports_airflow(layer):
    for module in LAYERS[layer]:
        found = {m for m in imports(PACKAGE / f"{module}.py") if m == "airflow" or m.startswith("airflow.")}
        assert not found, f"{module}.py imports {sorted(found)}"


def test_formats_need_no_database():
    for module in LAYERS["formats"]:
        found = {m for m in imports(PACKAGE / f"{module}.py") if m.split(".")[0] in ("psycopg", "sqlalchemy")}
        assert not found, f"{module}.py imports {sorted(found)}"


@pytest.mark.parametrize("layer", ORDER)
def test_layers_import_only_their_own_or_lower(layer):
    allowed = set(ORDER[: ORDER.index(layer) + 1]) - ({"sandbox"} if layer != "sandbox" and layer != "cli" else set())
    for module in LAYERS[layer]:
        wrong = {m for m in ours(PACKAGE / f"{module}.py") if LAYER_OF[m] not in allowed}
        assert not wrong, f"{module}.py ({layer}) imports {sorted(wrong)} from a higher layer"
