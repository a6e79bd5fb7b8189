"""``bnn-toroid demo``: the package end to end on scikit-learn's digits (no download).

Trains binary MLPs with SGD, RSGD and ADV, freezes, canonicalises and aligns them, then
reports flatness (local energy), Hamming distances raw and aligned, and error barriers of
random flip orders (raw and aligned) against searched paths. Writes ``report.json`` and
``demo.png`` into the output folder. About two minutes on two cores.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

METHODS = ("sgd", "rsgd", "adv")


def _log(quiet, *msg):
    if not quiet:
        print(*msg, flush=True)


def run(out="bnn_toroid_demo", seed: int = 0, quiet: bool = False, quick: bool = False) -> dict:
    import torch

    from . import align, bench, canonicalize, datasets, distance, fingerprint, local_energy, paths, plots, train
    from ._files import atomic_write
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
            report["networks"][name] = {
                "train_error": net.error(data.x, data.y), "test_error": net.error(test.x, test.y),
                "fingerprint": fingerprint(net), "train_seconds": hist.seconds}
            e = report["networks"][name]
            _log(quiet, f"  {name:7s} train {100 * e['train_error']:5.2f}%  test {100 * e['test_error']:5.2f}%"
                        f"  class {e['fingerprint'][:10]}  ({hist.seconds:.1f} s)")

    torch.set_num_threads(threads)
    # canonical forms: a symmetric copy has the same one, and the function is unchanged
    first = next(iter(nets.values()))
    canon = canonicalize(first)
    report["canonical_function_preserved"] = bool(np.array_equal(canon.predict(data.x), first.predict(data.x)))

    eps = [0.0, 0.005, 0.01, 0.02, 0.05, 0.1]
    _log(quiet, "local energy (train error rise when a fraction ε of the weights is flipped):")
    le = {}
    for name, net in nets.items():
        r = local_energy(net, data, eps=eps, samples=10, seed=seed)
        le[name] = {"x": r.eps, "mean": r.mean, "std": r.std}
        report["networks"][name]["local_energy"] = le[name]
        _log(quiet, f"  {name:7s} " + "  ".join(f"ε={e:g}: {100 * m:5.2f}%" for e, m in zip(eps, r.mean)))

    names = list(nets)
    k = len(names)
    raw, aligned = np.zeros((k, k)), np.zeros((k, k))
    for i in range(k):
        for j in range(i + 1, k):
            raw[i, j] = raw[j, i] = distance(nets[names[i]], nets[names[j]])
            aligned[i, j] = aligned[j, i] = distance(nets[names[i]], align(nets[names[j]], nets[names[i]]))
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
        r_raw = paths.random_flip(nets[a], nets[b], points=21, seed=seed, align=False)
        r_al = paths.random_flip(nets[a], nets[b], points=21, seed=seed, align=True)
        t0 = time.perf_counter()
        srch = paths.search(nets[a], nets[b], data, method="greedy", candidates=16, seed=seed, quiet=True)
        ts = time.perf_counter() - t0
        e_raw, e_al, e_s = r_raw.errors(data), r_al.errors(data), srch.errors(data)
        entry = {"random_raw": float(e_raw.max()), "random_aligned": float(e_al.max()),
                 "searched": float(e_s.max()), "search_seconds": ts,
                 "hamming_aligned": float(aligned[names.index(a), names.index(b)])}
        report["barriers"][f"{a}~{b}"] = entry
        _log(quiet, f"  {a:7s} ~ {b:7s} random raw {100 * entry['random_raw']:5.1f}%  aligned "
                    f"{100 * entry['random_aligned']:5.1f}%  searched {100 * entry['searched']:5.1f}%"
                    f"  ({ts:.1f} s search)")
        if curves is None:
            curves = {"random, raw": {"fractions": r_raw.fractions, "errors": e_raw},
                      "random, aligned": {"fractions": r_al.fractions, "errors": e_al},
                      "greedy search, aligned": {"fractions": srch.fractions, "errors": e_s}}
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
    from .cli import _jsonable
    text = json.dumps(_jsonable(report), indent=2, sort_keys=True)
    atomic_write(out / "report.json", lambda f: f.write(text.encode()))
    _log(quiet, f"wrote {out / 'report.json'} and {fig} in {report['seconds']:.0f} s")
    return report
