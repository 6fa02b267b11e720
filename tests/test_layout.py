"""The package reads like the algorithm: the Flower app and the method never import the tools,
and no two subpackages import each other (no import cycles)."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parents[1] / "feddqc_flwr"
TOOLS = {"cli", "bench", "experiment", "report"}


def _package_imports() -> nx.DiGraph:
    """Edges subpackage -> subpackage for every `feddqc_flwr.<sub>` import in the source."""
    graph = nx.DiGraph()
    for path in PACKAGE.rglob("*.py"):
        source = path.relative_to(PACKAGE).parts[0]
        graph.add_node(source)
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for name in names:
                parts = name.split(".")
                if parts[0] == "feddqc_flwr" and len(parts) > 1 and parts[1] != source:
                    graph.add_edge(source, parts[1])
    return graph


def test_package_root_holds_only_subpackages() -> None:
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py"]


def test_no_import_cycle_between_subpackages() -> None:
    assert list(nx.simple_cycles(_package_imports())) == []


def test_app_and_method_never_import_the_tools() -> None:
    graph = _package_imports()
    offending = [(a, b) for a, b in graph.edges if a not in TOOLS and b in TOOLS]
    assert offending == []


def test_the_fab_holds_the_app_and_its_config_only(tmp_path: Path) -> None:
    """`flwr build` (what `flwr run` ships to every node) packs the package, pyproject and README:
    no results, benchmarks or tests, whose changes would change the FAB's hash and size."""
    import subprocess
    import sys
    import zipfile

    repo = PACKAGE.parent
    subprocess.run([str(Path(sys.executable).parent / "flwr"), "build", "--app", str(repo)], cwd=tmp_path,
                   check=True, capture_output=True)
    (fab,) = tmp_path.glob("*.fab")
    names = zipfile.ZipFile(fab).namelist()
    tops = {name.split("/")[0] for name in names if not name.startswith(".info/")}
    assert tops == {"feddqc_flwr", "pyproject.toml", "README.md"}, tops
    assert "feddqc_flwr/app/client_app.py" in names and "feddqc_flwr/presets/paper.toml" in names
