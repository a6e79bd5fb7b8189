"""One analysis layer behind every front end: what ``bnn-toroid analyze`` and ``connect``,
the sweep's ``minimum``, ``pair`` and ``path`` tasks and the demo compute, in one place.

- :func:`analyze_minimum`: a network's train (and test) error, its local energy on the
  default grid of its kind (:func:`default_grid`) or a given one, and for a binary
  network the fingerprint of its symmetry class and its weight count.
- :func:`analyze_pair`: the distance of two networks raw and after symmetry removal, and
  any number of paths between them (:func:`analyze_path`: the error curve and barrier
  of one path).
- :data:`PATH_KINDS`: the path kinds of each network kind, with the library function
  that builds each one (its keyword arguments are the kind's options).

Both kinds of network go through the same calls: a frozen
:class:`~bnn_toroid.network.BinaryNetwork` (``"binary"``) or a real-valued torch model
(``"real"``). The results are records (:class:`MinimumResult`, :class:`PairResult`,
:class:`PathResult`, :class:`LocalEnergyResult`) whose ``to_dict()`` gives the fields
the reports hold, ready for :func:`bnn_toroid._files.jsonable`. The front ends add only
their own fields (names, files, timings). The analyses take ``seed`` for their random
draws (local-energy flips or noise, flip orders, search choices, a bend's training) and
use no global random state, so equal arguments give equal numbers in any process.

Imports go one way: this module imports the library (``landscape``, ``geometry``,
``symmetry``, ``paths``, ``network``) and never a front end (``cli``, ``sweep``,
``demo``); heavy packages load on first use.
"""
from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = ["NETWORK_KINDS", "GRID_NAMES", "DISTANCE_KINDS", "PATH_KINDS", "PathKind",
           "default_grid", "check_grid", "network_kind", "path_kinds", "path_kind", "error",
           "LocalEnergyResult", "MinimumResult", "PathResult", "PairResult",
           "analyze_minimum", "analyze_pair", "analyze_path", "pair_distances"]

#: The two kinds of network: a frozen BinaryNetwork, a real-valued torch model.
NETWORK_KINDS = ("binary", "real")
#: What a local-energy grid holds, per network kind: flip fractions ε, noise levels σ.
GRID_NAMES = {"binary": "eps", "real": "sigma"}
#: What ``distance_raw`` / ``distance_aligned`` measure, per network kind.
DISTANCE_KINDS = {"binary": "hamming",
                  "real": "per-parameter euclidean (raw) / normalized_aligned (aligned)"}
_KIND_WORDS = {"binary": "binary network", "real": "real-valued model"}


def default_grid(kind: str) -> tuple:
    """The default local-energy grid of a network kind, defined once per kind beside its
    local energy: ``landscape.binary.DEFAULT_EPS`` (flip fractions, 0 to 0.1) for
    ``"binary"``, ``landscape.continuous.DEFAULT_SIGMA`` (noise levels, 0 to 0.5) for
    ``"real"``. Every front end takes its default from here."""
    _check_kind(kind, "default_grid: kind")
    if kind == "binary":
        from .landscape.binary import DEFAULT_EPS
        return tuple(DEFAULT_EPS)
    from .landscape.continuous import DEFAULT_SIGMA
    return tuple(DEFAULT_SIGMA)


def _check_kind(kind, what):
    if kind not in NETWORK_KINDS:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, NETWORK_KINDS))}, got {kind!r}")


def network_kind(net, what: str = "net") -> str:
    """``"binary"`` for a frozen BinaryNetwork, ``"real"`` for a real-valued torch model;
    anything else (a torch model with binary layers, an array, a path) is a TypeError
    naming ``what``."""
    from ._dispatch import kind
    return "binary" if kind(net, what) == "binary" else "real"


