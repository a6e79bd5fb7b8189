"""``bnn-toroid sweep``: train many minima (methods × seeds) and analyse every pair.

A sweep is a set of independent *tasks* run on a pool of worker processes:

1. ``train``: one per ``(method, seed)``; trains the model and saves the minimum under
   ``OUT/minima/METHOD-SEED.npz`` (a frozen :class:`~bnn_toroid.network.BinaryNetwork`
   for a binary spec, a torch model file for a real-valued one).
2. ``minimum``: one per minimum, once it is trained: train (and test) error, local energy
   (docs/methods.md, "Local energy"; flips ``eps`` for binary, noise ``sigma`` for real-valued), and for binary
   networks the fingerprint of the symmetry class and the weight count.
3. ``pair``: one per unordered pair, once both ends are trained: distance raw and after
   symmetry removal (Hamming fraction for binary; per-parameter Euclidean raw and
   ``normalized_aligned`` on the toroid for real-valued, as ``bnn-toroid analyze``).
4. ``path``: one per pair and requested path kind: the error curve and barrier of that
   path (docs/methods.md, "Paths", as ``bnn-toroid connect``).

Every finished task is saved under ``OUT/state/`` as it finishes, so a re-run resumes
(:func:`run_sweep`).

Tasks receive plain JSON-able dicts (file paths, never network objects) and return plain
dicts. Every task runs on one thread (torch, Numba and BLAS) and seeds torch and numpy
from its own key, so a sweep gives *identical* numbers whichever executor runs it, in
whatever order the tasks finish:

- ``train``: ``torch.manual_seed(seed)`` before the model is built, then
  ``train.fit(..., seed=seed)``: minima of different methods with the same seed start
  from the same initial weights.
- ``minimum``, ``pair`` and ``path``: global RNGs seeded from :func:`task_seed` of the task key;
  the analyses themselves take the sweep's ``seed`` (common random numbers across
  minima), so ``bnn-toroid analyze OUT/minima/*.npz --seed S`` and ``bnn-toroid connect``
  reproduce the numbers.
- The training subset of the data is drawn once with the sweep's ``seed``; every minimum
  sees the same samples.

Executors: ``"local"`` (a :class:`concurrent.futures.ProcessPoolExecutor`, spawn start
method) and ``"ray"`` (Ray remote tasks, one CPU each, on the running Ray instance if
``ray.init`` was already called, else on ``ray.init()``: the cluster named by
``RAY_ADDRESS`` or a new local instance). At most ``workers`` tasks are in flight.
``"inline"`` runs the tasks one by one in the calling process (for debugging and tests;
same numbers).

The config format is documented in ``docs/cli.md`` and checked by :func:`load_config`.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import time
import traceback
from collections import deque
from pathlib import Path

EXECUTORS = ("local", "ray", "inline")
BINARY_PATHS = ("random", "search", "bend")
REAL_PATHS = ("linear", "geodesic", "bend")
RAY_HINT = "pip install 'bnn_toroid[ray]'"

_TOP_KEYS = {"data", "model", "methods", "seeds", "epochs", "lr", "batch_size", "method_options",
             "no_norm", "analyses"}
_REQUIRED = ("data", "model", "methods", "seeds", "epochs")
_DATA_KEYS = {"name", "n", "test", "path"}
_ANALYSIS_KEYS = {"local_energy", "paths", "points", "align", "search", "bend"}
_LE_KEYS = {"eps", "sigma", "samples"}


class SweepError(ValueError):
    """A bad sweep config or executor, or a task that failed (one-line message)."""


# ---------------------------------------------------------------------------- config
def _err(msg):
    raise SweepError(f"sweep config: {msg}")


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _number_list(v, what, lo=0.0, hi=None):
    if not isinstance(v, list) or not v or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        _err(f"{what} must be a non-empty list of numbers, got {v!r}")
    if not all(math.isfinite(x) for x in v):
        _err(f"{what} must be finite numbers, got {v!r}")
    if any(x < lo or (hi is not None and x > hi) for x in v):
        _err(f"{what} must lie in [{lo}, {hi if hi is not None else 'inf'}], got {v!r}")
    return [float(x) for x in v]


def _options(v, what, func, reserved):
    """An options dict for ``func``: keys must be its keyword arguments."""
    if v is None:
        return {}
    if not isinstance(v, dict):
        _err(f"{what} must be an object of keyword arguments, got {v!r}")
    params = inspect.signature(func).parameters
    bad = sorted(k for k in v if k not in params or k in reserved)
    if bad:
        allowed = sorted(k for k in params if k not in reserved and params[k].default is not inspect._empty)
        _err(f"{what}: unknown option(s) {bad}; allowed: {', '.join(allowed)}")
    for k, val in v.items():   # a value of the default's type: "five" for an int fails here
        _check_type(f"{what}.{k}", val, params[k].default)
    return dict(v)


def _check_type(what, val, default):
    if default is None or default is inspect.Parameter.empty or val is None:
        return
    if isinstance(default, bool):
        ok, want = isinstance(val, bool), "true or false"
    elif isinstance(default, int):
        ok, want = _is_int(val), "an integer"
    elif isinstance(default, float):
        ok = isinstance(val, (int, float)) and not isinstance(val, bool) and math.isfinite(val)
        want = "a finite number"
    elif isinstance(default, str):
        ok, want = isinstance(val, str), "a string"
    else:
        return
    if not ok:
        _err(f"{what} must be {want}, got {val!r}")


_PATH_RESERVED = {"a", "b", "data", "seed", "quiet", "points"}
_PATH_KEYS = {"kind", "name", "search_n"}


def _check_search(opts, where):
    import importlib
    try:
        importlib.import_module("bnn_toroid.paths.search").check_options(**opts)
    except ValueError as e:
        _err(f"{where}: {str(e).removeprefix('search: ')}")


def _path_func(kind, binary):
    import importlib

    from . import paths as P
    if kind == "search":
        return importlib.import_module("bnn_toroid.paths.search").search
    if kind == "bend":
        return P.binary.single_bend if binary else P.continuous.single_bend
    return {"random": P.binary.random_flip, "linear": P.continuous.linear,
            "geodesic": P.continuous.geodesic}[kind]


def _path_list(v, binary, spec, kind_defaults, align):
    """``analyses.paths``: kind names, or objects ``{"kind", "name"?, "search_n"?,
    options...}`` whose options are the path function's keyword arguments. Returns one
    dict per path: ``name`` (unique, the report's key), ``kind``, ``options`` (the
    kind's defaults from ``analyses.search`` / ``analyses.bend``, then the entry's own,
    with ``align`` from ``analyses.align`` unless given) and ``search_n``."""
    allowed = BINARY_PATHS if binary else REAL_PATHS
    what = "binary" if binary else "real-valued"
    if isinstance(v, (str, dict)):
        v = [v]
    if not isinstance(v, list) or not v:
        _err(f"analyses.paths must be a list of path kinds from {list(allowed)} or path objects, got {v!r}")
    out = []
    for i, p in enumerate(v):
        where = f"analyses.paths[{i}]"
        if isinstance(p, str):
            p = {"kind": p}
        if not isinstance(p, dict) or not isinstance(p.get("kind"), str):
            _err(f"{where} must be a path kind or an object with a 'kind', got {p!r}")
        kind = p["kind"]
        if kind not in allowed:
            _err(f"{where}: {kind!r} is not available for {what} models ({spec}); choose from {', '.join(allowed)}")
        name = p.get("name", kind)
        if not isinstance(name, str) or not name or any(c in name for c in "/\\~") or name.startswith("."):
            _err(f"{where}.name must be a non-empty name without '/', '\\' or '~', got {name!r}")
        search_n = p.get("search_n")
        if search_n is not None and (kind != "search" or not (_is_int(search_n) and search_n >= 1)):
            _err(f"{where}.search_n: a positive sample count, for 'search' paths only, got {search_n!r}")
        opts = {k: val for k, val in p.items() if k not in _PATH_KEYS}
        opts = _options(opts, where, _path_func(kind, binary), _PATH_RESERVED)
        merged = {"align": align, **kind_defaults.get(kind, {}), **opts}
        if kind == "search":
            _check_search(merged, where)
        out.append({"name": name, "kind": kind, "options": merged, "search_n": search_n})
    names = [p["name"] for p in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        _err(f"analyses.paths has duplicate names {dup}; give each entry its own 'name'")
    return out


def load_config(config) -> dict:
    """Read (a path to a JSON file) or take (a dict) a sweep config, check it and return it
    normalised: every optional key filled with its default. Raises :class:`SweepError`
    naming the first problem; needs neither data nor torch (see :func:`check_config`)."""
    if isinstance(config, (str, os.PathLike)):
        path = Path(config)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file (sweep config)")
        try:
            config = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise SweepError(f"sweep config {path}: not valid JSON: {e}") from None
        except UnicodeDecodeError:
            raise SweepError(f"sweep config {path}: not a text (JSON) file") from None
    if not isinstance(config, dict):
        _err(f"expected a JSON object at the top level, got {type(config).__name__}")
    unknown = sorted(set(config) - _TOP_KEYS)
    if unknown:
        _err(f"unknown key(s) {unknown}; allowed: {', '.join(sorted(_TOP_KEYS))}")
    missing = [k for k in _REQUIRED if k not in config]
    if missing:
        _err(f"missing key(s) {missing}; required: {', '.join(_REQUIRED)}")

    from . import train
    from .io import is_binary_spec

    data = config["data"]
    if isinstance(data, str):
        data = {"name": data}
    if not isinstance(data, dict) or "name" not in data:
        _err(f"'data' must be an object with at least 'name' (e.g. {{\"name\": \"digits\", \"n\": 200}}), "
             f"got {data!r}")
    bad = sorted(set(data) - _DATA_KEYS)
    if bad:
        _err(f"data: unknown key(s) {bad}; allowed: {', '.join(sorted(_DATA_KEYS))}")
    data = {"name": data["name"], "n": data.get("n"), "test": data.get("test", False),
            "path": data.get("path")}
    if not isinstance(data["name"], str):
        _err(f"data.name must be a string, got {data['name']!r}")
    if data["n"] is not None and not (_is_int(data["n"]) and data["n"] >= 1):
        _err(f"data.n must be a positive integer or null, got {data['n']!r}")
    if not isinstance(data["test"], bool):
        _err(f"data.test must be true or false, got {data['test']!r}")

    spec = config["model"]
    if not isinstance(spec, str):
        _err(f"'model' must be a spec string such as 'bmlp:64-32-10' or 'mlp:64-32-10', got {spec!r}")
    binary = is_binary_spec(spec)

    methods = config["methods"]
    if isinstance(methods, str):
        methods = [methods]
    if not isinstance(methods, list) or not methods or not all(isinstance(m, str) for m in methods):
        _err(f"'methods' must be a non-empty list of names from {list(train.METHODS)}, got {methods!r}")
    methods = [m.lower() for m in methods]
    for m in methods:
        if m not in train.METHODS:
            _err(f"unknown method {m!r}; known: {', '.join(train.METHODS)}")
    if len(set(methods)) != len(methods):
        _err(f"'methods' has duplicates: {methods}")

    seeds = config["seeds"]
    if _is_int(seeds):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds or not all(_is_int(s) and s >= 0 for s in seeds):
        _err(f"'seeds' must be a non-empty list of non-negative integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        _err(f"'seeds' has duplicates: {seeds}")

    epochs = config["epochs"]
    if not (_is_int(epochs) and epochs >= 1):
        _err(f"'epochs' must be a positive integer, got {epochs!r}")
    lr = config.get("lr")
    if lr is not None and not (isinstance(lr, (int, float)) and not isinstance(lr, bool)
                               and math.isfinite(lr) and lr > 0):
        _err(f"'lr' must be a finite number > 0 or null, got {lr!r}")
    batch_size = config.get("batch_size")
    if batch_size is not None and not (_is_int(batch_size) and batch_size >= 1):
        _err(f"'batch_size' must be a positive integer or null, got {batch_size!r}")
    no_norm = config.get("no_norm", False)
    if not isinstance(no_norm, bool):
        _err(f"'no_norm' must be true or false, got {no_norm!r}")
    mo = config.get("method_options") or {}
    if not isinstance(mo, dict):
        _err(f"'method_options' must map a method to its fit() options, got {mo!r}")
    method_options = {}
    for m, opts in mo.items():
        if m not in methods:
            _err(f"method_options: {m!r} is not one of the sweep's methods {methods}")
        method_options[m] = _options(opts, f"method_options.{m}", train.fit,
                                     {"model", "data", "method", "epochs", "seed", "quiet", "lr", "batch_size"})
    for m in methods:   # every value checked now, not after the first minimum has trained
        given = {k: v for k, v in (("lr", lr), ("batch_size", batch_size)) if v is not None}
        try:
            train.check_options(binary, epochs, **given, **method_options.get(m, {}))
        except (TypeError, ValueError) as e:
            _err(f"method_options.{m}: {str(e).removeprefix('fit: ')}")

    an = config.get("analyses") or {}
    if not isinstance(an, dict):
        _err(f"'analyses' must be an object, got {an!r}")
    bad = sorted(set(an) - _ANALYSIS_KEYS)
    if bad:
        _err(f"analyses: unknown key(s) {bad}; allowed: {', '.join(sorted(_ANALYSIS_KEYS))}")
    le = an.get("local_energy", {})
    if le is None:
        le = False
    if le is not False:
        if not isinstance(le, dict):
            _err(f"analyses.local_energy must be an object (eps/sigma, samples) or false, got {le!r}")
        bad = sorted(set(le) - _LE_KEYS)
        if bad:
            _err(f"analyses.local_energy: unknown key(s) {bad}; allowed: {', '.join(sorted(_LE_KEYS))}")
        samples = le.get("samples", 10)
        if not (_is_int(samples) and samples >= 1):
            _err(f"analyses.local_energy.samples must be a positive integer, got {samples!r}")
        grid_key = "eps" if binary else "sigma"
        other = "sigma" if binary else "eps"
        if other in le and grid_key not in le:
            _err(f"analyses.local_energy: {'binary' if binary else 'real-valued'} models take "
                 f"'{grid_key}' ({'flip fractions' if binary else 'noise levels'}), not '{other}'")
        if grid_key in le:
            grid = _number_list(le[grid_key], f"analyses.local_energy.{grid_key}", 0.0,
                                1.0 if binary else None)
        else:
            from .landscape.binary import DEFAULT_EPS
            from .landscape.continuous import DEFAULT_SIGMA
            grid = list(DEFAULT_EPS if binary else DEFAULT_SIGMA)
        le = {grid_key: grid, "samples": samples}
    import importlib

    from . import paths as P
    search_func = importlib.import_module("bnn_toroid.paths.search").search  # the module, not the wrapper
    bend_func = P.binary.single_bend if binary else P.continuous.single_bend
    search_opts = _options(an.get("search"), "analyses.search", search_func, _PATH_RESERVED)
    _check_search(search_opts, "analyses.search")
    bend_opts = _options(an.get("bend"), "analyses.bend", bend_func, _PATH_RESERVED)
    points = an.get("points", 21)
    if not (_is_int(points) and points >= 2):
        _err(f"analyses.points must be an integer >= 2, got {points!r}")
    align = an.get("align", True)
    if not isinstance(align, bool):
        _err(f"analyses.align must be true or false, got {align!r}")
    path_list = _path_list(an.get("paths", ["random"] if binary else ["linear", "geodesic"]), binary, spec,
                           {"search": search_opts, "bend": bend_opts}, align)
    kinds = {p["kind"] for p in path_list}
    if search_opts and "search" not in kinds:
        _err("analyses.search options given but no 'search' path is in analyses.paths")
    if bend_opts and "bend" not in kinds:
        _err("analyses.bend options given but no 'bend' path is in analyses.paths")

    return {"data": data, "model": spec, "kind": "binary" if binary else "real", "methods": methods,
            "seeds": list(seeds), "epochs": epochs, "lr": lr, "batch_size": batch_size,
            "no_norm": no_norm, "method_options": method_options,
            "analyses": {"local_energy": le, "paths": path_list, "points": points, "align": align,
                         "search": search_opts, "bend": bend_opts}}


def check_config(cfg: dict, seed: int = 0):
    """Check what :func:`load_config` cannot: the data set loads and the model spec builds
    and accepts its inputs. Raises :class:`SweepError`."""
    import numpy as np
    import torch

    from .io import SpecError, build_model
    d = cfg["data"]
    data = _load_data(d, "train", seed, what="data")
    if d["test"]:
        _load_data(d, "test", seed, what="data (test split)")
    try:
        model = build_model(cfg["model"])
    except SpecError as e:
        raise SweepError(f"sweep config: {e}") from None
    x = torch.as_tensor(np.array(data.x[:2]), dtype=torch.float32)
    try:
        with torch.no_grad():
            out = model.eval()(x)
    except (RuntimeError, ValueError) as e:
        raise SweepError(f"sweep config: model {cfg['model']!r} does not accept {d['name']} inputs of "
                         f"shape {tuple(data.x.shape[1:])}: {str(e).splitlines()[0]}") from None
    n_out = out.shape[-1]
    if data.num_classes is not None and n_out not in (data.num_classes, 1):
        raise SweepError(f"sweep config: model {cfg['model']!r} has {n_out} outputs but {d['name']} has "
                         f"{data.num_classes} classes")


def _load_data(d: dict, split: str, seed: int, what="data"):
    from . import datasets
    try:
        return datasets.load(d["name"], split=split, n=d["n"] if split == "train" else None, seed=seed,
                             path=d.get("path"))
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise SweepError(f"sweep config: {what} {d['name']!r}: {str(e).splitlines()[0]}") from None


def task_seed(*key) -> int:
    """A seed in [0, 2**31) from a task key (a stable hash, equal in every process)."""
    h = hashlib.sha256("\x1f".join(map(str, key)).encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


# ---------------------------------------------------------------------------- tasks
def _one_thread():
    import numba
    import torch
    torch.set_num_threads(1)
    numba.set_num_threads(1)


def _seed_globals(seed: int):
    import random

    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _task_train(spec: dict) -> dict:
    import torch

    from . import train
    from .io import build_model, save_model
    from .network import BinaryNetwork
    data = _load_data(spec["data"], "train", spec["data_seed"])
    norm = None if spec["no_norm"] else train.input_norm(data)
    _seed_globals(task_seed("train", spec["method"], spec["seed"]))
    torch.manual_seed(spec["seed"])
    model = build_model(spec["model"], input_norm=norm)
    kw = dict(spec["options"])
    for k in ("lr", "batch_size"):
        if spec[k] is not None:
            kw[k] = spec[k]
    log_path = spec.get("file_log")

    def log(line):
        if log_path:
            with open(log_path, "a") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {spec['name']} {line}\n")

    log(f"start {spec['method']} seed {spec['seed']}, {spec['epochs']} epochs")
    hist = train.fit(model, data, method=spec["method"], epochs=spec["epochs"], seed=spec["seed"],
                     quiet=True, log=log, **kw)
    model.eval()
    if spec["kind"] == "binary":
        BinaryNetwork.from_torch(model).save(spec["file"])
    else:
        save_model(model, spec["file"], spec["model"], extra={"method": spec["method"], "seed": spec["seed"]})
    log(f"saved after {hist.seconds:.1f} s: {hist.summary()}")
    from ._files import sha256_file
    keep = ("loss", "train_error", "lr", "phase", "gamma", "replica_distance", "replica_hamming",
            "random_label_error")
    return {"history": {k: list(getattr(hist, k)) for k in keep if getattr(hist, k)},
            "config": hist.config, "diagnostics": hist.diagnostics,
            "train_seconds": hist.seconds, "file_sha256": sha256_file(spec["file"])}


def _load(path):
    from .io import load_any
    return load_any(path)


def _error(net, data):
    from .network import BinaryNetwork
    if isinstance(net, BinaryNetwork):
        return float(net.error(data.x, data.y))
    from .train import evaluate
    return float(evaluate(net, data)[1])


def _task_minimum(spec: dict) -> dict:
    from . import fingerprint, local_energy
    _seed_globals(task_seed("minimum", spec["name"], spec["sweep_seed"]))
    net = _load(spec["file"])
    data = _load_data(spec["data"], "train", spec["data_seed"])
    res = {"train_error": _error(net, data)}
    if spec["data"]["test"]:
        res["test_error"] = _error(net, _load_data(spec["data"], "test", spec["data_seed"]))
    le = spec["local_energy"]
    if le:
        grid = le.get("eps") if spec["kind"] == "binary" else le.get("sigma")
        kw = {"eps": grid} if spec["kind"] == "binary" else {"sigma": grid}
        r = local_energy(net, data, samples=le["samples"], seed=spec["sweep_seed"], **kw)
        res["local_energy"] = {"x": r.sigma, "mean": r.mean, "std": r.std, "base_error": r.base_error,
                               "samples": le["samples"], "seed": spec["sweep_seed"]}
    if spec["kind"] == "binary":
        res["fingerprint"] = fingerprint(net)
        res["n_weights"] = int(net.n_weights)
    return res


def _task_pair(spec: dict) -> dict:
    from . import align, distance
    _seed_globals(task_seed("pair", spec["a"], spec["b"], spec["sweep_seed"]))
    a, b = _load(spec["file_a"]), _load(spec["file_b"])
    if spec["kind"] == "binary":
        raw = distance(a, b)
        aligned = distance(a, align(b, reference=a))
    else:
        raw = distance(a, b, kind="raw")
        aligned = distance(a, b, kind="normalized_aligned")
    return {"distance_raw": float(raw), "distance_aligned": float(aligned)}


def _task_path(spec: dict) -> dict:
    """One path between one pair: its error curve and barrier on the training data (one
    task each, so a path added to a config runs alone on resume). A search with
    ``search_n`` runs on the first ``search_n`` training samples and also reports its
    errors on those (``errors_search_data``) beside the full set's (the held-out check)."""
    import numpy as np

    from . import paths
    from .paths.base import Barrier
    p = spec["path"]
    _seed_globals(task_seed("path", spec["a"], spec["b"], p["name"], spec["sweep_seed"]))
    a, b = _load(spec["file_a"]), _load(spec["file_b"])
    data = _load_data(spec["data"], "train", spec["data_seed"])
    seed, pts, kind, opts = spec["sweep_seed"], spec["points"], p["kind"], dict(p["options"])
    res = {}
    if kind == "random":
        path = paths.random_flip(a, b, points=pts, seed=seed, **opts)
    elif kind == "search":
        sub = (data.x[:p["search_n"]], data.y[:p["search_n"]]) if p["search_n"] else data
        path = paths.search(a, b, sub, seed=seed, quiet=True, points=pts, **opts)
        # timings vary from run to run: the report keeps them apart from the results
        res.update(n_moves=path.n_moves, trace_barrier=path.trace_barrier.max_error,
                   timing={"search_seconds": path.seconds, "evals_per_second": path.evals_per_second})
        if p["search_n"]:
            res["errors_search_data"] = np.asarray(path.errors(sub), float)
            res["search_n"] = p["search_n"]
    elif kind == "bend":
        kw = {"quiet": True} if spec["kind"] == "binary" else {}
        path = paths.single_bend(a, b, data, points=pts, seed=seed, **kw, **opts)
    elif kind == "linear":
        path = paths.linear(a, b, points=pts, **opts)
    else:
        path = paths.geodesic(a, b, points=pts, **opts)
    errors = np.asarray(path.errors(data), float)
    bar = Barrier.from_errors(errors)
    return {"barrier": float(bar.max_error), "height": float(bar.height),
            "fractions": np.asarray(path.fractions, float), "errors": errors, **res}


