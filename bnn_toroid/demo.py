"""``bnn-toroid demo``: the package end to end on scikit-learn's digits (no download).

Trains binary MLPs with SGD, RSGD and ADV, freezes, canonicalises and aligns them, then
reports flatness (local energy), Hamming distances raw and aligned, and error barriers of
random flip orders (raw and aligned) against searched paths. Writes ``report.json`` and
``demo.png`` into the output folder. About two minutes on two cores.

Every number comes from :mod:`bnn_toroid.analysis` (:func:`minimum` and :func:`barriers`
below), as for ``bnn-toroid analyze``, ``connect`` and the sweep.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .diagnostics import summary

METHODS = ("sgd", "rsgd", "adv")
#: The demo's three paths per pair: random flip orders raw and aligned, a greedy search.
PATHS = ({"kind": "random", "name": "random_raw", "align": False},
         {"kind": "random", "name": "random_aligned"},
         {"kind": "search", "name": "searched", "method": "greedy", "candidates": 16})


def _log(quiet, *msg):
    if not quiet:
        print(*msg, flush=True)


def minimum(net, data, test, seed: int) -> dict:
    """One minimum's report entry: ``train_error``, ``test_error``, ``fingerprint``,
    ``n_weights`` and ``local_energy`` on the default grid, 10 draws
    (:func:`bnn_toroid.analysis.analyze_minimum`)."""
    from .analysis import analyze_minimum
    return analyze_minimum(net, data, test=test, samples=10, seed=seed).to_dict()


def barriers(a, b, data, seed: int):
    """The :class:`~bnn_toroid.analysis.PairResult` of :data:`PATHS` between ``a`` and
    ``b``, 21 points each (:func:`bnn_toroid.analysis.analyze_pair`, no distances)."""
    from .analysis import analyze_pair
    return analyze_pair(a, b, data, paths=PATHS, points=21, seed=seed, distances=False)


def run(out="bnn_toroid_demo", seed: int = 0, quiet: bool = False, quick: bool = False) -> dict:
    import torch

    from . import bench, canonicalize, datasets, plots, train
    from ._files import write_report
    from .analysis import pair_distances
    from .network import BinaryNetwork
    from .nn import BinaryMLP

    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data, test = datasets.load("digits", "train"), datasets.load("digits", "test")
    norm = train.input_norm(data)
    width = 64
    seeds = [seed] if quick else [seed, seed + 1]
    epochs = 8 if quick else 20
    sizes = [64, width, width, 10]
    _log(quiet, f"bnn-toroid demo: binary MLP {'-'.join(map(str, sizes))} on digits "
                f"({len(data)} train / {len(test)} test), methods {', '.join(METHODS)}, seeds {seeds}")

    nets, report = {}, {"model": sizes, "data": "digits", "epochs": epochs, "networks": {}}
    # Models this small train fastest on one thread (a parallel launch costs more than the
    # work, and far more on a shared machine); the kernels below keep their own settings.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for method in METHODS:
        for s in seeds:
            name = f"{method}-{s}"
            torch.manual_seed(s)
            model = BinaryMLP(sizes, input_norm=norm)
            kw = {"adv_epochs": max(2, epochs // 2)} if method == "adv" else {}
            hist = train.fit(model, data, method=method, epochs=epochs, seed=s, quiet=True, **kw)
            net = BinaryNetwork.from_torch(model.eval())
            nets[name] = net
            net.save(out / f"{name}.npz")
            report["networks"][name] = e = {**minimum(net, data, test, seed), "train_seconds": hist.seconds,
                                            "diagnostics": hist.diagnostics}
            _log(quiet, f"  {name:7s} train {100 * e['train_error']:5.2f}%  test {100 * e['test_error']:5.2f}%"
                        f"  class {e['fingerprint'][:10]}  ({hist.seconds:.1f} s)")
            # the minimum's health, read before its landscape (docs/training.md)
            _log(quiet, f"  {'':7s} {summary(hist.diagnostics)}")

    torch.set_num_threads(threads)
    # canonical forms: a symmetric copy has the same one, and the function is unchanged
    first = next(iter(nets.values()))
    canon = canonicalize(first)
    report["canonical_function_preserved"] = bool(np.array_equal(canon.predict(data.x), first.predict(data.x)))

    _log(quiet, "local energy (train error rise when a fraction ε of the weights is flipped):")
    le = {name: report["networks"][name]["local_energy"] for name in nets}
    for name, r in le.items():
        _log(quiet, f"  {name:7s} " + "  ".join(f"ε={e:g}: {100 * m:5.2f}%" for e, m in zip(r["x"], r["mean"])))

    names = list(nets)
    k = len(names)
    raw, aligned = np.zeros((k, k)), np.zeros((k, k))
    for i in range(k):
        for j in range(i + 1, k):
            raw[i, j], aligned[i, j] = pair_distances(nets[names[i]], nets[names[j]])
            raw[j, i], aligned[j, i] = raw[i, j], aligned[i, j]
    report["names"] = names
    report["hamming"] = {"raw": raw, "aligned": aligned}
    _log(quiet, f"Hamming distance, mean over pairs: raw {raw[np.triu_indices(k, 1)].mean():.3f}, "
                f"aligned {aligned[np.triu_indices(k, 1)].mean():.3f}")

    # barriers: random flip orders (raw and aligned) against a greedy connectivity search
    # one pair of each type: SGD-SGD, RSGD-RSGD, ADV-ADV (two seeds), and the cross-method
    # pairs of the first seed
    pairs, seen = [], set()
    for i in range(k):
        for j in range(i + 1, k):
            a, b = names[i], names[j]
            ptype = tuple(sorted((a.split("-")[0], b.split("-")[0])))
            same_seed = a.split("-")[1] == b.split("-")[1]
            if ptype not in seen and (ptype[0] == ptype[1] or same_seed):
                seen.add(ptype)
                pairs.append((a, b))
    report["barriers"] = {}
    curves = None
    _log(quiet, "barriers (max train error along the path; 21 points):")
    for a, b in pairs:
        ps = barriers(nets[a], nets[b], data, seed).paths
        ts = ps["searched"].timing["search_seconds"]
        entry = {**{n: p.barrier for n, p in ps.items()}, "search_seconds": ts,
                 "hamming_aligned": float(aligned[names.index(a), names.index(b)])}
        report["barriers"][f"{a}~{b}"] = entry
        _log(quiet, f"  {a:7s} ~ {b:7s} random raw {100 * entry['random_raw']:5.1f}%  aligned "
                    f"{100 * entry['random_aligned']:5.1f}%  searched {100 * entry['searched']:5.1f}%"
                    f"  ({ts:.1f} s search)")
        if curves is None:
            curves = {label: {"fractions": ps[n].fractions, "errors": ps[n].errors} for label, n in
                      (("random, raw", "random_raw"), ("random, aligned", "random_aligned"),
                       ("greedy search, aligned", "searched"))}
            curve_pair = f"{a} ~ {b}"

    row = bench.gemm_case(repeats=5)
    report["kernel"] = row.as_dict()
    _log(quiet, f"kernel: binary_gemm {row.shape} {row.ours_ms:.1f} ms vs torch float32 {row.ref_ms:.1f} ms "
                f"= {row.ratio:.1f}x, {row.gmacs:.0f} G binary MAC/s ({row.threads} threads)")

    fig = out / "demo.png"
    plots.save_figure(fig, [
        lambda ax: plots.local_energy(ax, le),
        lambda ax: plots.paths(ax, curves, f"Train error along paths, {curve_pair}"),
        lambda ax: plots.distance_matrix(ax, aligned, names, "Hamming distance after alignment"),
    ], suptitle=f"bnn-toroid demo: binary MLP {'-'.join(map(str, sizes))} on digits")
    report["figure"] = str(fig)
    report["seconds"] = time.perf_counter() - t_start
    write_report(out / "report.json", report)
    _log(quiet, f"wrote {out / 'report.json'} and {fig} in {report['seconds']:.0f} s")
    return report
