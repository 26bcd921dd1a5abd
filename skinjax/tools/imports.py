r"""skinjax's import graph: which room imports which, and the floor each room stands on.

    python -m skinjax.tools.imports            # rooms by floor, then every arrow
    python -m skinjax.tools.imports --modules  # the same for single modules

A room is a module directly in ``skinjax/`` or one sub-package taken whole (``data``,
``models``, ``kernels``, ``train``, ``apps``, ``tools``). A room's floor is 0 when it
imports no other room, else one above the highest room it imports, so every arrow runs
down; a cycle (an arrow running back up) is reported instead. Imports inside functions
count: they are dependencies too. docs/architecture.md draws the result.
"""

from __future__ import annotations

import ast
import pathlib
import sys
from collections.abc import Mapping

PACKAGE = pathlib.Path(__file__).resolve().parents[1]


def module_imports(package: pathlib.Path = PACKAGE) -> dict[str, set[str]]:
    """``{"train.loop": {"train.build", "parallel", ...}}``: every skinjax module (relative
    name) and the skinjax modules it imports."""
    names = {
        ".".join(p.relative_to(package).with_suffix("").parts).removesuffix(".__init__")
        for p in package.rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        name = ".".join(path.relative_to(package).with_suffix("").parts).removesuffix(".__init__")
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            for target in targets:
                if target.startswith("skinjax."):
                    target = target.removeprefix("skinjax.")
                    while target and target not in names:
                        target = target.rpartition(".")[0]
                    if target and target != name:
                        found.add(target)
        graph[name] = found
    # `from skinjax.x import y` names both the package x and its module y: keep the module.
    return {
        m: {t for t in ts if not any(u.startswith(f"{t}.") for u in ts)}
        for m, ts in graph.items()
        if m != "__init__"
    }


def rooms(graph: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """The module graph with every sub-package collapsed into one room."""
    room = lambda m: m.split(".")[0]
    collapsed: dict[str, set[str]] = {}
    for module, targets in graph.items():
        collapsed.setdefault(room(module), set()).update(room(t) for t in targets)
    return {r: ts - {r} for r, ts in collapsed.items()}


def floors(graph: Mapping[str, set[str]]) -> dict[str, int]:
    """Each node's floor; ValueError naming a cycle if there is one."""
    floor: dict[str, int] = {}

    def visit(node: str, path: tuple[str, ...]) -> int:
        if node in path:
            raise ValueError(f"import cycle: {' -> '.join((*path[path.index(node):], node))}")
        if node not in floor:
            below = [visit(t, (*path, node)) for t in graph.get(node, ())]
            floor[node] = 1 + max(below, default=-1)
        return floor[node]

    for node in graph:
        visit(node, ())
    return floor


def main(argv: list[str]) -> None:
    graph = module_imports()
    if "--modules" not in argv:
        graph = rooms(graph)
    try:
        floor = floors(graph)
    except ValueError as e:  # an arrow running back up: say where
        sys.exit(str(e))
    for level in range(max(floor.values()) + 1):
        print(f"floor {level}: {' '.join(sorted(n for n, f in floor.items() if f == level))}")
    arrows = sorted((a, b) for a, targets in graph.items() for b in targets)
    print(f"{len(graph)} rooms, {max(floor.values()) + 1} floors, {len(arrows)} arrows")
    for a, b in arrows:
        print(f"  {a} -> {b}")


if __name__ == "__main__":
    main(sys.argv[1:])
