"""``bnn-toroid sweep``: train many minima (methods × seeds) and analyse every pair.

A sweep is a set of independent *tasks* run on a pool of worker processes:

1. ``train``: one per ``(method, seed)``; trains the model and saves the minimum under
   ``OUT/minima/METHOD-SEED.npz`` (a frozen :class:`~bnn_toroid.network.BinaryNetwork`
   for a binary spec, a torch model file for a real-valued one).
2. ``minimum``: one per minimum, once it is trained: train (and test) error, local energy
   (docs/methods.md, "Local energy"; flips ``eps`` for binary, noise ``sigma`` for real-valued), and for binary
   networks the fingerprint of the symmetry class and the weight count
   (:func:`bnn_toroid.analysis.analyze_minimum`, as ``bnn-toroid analyze``).
3. ``pair``: one per unordered pair, once both ends are trained: distance raw and after
   symmetry removal (:func:`bnn_toroid.analysis.pair_distances`, as ``bnn-toroid analyze``).
4. ``path``: one per pair and requested path kind: the error curve and barrier of that
   path (docs/methods.md, "Paths"; :func:`bnn_toroid.analysis.analyze_path`, as
   ``bnn-toroid connect``).

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

The config format is documented in ``docs/cli.md`` and checked by :func:`load_config`
(in :mod:`bnn_toroid.sweep_config`).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
from collections import deque
from pathlib import Path

from . import analysis
from ._files import jsonable, write_report
from .sweep_config import (BINARY_PATHS, REAL_PATHS, SweepError, is_int, load_data,  # noqa: F401
                           check_config, load_config)

EXECUTORS = ("local", "ray", "inline")
RAY_HINT = "pip install 'bnn_toroid[ray]'"

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
    data = load_data(spec["data"], "train", spec["data_seed"])
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


def _task_minimum(spec: dict) -> dict:
    """:func:`~bnn_toroid.analysis.analyze_minimum` of one minimum (``local_energy`` from
    the config: a grid and a sample count, or false)."""
    _seed_globals(task_seed("minimum", spec["name"], spec["sweep_seed"]))
    le = spec["local_energy"] or {}
    test = load_data(spec["data"], "test", spec["data_seed"]) if spec["data"]["test"] else None
    r = analysis.analyze_minimum(_load(spec["file"]), load_data(spec["data"], "train", spec["data_seed"]),
                                 test=test, grid=le.get(analysis.GRID_NAMES[spec["kind"]]),
                                 samples=le.get("samples", 10), seed=spec["sweep_seed"],
                                 local_energy=bool(le))
    return r.to_dict()


def _task_pair(spec: dict) -> dict:
    """:func:`~bnn_toroid.analysis.pair_distances` of one pair."""
    _seed_globals(task_seed("pair", spec["a"], spec["b"], spec["sweep_seed"]))
    raw, aligned = analysis.pair_distances(_load(spec["file_a"]), _load(spec["file_b"]))
    return {"distance_raw": raw, "distance_aligned": aligned}


def _task_path(spec: dict) -> dict:
    """One path between one pair (:func:`~bnn_toroid.analysis.analyze_path`): its error
    curve and barrier on the training data (one task each, so a path added to a config
    runs alone on resume). A search with ``search_n`` runs on the first ``search_n``
    training samples and also reports its errors on those (``errors_search_data``)."""
    p = spec["path"]
    _seed_globals(task_seed("path", spec["a"], spec["b"], p["name"], spec["sweep_seed"]))
    r = analysis.analyze_path(_load(spec["file_a"]), _load(spec["file_b"]),
                              load_data(spec["data"], "train", spec["data_seed"]), p["kind"],
                              points=spec["points"], seed=spec["sweep_seed"], quiet=True,
                              search_n=p["search_n"], **p["options"])
    # timings vary from run to run: the report keeps them apart from the results
    return {**r.to_dict(), **({"timing": r.timing} if r.timing else {})}


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
        return {"ok": True, "result": jsonable(res), "seconds": time.perf_counter() - t0}
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
    write_report(path, want)


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
    if not is_int(workers) or workers < 1:
        raise SweepError(f"sweep: workers must be a positive integer, got {workers!r}")
    if not is_int(seed) or seed < 0:
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
                write_report(_state_file(out, kind, key), {"kind": kind, "key": key, "hash": hashes[(kind, key)],
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
        "distance": {"kind": analysis.DISTANCE_KINDS[cfg["kind"]], "raw": raw.tolist(),
                     "aligned": aligned.tolist()},
        "resumed": sorted(resumed),
        "timings": {"this_run_seconds": total_s, "task_seconds_sum": sum(seconds.values()),
                    "train_seconds": {n: results["train"][n]["train_seconds"] for n in names},
                    "tasks": seconds, "search": search_timings},
    }
    report = jsonable(report)
    write_report(out / "sweep.json", report)
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
