"""The package's shape: the layers of README.md's architecture table, each module importing
only from its own layer or below; every module importable alone; no module reaching into
another's private names; and no import cycle anywhere in the repository."""

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


README = REPO / "README.md"
MAP_START, MAP_END = "<!-- --8<-- [start:architecture] -->", "<!-- --8<-- [end:architecture] -->"


def layer_map() -> list[tuple[str, list[str]]]:
    """README's architecture table, bottom layer first: (layer, entries), an entry being a
    module path (``delivery/buffer.py``) or a folder (``delivery/``) inside the package."""
    text = README.read_text()
    assert MAP_START in text and MAP_END in text, "README.md lost its architecture markers"
    block = text.split(MAP_START, 1)[1].split(MAP_END, 1)[0]
    rows = []
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or cells[0] in ("layer", "---") or not line.startswith("|"):
            continue
        rows.append((cells[0], re.findall(r"`([a-z_/]+(?:\.py|/))`", cells[1])))
    return rows[::-1]


def is_empty_package(path: Path) -> bool:
    """``management/__init__.py`` and the like: no code, nothing to place."""
    return path.name == "__init__.py" and not ast.parse(path.read_text()).body


def layer_of() -> dict[str, tuple[int, str]]:
    """Every module's (rank, layer) by the table: the most specific entry wins."""
    rows = layer_map()
    out: dict[str, tuple[int, str]] = {}
    problems = []
    for name, path in modules().items():
        if is_empty_package(path):
            continue
        relative = str(path.relative_to(PACKAGE))
        matches = []
        for rank, (layer, entries) in enumerate(rows):
            for entry in entries:
                if entry == relative or entry.endswith("/") and relative.startswith(entry):
                    matches.append((len(entry), entry.endswith(".py"), rank, layer, entry))
        if not matches:
            problems.append(f"{relative} is in no layer: add `{relative}` to the row of "
                            f"README.md's architecture table whose layer it belongs to")
            continue
        matches.sort(reverse=True)
        best = matches[0]
        tied = [m for m in matches if m[:2] == best[:2] and m[2] != best[2]]
        if tied:
            problems.append(f"{relative} is in two layers: {best[3]} ({best[4]}) and "
                            f"{tied[0][3]} ({tied[0][4]})")
        out[name] = (best[2], best[3])
    assert problems == [], "\n".join(problems)
    return out


def test_the_readme_map_places_every_module_once_and_names_only_modules():
    layers = layer_of()
    assert layers, "no module placed"
    existing = {str(p.relative_to(PACKAGE)) for p in modules().values()}
    for layer, entries in layer_map():
        for entry in entries:
            if entry.endswith("/"):
                assert any(e.startswith(entry) for e in existing), f"{entry}: no such folder"
            else:
                assert entry in existing, f"{layer}: {entry} does not exist"


def test_every_module_imports_only_from_its_layer_or_below():
    layers = layer_of()
    upward = []
    for name, path in modules().items():
        if name not in layers:
            continue
        rank, layer = layers[name]
        for dep in sorted(imports_of(name, path)):
            if dep in layers and layers[dep][0] > rank:
                upward.append(f"{name} ({layer}) imports {dep} ({layers[dep][1]}), a layer above")
    assert upward == [], "\n".join(upward)


def test_a_module_missing_from_the_map_is_named_with_where_to_add_it(monkeypatch, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(README.read_text().replace("`options.py` (", "options (", 1))
    monkeypatch.setattr(sys.modules[__name__], "README", readme)
    with pytest.raises(AssertionError, match=r"options\.py is in no layer: add `options\.py` "
                                             r"to the row of README.md's architecture table"):
        layer_of()


def test_an_upward_import_fails_naming_both_layers(monkeypatch, tmp_path):
    """The check can fail: with ``conf.py`` moved to the top row, ``client`` (transport)
    importing it is an upward import."""
    text = README.read_text().replace("`conf.py` (settings), ", "", 1)
    text = text.replace("| entry points | ", "| entry points | `conf.py`, ", 1)
    readme = tmp_path / "README.md"
    readme.write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "README", readme)
    with pytest.raises(AssertionError, match=r"instant_signals\.client \(transport\) imports "
                                             r"instant_signals\.conf \(entry points\)"):
        test_every_module_imports_only_from_its_layer_or_below()


def test_the_architecture_page_shows_the_readme_map():
    """The docs page includes the README's block (one source), and has no layer table of its
    own."""
    page = (REPO / "docs" / "explanation" / "architecture.md").read_text()
    assert '--8<-- "README.md:architecture"' in page
    assert "| Layer |" not in page and "| layer |" not in page


def sibling_imports(directory: Path) -> dict[str, set[str]]:
    """The import graph of a directory of scripts that import each other by bare name
    (``benchmarks/``: ``import durable``) or by dotted name from the repository root."""
    names = {p.stem: p for p in directory.glob("*.py")}
    dotted = f"{directory.name}."
    graph: dict[str, set[str]] = {}
    for stem, path in names.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                target = target.removeprefix(dotted)
                if target in names and target != stem:
                    deps.add(target)
        graph[stem] = deps
    return graph


def first_cycle(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str]:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return trail[trail.index(nxt):] + [nxt]
            if state.get(nxt) is None:
                found = visit(nxt, trail + [nxt])
                if found:
                    return found
        state[node] = 2
        return []

    for name in sorted(graph):
        if state.get(name) is None:
            found = visit(name, [name])
            if found:
                return found
    return []


@pytest.mark.parametrize("directory", ["benchmarks", "tests", "support"])
def test_no_import_cycle_in_the_repository(directory):
    """The benchmark scripts, the tests and their shared support import without a cycle (the
    scenario modules import ``common``, never ``harness``; ``need`` lives in support, not in
    the conftest that imports the services)."""
    assert first_cycle(sibling_imports(REPO / directory)) == []


def test_the_cycle_finder_finds_a_cycle():
    assert first_cycle({"harness": {"durable"}, "durable": {"harness"}}) == [
        "durable", "harness", "durable"]


def test_support_is_not_shipped():
    """The shared test support is importable from the repository, not part of the wheel."""
    find = (REPO / "pyproject.toml").read_text().split("[tool.setuptools.packages.find]", 1)[1]
    assert find.split("\n[", 1)[0].strip() == 'include = ["instant_signals*"]'
    assert "prune support" in (REPO / "MANIFEST.in").read_text().splitlines()