_TASKS = {"train": _task_train, "minimum": _task_minimum, "pair": _task_pair, "path": _task_path}


def run_task(kind: str, spec: dict) -> dict:
    """Run one sweep task in this process (the function every executor calls).

    Returns ``{"ok": True, "result": ..., "seconds": ...}`` or, on failure,
    ``{"ok": False, "error": "Type: message", "traceback": ...}``; never raises, so
    both executors report failures the same way."""
    t0 = time.perf_counter()
    try:
        from threadpoolctl import threadpool_limits
        _one_thread()
        with threadpool_limits(1):
            res = _TASKS[kind](spec)
        from .cli import _jsonable
        return {"ok": True, "result": _jsonable(res), "seconds": time.perf_counter() - t0}
    except Exception as e:  # noqa: BLE001 - reported to the driver as text
        msg = str(e).splitlines()[0] if str(e) else ""
        return {"ok": False, "error": f"{type(e).__name__}: {msg}", "traceback": traceback.format_exc(),
                "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------------------- executors
class _LocalPool:
    name = "local"

    def __init__(self, workers: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))

    def submit(self, kind, spec):
        return self.pool.submit(run_task, kind, spec)

    def wait(self, handles):
        from concurrent.futures import FIRST_COMPLETED, wait
        done, _ = wait(list(handles), return_when=FIRST_COMPLETED)
        return list(done)

    def result(self, handle):
        return handle.result()

    def close(self, abort=False, pending=()):
        # on abort, the running tasks' processes are ended too: shutdown() alone lets them
        # run on after this process has gone (ProcessPoolExecutor has no public way to
        # stop a running task before Python 3.14's terminate_workers)
        procs = list((getattr(self.pool, "_processes", None) or {}).values()) if abort else []
        self.pool.shutdown(wait=not abort, cancel_futures=abort)
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        for proc in procs:
            proc.join(timeout=5)


