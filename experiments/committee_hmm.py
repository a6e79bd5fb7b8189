"""Binary committee machines on hidden-manifold (HMM) data: barriers vs input size N
(docs/binary_landscape.md, part 2).

Pittorino et al., "Deep Networks on Toroids", ICML 2022 (docs/methods.md, "Committee machine"): binary committee
machines (H = 101 hidden ±1 perceptrons on the binarised input, output weights fixed to
+1) trained on HMM data (D = 501, P = 1503) have barriers between aligned minima that
shrink towards 0 as the network grows. For each N in ``--ns``:

1. train ``--seeds`` minima with BinaryNet SGD (``bnn_toroid.train.fit``, method "sgd",
   ``--epochs`` epochs, default learning rate), freeze them;
2. for every pair of seeds: Hamming distance raw and aligned, random-flip path barriers
   raw and aligned (``--orders`` orders, 21 points), the error after every move of one
   aligned random order, the greedy connectivity search; beam search and simulated
   annealing for the N in ``--beam-ns`` / ``--anneal-ns`` (first pair), greedy with
   detours for ``--detour-ns`` (first pair).

**Alignment is by permutations only** [ours]: with the output weights fixed to +1, the
sign reversal of a hidden unit is *not* a symmetry of the model class (it would turn its
output weight into -1), so ``bt.align`` (which also flips signs) is not used for the
paths; its Hamming distance is reported as ``hamming_align_lib`` for reference. Hidden
units are matched by maximising the summed *signed* overlap ``Σ_k w^a_k · w^b_π(k)``
(``scipy.optimize.linear_sum_assignment``), then permuted with
``bnn_toroid.symmetry.binary.permute_units``.

Barriers are train errors on the P training patterns, the quantity the paper plots.

    python experiments/committee_hmm.py --out /tmp/bnn_results
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bnn_toroid as bt  # noqa: E402
from bnn_toroid import datasets as D  # noqa: E402
from bnn_toroid import nn as bnn  # noqa: E402
from bnn_toroid import train as T  # noqa: E402
from bnn_toroid.paths.discrete_search import make_evaluator  # noqa: E402
from bnn_toroid.symmetry.binary import permute_units  # noqa: E402


def set_threads(n):
    torch.set_num_threads(n)
    try:
        import numba
        numba.set_num_threads(n)
    except Exception:  # pragma: no cover
        pass


def align_permutation(a, b):
    """``b`` with its hidden units permuted (no sign flips) to maximise the summed signed
    overlap of incoming weights with ``a`` (one hidden layer; output weights fixed)."""
    wa = a.layers[0].weights.astype(np.int64)
    wb = b.layers[0].weights.astype(np.int64)
    _, col = linear_sum_assignment(wa @ wb.T, maximize=True)
    out = permute_units(b, 0, perm=col)
    return out


def search_summary(sp, data):
    e21 = sp.errors(data)
    return dict(trace_barrier=float(sp.trace.max()), trace_height=float(sp.trace_barrier.height),
                points21_max=float(e21.max()), n_moves=int(sp.n_moves),
                n_detours=int(sp.n_detours), evaluations=int(sp.evaluations),
                seconds=float(sp.seconds), evals_per_second=float(sp.evals_per_second))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/bnn_toroid_results")
    ap.add_argument("--ns", type=int, nargs="+", default=[51, 101, 301, 1001])
    ap.add_argument("--hidden", type=int, default=101)
    ap.add_argument("--P", type=int, default=1503)
    ap.add_argument("--D", type=int, default=501)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--orders", type=int, default=5)
    ap.add_argument("--candidates", type=int, default=32)
    ap.add_argument("--beam-ns", type=int, nargs="*", default=[51, 101])
    ap.add_argument("--beam-width", type=int, default=4)
    ap.add_argument("--beam-candidates", type=int, default=16)
    ap.add_argument("--anneal-ns", type=int, nargs="*", default=[51],
                    help="N values with simulated annealing (first pair; ~4 min at N = 51)")
    ap.add_argument("--anneal-steps", type=int, default=20000)
    ap.add_argument("--detour-ns", type=int, nargs="*", default=[101])
    ap.add_argument("--detours", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--figures", default=str(Path(__file__).resolve().parents[1] / "docs" / "figures"))
    ap.add_argument("--force", action="store_true", help="recompute every N")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    file = out_dir / "committee_hmm.json"
    res = json.loads(file.read_text()) if file.exists() and not args.force else {}
    res.setdefault("by_n", {})
    res["setup"] = dict(hidden=args.hidden, P=args.P, D=args.D, seeds=args.seeds,
                        epochs=args.epochs, orders=args.orders, candidates=args.candidates,
                        beam_width=args.beam_width, beam_candidates=args.beam_candidates,
                        anneal_steps=args.anneal_steps, detours=args.detours,
                        data="hmm train P patterns seed=0 feature_seed=0; test 3000 patterns",
                        torch=torch.__version__, python=platform.python_version(),
                        threads=args.threads)
    t_all = time.perf_counter()
    for n_in in args.ns:
        key = str(n_in)
        if key in res["by_n"]:
            print(f"N={n_in}: cached", flush=True)
            continue
        t0 = time.perf_counter()
        tr = D.load("hmm", "train", n=args.P, seed=0, D=args.D, N=n_in)
        te = D.load("hmm", "test", n=3000, seed=0, D=args.D, N=n_in)
        nets, minima = {}, {}
        for s in args.seeds:
            torch.manual_seed(s)
            model = bnn.CommitteeMachine(n_in, hidden=args.hidden)
            h = T.fit(model, tr, "sgd", epochs=args.epochs, seed=s, quiet=True)
            net = bt.BinaryNetwork.from_torch(model.eval())
            nets[s] = net
            minima[s] = dict(train_error=float(net.error(tr.x, tr.y)),
                             test_error=float(net.error(te.x, te.y)), train_seconds=h.seconds)
            print(f"N={n_in} seed {s}: train {minima[s]['train_error']:.4f} test "
                  f"{minima[s]['test_error']:.4f} ({h.seconds:.1f} s)", flush=True)
        pairs = {}
        for i, (sa, sb) in enumerate(itertools.combinations(args.seeds, 2)):
            a, b = nets[sa], nets[sb]
            bal = align_permutation(a, b)
            assert np.array_equal(bal.predict(tr.x), b.predict(tr.x)), "alignment changed the function"
            r = dict(hamming_raw=float(bt.distance(a, b)),
                     hamming_aligned=float(bt.distance(a, bal)),
                     hamming_align_lib=float(bt.distance(a, bt.align(b, reference=a))),
                     end_errors=[minima[sa]["train_error"], minima[sb]["train_error"]])
            for lab, bb in (("random_raw", b), ("random_aligned", bal)):
                p = bt.paths.random_flip(a, bb, points=21, seed=0, align=False, orders=args.orders)
                per = p.errors_per_order(tr)
                e = per.mean(axis=0)
                r[lab] = dict(max=float(e.max()), height=float(e.max() - 0.5 * (e[0] + e[-1])),
                              curve=e.tolist(), per_order_max=per.max(axis=1).tolist(),
                              n_moves=int(p.n_moves))
            p = bt.paths.random_flip(a, bal, points=21, seed=0, align=False)
            ev = make_evaluator(a, tr)
            trace = np.concatenate([[ev.wrong], ev.commit(p.order)]) / ev.n
            r["random_aligned_every_move"] = float(trace.max())
            sp = bt.paths.search(a, bal, tr, method="greedy", candidates=args.candidates,
                                 align=False, seed=0, quiet=True)
            r["greedy"] = search_summary(sp, tr)
            if i == 0 and n_in in args.detour_ns:
                sp = bt.paths.search(a, bal, tr, method="greedy", candidates=args.candidates,
                                     detours=args.detours, align=False, seed=0, quiet=True)
                r["greedy_detours"] = search_summary(sp, tr)
            if i == 0 and n_in in args.beam_ns:
                sp = bt.paths.search(a, bal, tr, method="beam", candidates=args.beam_candidates,
                                     beam_width=args.beam_width, align=False, seed=0, quiet=True)
                r["beam"] = search_summary(sp, tr)
            if i == 0 and n_in in args.anneal_ns:
                sp = bt.paths.search(a, bal, tr, method="anneal", candidates=args.candidates,
                                     anneal_steps=args.anneal_steps, align=False, seed=0, quiet=True)
                r["anneal"] = search_summary(sp, tr)
            pairs[f"{sa}-{sb}"] = r
            print(f"N={n_in} pair {sa}-{sb}: hamming raw {r['hamming_raw']:.4f} aligned "
                  f"{r['hamming_aligned']:.4f} (lib align {r['hamming_align_lib']:.4f}); random raw "
                  f"{r['random_raw']['max']:.4f} aligned {r['random_aligned']['max']:.4f} "
                  f"(every move {r['random_aligned_every_move']:.4f}); greedy "
                  f"{r['greedy']['trace_barrier']:.4f}" +
                  "".join(f"; {k} {r[k]['trace_barrier']:.4f} ({r[k]['seconds']:.0f} s)"
                          for k in ("greedy_detours", "beam", "anneal") if k in r), flush=True)
        res["by_n"][key] = dict(N=n_in, n_weights=int(nets[args.seeds[0]].n_weights),
                                alpha=args.P / (n_in * args.hidden), minima=minima, pairs=pairs,
                                seconds=time.perf_counter() - t0)
        tmp = file.with_suffix(".tmp")
        tmp.write_text(json.dumps(res, indent=1))
        os.replace(tmp, file)
        print(f"N={n_in}: {res['by_n'][key]['seconds']:.0f} s", flush=True)
    figure(res, Path(args.figures))
    print(f"total wall time this call {time.perf_counter() - t_all:.0f} s "
          f"({args.threads} thread(s), {platform.processor() or platform.machine()})")


def figure(res, figdir):
    from bnn_toroid import plots
    figdir.mkdir(parents=True, exist_ok=True)
    rows = sorted(res["by_n"].values(), key=lambda r: r["N"])
    if not rows:
        return
    ns = np.array([r["N"] for r in rows])

    def stat(fn):
        vals = [[fn(p) for p in r["pairs"].values()] for r in rows]
        return (np.array([np.mean(v) for v in vals]), np.array([np.min(v) for v in vals]),
                np.array([np.max(v) for v in vals]))

    def draw(ax):
        for lab, fn, c, mk in (
                ("random order, raw", lambda p: p["random_raw"]["max"], "C3", "o"),
                ("random order, aligned (permutations)", lambda p: p["random_aligned"]["max"], "C1", "s"),
                ("greedy search, aligned (every move)", lambda p: p["greedy"]["trace_barrier"], "C2", "^"),
                ("minima's train error (mean of ends)", lambda p: float(np.mean(p["end_errors"])), "k", "x")):
            m, lo, hi = stat(fn)
            ax.errorbar(ns, 100 * m, yerr=[100 * (m - lo), 100 * (hi - m)], fmt=mk + "-", color=c,
                        capsize=3, ms=5, lw=1.3, label=lab)
        for k, c, mk, lab in (("beam", "C0", "D", "beam search (1st pair)"),
                              ("anneal", "C4", "v", "annealing from greedy (1st pair)")):
            pts = [(r["N"], next(iter(r["pairs"].values()))[k]["trace_barrier"]) for r in rows
                   if k in next(iter(r["pairs"].values()))]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, 100 * np.array(y), mk, color=c, ms=7, mfc="none", mew=1.5, label=lab)
        ax.set_xscale("log")
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.set_xlabel("input size N (H = 101 hidden units)")
        ax.set_ylabel("barrier: max train error on path (%)")
        ax.set_title(f"Binary committee machine on HMM data (P = {res['setup']['P']}, "
                     f"D = {res['setup']['D']}):\nbarrier vs N (mean, min-max over "
                     f"{len(rows[0]['pairs'])} pairs)")
        ax.grid(alpha=0.3)
        ax.set_ylim(0, None)
        ax.legend(fontsize=8)
    plots.save_figure(figdir / "committee_barrier_vs_n.png", [draw], ncols=1, size=(6.6, 4.8))


if __name__ == "__main__":
    main()
