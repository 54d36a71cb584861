"""The import graph follows the data flow: import-linter's layers contract (pyproject.toml) holds, and no
module imports itself through other modules (no cycle, inside a package or across packages).

Imports inside functions and under ``TYPE_CHECKING`` count too: grimp sees them, and a cycle hidden in a
function is still a cycle.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def import_cycles(graph: grimp.ImportGraph) -> list[tuple[str, ...]]:
    """One chain ``(m0, m1, ..., m0)`` per set of modules that import one another in a circle."""
    cycles: dict[frozenset[str], tuple[str, ...]] = {}
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:
                chain = (importer, *back)
                cycles.setdefault(frozenset(chain), chain)
    return list(cycles.values())


def describe(graph: grimp.ImportGraph, chain: tuple[str, ...]) -> str:
    """``a (line 3) -> b (line 7) -> a``: each module and the line where it imports the next."""
    steps = []
    for importer, imported in itertools.pairwise(chain):
        lines = sorted({d["line_number"] for d in graph.get_import_details(importer=importer, imported=imported)})
        steps.append(f"{importer} (line {', '.join(map(str, lines))})")
    return " -> ".join([*steps, chain[-1]])


def test_imports_follow_the_layers_contract() -> None:
    result = subprocess.run([sys.executable, "-c", LINT, "--no-cache", str(ROOT / "pyproject.toml")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, (f"an import goes against the layers in pyproject.toml:\n"
                                    f"{result.stdout}\n{result.stderr}")
    assert "1 kept, 0 broken" in result.stdout  # the contract ran (not an empty or unread config)


def test_no_module_imports_itself_through_others() -> None:
    graph = grimp.build_graph("ragforget", cache_dir=None)
    cycles = import_cycles(graph)
    assert not cycles, "import cycles (move the shared part into a module both can import):\n" + "\n".join(
        describe(graph, chain) for chain in cycles)


def test_cycle_check_names_the_chain() -> None:
    graph = grimp.ImportGraph()
    graph.add_import(importer="pkg.a", imported="pkg.b", line_number=3, line_contents="import pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.c", line_number=5, line_contents="import pkg.c")
    graph.add_import(importer="pkg.c", imported="pkg.a", line_number=7, line_contents="import pkg.a")
    graph.add_import(importer="pkg.c", imported="pkg.d", line_number=8, line_contents="import pkg.d")
    cycles = import_cycles(graph)
    assert len(cycles) == 1 and set(cycles[0]) == {"pkg.a", "pkg.b", "pkg.c"}
    assert describe(graph, cycles[0]) == "pkg.a (line 3) -> pkg.b (line 5) -> pkg.c (line 7) -> pkg.a"
    graph.remove_import(importer="pkg.c", imported="pkg.a")
    assert import_cycles(graph) == []