class _RayPool:
    name = "ray"

    def __init__(self, workers: int, quiet: bool):
        try:
            import ray
        except ImportError:
            raise SweepError(f"executor 'ray' needs Ray, which is not installed: {RAY_HINT}") from None
        self.ray = ray
        self.owned = not ray.is_initialized()
        if self.owned:
            import logging
            kw = {"logging_level": logging.ERROR} if quiet else {}
            if os.environ.get("RAY_ADDRESS"):
                ray.init(**kw)          # the cluster named by RAY_ADDRESS
            else:
                ray.init(num_cpus=workers, include_dashboard=False, **kw)
        self.remote = ray.remote(num_cpus=1, max_retries=0)(run_task)

    def submit(self, kind, spec):
        return self.remote.remote(kind, spec)

    def wait(self, handles):
        done, _ = self.ray.wait(list(handles), num_returns=1)
        return done

    def result(self, handle):
        return self.ray.get(handle)

    def close(self, abort=False, pending=()):
        if self.owned:
            self.ray.shutdown()
        elif abort:
            for ref in pending:
                self.ray.cancel(ref, force=True)


class _InlinePool:
    """Every task in this process, one at a time, when submitted (for debugging and fast
    tests). Thread counts are set to 1 for the tasks and restored afterwards."""
    name = "inline"

    def __init__(self):
        import numba
        import torch
        self.threads = (torch.get_num_threads(), numba.get_num_threads())
        self.results = {}

    def submit(self, kind, spec):
        handle = len(self.results)
        self.results[handle] = run_task(kind, spec)
        return handle

    def wait(self, handles):
        return list(handles)

    def result(self, handle):
        return self.results.pop(handle)

    def close(self, abort=False, pending=()):
        import numba
        import torch
        torch.set_num_threads(self.threads[0])
        numba.set_num_threads(self.threads[1])


