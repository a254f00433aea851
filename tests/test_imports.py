"""The house reads one way: import order, private names and cycles across the ``medtf`` package.

Every module of ``medtf`` is parsed with :mod:`ast` (nothing is imported). Every ``import`` /
``from ... import`` statement counts, at module level or inside a function, and so does
``importlib.import_module("<literal>")``; names built at run time (f-strings, dicts of module
names behind a PEP 562 ``__getattr__``) are not followed.

Rules:

1. Stages import downward only (see ``STAGE_RANK``); ``medtf/__init__.py`` is exempt (it loads the
   subpackages lazily for the public API), and a package's ``__init__`` may re-export its own
   submodules (same stage, so the rule allows it anyway).
2. No module imports a private (``_name``) object from another module, or reaches one through an
   imported module (``from medtf.x import y`` then ``y._helper``), and no module imports a private
   module (``pkg._mod``) from outside the package that owns it (``medtf._optional`` is owned by
   ``medtf``, so every module may use it; ``medtf.models._blocks`` only ``medtf.models.*``).
3. No import cycle between modules (top-level and function-level imports alike, package
   ``__init__`` modules included).
"""

from __future__ import annotations

import ast
import dataclasses
import pathlib

import medtf

PACKAGE = "medtf"
PACKAGE_DIR = pathlib.Path(medtf.__file__).resolve().parent

#: Stage of each top-level part of the package, lowest first. A module may import its own stage or a
#: lower one. ``root`` is ``medtf/__init__.py`` and ``medtf/_*.py``; ``preprocess`` is the ground floor
#: beside it. ``synthetic`` is a tool at the io level: it may use root, preprocess and io, and io (or
#: anything below it) may not use it, hence its rank between io and records.
STAGE_RANK = {
    "root": 0,
    "preprocess": 0,
    "io": 1,
    "synthetic": 1.5,
    "records": 2,
    "data": 3,
    "layers": 4,
    "models": 5,
    "training": 6,
    "evaluation": 7,
    "export": 8,
    "serving": 9,
    "cli": 10,
}

#: Modules exempt from the stage rule (they import subpackages lazily for the public API).
STAGE_EXEMPT = {PACKAGE}


@dataclasses.dataclass(frozen=True)
class Import:
    """One import edge: ``module`` (line ``line``: ``text``) needs ``target``."""

    module: str
    target: str  # the imported medtf module (a submodule when ``from pkg import submodule``)
    line: int
    text: str
    private_name: str | None = None  # a ``_name`` of ``target`` that is not a module, imported or used
    attribute: bool = False  # not an import: ``alias._name`` on a module bound by an import

    def where(self) -> str:
        return f"{self.module} (line {self.line}: `{self.text}`)"


