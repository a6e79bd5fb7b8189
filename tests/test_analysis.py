"""``bnn_toroid.analysis``, the one layer behind ``analyze``, ``connect``, the sweep and the
demo: both network kinds, every registered path kind, clear errors for bad input, a
path's errors evaluated once, the same numbers from every front end, and imports that go
one way."""
import ast
import inspect
import json
from pathlib import Path

import numpy as np
import pytest

from bnn_toroid import analysis as A
from bnn_toroid import cli, datasets
from bnn_toroid._files import jsonable, report_text, write_report
from bnn_toroid.io import load_any

ROOT = Path(__file__).resolve().parents[1]
N = 200
DATA = ["--data", "digits", "--n", str(N)]
SPECS = {"binary": "bmlp:64-16-10", "real": "mlp:64-16-10"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """Two trained minima of each kind, as files (``KIND-0.npz``, ``KIND-1.npz``)."""
    d = tmp_path_factory.mktemp("analysis")
    for kind, spec in SPECS.items():
        for seed in (0, 1):
            lr = ["--lr", "0.1"] if kind == "real" else []
            assert cli.main(["train", "--model", spec, *DATA, "--epochs", "3", "--seed", str(seed),
                             "-o", str(d / f"{kind}-{seed}.npz"), "-q", *lr]) == 0
    return d


@pytest.fixture(scope="module")
def data():
    return datasets.load("digits", "train", n=N, seed=0)


def _pair(nets, kind):
    return load_any(nets / f"{kind}-0.npz"), load_any(nets / f"{kind}-1.npz")


# ---------------------------------------------------------------------------- records
@pytest.mark.parametrize("kind", A.NETWORK_KINDS)
def test_analyze_minimum_both_kinds(nets, data, kind):
    net, _ = _pair(nets, kind)
    test = datasets.load("digits", "test")
    r = A.analyze_minimum(net, data, test=test, samples=2, seed=3)
    assert r.kind == kind and 0 <= r.train_error <= 1 and 0 <= r.test_error <= 1
    le = r.local_energy
    assert tuple(le.x) == A.default_grid(kind) and len(le.mean) == len(le.std) == len(le.x)
    assert le.base_error == r.train_error and le.samples == 2 and le.seed == 3
    assert abs(le.mean[0]) < 1e-12                      # no perturbation, no rise
    d = r.to_dict()
    assert json.loads(report_text(d)) == d               # JSON-able as it is
    if kind == "binary":
        assert len(d["fingerprint"]) == 64 and d["n_weights"] == net.n_weights
    else:
        assert "fingerprint" not in d and "n_weights" not in d
    skipped = A.analyze_minimum(net, data, local_energy=False)
    assert skipped.local_energy is None and "local_energy" not in skipped.to_dict()
    assert "test_error" not in skipped.to_dict()


def test_default_grid_is_the_landscape_default():
    from bnn_toroid.landscape.binary import DEFAULT_EPS
    from bnn_toroid.landscape.continuous import DEFAULT_SIGMA
    assert A.default_grid("binary") == DEFAULT_EPS and A.default_grid("real") == DEFAULT_SIGMA
    assert A.GRID_NAMES == {"binary": "eps", "real": "sigma"}


def test_path_registry_matches_the_paths_package():
    from bnn_toroid import paths
    assert A.path_kinds("binary") == ("random", "search", "bend")
    assert A.path_kinds("real") == ("linear", "geodesic", "bend")
    assert A.PATH_KINDS["binary"]["random"].function is paths.binary.random_flip
    assert A.PATH_KINDS["binary"]["bend"].function is paths.binary.single_bend
    assert A.PATH_KINDS["binary"]["search"].function.__module__ == paths.SearchPath.__module__
    assert A.PATH_KINDS["real"]["linear"].function is paths.continuous.linear
    assert A.PATH_KINDS["real"]["geodesic"].function is paths.continuous.geodesic
    assert A.PATH_KINDS["real"]["bend"].function is paths.continuous.single_bend
    for kind, kinds in A.PATH_KINDS.items():
        for name, pk in kinds.items():
            params = list(inspect.signature(pk.function).parameters)
            assert pk.network == kind and pk.name == name and params[:2] == ["a", "b"]
            assert (params[2] == "data") == pk.data
            assert ("seed" in params) == pk.seed and ("quiet" in params) == pk.quiet
            assert {"points", "align"} <= set(params)


ALL_PATHS = [(k, n) for k in A.PATH_KINDS for n in A.PATH_KINDS[k]]
FAST = {"bend": {"epochs": 1}, "search": {"candidates": 8}}


@pytest.mark.parametrize("kind, name", ALL_PATHS)
def test_every_path_kind(nets, data, kind, name):
    a, b = _pair(nets, kind)
    r = A.analyze_path(a, b, data, name, points=5, seed=1, **FAST.get(name, {}))
    assert r.kind == name and r.options["align"] is True
    e = np.asarray(r.errors)
    assert len(e) == len(r.fractions) >= 5 and np.all((e >= 0) & (e <= 1))
    assert r.fractions[0] == 0 and r.fractions[-1] == 1
    assert r.barrier == e.max() and r.height == pytest.approx(e.max() - (e[0] + e[-1]) / 2)
    d = r.to_dict()
    assert json.loads(report_text(d)) == d
    assert ("n_moves" in d) == (name == "search") and "timing" not in d
    again = A.analyze_path(a, b, data, name, points=5, seed=1, **FAST.get(name, {}))
    assert again.to_dict() == d                          # seeded: the same numbers


def test_search_on_part_of_the_data(nets, data):
    a, b = _pair(nets, "binary")
    r = A.analyze_path(a, b, data, "search", points=5, search_n=50, candidates=8)
    d = r.to_dict()
    assert d["search_n"] == 50 and len(d["errors_search_data"]) == len(d["errors"])
    assert set(r.timing) == {"search_seconds", "evals_per_second"}


@pytest.mark.parametrize("kind", A.NETWORK_KINDS)
def test_analyze_pair(nets, data, kind):
    a, b = _pair(nets, kind)
    paths = list(A.path_kinds(kind)[:2]) + [{"kind": A.path_kinds(kind)[0], "name": "raw", "align": False}]
    r = A.analyze_pair(a, b, data, paths=paths, points=5, seed=0)
    assert r.kind == kind and r.distance_raw > 0 and 0 < r.distance_aligned
    assert list(r.paths) == [paths[0], paths[1], "raw"] and r.paths["raw"].options["align"] is False
    assert (r.distance_raw, r.distance_aligned) == A.pair_distances(a, b)
    d = r.to_dict()
    assert set(d) == {"distance_raw", "distance_aligned", "barriers"}
    assert d["barriers"][paths[0]] == A.analyze_path(a, b, data, paths[0], points=5).to_dict()
    only = A.analyze_pair(a, b)
    assert only.to_dict() == {"distance_raw": r.distance_raw, "distance_aligned": r.distance_aligned}
    assert A.analyze_pair(a, b, data, paths=[paths[0]], distances=False).to_dict().keys() == {"barriers"}


# ---------------------------------------------------------------------------- bad input
def _raises(exc, call, *parts):
    with pytest.raises(exc) as e:
        call()
    for p in parts:
        assert p in str(e.value), (p, str(e.value))


def test_bad_input_names_the_argument(nets, data):
    a, b = _pair(nets, "binary")
    ra, _ = _pair(nets, "real")
    _raises(TypeError, lambda: A.analyze_minimum(np.zeros(3), data), "analyze_minimum: net",
            "expected a BinaryNetwork or a real-valued torch nn.Module", "ndarray")
    _raises(TypeError, lambda: A.analyze_minimum(a, 42), "analyze_minimum: data",
            "Dataset (with .x and .y) or an (x, y) pair", "int")
    _raises(ValueError, lambda: A.analyze_minimum(a, (data.x, data.y[:3])), "analyze_minimum: data",
            f"{N} samples and 3 labels")
    _raises(TypeError, lambda: A.analyze_minimum(a, data, test="test"), "analyze_minimum: test")
    _raises(ValueError, lambda: A.analyze_minimum(a, data, grid=[0, 2.0]), "analyze_minimum: grid (eps)",
            "flip fractions ε in [0, 1]", "binary network", "2.0")
    _raises(ValueError, lambda: A.analyze_minimum(ra, data, grid=[-0.1]), "grid (sigma)", "noise levels σ >= 0")
    _raises(ValueError, lambda: A.analyze_minimum(a, data, grid=[]), "grid (eps)", "non-empty list")
    _raises(ValueError, lambda: A.analyze_minimum(a, data, grid="0.1"), "grid (eps)", "non-empty list")
    _raises(ValueError, lambda: A.analyze_minimum(a, data, samples=0), "analyze_minimum: samples",
            "integer >= 1", "0")
    _raises(ValueError, lambda: A.analyze_minimum(a, data, seed=-1), "analyze_minimum: seed", "integer >= 0")
    _raises(TypeError, lambda: A.analyze_pair(a, ra), "analyze_pair: a and b must be networks of one kind",
            "binary network (a)", "real-valued model (b)")
    _raises(TypeError, lambda: A.analyze_pair(a, "b.npz"), "analyze_pair: b", "str")
    _raises(ValueError, lambda: A.analyze_path(a, b, data, "linear"), "analyze_path: kind",
            "'linear' is not available for binary networks", "random, search, bend")
    _raises(ValueError, lambda: A.analyze_path(ra, ra, data, "search"), "analyze_path: kind",
            "real-valued models", "linear, geodesic, bend")
    _raises(TypeError, lambda: A.analyze_path(a, b, data, 3), "analyze_path: kind must be a path kind name")
    _raises(ValueError, lambda: A.analyze_path(a, b, data, "random", points=1), "analyze_path: points",
            "integer >= 2")
    _raises(ValueError, lambda: A.analyze_path(a, b, data, "random", bogus=1), "analyze_path",
            "unknown option(s) ['bogus']", "path kind 'random'", "keyword arguments of random_flip", "orders")
    _raises(ValueError, lambda: A.analyze_pair(a, b, data, paths=[{"kind": "random", "points": 3}]),
            "analyze_pair: paths[0] sets ['points']")
    _raises(ValueError, lambda: A.analyze_path(a, b, data, "random", search_n=10),
            "search_n applies to 'search' paths only")
    _raises(ValueError, lambda: A.analyze_path(a, b, data, "search", search_n=0), "search_n", "integer >= 1")
    _raises(ValueError, lambda: A.analyze_pair(a, b, paths=["random"]), "analyze_pair: data is required")
    _raises(TypeError, lambda: A.analyze_pair(a, b, data, paths=[7]), "analyze_pair: paths[0]",
            "random, search, bend")
    _raises(ValueError, lambda: A.analyze_pair(a, b, data, paths=["random", "random"]), "duplicate names ['random']")
    _raises(ValueError, lambda: A.default_grid("float"), "default_grid: kind", "'binary', 'real'", "'float'")
    _raises(ValueError, lambda: A.path_kinds("continuous"), "path_kinds: kind", "'continuous'")


# ---------------------------------------------------------------------------- errors once
@pytest.mark.parametrize("kind, name", ALL_PATHS)
def test_a_paths_errors_are_evaluated_once(nets, data, kind, name, monkeypatch):
    """``analyze_path`` evaluates each path's errors once and takes its barrier from them
    (``Path.barrier(errors=...)``); the old front ends called ``errors`` and ``barrier``,
    which evaluated the whole path twice."""
    a, b = _pair(nets, kind)
    calls = []
    build = A.PathKind.build

    def counting(self, *args, **kw):
        path = build(self, *args, **kw)
        errors = path.errors

        def count(d, *a_, **k_):
            calls.append(d)
            return errors(d, *a_, **k_)
        path.errors = count
        return path

    monkeypatch.setattr(A.PathKind, "build", counting)
    r = A.analyze_path(a, b, data, name, points=5, **FAST.get(name, {}))
    assert calls == [data]
    # the barrier from the computed curve equals a fresh evaluation, and evaluates nothing
    path = build(A.PATH_KINDS[kind][name], a, b, data, 5, 0, True, {"align": True, **FAST.get(name, {})})
    bar = path.barrier(errors=r.errors)
    assert (bar.max_error, bar.height) == (r.barrier, r.height)
    assert path.barrier(data).max_error == r.barrier


def test_flip_path_kernel_evaluations_once(nets, data, monkeypatch):
    """Counted at the evaluator: one ``analyze_path`` costs what one ``errors`` call does."""
    from bnn_toroid.paths import binary
    a, b = _pair(nets, "binary")
    n = []
    real = binary.errors_along
    monkeypatch.setattr(binary, "errors_along", lambda *x, **k: n.append(1) or real(*x, **k))
    binary.random_flip(a, b, points=5).errors(data)
    one = len(n)
    n.clear()
    A.analyze_path(a, b, data, "random", points=5)
    assert one > 0 and len(n) == one


def test_barrier_takes_computed_errors(nets, data):
    from bnn_toroid import paths
    a, b = _pair(nets, "binary")
    p = paths.random_flip(a, b, points=5)
    e = p.errors(data)
    assert p.barrier(errors=e) == p.barrier(data)
    _raises(TypeError, lambda: p.barrier(), "FlipPath.barrier", "give data", "or errors", "not both or neither")
    _raises(TypeError, lambda: p.barrier(data, errors=e), "not both or neither")
    _raises(ValueError, lambda: p.barrier(errors=e[:3]), "FlipPath.barrier", "3 values", "expected one per point", "5")
    s = paths.search(a, b, data, candidates=8, points=5, quiet=True)
    every = s.errors(data, every_move=True)
    assert s.barrier(errors=every, every_move=True) == s.barrier(data, every_move=True)
    _raises(ValueError, lambda: s.barrier(errors=every), "SearchPath.barrier", f"{len(every)} values", "5")


# ---------------------------------------------------------------------------- every front end
@pytest.fixture(scope="module")
def sweeps(nets, tmp_path_factory):
    """An inline sweep of each kind with every path kind (two minima, one pair)."""
    from bnn_toroid.sweep import run_sweep
    d = tmp_path_factory.mktemp("sweeps")
    out = {}
    for kind, spec in SPECS.items():
        cfg = {"data": {"name": "digits", "n": N, "test": True}, "model": spec, "methods": ["sgd"],
               "seeds": [0, 1], "epochs": 2, "lr": 0.1 if kind == "real" else None,
               "analyses": {"local_energy": {A.GRID_NAMES[kind]: [0.0, 0.05], "samples": 2},
                            "paths": list(A.path_kinds(kind)), "points": 5}}
        out[kind] = (d / kind, run_sweep(cfg, executor="inline", out=d / kind, quiet=True, seed=2))
    return out


@pytest.mark.parametrize("kind", A.NETWORK_KINDS)
def test_cli_sweep_and_analysis_give_the_same_numbers(sweeps, kind, tmp_path):
    folder, rep = sweeps[kind]
    files = [str(folder / rep["minima"][n]["file"]) for n in rep["names"]]
    data = datasets.load("digits", "train", n=N, seed=2)
    test = datasets.load("digits", "test")
    grid = ["0", "0.05"]
    assert cli.main(["analyze", *files, *DATA, "--seed", "2", f"--{A.GRID_NAMES[kind]}", *grid,
                     "--samples", "2", "--test", "--json", str(tmp_path / "an.json"), "-q"]) == 0
    an = json.loads((tmp_path / "an.json").read_text())
    nets = [load_any(f) for f in files]
    for name, net, stem in zip(rep["names"], nets, an["names"]):
        via_sweep = {k: v for k, v in rep["minima"][name].items()
                     if k not in ("method", "seed", "file", "history", "diagnostics")}
        direct = jsonable(A.analyze_minimum(net, data, test=test, grid=[0.0, 0.05], samples=2, seed=2).to_dict())
        assert an["networks"][stem] == via_sweep == direct
    [pair] = rep["pairs"]
    direct = A.analyze_pair(*nets, data, paths=list(A.path_kinds(kind)), points=5, seed=2)
    assert an["distance"]["raw"][0][1] == pair["distance_raw"] == direct.distance_raw
    assert an["distance"]["aligned"][0][1] == pair["distance_aligned"] == direct.distance_aligned
    assert an["distance"]["kind"] == rep["distance"]["kind"] == A.DISTANCE_KINDS[kind]
    for path in A.path_kinds(kind):
        out = tmp_path / f"{path}.json"
        assert cli.main(["connect", *files, *DATA, "--seed", "2", "--path", path, "--points", "5",
                         "--json", str(out), "-q"]) == 0
        cn = json.loads(out.read_text())
        fields = {k: cn[k] for k in pair["barriers"][path]}
        assert fields == pair["barriers"][path] == jsonable(direct.paths[path].to_dict()), path


def test_demo_numbers_are_the_cli_numbers(nets, tmp_path):
    """The demo's per-minimum entry and its random-path barriers are ``analyze`` and
    ``connect`` on the demo's data (the full digits training set)."""
    from bnn_toroid import demo
    full, test = datasets.load("digits", "train"), datasets.load("digits", "test")
    a, b = _pair(nets, "binary")
    entry = jsonable(demo.minimum(a, full, test, seed=0))
    files = [str(nets / "binary-0.npz"), str(nets / "binary-1.npz")]
    assert cli.main(["analyze", files[0], "--data", "digits", "--test", "--json", str(tmp_path / "an.json"),
                     "-q"]) == 0
    assert json.loads((tmp_path / "an.json").read_text())["networks"]["binary-0"] == entry
    bars = demo.barriers(a, b, full, seed=0).paths
    for name, raw in (("random_raw", ["--raw"]), ("random_aligned", [])):
        out = tmp_path / f"{name}.json"
        assert cli.main(["connect", *files, "--data", "digits", "--path", "random", "--json", str(out),
                         "-q", *raw]) == 0
        cn = json.loads(out.read_text())
        assert cn["errors"] == bars[name].errors and cn["barrier"] == bars[name].barrier


# ---------------------------------------------------------------------------- reports, imports
def test_jsonable_and_write_report(tmp_path):
    v = {1: np.arange(3), "f": np.float32(0.5), "nan": float("nan"), "b": np.bool_(True),
         "i": np.int64(7), "p": tmp_path, "t": (np.inf, 1)}
    assert jsonable(v) == {"1": [0, 1, 2], "f": 0.5, "nan": None, "b": True, "i": 7, "p": str(tmp_path),
                           "t": [None, 1]}
    path = write_report(tmp_path / "r.json", v)
    assert json.loads(path.read_text()) == jsonable(v) and path.read_text() == report_text(v)


def _imports(module_file):
    """bnn_toroid modules a file imports, lazy (inside functions) imports included."""
    pkg = "bnn_toroid"
    rel = module_file.relative_to(ROOT / pkg).with_suffix("")
    here = [pkg, *rel.parts[:-1]]
    out = set()
    for node in ast.walk(ast.parse(module_file.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = here[:len(here) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            names = [mod] + [f"{mod}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out |= {n.split(".")[1] for n in names if n.startswith(pkg + ".") and n.count(".") >= 1}
    return out


FRONT = ("cli", "sweep", "sweep_config", "demo")


def test_imports_go_one_way():
    """analysis imports no front end; sweep, its config and the demo never import the
    command line; _files imports nothing of the package; no cycle among these modules."""
    mods = {m: _imports(ROOT / "bnn_toroid" / f"{m}.py") for m in (*FRONT, "analysis", "_files")}
    assert not mods["analysis"] & set(FRONT), mods["analysis"]
    assert not mods["_files"] & set(mods), mods["_files"]
    for m in ("sweep", "sweep_config", "demo"):
        assert "cli" not in mods[m], (m, mods[m])
    assert "demo" not in mods["sweep"] | mods["sweep_config"] and "sweep" not in mods["demo"]
    assert "sweep" not in mods["sweep_config"]

    def reach(m, seen):
        for n in mods.get(m, ()):
            if n not in seen:
                seen.add(n)
                reach(n, seen)
        return seen
    for m in mods:
        assert m not in reach(m, set()), f"import cycle through {m}"