def error(net, data) -> float:
    """Train (or test) error of either kind of network on ``data``: the fraction of
    samples misclassified."""
    x, y = _xy(data, "error: data")
    if network_kind(net, "error: net") == "binary":
        return float(net.error(x, y))
    from .train import evaluate
    return float(evaluate(net, data)[1])


# ---------------------------------------------------------------------------- path kinds
@dataclass(frozen=True)
class PathKind:
    """One path kind of one network kind.

    ``name`` is the kind's name in every front end (``connect --path NAME``, a sweep's
    ``analyses.paths``); :attr:`function` the library function that builds it, whose
    keyword arguments are the kind's options. ``data``, ``seed`` and ``quiet`` say which
    of these the function takes: the data set (positional, after ``a, b``), the seed of
    its random choices, a switch for its progress bar."""
    name: str
    network: str
    summary: str
    data: bool
    seed: bool
    quiet: bool
    _load: Callable = field(repr=False, compare=False)

    @property
    def function(self) -> Callable:
        """The library function that builds this kind of path."""
        return self._load()

    def check(self, options: dict):
        """Refuse options the function takes but cannot accept, before any work (a
        ValueError, as the function would raise). Only ``search`` checks ahead."""
        if self.name == "search":
            _search_module().check_options(**options)

    def build(self, a, b, data, points: int, seed: int, quiet: bool, options: dict):
        """The path from ``a`` to ``b`` (``options``: keyword arguments of :attr:`function`)."""
        kw = dict(options, points=points)
        if self.seed:
            kw["seed"] = seed
        if self.quiet:
            kw["quiet"] = quiet
        args = (a, b, data) if self.data else (a, b)
        return self.function(*args, **kw)


def _search_module():
    # the module beside SearchPath (the package's ``search`` attribute is the wrapper
    # function, whose signature hides the options)
    import sys

    from . import paths
    return sys.modules[paths.SearchPath.__module__]


def _paths(sub, name):
    def load():
        import importlib
        return getattr(importlib.import_module(f"bnn_toroid.paths.{sub}"), name)
    return load


#: Path kinds per network kind, in the order front ends list them.
PATH_KINDS = {
    "binary": {
        "random": PathKind("random", "binary", "the differing weights flipped in a random order "
                           "(paths.binary.random_flip)", False, True, False, _paths("binary", "random_flip")),
        "search": PathKind("search", "binary", "the flip order of lowest barrier found by a "
                           "connectivity search (paths.search)", True, True, True,
                           lambda: _search_module().search),
        "bend": PathKind("bend", "binary", "two random flip paths through a trained midpoint "
                         "(paths.binary.single_bend)", True, True, True, _paths("binary", "single_bend")),
    },
    "real": {
        "linear": PathKind("linear", "real", "straight line in parameter space (paths.continuous.linear)",
                           False, False, False, _paths("continuous", "linear")),
        "geodesic": PathKind("geodesic", "real", "great circles on the toroid "
                             "(paths.continuous.geodesic)", False, False, False,
                             _paths("continuous", "geodesic")),
        "bend": PathKind("bend", "real", "two geodesics through a trained midpoint "
                         "(paths.continuous.single_bend)", True, True, False,
                         _paths("continuous", "single_bend")),
    },
}
#: Arguments every path kind gets from the analysis itself, never as an option.
RESERVED_OPTIONS = frozenset({"a", "b", "data", "seed", "quiet", "points"})


def path_kinds(kind: str) -> tuple:
    """Names of the path kinds of a network kind (``"binary"`` or ``"real"``)."""
    _check_kind(kind, "path_kinds: kind")
    return tuple(PATH_KINDS[kind])


def path_kind(kind: str, name: str) -> PathKind:
    """The :class:`PathKind` ``name`` of network kind ``kind``; an unknown name is a
    ValueError listing the kind's path kinds."""
    _check_kind(kind, "path_kind: kind")
    if name not in PATH_KINDS[kind]:
        raise ValueError(f"path kind {name!r} is not available for {_KIND_WORDS[kind]}s; "
                         f"expected one of {', '.join(PATH_KINDS[kind])}")
    return PATH_KINDS[kind][name]


