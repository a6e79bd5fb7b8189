"""The package's import rules, read from the source with ``ast`` (lazy imports included).

**No private names across packages.** A module imports from another part of
``bnn_toroid`` (a subpackage, or a top-level module: each counts as one part) only names
without a leading underscore, and no private submodule of another subpackage
(``bnn_toroid.paths._common`` is for ``paths`` alone). The top-level private modules
(``_dispatch``, ``_files``, ``_progress``, ``_version``) exist to be shared inside the
package, so their public names may be imported anywhere. A name that a part offers to the
others is public, documented, and listed in its module's ``__all__``.

The real-valued side keeps this rule without exception: geometry, paths and landscape read
a torch model through :mod:`bnn_toroid.network.continuous` and the structure-level
forms of :mod:`bnn_toroid.symmetry.continuous`. ``EXCEPTIONS`` lists the imports that
still break it elsewhere, each with the reason; an entry goes when its import does.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "bnn_toroid"

# (importing module, imported module, name): why it is still allowed
EXCEPTIONS = {
    ("bnn_toroid.landscape.binary", "bnn_toroid.symmetry.binary", "_check"):
        "the BinaryNetwork type check; binary side, outside the real-valued model's scope",
}

CONTINUOUS = ("bnn_toroid.network.continuous", "bnn_toroid.symmetry.continuous",
              "bnn_toroid.geometry.continuous", "bnn_toroid.paths.continuous",
              "bnn_toroid.landscape.continuous")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _part(module: str) -> str:
    """The part of the package a module belongs to: ``bnn_toroid.paths.moves`` → ``paths``."""
    return (module.split(".") + [""])[1]


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _imports(path: Path):
    """(line, imported module, imported name or None) of every bnn_toroid import."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("bnn_toroid"):
                    yield node.lineno, a.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                src = ".".join(base + ([node.module] if node.module else []))
            else:
                src = node.module or ""
            if src.startswith("bnn_toroid"):
                for a in node.names:
                    yield node.lineno, src, a.name


def _is_module(dotted: str) -> bool:
    p = ROOT.parent / dotted.replace(".", "/")
    return p.is_dir() or p.with_suffix(".py").is_file()


def _violations():
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        module = _module_name(path)
        for line, src, name in _imports(path):
            # an imported submodule counts as a module, an imported name as a name
            target = f"{src}.{name}" if name and _is_module(f"{src}.{name}") else src
            if _part(target) == _part(module):
                continue
            # a private submodule of another subpackage (bnn_toroid._files etc. are shared)
            inner = target.split(".")[2:]
            if any(_private(p) for p in inner):
                out.append((module, target, None, line))
            elif name and target == src and _private(name):
                out.append((module, src, name, line))
    return out


def test_relative_imports_resolve_as_python_does():
    # from bnn_toroid/paths/binary.py: "from ..geometry.binary import distance"
    assert _part("bnn_toroid.paths.binary") == "paths"
    found = [(s, n) for _, s, n in _imports(ROOT / "paths" / "binary.py")]
    assert ("bnn_toroid.geometry.binary", "distance") in found
    assert ("bnn_toroid.paths._common", "aligned_endpoint") in found
    found = [(s, n) for _, s, n in _imports(ROOT / "paths" / "__init__.py")]
    assert ("bnn_toroid._dispatch", "kind") in found and ("bnn_toroid.paths", "binary") in found


def test_no_private_names_cross_the_package_parts():
    found = _violations()
    stale = [k for k in EXCEPTIONS if k not in {v[:3] for v in found}]
    assert not stale, f"exceptions whose import has gone (remove them): {stale}"
    bad = [v for v in found if v[:3] not in EXCEPTIONS]
    assert not bad, "private imports across parts of bnn_toroid:\n" + "\n".join(
        f"  {m}:{line}: {s}" + (f" import {n}" if n else "") for m, s, n, line in bad)


@pytest.mark.parametrize("module", CONTINUOUS)
def test_the_real_valued_side_has_no_exception(module):
    assert not [v for v in _violations() if v[0] == module]
    assert not [k for k in EXCEPTIONS if k[0] == module or k[1] == module]


def test_the_real_valued_model_is_read_one_way():
    """symmetry, geometry, paths and landscape take the model from network.continuous
    (no module but it defines LayerStructure or parses a torch model)."""
    for module in CONTINUOUS[1:]:
        path = ROOT.parent / (module.replace(".", "/") + ".py")
        text = path.read_text()
        assert "bnn_toroid.network.continuous import" in text, module
        assert "class LayerStructure" not in text and "def parse(" not in text, module


def test_moved_and_renamed_names_keep_working():
    import importlib

    import bnn_toroid as bt
    from bnn_toroid import paths
    from bnn_toroid.network import continuous as model
    from bnn_toroid.symmetry import continuous as sc

    # the real-valued model moved to network.continuous; the old public names stay
    for name in ("UnsupportedLayerError", "fold_batchnorm", "train_error", "as_tensors"):
        assert getattr(sc, name) is getattr(model, name)
    # paths/search.py is paths/discrete_search.py; the old module name is an alias that
    # leaves the function paths.search alone
    old = importlib.import_module("bnn_toroid.paths.search")
    assert old is paths.discrete_search and callable(paths.search)
    assert paths.search is not old and bt.paths.search.__module__ == "bnn_toroid.paths"
    from bnn_toroid.paths.search import IncrementalEvaluator, make_evaluator  # noqa: F401
    assert paths.search is not old
