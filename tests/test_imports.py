"""No import circles among onlymine's modules (read from the source with ``ast``, nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "onlymine"
# packages whose modules may be in no import cycle (widen as the other packages are refactored)
ACYCLIC = ("onlymine.models", "onlymine.faces")


def module_files(src: Path = SRC, package: str = PACKAGE) -> dict[str, Path]:
    """``{dotted module name: file}`` for every module of ``package`` (a package is its ``__init__.py``)."""
    out = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(target: str, modules: dict[str, Path]) -> str | None:
    """The module ``target`` names, or the longest enclosing module (``pkg.mod.func`` -> ``pkg.mod``)."""
    while target:
        if target in modules:
            return target
        target = target.rpartition(".")[0]
    return None


def _literal_import_call(node: ast.Call) -> str | None:
    """``__import__("x")`` / ``importlib.import_module("x")`` with a literal name: a static import in disguise."""
    fn = node.func
    name = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
    if name in ("__import__", "import_module") and node.args and isinstance(node.args[0], ast.Constant):
        value = node.args[0].value
        return value if isinstance(value, str) else None
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path], package: str = PACKAGE) -> set[str]:
    """The ``package`` modules ``module`` imports anywhere in its file (module level, functions, TYPE_CHECKING).

    ``from a.b import c`` counts as importing ``a.b.c`` when that is a module, else ``a.b``. The implicit import
    of a module's parent packages (``import a.b.c`` runs ``a/__init__`` and ``a/b/__init__``) is not counted:
    every package whose ``__init__`` re-exports its submodules would otherwise be a cycle, and Python resolves
    those. Imports driven by a name computed at run time (plugin discovery) are not visible, by design.
    """
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = module.split(".") if is_package else module.split(".")[:-1]
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        elif isinstance(node, ast.Call):
            literal = _literal_import_call(node)
            targets = [literal] if literal else []
        for target in targets:
            if target == package or target.startswith(f"{package}."):
                resolved = _resolve(target, modules)
                if resolved and resolved != module:
                    found.add(resolved)
    return found


def import_graph(src: Path = SRC, package: str = PACKAGE) -> dict[str, set[str]]:
    """``{module: the package modules it imports}`` for every module of ``package``."""
    modules = module_files(src, package)
    return {name: imports_of(name, path, modules, package) for name, path in modules.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of ``graph`` (each sorted)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
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
            out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def import_cycles(src: Path = SRC, package: str = PACKAGE) -> list[list[str]]:
    """Every import cycle of ``package``: the strongly connected components with more than one module."""
    return sorted(c for c in strongly_connected(import_graph(src, package)) if len(c) > 1)


def _under(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in packages)


def test_cycle_finder_finds_a_planted_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub.a import f\n")
    (pkg / "sub" / "a.py").write_text("def f():\n    from pkg import b\n")
    (pkg / "b.py").write_text("from .sub import a\nimport pkg.c\n")
    (pkg / "c.py").write_text("__import__('pkg.d')\n")
    (pkg / "d.py").write_text("import os\nfrom pkg.c import x\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.sub"] == {"pkg.sub.a"} and graph["pkg.sub.a"] == {"pkg.b"}
    assert graph["pkg.b"] == {"pkg.sub.a", "pkg.c"} and graph["pkg.c"] == {"pkg.d"}
    assert import_cycles(tmp_path, "pkg") == [["pkg.b", "pkg.sub.a"], ["pkg.c", "pkg.d"]]


def test_models_and_faces_are_in_no_import_cycle():
    cycles = import_cycles()
    elsewhere = [c for c in cycles if not any(_under(m, ACYCLIC) for m in c)]
    for cycle in elsewhere:  # reported, not yet failed: those packages are being refactored
        print("import cycle:", " <-> ".join(cycle))
    bad = [c for c in cycles if any(_under(m, ACYCLIC) for m in c)]
    assert not bad, f"import cycles through {ACYCLIC}: {bad}"


def test_models_never_import_faces():
    graph = import_graph()
    assert "onlymine.faces.sources" in graph and "onlymine.models.registry" in graph
    leaks = {m: sorted(d for d in deps if _under(d, ("onlymine.faces",)))
             for m, deps in graph.items() if _under(m, ("onlymine.models",))}
    assert not {m: d for m, d in leaks.items() if d}, leaks