# ---------------------------------------------------------------------------- records
def _floats(v) -> list:
    return [float(x) for x in np.asarray(v, np.float64).reshape(-1)]


@dataclass(frozen=True)
class LocalEnergyResult:
    """Local energy on a grid (docs/methods.md, "Local energy"): ``x`` the grid (flip
    fractions ε of a binary network, noise levels σ of a real-valued one), ``mean`` the
    rise δE of the train error per grid value, ``std`` the spread of the perturbed error
    over the ``samples`` draws, ``base_error`` the unperturbed train error, ``seed`` the
    draws' seed."""
    x: list
    mean: list
    std: list
    base_error: float
    samples: int
    seed: int

    def to_dict(self) -> dict:
        """``{x, mean, std, base_error, samples, seed}``."""
        return {"x": list(self.x), "mean": list(self.mean), "std": list(self.std),
                "base_error": self.base_error, "samples": self.samples, "seed": self.seed}


@dataclass(frozen=True)
class MinimumResult:
    """The analysis of one network (:func:`analyze_minimum`). ``kind`` is ``"binary"`` or
    ``"real"``; ``test_error`` is None without test data, ``local_energy`` None when it
    was skipped, ``fingerprint`` (SHA-256 of the symmetry class, hex) and ``n_weights``
    None for a real-valued model."""
    kind: str
    train_error: float
    test_error: float | None = None
    local_energy: LocalEnergyResult | None = None
    fingerprint: str | None = None
    n_weights: int | None = None

    def to_dict(self) -> dict:
        """``train_error``, and those of ``test_error``, ``local_energy`` (a dict),
        ``fingerprint`` and ``n_weights`` that are not None (the report's fields)."""
        out = {"train_error": self.train_error}
        if self.test_error is not None:
            out["test_error"] = self.test_error
        if self.local_energy is not None:
            out["local_energy"] = self.local_energy.to_dict()
        if self.fingerprint is not None:
            out["fingerprint"] = self.fingerprint
            out["n_weights"] = self.n_weights
        return out


@dataclass(frozen=True)
class PathResult:
    """One path between two networks (:func:`analyze_path`): ``fractions`` (position
    along the path, in [0, 1]), ``errors`` (train error at each point), ``barrier`` =
    ``max(errors)`` and ``height`` = ``barrier − (errors[0] + errors[-1]) / 2``
    (docs/methods.md, "Barrier and height"). ``options`` are the keyword arguments the
    path function got (``align`` among them).

    A search path also has ``n_moves``, ``trace_barrier`` (the maximum after every move,
    on the search data) and ``timing`` (``search_seconds``, ``evals_per_second``: they
    vary from run to run, so :meth:`to_dict` leaves them out); one searched on the first
    ``search_n`` samples has ``errors_search_data``, its errors on those. ``seconds`` is
    the wall time of building and evaluating the path."""
    kind: str
    fractions: list
    errors: list
    barrier: float
    height: float
    options: dict = field(default_factory=dict)
    n_moves: int | None = None
    trace_barrier: float | None = None
    search_n: int | None = None
    errors_search_data: list | None = None
    timing: dict | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """``{barrier, height, fractions, errors}``, with ``n_moves`` and
        ``trace_barrier`` for a search, and ``errors_search_data`` and ``search_n`` for a
        search on part of the data: the same numbers in every run."""
        out = {"barrier": self.barrier, "height": self.height, "fractions": list(self.fractions),
               "errors": list(self.errors)}
        if self.n_moves is not None:
            out.update(n_moves=self.n_moves, trace_barrier=self.trace_barrier)
        if self.search_n is not None:
            out.update(errors_search_data=list(self.errors_search_data), search_n=self.search_n)
        return out