# ------------------------------------------------------------------------------------------- scanning
def module_sources(package_dir: pathlib.Path = PACKAGE_DIR, package: str = PACKAGE) -> dict[str, tuple[str, bool]]:
    """``{dotted module name: (source, is_package)}`` for every ``.py`` file under ``package_dir``."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir).with_suffix("")
        parts = [package, *rel.parts]
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        if any(not p.isidentifier() for p in parts):
            continue
        out[".".join(parts)] = (path.read_text(encoding="utf-8"), is_pkg)
    return out


def _resolve_relative(module: str, is_pkg: bool, level: int, name: str | None) -> str:
    base = module.split(".")
    if not is_pkg:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def _is_medtf(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def scan(sources: dict[str, tuple[str, bool]], package: str = PACKAGE) -> list[Import]:
    """Every import of a ``package`` module by a ``package`` module, with line and statement text."""
    modules = set(sources)
    edges: list[Import] = []
    for module, (source, is_pkg) in sources.items():
        tree = ast.parse(source, filename=module)
        lines = source.splitlines()
        bound: dict[str, str] = {}  # local name → medtf module it is bound to by an import

        def text(node):
            return " ".join(s.strip() for s in lines[node.lineno - 1: node.end_lineno]).rstrip("\\ ")

        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if _is_medtf(alias.name, package):
                        edges.append(Import(module, alias.name, node.lineno, text(node)))
                        if alias.asname:
                            bound[alias.asname] = alias.name
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = _resolve_relative(module, is_pkg, node.level, node.module)
                if not _is_medtf(base, package):
                    continue
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    if sub in modules:  # `from pkg import submodule`
                        edges.append(Import(module, sub, node.lineno, text(node)))
                        bound[alias.asname or alias.name] = sub
                    else:
                        private = alias.name if alias.name.startswith("_") and not alias.name.startswith("__") else None
                        edges.append(Import(module, base, node.lineno, text(node), private))
            elif isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                if name == "import_module" and node.args and isinstance(node.args[0], ast.Constant) \
                        and isinstance(node.args[0].value, str) and _is_medtf(node.args[0].value, package):
                    edges.append(Import(module, node.args[0].value, node.lineno, text(node)))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound \
                    and node.attr.startswith("_") and not node.attr.startswith("__") \
                    and f"{bound[node.value.id]}.{node.attr}" not in modules:
                edges.append(Import(module, bound[node.value.id], node.lineno, text(node), node.attr, attribute=True))
    return edges


def imports(edges: list[Import]) -> list[Import]:
    """The import edges (without the attribute uses that only the private rule reads)."""
    return [e for e in edges if not e.attribute]


# ------------------------------------------------------------------------------------------------ rules
def stage_of(module: str, package_dir: pathlib.Path = PACKAGE_DIR) -> str:
    parts = module.split(".")
    if len(parts) == 1 or not (package_dir / parts[1]).is_dir():
        return "root"
    return parts[1]


def stage_violations(edges: list[Import], package_dir: pathlib.Path = PACKAGE_DIR) -> list[str]:
    out = []
    for e in imports(edges):
        src, dst = stage_of(e.module, package_dir), stage_of(e.target, package_dir)
        for stage, mod in ((src, e.module), (dst, e.target)):
            if stage not in STAGE_RANK:
                out.append(f"{mod}: stage {stage!r} is not in tests/test_imports.py STAGE_RANK; give it a place")
        if e.module in STAGE_EXEMPT or src not in STAGE_RANK or dst not in STAGE_RANK:
            continue
        if STAGE_RANK[dst] > STAGE_RANK[src]:
            out.append(f"{e.where()}: stage {src!r} imports the later stage {dst!r} ({e.target})")
    return sorted(set(out))


def _private_owner(target: str) -> str | None:
    """The package that owns the first private component of ``target`` (None when all are public)."""
    parts = target.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i])
    return None


def private_violations(edges: list[Import]) -> list[str]:
    out = []
    for e in edges:
        if e.private_name is not None:
            verb = "uses" if e.attribute else "imports"
            out.append(f"{e.where()}: {verb} the private name {e.private_name!r} of {e.target}")
        owner = _private_owner(e.target)
        if owner is not None and not e.module.startswith(owner + "."):
            out.append(f"{e.where()}: imports the private module {e.target} from outside {owner}")
    return sorted(set(out))


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted; components of one node
    without a self-loop are left out."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    comps: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1 or node in graph.get(node, ()):
                    comps.append(sorted(comp))
    return sorted(comps)


def _cycle_in(comp: list[str], graph: dict[str, set[str]]) -> list[str]:
    """One cycle through ``comp[0]`` inside the component (shortest, by breadth-first search)."""
    start, members = comp[0], set(comp)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph.get(node, ())):
                if child not in members:
                    continue
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if child not in parent:
                    parent[child] = node
                    nxt.append(child)
        frontier = nxt
    return [start, start]


def cycle_violations(edges: list[Import]) -> list[str]:
    graph: dict[str, set[str]] = {}
    first: dict[tuple[str, str], Import] = {}
    for e in imports(edges):
        graph.setdefault(e.module, set()).add(e.target)
        graph.setdefault(e.target, set())
        first.setdefault((e.module, e.target), e)
    out = []
    for comp in strongly_connected(graph):
        cycle = _cycle_in(comp, graph)
        steps = "\n    ".join(first[(a, b)].where() + f" -> {b}" for a, b in zip(cycle, cycle[1:]))
        out.append(f"import cycle among {', '.join(comp)}:\n    {steps}")
    return out


# ------------------------------------------------------------------------------------------------ tests
def _fail(rule: str, problems: list[str]) -> None:
    assert not problems, f"{len(problems)} {rule}:\n" + "\n".join(problems)


def test_stages_import_downward_only():
    _fail("imports of a later stage", stage_violations(scan(module_sources())))


def test_no_private_imports_across_modules():
    _fail("private imports", private_violations(scan(module_sources())))


def test_no_import_cycles():
    _fail("import cycles", cycle_violations(scan(module_sources())))


def test_every_subpackage_has_a_stage():
    stages = {stage_of(m) for m in module_sources()}
    assert stages <= set(STAGE_RANK), f"subpackages without a stage: {sorted(stages - set(STAGE_RANK))}"


# ------------------------------------------------------------------------- the checker checks itself
def _fake_tree(tmp_path: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
    root = tmp_path / PACKAGE
    for rel, src in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(src)
    return root


def test_checker_sees_function_level_relative_and_dynamic_imports(tmp_path):
    root = _fake_tree(tmp_path, {
        "__init__.py": "",
        "_optional.py": "",
        "io/__init__.py": "",
        "io/a.py": "def f():\n    from medtf.records.w import g\n",  # later stage, inside a function
        "io/b.py": "from . import a\nfrom .a import _helper\n",  # relative; private name
        "io/c.py": "import importlib\nimportlib.import_module('medtf.io.b')\n",
        "io/d.py": "from medtf.io import a as m\n\n\ndef f():\n    return m._helper()\n",  # private, via a module
        "records/__init__.py": "",
        "records/w.py": "import medtf.io.c\nfrom medtf import _optional\n",  # root's private module: fine
        "models/__init__.py": "",
        "models/_x.py": "from medtf.models import _y\n",  # own package's private module: fine
        "models/_y.py": "",
        "training/__init__.py": "",
        "training/t.py": "from medtf.models._x import y\n",  # another package's private module
    })
    edges = scan(module_sources(root), PACKAGE)
    stages = stage_violations(edges, root)
    assert len(stages) == 1 and "medtf.io.a (line 2: `from medtf.records.w import g`)" in stages[0]
    private = private_violations(edges)
    assert len(private) == 3, private
    assert "medtf.io.b (line 2: `from .a import _helper`): imports the private name '_helper' of medtf.io.a" in private[0]
    assert "medtf.io.d (line 5: `return m._helper()`): uses the private name '_helper' of medtf.io.a" in private[1]
    assert "private module medtf.models._x from outside medtf.models" in private[2]
    cycles = cycle_violations(edges)
    assert len(cycles) == 1
    assert "medtf.io.a, medtf.io.b, medtf.io.c, medtf.records.w" in cycles[0]
    for step in ("medtf.io.a (line 2: `from medtf.records.w import g`) -> medtf.records.w",
                 "medtf.records.w (line 1: `import medtf.io.c`) -> medtf.io.c",
                 "medtf.io.c (line 2: `importlib.import_module('medtf.io.b')`) -> medtf.io.b",
                 "medtf.io.b (line 1: `from . import a`) -> medtf.io.a"):
        assert step in cycles[0], cycles[0]


def test_synthetic_is_a_tool_beside_io():
    assert STAGE_RANK["io"] < STAGE_RANK["synthetic"] < STAGE_RANK["records"]
    assert STAGE_RANK["root"] == STAGE_RANK["preprocess"] < STAGE_RANK["io"]
