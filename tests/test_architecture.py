"""The package's shape: imports go one way, and modules stay small.

Imports are read from the source (ast), lazy ones inside functions and
``importlib.import_module`` calls included, so a cycle that only shows at run time on
some path is caught too. A subpackage counts as one node: its modules may import each
other, but the package as a whole sits at one level of the graph.
"""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = ROOT / "bnn_toroid"
MAX_LINES = 800


def _node(module: str):
    """The graph node of a dotted module name inside the package, or None outside it."""
    parts = module.split(".")
    if parts[0] != "bnn_toroid":
        return None
    if len(parts) == 1:
        return "bnn_toroid"
    if parts[1] == "kernels":  # installed from kernels/ (setup.py package_dir)
        return "bnn_toroid.kernels"
    if (PKG / parts[1]).is_dir() or (PKG / f"{parts[1]}.py").exists():
        return f"bnn_toroid.{parts[1]}"
    return None


def _sources():
    for f in sorted(PKG.rglob("*.py")):
        rel = f.relative_to(ROOT).with_suffix("").parts
        module = ".".join(rel[:-1] if rel[-1] == "__init__" else rel)
        package = module.split(".") if f.name == "__init__.py" else module.split(".")[:-1]
        yield f, module, package
    for f in sorted((ROOT / "kernels").rglob("*.py")):
        yield f, "bnn_toroid.kernels", ["bnn_toroid", "kernels"]


def _imported(tree, package):
    """Every dotted name a module imports: plain and relative imports, the names taken
    from a package (which may be its submodules), and constant ``import_module`` calls."""
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            yield from (a.name for a in n.names)
        elif isinstance(n, ast.ImportFrom):
            base = package[:len(package) - n.level + 1] if n.level else []
            module = ".".join(base + ([n.module] if n.module else []))
            subs = [f"{module}.{a.name}" for a in n.names
                    if _node(f"{module}.{a.name}") not in (None, _node(module))]
            # `from .. import kernels` imports the subpackage, not the package root
            yield from (subs if module == "bnn_toroid" and subs else [module, *subs])
        elif (isinstance(n, ast.Call) and n.args and isinstance(n.args[0], ast.Constant)
              and getattr(n.func, "attr", getattr(n.func, "id", "")) == "import_module"):
            name = n.args[0].value
            yield "bnn_toroid" + name if name.startswith(".") else name


def import_graph():
    """node -> the nodes it imports (the package root, which re-exports names lazily for
    users, is left out as a target: its edges point at every node)."""
    edges = {}
    for f, module, package in _sources():
        src = _node(module)
        for name in _imported(ast.parse(f.read_text(encoding="utf-8")), package):
            dst = _node(name) if name else None
            if dst and dst not in (src, "bnn_toroid"):
                edges.setdefault(src, set()).add(dst)
    return edges


def cycles(edges):
    """The strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_the_package_nodes():
    edges = import_graph()
    assert edges, "no imports found: the graph reader is broken"
    assert cycles(edges) == []


def test_kernels_import_nothing_of_the_package():
    assert not import_graph().get("bnn_toroid.kernels")


def test_no_module_is_over_800_lines():
    long = {str(f.relative_to(ROOT)): n for f, _, _ in _sources()
            if (n := len(f.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}