@dataclass(frozen=True)
class PairResult:
    """The analysis of two networks (:func:`analyze_pair`): ``distance_raw`` and
    ``distance_aligned`` (:data:`DISTANCE_KINDS` says what they measure; None when not
    asked for) and ``paths``, one :class:`PathResult` per path name."""
    kind: str
    distance_raw: float | None = None
    distance_aligned: float | None = None
    paths: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """``distance_raw`` and ``distance_aligned`` (when computed) and ``barriers``:
        each path's :meth:`PathResult.to_dict` by name (when any path was asked for)."""
        out = {}
        if self.distance_raw is not None:
            out.update(distance_raw=self.distance_raw, distance_aligned=self.distance_aligned)
        if self.paths:
            out["barriers"] = {k: p.to_dict() for k, p in self.paths.items()}
        return out


# ---------------------------------------------------------------------------- checks
def _xy(data, what):
    if hasattr(data, "x") and hasattr(data, "y"):
        x, y = data.x, data.y
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    else:
        raise TypeError(f"{what} must be a Dataset (with .x and .y) or an (x, y) pair, "
                        f"got {type(data).__name__}")
    if not hasattr(x, "shape") or not hasattr(y, "shape"):
        raise TypeError(f"{what} must hold arrays (x, y), got {type(x).__name__} and "
                        f"{type(y).__name__}")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"{what} must hold as many labels as samples, at least one; got "
                         f"{len(x)} samples and {len(y)} labels")
    return x, y


def _int(v, what, lo):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{what} must be an integer >= {lo}, got {v!r}")
    return int(v)


def check_grid(grid, kind: str, what: str = "grid") -> list:
    """``grid`` as a list of floats if it is a local-energy grid for a network of kind
    ``kind`` (flip fractions in [0, 1] for ``"binary"``, noise levels >= 0 for
    ``"real"``); otherwise a ValueError naming ``what`` and what was expected."""
    _check_kind(kind, "check_grid: kind")
    words = "flip fractions ε in [0, 1]" if kind == "binary" else "noise levels σ >= 0"
    try:
        g = [float(v) for v in grid]
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a non-empty list of {words}, got {grid!r}") from None
    if not g or isinstance(grid, (str, bytes)) or any(isinstance(v, bool) for v in grid):
        raise ValueError(f"{what} must be a non-empty list of {words}, got {grid!r}")
    if not all(math.isfinite(v) and v >= 0 and (kind == "real" or v <= 1) for v in g):
        raise ValueError(f"{what} must hold {words} (the grid of a {_KIND_WORDS[kind]}), got {g}")
    return g


# ---------------------------------------------------------------------------- analyses
def analyze_minimum(net, data, test=None, grid=None, samples: int = 10, seed: int = 0,
                    local_energy: bool = True) -> MinimumResult:
    """Train error, test error (with ``test``), local energy and, for a binary network,
    fingerprint and weight count of one network.

    Args:
        net: a frozen BinaryNetwork or a real-valued torch model.
        data: the training set (a Dataset or an ``(x, y)`` pair): train error and local
            energy are measured on it.
        test: a test set, or None.
        grid: the local-energy grid, flip fractions ε in [0, 1] for a binary network,
            noise levels σ >= 0 for a real-valued one; None takes
            :func:`default_grid` of the network's kind.
        samples: random draws per grid value (10 for both kinds, as every front end).
        seed: seed of the draws (equal seeds: common random numbers across networks).
        local_energy: False skips the local energy (``local_energy`` is then None).

    Returns a :class:`MinimumResult`. Bad arguments raise a TypeError or ValueError
    naming the argument and what was expected.
    """
    kind = network_kind(net, "analyze_minimum: net")
    _xy(data, "analyze_minimum: data")
    if test is not None:
        _xy(test, "analyze_minimum: test")
    samples = _int(samples, "analyze_minimum: samples", 1)
    seed = _int(seed, "analyze_minimum: seed", 0)
    g = check_grid(default_grid(kind) if grid is None else grid, kind,
                   f"analyze_minimum: grid ({GRID_NAMES[kind]})")
    res = {"train_error": error(net, data)}
    if test is not None:
        res["test_error"] = error(net, test)
    if local_energy:
        from .landscape import local_energy as _local_energy
        r = _local_energy(net, data, samples=samples, seed=seed, **{GRID_NAMES[kind]: g})
        res["local_energy"] = LocalEnergyResult(_floats(r.sigma), _floats(r.mean), _floats(r.std),
                                                float(r.base_error), samples, seed)
    if kind == "binary":
        from .symmetry import fingerprint
        res.update(fingerprint=fingerprint(net), n_weights=int(net.n_weights))
    return MinimumResult(kind, **res)


