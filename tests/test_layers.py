"""The package's import graph: every module imports, no import cycle exists (function-local imports count),
no module imports a higher layer than its own (the layers of docs/architecture.md), and only the run store
knows where a run's lock is."""
from __future__ import annotations

import ast
import importlib
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "kdrepro"
DOC = ROOT / "docs" / "architecture.md"


def _modules() -> dict[str, tuple[Path, bool]]:
    """``{dotted name without the 'kdrepro.' prefix ('' for the package): (file, is a package)}``."""
    out = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        parts = list(f.relative_to(PACKAGE).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (f, is_pkg)
    return out


def _short(module: str) -> str | None:
    """``kdrepro.a.b`` -> ``a.b``, ``kdrepro`` -> ``''``; None outside the package."""
    if module == "kdrepro":
        return ""
    return module[len("kdrepro."):] if module.startswith("kdrepro.") else None


def import_graph(modules: dict[str, tuple[Path, bool]]) -> dict[str, set[str]]:
    """Every ``import`` and ``from ... import`` of each module, wherever it is in the file, resolved to the
    modules of the package it names (a name imported from a package that is one of its submodules counts as
    that submodule)."""
    graph = {}
    for name, (path, is_pkg) in modules.items():
        full = "kdrepro" + (f".{name}" if name else "")
        package = full if is_pkg else full.rsplit(".", 1)[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    targets.add(sub if _short(sub) in modules else target)
        graph[name] = {s for s in map(_short, targets) if s is not None and s in modules and s != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def documented_layers() -> dict[str, int]:
    """``{module pattern: layer}`` from the table of docs/architecture.md (``| 3 store | `runs`, ... |``)."""
    layers = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"\|\s*(\d+)\b[^|]*\|([^|]*)\|", line)
        if m:
            for pattern in re.findall(r"`([^`]+)`", m.group(2)):
                layers[pattern] = int(m.group(1))
    return layers


def layer_of(module: str, layers: dict[str, int]) -> int | None:
    if module in layers:
        return layers[module]
    parent = module.rsplit(".", 1)[0] if "." in module else None
    return layers.get(f"{parent}.*") if parent else None


def test_cycle_finder_and_graph_see_a_cycle_through_a_function_local_import(tmp_path, monkeypatch):
    pkg = tmp_path / "kdrepro"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import x\n")
    (pkg / "b.py").write_text("def f():\n    from .sub import c\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from .. import a\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    graph = import_graph(_modules())
    assert graph["a"] == {"b"} and graph["b"] == {"sub.c"} and graph["sub.c"] == {"a"}
    assert cycles(graph) == [["a", "b", "sub.c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_every_module_imports():
    for name in _modules():
        if name != "__main__":
            importlib.import_module("kdrepro" + (f".{name}" if name else ""))


def test_the_package_has_no_import_cycle():
    assert cycles(import_graph(_modules())) == []


def test_every_module_has_a_documented_layer_and_imports_no_higher_one():
    modules = _modules()
    layers = documented_layers()
    assert layers, f"no layer table in {DOC}"
    unplaced = sorted(m for m in modules if m and layer_of(m, layers) is None)
    assert not unplaced, f"modules without a layer in {DOC.name}: {unplaced}"
    upward = []
    for name, targets in import_graph(modules).items():
        if not name:
            continue
        for t in targets:
            if t and layer_of(t, layers) > layer_of(name, layers):
                upward.append(f"{name} (layer {layer_of(name, layers)}) imports {t} (layer {layer_of(t, layers)})")
    assert not upward, upward
    below_cli = [m for m, ts in import_graph(modules).items() if "cli" in ts and m not in ("cli", "__main__")]
    assert below_cli == []


def test_the_config_schema_imports_no_component():
    """``config`` holds the user-facing schema and its messages: it imports resolution and the value
    utilities only; every check that needs a component (a registry of writers, scores, terms, data sets,
    models) is resolution's (docs/architecture.md)."""
    graph = import_graph(_modules())
    assert graph["config"] <= {"resolution", "values", "registry", "yamlfile"}, graph["config"]
    assert "resolution" in graph["config"]


@pytest.mark.parametrize("needle", ["lock_owner(", '.lock"', "_read_lock("])
def test_only_the_run_store_knows_where_a_runs_lock_is(needle):
    """Callers ask :meth:`RunStore.owner`/``lock_path`` by run id, so the store's ``stale_after``
    (``KDREPRO_LOCK_STALE``) holds for every one of them."""
    users = sorted(str(f.relative_to(ROOT)) for f in PACKAGE.rglob("*.py")
                   if needle in f.read_text() and f.name not in ("runs.py", "rundir.py"))
    assert users == []


def test_the_readmes_architecture_table_agrees_with_the_documented_layers():
    """README's short table names, per layer, where each concept lives: every module it names is one of the
    package (``terms/``: a subpackage) and sits in that row's layer of docs/architecture.md; any other name
    is defined in one of the row's modules."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    layers, modules = documented_layers(), _modules()
    rows = [m for m in re.finditer(r"^\|\s*(\d[\d, ]*)\b[^|]*\|([^|]*)\|", section, re.M)]
    assert {int(n) for m in rows for n in m.group(1).split(",")} == set(layers.values())  # every layer
    for m in rows:
        row_layers = {int(n) for n in m.group(1).split(",")}
        names = re.findall(r"`([^`]+)`", m.group(2))
        row_modules = [n.rstrip("/") for n in names if n.rstrip("/") in modules]
        for name in row_modules:
            assert layer_of(name, layers) in row_layers, f"README puts {name} in layer {m.group(1)}"
        for name in names:
            if name.rstrip("/") not in modules:
                defined = (re.search(rf"^(class|def) {re.escape(name)}\b", modules[mod][0].read_text(), re.M)
                           for mod in row_modules)
                assert any(defined), f"README's architecture table names {name!r}, which no module of its row defines"
