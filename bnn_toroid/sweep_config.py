"""The sweep's config: :func:`load_config` reads and checks it without loading data,
:func:`check_config` checks what needs the data (it loads, the model accepts it).

The format is documented in ``docs/cli.md`` ("Config"). The path kinds of each network
kind, their options and the default local-energy grid come from
:mod:`bnn_toroid.analysis`, which runs the analyses. :mod:`bnn_toroid.sweep` re-exports
:class:`SweepError`, :func:`load_config` and :func:`check_config`.
"""
from __future__ import annotations

import inspect
import json
import math
import os
from pathlib import Path

from . import analysis

BINARY_PATHS = analysis.path_kinds("binary")
REAL_PATHS = analysis.path_kinds("real")

_TOP_KEYS = {"data", "model", "methods", "seeds", "epochs", "lr", "batch_size", "method_options",
             "no_norm", "analyses"}
_REQUIRED = ("data", "model", "methods", "seeds", "epochs")
_DATA_KEYS = {"name", "n", "test", "path"}
_ANALYSIS_KEYS = {"local_energy", "paths", "points", "align", "search", "bend"}
_LE_KEYS = {"eps", "sigma", "samples"}


class SweepError(ValueError):
    """A bad sweep config or executor, or a task that failed (one-line message)."""


def _err(msg):
    raise SweepError(f"sweep config: {msg}")


def is_int(v):
    """Whether ``v`` is an int and not a bool (a JSON integer)."""
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
        ok, want = is_int(val), "an integer"
    elif isinstance(default, float):
        ok = isinstance(val, (int, float)) and not isinstance(val, bool) and math.isfinite(val)
        want = "a finite number"
    elif isinstance(default, str):
        ok, want = isinstance(val, str), "a string"
    else:
        return
    if not ok:
        _err(f"{what} must be {want}, got {val!r}")


_PATH_RESERVED = analysis.RESERVED_OPTIONS
_PATH_KEYS = {"kind", "name", "search_n"}


def _path_kind(kind, binary) -> "analysis.PathKind":
    return analysis.path_kind("binary" if binary else "real", kind)


def _check_path(pk, opts, where):
    try:
        pk.check(opts)
    except ValueError as e:
        _err(f"{where}: {str(e).removeprefix(pk.function.__name__ + ': ')}")


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
        if search_n is not None and (kind != "search" or not (is_int(search_n) and search_n >= 1)):
            _err(f"{where}.search_n: a positive sample count, for 'search' paths only, got {search_n!r}")
        opts = {k: val for k, val in p.items() if k not in _PATH_KEYS}
        pk = _path_kind(kind, binary)
        opts = _options(opts, where, pk.function, _PATH_RESERVED)
        merged = {"align": align, **kind_defaults.get(kind, {}), **opts}
        _check_path(pk, merged, where)
        out.append({"name": name, "kind": kind, "options": merged, "search_n": search_n})
    names = [p["name"] for p in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        _err(f"analyses.paths has duplicate names {dup}; give each entry its own 'name'")
    return out


def load_config(config) -> dict:
    """Read (a path to a JSON file) or take (a dict) a sweep config, check it and return it
    normalised: every optional key filled with its default. Raises :class:`SweepError`
    naming the first problem; loads no data (see :func:`check_config`)."""
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
    if data["n"] is not None and not (is_int(data["n"]) and data["n"] >= 1):
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
    if is_int(seeds):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds or not all(is_int(s) and s >= 0 for s in seeds):
        _err(f"'seeds' must be a non-empty list of non-negative integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        _err(f"'seeds' has duplicates: {seeds}")

    epochs = config["epochs"]
    if not (is_int(epochs) and epochs >= 1):
        _err(f"'epochs' must be a positive integer, got {epochs!r}")
    lr = config.get("lr")
    if lr is not None and not (isinstance(lr, (int, float)) and not isinstance(lr, bool)
                               and math.isfinite(lr) and lr > 0):
        _err(f"'lr' must be a finite number > 0 or null, got {lr!r}")
    batch_size = config.get("batch_size")
    if batch_size is not None and not (is_int(batch_size) and batch_size >= 1):
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
        if not (is_int(samples) and samples >= 1):
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
            grid = list(analysis.default_grid("binary" if binary else "real"))
        le = {grid_key: grid, "samples": samples}
    search_kind, bend_kind = _path_kind("search", True), _path_kind("bend", binary)
    search_opts = _options(an.get("search"), "analyses.search", search_kind.function, _PATH_RESERVED)
    _check_path(search_kind, search_opts, "analyses.search")
    bend_opts = _options(an.get("bend"), "analyses.bend", bend_kind.function, _PATH_RESERVED)
    points = an.get("points", 21)
    if not (is_int(points) and points >= 2):
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
    data = load_data(d, "train", seed, what="data")
    if d["test"]:
        load_data(d, "test", seed, what="data (test split)")
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


def load_data(d: dict, split: str, seed: int, what="data"):
    """The data set a sweep's normalised ``data`` entry names, for ``split`` ("train":
    its first ``n`` samples; "test": all), drawn with ``seed``; a load failure becomes a
    :class:`SweepError` naming ``what``."""
    from . import datasets
    try:
        return datasets.load(d["name"], split=split, n=d["n"] if split == "train" else None, seed=seed,
                             path=d.get("path"))
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise SweepError(f"sweep config: {what} {d['name']!r}: {str(e).splitlines()[0]}") from None