def pair_distances(a, b) -> tuple:
    """``(raw, aligned)`` distances of two networks of one kind: the Hamming fraction
    before and after :func:`~bnn_toroid.symmetry.align` for binary networks, the
    per-parameter Euclidean distance (``kind="raw"``) and the distance on the toroid
    after normalisation and alignment (``kind="normalized_aligned"``) for real-valued
    ones."""
    kind = _pair_kind(a, b, "pair_distances")
    from .geometry import distance
    if kind == "binary":
        from .symmetry import align
        return float(distance(a, b)), float(distance(a, align(b, reference=a)))
    return float(distance(a, b, kind="raw")), float(distance(a, b, kind="normalized_aligned"))


def _pair_kind(a, b, what):
    ka, kb = network_kind(a, f"{what}: a"), network_kind(b, f"{what}: b")
    if ka != kb:
        raise TypeError(f"{what}: a and b must be networks of one kind; got a {_KIND_WORDS[ka]} "
                        f"(a) and a {_KIND_WORDS[kb]} (b)")
    return ka


def _options(pk: PathKind, options: dict, what: str) -> dict:
    params = inspect.signature(pk.function).parameters
    bad = sorted(k for k in options if k not in params or k in RESERVED_OPTIONS)
    if bad:
        allowed = sorted(k for k in params if k not in RESERVED_OPTIONS
                         and params[k].default is not inspect.Parameter.empty)
        raise ValueError(f"{what}: unknown option(s) {bad} for path kind {pk.name!r}; "
                         f"expected keyword arguments of {pk.function.__name__}: {', '.join(allowed)}")
    return {"align": True, **options}


