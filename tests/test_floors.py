"""The floors of `bridge/__init__.py` hold: every import in bridge/ and drivers/ (at module level, inside
functions and under `if TYPE_CHECKING:`) goes down or sideways, never up, and no two modules import each
other through any chain."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import bridge
from tests.conftest import REPO

FLOORS = {"core": 0, "controls": 1, "drivers": 2, "runtime": 3, "ui": 4}
NAMES = {value: key for key, value in FLOORS.items()}


def named_packages(doc: str) -> dict[str, int]:
    """The packages each floor names in the table of `bridge/__init__.py`'s docstring, a line per floor:
    "    UI        bridge.http, bridge.commands, bridge.cli     what people and programs talk to"."""
    named: dict[str, int] = {}
    for line in doc.splitlines():
        columns = re.split(r"\s{2,}", line.strip())
        if len(columns) == 3 and columns[0].lower() in FLOORS:
            named.update((package, FLOORS[columns[0].lower()]) for package in columns[1].split(", "))
    return named


PACKAGES = named_packages(bridge.__doc__ or "")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def floor(module: str) -> int | None:
    """The floor that names `module`'s package (the longest named prefix), None for a module no floor names
    (the package root `bridge` among them)."""
    found = [p for p in PACKAGES if module == p or module.startswith(p + ".")]
    return PACKAGES[max(found, key=len)] if found else None


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for root in ("bridge", "drivers") for p in sorted((REPO / root).rglob("*.py"))}


def imports(path: Path, known: set[str]) -> set[str]:
    """The project modules `path` imports anywhere in its body (`from pkg import module` counts as the module)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names if f"{node.module}.{alias.name}" in known)
    return {m for m in out if m in known}


def graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    return {name: imports(path, known) - {name} for name, path in modules.items()}


def test_every_module_sits_on_a_floor() -> None:
    assert set(PACKAGES.values()) == set(FLOORS.values()), f"the floor table of bridge/__init__.py: {PACKAGES}"
    loose = [m for m in project_modules() if floor(m) is None and m != "bridge"]
    assert not loose, f"modules outside the floors: {loose}"


def test_no_import_goes_up_a_floor() -> None:
    upward = []
    for source, targets in sorted(graph().items()):
        src = floor(source)
        for target in sorted(targets):
            dst = floor(target)
            if src is not None and dst is not None and dst > src:
                upward.append(f"{source} ({NAMES[src]}) imports {target} ({NAMES[dst]})")
    assert not upward, "imports that go up a floor:\n" + "\n".join(upward)


def test_no_import_cycles() -> None:
    """Tarjan's strongly connected components: any component of two or more modules is a circle."""
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in edges[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    report = [" ↔ ".join(c) + ": " + "; ".join(f"{a} → {b}" for a in c for b in sorted(edges[a]) if b in c)
              for c in circles]
    assert not circles, "import circles:\n" + "\n".join(report)


def test_the_checker_sees_function_level_and_type_checking_imports(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from bridge.runtime import daemon\n"
                      "def f():\n    import bridge.core.clock\n    from bridge.controls import mixer\n")
    found = imports(source, {"bridge.runtime.daemon", "bridge.core.clock", "bridge.controls.mixer",
                             "bridge.runtime", "bridge.controls"})
    assert {"bridge.runtime.daemon", "bridge.core.clock", "bridge.controls.mixer"} <= found
    assert floor("bridge.http.app") == FLOORS["ui"] and floor("drivers.safe_load") == FLOORS["drivers"]
    assert floor("bridge.cli") == FLOORS["ui"] and floor("bridge.client") is None
    assert floor("bridge.anything_new") is None and floor("bridge.runtimes.x") is None
