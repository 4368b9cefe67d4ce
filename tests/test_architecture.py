"""The package's shape: layers that import one way, every module importable alone, no module
reaching into another's private names, and a README map that names every module."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "instant_signals"


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports_of(name: str, path: Path) -> set[str]:
    """Modules of the package that ``name`` imports (anywhere in the file, TYPE_CHECKING too)."""
    tree = ast.parse(path.read_text())
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    known = modules()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("instant_signals")}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            if not module.startswith("instant_signals"):
                continue
            submodules = {f"{module}.{a.name}" for a in node.names
                          if f"{module}.{a.name}" in known}
            out |= submodules
            if not (node.module is None and submodules):  # "from . import x" is x, not "."
                out.add(module)
    return {m for m in out if m in known and m != name}


def test_no_import_cycle():
    graph = {name: imports_of(name, path) for name, path in modules().items()}
    # the package's own __init__ re-exports: it may import anything, nothing imports it back
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, trail: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle.extend(trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, trail + [nxt]):
                return True
        state[node] = 2
        return False

    for name in sorted(graph):
        if state.get(name) is None and visit(name, [name]):
            break
    assert cycle == [], " -> ".join(cycle)


def test_every_module_imports_alone():
    """Each module in a fresh interpreter (after django.setup(), which models need)."""
    names = sorted(modules())

    def load(name: str) -> tuple[str, str]:
        result = subprocess.run(
            [sys.executable, "-c", f"import django; django.setup(); import {name}"],
            cwd=REPO, capture_output=True, text=True, timeout=120,
            env={"DJANGO_SETTINGS_MODULE": "tests.settings", "PATH": "/usr/bin:/bin",
                 "PYTHONPATH": str(REPO)})
        output = (result.stdout + result.stderr).strip().splitlines() or ["(no output)"]
        return name, f"exit {result.returncode}: {output[-1]}" if result.returncode else ""

    with ThreadPoolExecutor(4) as pool:
        failures = {name: error for name, error in pool.map(load, names) if error}
    assert failures == {}


def test_no_module_reaches_into_another_modules_private_names():
    offenders = []
    known = modules()
    for name, path in known.items():
        tree = ast.parse(path.read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module is not None or \
                    isinstance(node, ast.ImportFrom) and node.level:
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        offenders.append(f"{name} imports {alias.name}")
                    aliases[alias.asname or alias.name] = alias.name
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if (node.attr.startswith("_") and not node.attr.startswith("__")
                        and aliases.get(node.value.id) in {n.rsplit(".", 1)[-1] for n in known}):
                    offenders.append(f"{name} uses {node.value.id}.{node.attr}")
    assert offenders == []


def test_readme_map_names_every_module():
    text = (REPO / "README.md").read_text()
    found = re.search(r"<!-- architecture -->(.*?)<!-- /architecture -->", text, re.S)
    assert found, "README.md has no architecture map"
    listed = set(re.findall(r"`([a-z_/]+)\.py`", found.group(1)))
    wanted = {str(path.relative_to(PACKAGE).with_suffix("")) for path in modules().values()}
    wanted -= {"management/commands/__init__", "management/__init__", "templatetags/__init__"}
    assert sorted(wanted - listed) == [], "modules missing from the README map"
    assert sorted(listed - wanted) == [], "the README map names modules that do not exist"


@pytest.mark.parametrize("module", ["conf", "exceptions", "channels", "levels", "envelope",
                                    "serialization", "transactions", "tracking", "client"])
def test_lower_layers_import_nothing_above_them(module):
    """Settings, errors, names, the envelope, serialization, the transaction internals,
    snapshots and the HTTP client import only each other (downwards)."""
    below = {"conf", "exceptions", "channels", "levels", "envelope", "serialization",
             "transactions", "tracking", "client"}
    deps = {d.split(".")[1] for d in imports_of(f"instant_signals.{module}",
                                                PACKAGE / f"{module}.py")}
    assert deps <= below, deps - below
