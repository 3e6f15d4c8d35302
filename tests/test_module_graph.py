"""The import graph of the pyllamacy package, read from the source with `ast` (every import,
function-local ones included; nothing is imported or built):

- no import cycle among pyllamacy's modules;
- no module imports a `_private` name (not a dunder) of another pyllamacy module, except from
  the compiled extensions (`_llama`, `_chat`), whose underscore is their module name's, or
  reaches one through a module it imported (`module._name`).

The allow-lists (empty now) are for what a change under way still has to remove; keep them
empty, and the test fails when an entry is no longer needed.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set, Tuple

PKG = Path(__file__).resolve().parent.parent / "pyllamacy"
EXTENSIONS = {"pyllamacy._llama", "pyllamacy._chat"}

# import cycles still there, each as the sorted tuple of its modules
ALLOWED_CYCLES: Set[Tuple[str, ...]] = set()

# (importing module, imported module, name): private imports still there
ALLOWED_PRIVATE: Set[Tuple[str, str, str]] = set()


def _modules() -> Dict[str, Tuple[Path, bool]]:
    mods = {}
    for path in PKG.rglob("*.py"):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        mods[".".join(parts)] = (path, is_pkg)
    return mods


MODULES = _modules()
KNOWN = set(MODULES) | EXTENSIONS


def _imports(name: str):
    """(target module, imported name or None, line) for every import in module `name`; the
    name is given for `from X import name` where name is not itself a module."""
    path, is_pkg = MODULES[name]
    package = name if is_pkg else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "pyllamacy" or a.name.startswith("pyllamacy."):
                    yield a.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level > 1:
                    base = base[:-(node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target != "pyllamacy" and not target.startswith("pyllamacy."):
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                if sub in KNOWN:
                    yield sub, None, node.lineno
                else:
                    yield target, a.name, node.lineno


def _graph() -> Dict[str, Set[str]]:
    return {name: {t for t, _, _ in _imports(name) if t in MODULES and t != name}
            for name in MODULES}


def _cycles(graph: Dict[str, Set[str]]) -> List[Tuple[str, ...]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    out = []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                out.append(tuple(sorted(comp)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_uses() -> Set[Tuple[str, str, str, int]]:
    found = set()
    for name, (path, is_pkg) in MODULES.items():
        aliases = {}                        # local name -> pyllamacy module (.py) it is bound to
        for target, imported, line in _imports(name):
            if imported is not None and _is_private(imported) and target not in EXTENSIONS \
                    and target != name:
                found.add((name, target, imported, line))
        package = name if is_pkg else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")
                if node.level > 1:
                    base = base[:-(node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                for a in node.names:
                    if f"{target}.{a.name}" in MODULES:
                        aliases[a.asname or a.name] = f"{target}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in MODULES:
                        aliases[a.asname or a.name.split(".")[0]] = \
                            a.name if a.asname else a.name.split(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id in aliases and _is_private(node.attr):
                target = aliases[node.value.id]
                if f"{target}.{node.attr}" in KNOWN or target == name:
                    continue                # a submodule (pyllamacy._llama), not a name
                found.add((name, target, node.attr, node.lineno))
    return found


def test_the_package_is_found():
    assert {"pyllamacy", "pyllamacy.llama", "pyllamacy.chat", "pyllamacy.server.app",
            "pyllamacy.server.routes", "pyllamacy.loading", "pyllamacy.defaults"} <= set(MODULES)
    # function-local imports count: chat imports llama_types only inside functions
    assert "pyllamacy.llama_types" in _graph()["pyllamacy.chat"]


def test_no_import_cycles():
    cycles = set(_cycles(_graph()))
    new = cycles - ALLOWED_CYCLES
    assert not new, f"import cycles among pyllamacy modules: {sorted(new)}"
    gone = ALLOWED_CYCLES - cycles
    assert not gone, f"these cycles are gone; remove them from ALLOWED_CYCLES: {sorted(gone)}"


def test_no_private_imports_across_modules():
    uses = _private_uses()
    new = sorted(u for u in uses if u[:3] not in ALLOWED_PRIVATE)
    assert not new, ("private names used across pyllamacy modules "
                     "(importer, module, name, line): " + repr(new))
    gone = ALLOWED_PRIVATE - {u[:3] for u in uses}
    assert not gone, f"no longer used; remove them from ALLOWED_PRIVATE: {sorted(gone)}"


def test_cycle_finder_sees_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [("a", "b", "c")]