def analyze_path(a, b, data, kind: str, points: int = 21, seed: int = 0, quiet: bool = True,
                 search_n=None, **options) -> PathResult:
    """Build one path from ``a`` to ``b`` and measure its error curve on ``data``, once.

    Args:
        a, b: two networks of one kind.
        data: the training set the errors are measured on.
        kind: a path kind of the networks' kind (:func:`path_kinds`).
        points: points along the path (>= 2; a real-valued bend needs an odd number).
        seed: seed of the path's random choices (flip orders, search, a bend's training).
        quiet: no progress bar (search and binary bend draw one only on a terminal).
        search_n: ``search`` only: search on the first ``search_n`` samples of ``data``,
            and report the errors on those as ``errors_search_data`` beside ``data``'s.
        **options: keyword arguments of the kind's function (``PATH_KINDS[...][kind].function``),
            e.g. ``align`` (default True: ``b`` is aligned to ``a`` first, for every kind),
            ``orders``, ``method``, ``candidates``, ``epochs``.

    Returns a :class:`PathResult`; the path's errors are evaluated once, and its barrier
    comes from them.
    """
    t0 = time.perf_counter()
    nk = _pair_kind(a, b, "analyze_path")
    x, y = _xy(data, "analyze_path: data")
    if not isinstance(kind, str):
        raise TypeError(f"analyze_path: kind must be a path kind name (one of "
                        f"{', '.join(PATH_KINDS[nk])}), got {type(kind).__name__}")
    try:
        pk = path_kind(nk, kind)
    except ValueError as e:
        raise ValueError(f"analyze_path: kind: {e}") from None
    points = _int(points, "analyze_path: points", 2)
    seed = _int(seed, "analyze_path: seed", 0)
    if search_n is not None:
        if kind != "search":
            raise ValueError(f"analyze_path: search_n applies to 'search' paths only, not {kind!r}")
        search_n = _int(search_n, "analyze_path: search_n", 1)
    opts = _options(pk, options, "analyze_path")
    sub = (x[:search_n], y[:search_n]) if search_n else data
    path = pk.build(a, b, sub, points, seed, quiet, opts)
    errors = np.asarray(path.errors(data), np.float64)
    bar = path.barrier(errors=errors)
    extra = {}
    if kind == "search":
        extra.update(n_moves=int(path.n_moves), trace_barrier=float(path.trace_barrier.max_error),
                     timing={"search_seconds": path.seconds, "evals_per_second": path.evals_per_second})
        if search_n:   # a second data set (the held-out check), not a second evaluation
            extra.update(search_n=search_n, errors_search_data=_floats(path.errors(sub)))
    return PathResult(kind, _floats(path.fractions), _floats(errors), float(bar.max_error),
                      float(bar.height), opts, seconds=time.perf_counter() - t0, **extra)


def _path_specs(paths, nk):
    """``paths`` as ``(name, kind, options)``: each entry a kind name or a dict
    ``{"kind", "name"?, options...}``."""
    if isinstance(paths, (str, dict)):
        paths = [paths]
    out = []
    for i, p in enumerate(paths):
        if isinstance(p, str):
            p = {"kind": p}
        if not isinstance(p, dict) or not isinstance(p.get("kind"), str):
            raise TypeError(f"analyze_pair: paths[{i}] must be a path kind name (one of "
                            f"{', '.join(PATH_KINDS[nk])}) or a dict with a 'kind', got {p!r}")
        opts = {k: v for k, v in p.items() if k not in ("kind", "name")}
        fixed = sorted(set(opts) & RESERVED_OPTIONS)
        if fixed:
            raise ValueError(f"analyze_pair: paths[{i}] sets {fixed}, which analyze_pair passes to "
                             "every path itself; expected the path function's other keyword arguments")
        out.append((p.get("name", p["kind"]), p["kind"], opts))
    names = [n for n, _, _ in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"analyze_pair: paths has duplicate names {dup}; expected a 'name' for each")
    return out


def analyze_pair(a, b, data=None, paths=(), points: int = 21, seed: int = 0, quiet: bool = True,
                 distances: bool = True) -> PairResult:
    """Distances of two networks and paths between them.

    Args:
        a, b: two networks of one kind (both binary or both real-valued).
        data: the training set the paths' errors are measured on (needed with ``paths``).
        paths: path kinds (:func:`path_kinds`), or dicts ``{"kind", "name"?, "search_n"?,
            options...}`` (keyword arguments of :func:`analyze_path`); each one's
            result is under its name (default: its kind).
        points, seed, quiet: as for :func:`analyze_path`, for every path.
        distances: False skips the distances (``distance_raw`` and ``distance_aligned``
            are then None).

    Returns a :class:`PairResult`.
    """
    nk = _pair_kind(a, b, "analyze_pair")
    specs = _path_specs(paths, nk)
    if specs and data is None:
        raise ValueError("analyze_pair: data is required to measure paths; expected a Dataset "
                         "or an (x, y) pair")
    raw = aligned = None
    if distances:
        raw, aligned = pair_distances(a, b)
    results = {name: analyze_path(a, b, data, kind, points=points, seed=seed, quiet=quiet, **opts)
               for name, kind, opts in specs}
    return PairResult(nk, raw, aligned, results)