def _make_pool(executor, workers, quiet):
    if executor == "local":
        return _LocalPool(workers)
    if executor == "inline":
        return _InlinePool()
    return _RayPool(workers, quiet)


# ---------------------------------------------------------------------------- driver
_STATE = "state"          # OUT/state/<kind>/<key>.json: one finished task each
_CONFIG = "sweep_config.json"


def _spec_hash(spec: dict, deps: dict) -> str:
    """What a task's result depends on: its spec without file locations (a folder can
    move) and the content hashes of the minima it reads."""
    body = {k: v for k, v in spec.items() if not k.startswith("file")}
    text = json.dumps({"spec": body, "deps": deps}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _state_file(out: Path, kind: str, key: str) -> Path:
    return out / _STATE / kind / f"{key.replace('~', '__')}.json"


def _read_state(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None   # missing or unreadable (a crash cannot leave half a file: writes are atomic)


def _write_json(path: Path, obj):
    from ._files import atomic_write
    from .cli import _jsonable
    text = json.dumps(_jsonable(obj), indent=2, sort_keys=True)
    atomic_write(path, lambda f: f.write(text.encode()))


def _config_diff(old: dict, new: dict) -> list:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def _claim_folder(out: Path, cfg: dict, seed: int, update: bool):
    """Record the config a folder is made with; refuse a different one unless ``update``.
    A stale report or error log never outlives the run that starts here."""
    want = {"config": cfg, "seed": seed}
    path = out / _CONFIG
    if path.exists():
        have = _read_state(path)
        if have is None:
            raise SweepError(f"sweep: {path} is not readable JSON; this folder's state is unknown. "
                             "Use a new --out folder")
        if have != want:
            changed = _config_diff(have.get("config", {}), cfg) + (["seed"] if have.get("seed") != seed else [])
            if not update:
                raise SweepError(
                    f"sweep: {out} was made with a different config (changed: {', '.join(changed)}). "
                    "Use a new --out folder, or --update to keep the finished tasks whose inputs "
                    "did not change and redo the rest")
    for stale in ("sweep.json", "sweep_error.txt"):
        try:
            (out / stale).unlink()
        except FileNotFoundError:
            pass
    _write_json(path, want)


def run_sweep(config_path, executor: str = "local", workers: int = 2, out="sweep_out", seed: int = 0,
              quiet: bool = False, update: bool = False) -> dict:
    """Train every ``(method, seed)`` minimum of a config, analyse each one and every pair.

    Resumable: every finished task is saved at once under ``OUT/state/`` (and every
    minimum under ``OUT/minima/``), and a re-run of the same config into the same folder
    skips the tasks whose saved result still matches their inputs (the task's options and
    the content hash of each minimum it reads). So a sweep can be interrupted, crash or
    span sessions and lose only the tasks in flight. A folder made with another config
    is refused unless ``update=True``, which keeps the finished tasks whose inputs did
    not change and redoes the rest. Training tasks write one line per epoch to
    ``OUT/logs/NAME.log``; the driver appends one line per finished task to
    ``OUT/sweep.log``.

    Parameters
    ----------
    config_path : path of the JSON config (or the config as a dict); see ``docs/cli.md``.
    executor : ``"local"`` (process pool), ``"ray"`` (needs ``pip install 'bnn_toroid[ray]'``)
        or ``"inline"`` (this process, one task at a time; for debugging).
    workers : tasks in flight at once (local: worker processes; ray: CPUs of a new local
        instance, and the cap on submitted tasks).
    out : folder for ``minima/*.npz``, ``state/``, ``logs/`` and ``sweep.json`` (every file
        written atomically).
    seed : the sweep's seed: training subset of the data and the analyses' random draws.
    quiet : no progress bar.
    update : accept a folder made with a different config (see above).

    Returns the report written to ``OUT/sweep.json`` once every task has finished:
    ``config`` (normalised), ``kind``, ``names``, ``minima`` (per-minimum results with
    the training history and diagnostics), ``pairs`` (pairwise table), ``distance``
    (matrices ``raw`` and ``aligned`` in ``names`` order) and ``timings`` (every task's
    seconds, whichever run computed it, and this run's wall time). Everything but
    ``timings``, ``executor``, ``workers``, ``out`` and ``resumed`` is identical between
    executors and between a fresh and a resumed run.
    """
    t_start = time.perf_counter()
    if executor not in EXECUTORS:
        raise SweepError(f"sweep: unknown executor {executor!r}; choose from {', '.join(EXECUTORS)}")
    if not _is_int(workers) or workers < 1:
        raise SweepError(f"sweep: workers must be a positive integer, got {workers!r}")
    if not _is_int(seed) or seed < 0:
        raise SweepError(f"sweep: seed must be a non-negative integer, got {seed!r}")
    if executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise SweepError(f"executor 'ray' needs Ray, which is not installed: {RAY_HINT}") from None
    cfg = load_config(config_path)
    check_config(cfg, seed)
    out = Path(out)
    (out / "minima").mkdir(parents=True, exist_ok=True)
    _claim_folder(out, cfg, seed, update)
    (out / "logs").mkdir(exist_ok=True)

    from ._files import sha256_file
    names = [f"{m}-{s}" for m in cfg["methods"] for s in cfg["seeds"]]
    files = {n: str((out / "minima" / f"{n}.npz").resolve()) for n in names}
    base = {"data": cfg["data"], "data_seed": seed, "sweep_seed": seed, "kind": cfg["kind"]}
    an = cfg["analyses"]
    pair_list = [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))]
    total = len(names) * 2 + len(pair_list) * (1 + len(an["paths"]))

    def train_spec(m, s):
        n = f"{m}-{s}"
        return {**base, "name": n, "method": m, "seed": s, "model": cfg["model"],
                "epochs": cfg["epochs"], "lr": cfg["lr"], "batch_size": cfg["batch_size"],
                "no_norm": cfg["no_norm"], "options": cfg["method_options"].get(m, {}),
                "file": files[n], "file_log": str((out / "logs" / f"{n}.log").resolve())}

    results = {"train": {}, "minimum": {}, "pair": {}, "path": {}}
    seconds, hashes, minimum_sha = {}, {}, {}
    resumed = []

    def finished(kind, key, spec, deps):
        """The saved result of this task if it is still valid, else None."""
        h = _spec_hash(spec, deps)
        hashes[(kind, key)] = h
        st = _read_state(_state_file(out, kind, key))
        if st is None or st.get("hash") != h:
            return None
        if kind == "train":
            f = Path(spec["file"])
            if not f.exists() or sha256_file(f) != st["result"].get("file_sha256"):
                return None
        return st

    def accept(kind, key, r, was_resumed=False):
        results[kind][key] = r["result"]
        seconds[f"{kind}:{key}"] = r["seconds"]
        if kind == "train":
            minimum_sha[key] = r["result"]["file_sha256"]
        if was_resumed:
            resumed.append(f"{kind}:{key}")

    def follow_ups(name, trained):
        yield "minimum", name, {**base, "name": name, "file": files[name],
                                "local_energy": an["local_energy"]}, {name: minimum_sha[name]}
        for a, b in pair_list:
            if name in (a, b) and a in trained and b in trained:
                deps = {a: minimum_sha[a], b: minimum_sha[b]}
                ends = {**base, "a": a, "b": b, "file_a": files[a], "file_b": files[b]}
                yield "pair", f"{a}~{b}", ends, deps
                for p in an["paths"]:
                    yield "path", f"{a}~{b}~{p['name']}", {**ends, "path": p, "points": an["points"]}, deps

    queue = deque()
    trained = set()

    def enqueue(items):
        for kind, key, spec, deps in items:
            st = finished(kind, key, spec, deps)
            if st is not None:
                accept(kind, key, st, was_resumed=True)
                if kind == "train":
                    trained.add(key)
                    enqueue(follow_ups(key, trained))
            else:
                queue.append((kind, key, spec))

    enqueue(("train", f"{m}-{s}", train_spec(m, s), {}) for m in cfg["methods"] for s in cfg["seeds"])

    log_path = out / "sweep.log"

    def log(line):
        with open(log_path, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    log(f"start: {len(resumed)} of {total} tasks already finished, {executor} executor, {workers} workers")
    pool = _make_pool(executor, workers, quiet) if queue else None
    from ._progress import bar as progress
    bar = progress(total, f"sweep[{executor}]", quiet, initial=len(resumed), unit="task")
    inflight = {}
    failed = None
    done = False
    try:
        while queue or inflight:
            while queue and len(inflight) < workers and failed is None:
                kind, key, spec = queue.popleft()
                inflight[pool.submit(kind, spec)] = (kind, key, spec)
            if not inflight:
                break
            for h in pool.wait(inflight):
                kind, key, spec = inflight.pop(h)
                try:
                    r = pool.result(h)
                except Exception as e:  # noqa: BLE001 - the worker died (crash, OOM kill, ...)
                    r = {"ok": False, "error": f"{type(e).__name__} (worker lost): {str(e)[:200]}",
                         "traceback": traceback.format_exc(), "seconds": 0.0}
                bar.update(1)
                if not r["ok"]:
                    log(f"FAILED {kind} {key} after {r['seconds']:.1f} s: {r['error']}")
                    if failed is None:
                        failed = (kind, key, r)
                    continue
                _write_json(_state_file(out, kind, key), {"kind": kind, "key": key, "hash": hashes[(kind, key)],
                                                          "result": r["result"], "seconds": r["seconds"]})
                accept(kind, key, r)
                log(f"done {kind} {key} in {r['seconds']:.1f} s")
                if kind == "train":
                    trained.add(key)
                    enqueue(follow_ups(key, trained))
                bar.set_postfix_str(f"{kind} {key}", refresh=False)
            if failed is not None:
                queue.clear()
        done = True
    finally:   # an exception here (Ctrl-C): cancel what is queued or running, do not wait
        bar.close()
        if pool is not None:
            pool.close(abort=not done, pending=list(inflight))
        if not done:
            log("interrupted; re-run the same command to resume")
    if failed is not None:
        kind, key, r = failed
        err = out / "sweep_error.txt"
        from ._files import atomic_write
        atomic_write(err, lambda f: f.write(f"task {kind} {key} failed\n\n{r['traceback']}".encode()))
        raise SweepError(f"sweep: task {kind} {key} failed: {r['error']} (traceback in {err}; "
                         "finished tasks are kept, re-run to resume)")

    import numpy as np
    minima = {}
    for n in names:
        m, s = n.rsplit("-", 1)
        tr = results["train"][n]
        minima[n] = {"method": m, "seed": int(s), "file": f"minima/{n}.npz", "history": tr["history"],
                     "diagnostics": tr.get("diagnostics", {}), **results["minimum"][n]}
    k = len(names)
    raw, aligned = np.zeros((k, k)), np.zeros((k, k))
    pairs, search_timings = [], {}
    for k, r in results["path"].items():
        if "timing" in r:
            r = results["path"][k] = dict(r)
            search_timings[k] = r.pop("timing")
    for a, b in pair_list:
        r = results["pair"][f"{a}~{b}"]
        i, j = names.index(a), names.index(b)
        raw[i, j] = raw[j, i] = r["distance_raw"]
        aligned[i, j] = aligned[j, i] = r["distance_aligned"]
        pairs.append({"a": a, "b": b, **r,
                      "barriers": {p["name"]: results["path"][f"{a}~{b}~{p['name']}"] for p in an["paths"]}})
    total_s = time.perf_counter() - t_start
    report = {
        "command": "sweep", "config": cfg, "kind": cfg["kind"], "seed": seed, "executor": executor,
        "workers": workers, "out": str(out), "names": names, "minima": minima, "pairs": pairs,
        "distance": {"kind": "hamming" if cfg["kind"] == "binary" else "per-parameter euclidean "
                     "(raw) / normalized_aligned (aligned)", "raw": raw.tolist(), "aligned": aligned.tolist()},
        "resumed": sorted(resumed),
        "timings": {"this_run_seconds": total_s, "task_seconds_sum": sum(seconds.values()),
                    "train_seconds": {n: results["train"][n]["train_seconds"] for n in names},
                    "tasks": seconds, "search": search_timings},
    }
    from .cli import _jsonable
    report = _jsonable(report)
    _write_json(out / "sweep.json", report)
    log(f"finished: wrote {out / 'sweep.json'} ({len(resumed)} tasks resumed, {total_s:.1f} s this run)")
    if not quiet:
        _summary(report)
    return report


RESULT_KEYS = ("config", "kind", "seed", "names", "minima", "pairs", "distance")


def results_of(report: dict) -> dict:
    """The executor-independent part of a sweep report (for comparing two runs)."""
    return {k: report[k] for k in RESULT_KEYS}


def _summary(report):
    lines = [f"sweep: {len(report['names'])} minima, {len(report['pairs'])} pairs, "
             f"{report['executor']} executor, {report['timings']['this_run_seconds']:.1f} s this run"
             + (f" ({len(report['resumed'])} tasks resumed)" if report["resumed"] else "")]
    for n, m in report["minima"].items():
        lines.append(f"  {n:12s} train error {100 * m['train_error']:6.2f}%"
                     + (f"  test {100 * m['test_error']:6.2f}%" if "test_error" in m else ""))
        if m.get("diagnostics"):
            from .diagnostics import summary
            lines.append(f"  {'':12s} {summary(m['diagnostics'])}")
    for p in report["pairs"]:
        bars = "  ".join(f"{k} {100 * v['barrier']:.1f}%" for k, v in p["barriers"].items())
        lines.append(f"  {p['a']} ~ {p['b']}: distance {p['distance_raw']:.4f} raw / "
                     f"{p['distance_aligned']:.4f} aligned  barriers: {bars}")
    lines.append(f"wrote {Path(report['out']) / 'sweep.json'}")
    import sys
    print("\n".join(lines), file=sys.stderr, flush=True)  # stdout stays free for --json
