"""The package's structure, checked statically (``ast``, nothing is imported): the intra-package import graph,
function-level imports included, has no cycle; no module imports another's private names; the shared core knows no
method; the layers (:data:`LAYERS`) import only downwards; nothing loads a file of ``scripts/``; CRTSC's parts stay
leaves; every ``__all__`` names what its module defines.

That ``import cxrlib`` and ``import cxrlib.data`` import no torch is checked by running them, in test_data.py.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "cxrlib"
#: the shared core: every method builds on these, so they must not depend on any method
CORE = ("cxrlib.data", "cxrlib.patching", "cxrlib.features", "cxrlib.metrics", "cxrlib.utils", "cxrlib.checkpoint",
        "cxrlib.image_stats", "cxrlib.distributed", "cxrlib.precision")
METHODS = "cxrlib.methods"
#: the upper layers, top first: a module may import the modules of its own layer and of the layers below, never of
#: one above (the command line drives the results page, which draws the results tables, which run the benchmark's
#: loop and the methods). Each layer is a module or a package (its sub-modules included).
LAYERS = ("cxrlib.cli", "cxrlib.report", "cxrlib.tables", "cxrlib.benchmark", METHODS)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}


MODULES = _modules()


def _inside(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def _ancestors(name: str) -> list[str]:
    """The packages whose ``__init__`` runs before ``name`` is imported: ``a.b.c`` -> ``a``, ``a.b``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _imports(module: str, path: Path):
    """Every import statement of ``module``, at any depth: ``(target module, imported names, line, top level)``.
    ``from P import m`` with ``P.m`` a module of the package counts as an import of ``P.m``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top = {id(node) for node in tree.body}
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno, id(node) in top
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module
            names = [alias.name for alias in node.names]
            plain = [n for n in names if f"{target}.{n}" not in MODULES]
            for n in names:
                if f"{target}.{n}" in MODULES:
                    yield f"{target}.{n}", [], node.lineno, id(node) in top
            if plain:
                yield target, plain, node.lineno, id(node) in top


IMPORTS = {m: list(_imports(m, p)) for m, p in MODULES.items()}


def _where(importer: str, line: int, top: bool) -> str:
    return f"{MODULES[importer].relative_to(ROOT)}:{line}{'' if top else ' (inside a function)'}"


def _graph() -> dict[str, dict[str, list[str]]]:
    """importer -> imported module of the package -> where. Importing ``a.b.c`` runs the ``__init__`` of ``a`` and
    ``a.b`` first, so those are edges too."""
    graph: dict[str, dict[str, list[str]]] = {m: defaultdict(list) for m in MODULES}
    for importer, imports in IMPORTS.items():
        for target, _, line, top in imports:
            if not _inside(target):
                continue
            # the importer's own packages are running already: implicit edges to them are no dependency
            implicit = [t for t in _ancestors(target) if not importer.startswith(t + ".")]
            for t in (*implicit, target):
                if t != importer and t in MODULES:
                    graph[importer][t].append(_where(importer, line, top))
    return graph


def _cycles(graph) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_every_module_and_the_known_imports():
    graph = _graph()
    assert {"cxrlib.cli", "cxrlib.checkpoint", "cxrlib.methods", "cxrlib.methods.squid.scorer",
            "cxrlib.methods.crtsc.crm", "cxrlib.methods.ddad.networks"} <= set(graph)
    assert "cxrlib.methods.squid.train" in graph["cxrlib.methods.squid.scorer"]
    assert "cxrlib.methods.patchcore.patchcore" in graph["cxrlib.methods.wscxr.wscxr"]
    assert "cxrlib.utils" in graph["cxrlib.data"]  # a function-level import counts
    assert "cxrlib.methods" in graph["cxrlib.methods.squid.scorer"]  # for load_scorer
    assert "cxrlib.methods.ddad" in graph["cxrlib.benchmark"]  # a package's __init__ runs before its modules
    assert "cxrlib.methods.squid" not in graph["cxrlib.methods.squid.train"]  # ... but is no edge from inside
    # the checker finds a cycle when there is one
    assert _cycles({"a": {"b": []}, "b": {"c": []}, "c": {"a": []}, "d": {"a": []}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    graph = _graph()
    problems = []
    for comp in _cycles(graph):
        edges = [f"    {a} -> {b}  ({', '.join(graph[a][b])})" for a in comp for b in comp if b in graph[a]]
        problems.append(f"cycle among {', '.join(comp)}:\n" + "\n".join(edges))
    assert not problems, "import cycles inside cxrlib (function-level imports count):\n" + "\n".join(problems)


def test_no_private_names_imported_from_another_module():
    offenders = [f"{_where(m, line, top)}: {m} imports {', '.join(private)} from {target}"
                 for m, imports in IMPORTS.items() for target, names, line, top in imports
                 if (private := [n for n in names if n.startswith("_") and not n.endswith("__")])]
    assert not offenders, ("private (underscore) names imported across modules; make them public (no underscore, "
                           "a docstring) or move them to the module that uses them:\n" + "\n".join(offenders))


def test_core_modules_know_no_method():
    graph = _graph()
    missing = [m for m in CORE if m not in graph]
    assert not missing, f"core modules not found: {missing}"
    offenders = [f"{m} imports {t}  ({', '.join(graph[m][t])})" for m in CORE for t in graph[m]
                 if t == METHODS or t.startswith(METHODS + ".")]
    assert not offenders, "the shared core (" + ", ".join(CORE) + ") must not import cxrlib.methods:\n" + \
        "\n".join(offenders)


def _layer(module: str) -> int | None:
    for i, layer in enumerate(LAYERS):
        if module == layer or module.startswith(layer + "."):
            return i
    return None


def test_layers_import_only_downwards():
    graph = _graph()
    assert _layer("cxrlib.tables.wscxr") == 2 and _layer("cxrlib.methods.squid.scorer") == 4 and _layer("cxrlib.data") is None
    assert {"cxrlib.tables", "cxrlib.tables.main_table"} <= set(graph), "the results tables are a package of cxrlib"
    assert "cxrlib.tables" in graph["cxrlib.report"] and "cxrlib.tables" in graph["cxrlib.cli"]
    offenders = [f"{m} imports {t}  ({', '.join(graph[m][t])})" for m in graph for t in graph[m]
                 if _layer(m) is not None and _layer(t) is not None and _layer(t) < _layer(m)]
    assert not offenders, "a lower layer imports an upper one (" + " > ".join(LAYERS) + "):\n" + "\n".join(offenders)


def test_nothing_loads_a_script():
    """The package holds every table's code: no module loads a file of ``scripts/`` by path."""
    offenders = [str(p.relative_to(ROOT)) for p in MODULES.values()
                 if "spec_from_file_location" in p.read_text() or '"scripts"' in p.read_text()]
    assert not offenders, offenders


def test_crtsc_parts_do_not_import_squid():
    graph = _graph()
    offenders = [f"{m} imports {t}  ({', '.join(graph[m][t])})" for m in graph
                 if m.startswith("cxrlib.methods.crtsc.") for t in graph[m] if t.startswith("cxrlib.methods.squid")]
    assert not offenders, "CRTSC's parts are leaves the SQUID generator builds on, not the other way round:\n" + \
        "\n".join(offenders)


def _defined_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def test_every_dunder_all_names_what_its_module_defines():
    problems = []
    for m, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
                listed = ast.literal_eval(node.value)
                duplicates = sorted({n for n in listed if listed.count(n) > 1})
                missing = sorted(set(listed) - _defined_names(tree))
                if missing or duplicates:
                    problems.append(f"{m}: __all__ lists undefined {missing}" + (f", twice {duplicates}" if duplicates
                                                                                  else ""))
    assert not problems, "\n".join(problems)
