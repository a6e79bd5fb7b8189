"""Binary landscape of the Fashion-MNIST binary MLP minima (docs/binary_landscape.md).

Pittorino et al., "Deep Networks on Toroids", ICML 2022 (docs/methods.md, "Distances", "Local energy" and "Paths"; the paper's figures in docs/results.md): for the six
BinaryMLP 784-501-501-10 minima of docs/training.md (SGD, RSGD, ADV x seeds 0, 1; state
dicts in ``--minima``) and six pair types, compute

- train/test error of every frozen network,
- Hamming distance raw and aligned (``overlap``: the paper's greedy matching; ``weights``:
  Git Re-Basin style weight matching), total and per layer,
- local energy dE(eps) (10 random flip draws per eps),
- random-flip path barriers, raw and aligned (both matchings), averaged over orders,
- the single-bend path (midpoint trained with BinaryNet SGD),
- the greedy connectivity search (every pair) and greedy with detours (one pair),
- for one pair, the error after *every* move of one random order (the exact random-order
  barrier, not only at 21 points),

and write ``fmnist_landscape.json`` plus the figures. Stages are cached in the JSON: a
rerun only computes what is missing (``--force STAGE`` to redo one).

    python experiments/binary_landscape.py --out /tmp/bnn_results          # everything
    python experiments/binary_landscape.py --out /tmp/r --stages nets distance le

Data: the 10 000-image Fashion-MNIST training subset the minima were trained on
(``load("fashion-mnist", n=10000, seed=0)``). Inside it, a fixed permutation
(``default_rng(0)``) gives the *path set* (first ``--n-path`` = 2000 images: every path
error), the *search set* (its first ``--n-search`` = 500 images: what the greedy search
optimises; 4 candidates per step by default), a disjoint *check set* (next ``--n-path``
images: searched paths are re-evaluated there) and the *local-energy set* (first
``--n-le`` = 5000 images). Greedy results are stored under ``greedy_n<n_search>_c<cand>``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bnn_toroid as bt  # noqa: E402
from bnn_toroid import datasets as D  # noqa: E402
from bnn_toroid import nn as bnn  # noqa: E402

METHODS = ("sgd", "rsgd", "adv")
# cross-method pairs use different seeds: same-seed minima share the initialisation and
# the minibatch order and sit in one basin (docs/continuous_landscape.md, aside)
PAIRS = [("sgd", 0, "sgd", 1), ("rsgd", 0, "rsgd", 1), ("adv", 0, "adv", 1),
         ("sgd", 0, "rsgd", 1), ("sgd", 0, "adv", 1), ("rsgd", 0, "adv", 1)]


def pair_name(p):
    return f"{p[0]}{p[1]}-{p[2]}{p[3]}"


def pair_type(p):
    return f"{p[0].upper()}–{p[2].upper()}"


def set_threads(n):
    torch.set_num_threads(n)
    try:
        import numba
        numba.set_num_threads(n)
    except Exception:  # pragma: no cover
        pass
    os.environ.setdefault("OMP_NUM_THREADS", str(n))


def load_net(minima: Path, method: str, seed: int):
    stem = f"fmnist-bmlp_{method}_seed{seed}"
    meta = json.loads((minima / f"{stem}.json").read_text())
    model = bnn.BinaryMLP(meta["sizes"], input_norm=meta["input_norm"])
    model.load_state_dict(torch.load(minima / f"{stem}.pt", weights_only=True))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return bt.BinaryNetwork.from_torch(model), meta


def barrier_dict(errors):
    e = np.asarray(errors, np.float64)
    return dict(max=float(e.max()), height=float(e.max() - 0.5 * (e[0] + e[-1])),
                argmax=int(e.argmax()), curve=e.tolist())


def downsample_max(trace, n=400):
    """(fractions, block maxima) of a long per-move trace, for plotting without losing
    the peaks."""
    t = np.asarray(trace, np.float64)
    edges = np.linspace(0, len(t), n + 1).astype(int)
    mx = [float(t[lo:hi].max()) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]
    fr = [float(0.5 * (lo + hi) / (len(t) - 1)) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]
    return fr, mx


class Runner:
    def __init__(self, args):
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.file = self.out / "fmnist_landscape.json"
        self.res = json.loads(self.file.read_text()) if self.file.exists() else {}
        self.res.setdefault("timing", {})
        minima = Path(args.minima)
        self.nets, self.meta = {}, {}
        for m in METHODS:
            for s in (0, 1):
                self.nets[(m, s)], self.meta[(m, s)] = load_net(minima, m, s)
        tr = D.load("fashion-mnist", "train", n=10000, seed=0)
        self.train10k = tr
        self.test = D.load("fashion-mnist", "test")
        perm = np.random.default_rng(0).permutation(len(tr))
        n = args.n_path
        ip, ic, il = np.sort(perm[:n]), np.sort(perm[n:2 * n]), np.sort(perm[:args.n_le])
        self.path_set = (tr.x[ip], tr.y[ip])
        # the search set: the first --n-search images of the path set (all by default)
        ns = args.n_search or n
        self.search_set = (self.path_set[0][:ns], self.path_set[1][:ns])
        self.search_key = f"greedy_n{ns}_c{args.candidates}"
        self.check_set = (tr.x[ic], tr.y[ic])
        self.le_set = (tr.x[il], tr.y[il])
        self._aligned = {}
        self.res["setup"] = dict(
            minima=str(minima), n_path=n, n_le=args.n_le, n_train=len(tr),
            data="fashion-mnist train subset n=10000 seed=0; path/check/le sets from "
                 "default_rng(0).permutation(10000)",
            orders=args.orders, bend_epochs=args.bend_epochs,
            eps=args.eps, le_samples=args.le_samples, torch=torch.__version__,
            python=platform.python_version(), machine=platform.machine(), threads=args.threads,
            pairs=[pair_name(p) for p in PAIRS])

    def save(self):
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.res, indent=1))
        os.replace(tmp, self.file)

    def aligned(self, p, method):
        key = (pair_name(p), method)
        if key not in self._aligned:
            a, b = self.nets[p[:2]], self.nets[p[2:]]
            self._aligned[key] = b if method == "raw" else bt.align(b, reference=a, method=method)
        return self._aligned[key]

    def stage(self, name, fn):
        key = {"greedy": self.search_key,
               "detour": "detour_" + self.search_key.split("_", 1)[1]}.get(name, name)
        want = min(self.args.greedy_pairs or len(PAIRS), len(PAIRS))
        done = key in self.res and (name != "greedy" or len(self.res[key]) >= want)
        if done and name not in self.args.force:
            print(f"[{key}] cached", flush=True)
            return
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        self.res["timing"][key] = self.res["timing"].get(key, 0.0) + dt if name == "greedy" else dt
        self.save()
        print(f"[{key}] done in {dt:.1f} s", flush=True)

    # ----------------------------------------------------------------------- stages
    def nets_stage(self):
        out = {}
        for (m, s), net in self.nets.items():
            out[f"{m}{s}"] = dict(
                train_error_10k=float(net.error(self.train10k.x, self.train10k.y)),
                train_error_path=float(net.error(*self.path_set)),
                test_error=float(net.error(self.test.x, self.test.y)),
                json_test_error=self.meta[(m, s)]["test_error"],
                n_weights=int(net.n_weights))
            print(f"  {m}{s}: {out[f'{m}{s}']}", flush=True)
        self.res["nets"] = out

    def distance_stage(self):
        out = {}
        for p in PAIRS:
            a = self.nets[p[:2]]
            r = {}
            for method in ("raw", "overlap", "weights"):
                d = bt.distance(a, self.aligned(p, method), per_layer=True)
                r[method] = {str(k): float(v) for k, v in d.items()}
            out[pair_name(p)] = r
            print(f"  {pair_name(p)}: " + ", ".join(f"{k} {v['total']:.4f}" for k, v in r.items()),
                  flush=True)
        # aside: same seed, different method (same initialisation and minibatch order)
        for m1, m2 in (("sgd", "rsgd"), ("sgd", "adv"), ("rsgd", "adv")):
            a, b = self.nets[(m1, 0)], self.nets[(m2, 0)]
            out[f"{m1}0-{m2}0 (same seed)"] = dict(
                raw=dict(total=float(bt.distance(a, b))),
                overlap=dict(total=float(bt.distance(a, bt.align(b, reference=a)))))
        self.res["distance"] = out

    def le_stage(self):
        out = {}
        for (m, s), net in self.nets.items():
            le = bt.local_energy(net, self.le_set, eps=self.args.eps, samples=self.args.le_samples,
                                 seed=0)
            out[f"{m}{s}"] = dict(eps=le.eps.tolist(), mean=le.mean.tolist(), std=le.std.tolist(),
                                  base_error=le.base_error)
            print(f"  {m}{s}: base {le.base_error:.4f} dE " +
                  " ".join(f"{v:.4f}" for v in le.mean), flush=True)
        self.res["le"] = out

    def random_stage(self):
        out = {}
        for p in PAIRS:
            a = self.nets[p[:2]]
            r = {}
            for method in ("raw", "overlap", "weights"):
                path = bt.paths.random_flip(a, self.aligned(p, method), points=21, seed=0,
                                            align=False, orders=self.args.orders)
                per = path.errors_per_order(self.path_set)
                r[method] = dict(barrier_dict(per.mean(axis=0)),
                                 per_order_max=per.max(axis=1).tolist(),
                                 fractions=path.fractions.tolist(), n_moves=int(path.n_moves),
                                 hamming=float(path.hamming))
            out[pair_name(p)] = r
            print(f"  {pair_name(p)}: " + ", ".join(f"{k} {v['max']:.4f}" for k, v in r.items()),
                  flush=True)
        self.res["random"] = out

    def bend_stage(self):
        out = {}
        for p in PAIRS:
            a = self.nets[p[:2]]
            t0 = time.perf_counter()
            sb = bt.paths.single_bend(a, self.aligned(p, "overlap"), self.train10k, align=False,
                                      epochs=self.args.bend_epochs, seed=0, points=21,
                                      orders=self.args.orders)
            e = sb.errors(self.path_set)
            out[pair_name(p)] = dict(
                barrier_dict(e), fractions=sb.fractions.tolist(),
                hamming=float(sb.hamming), hamming_a_mid=float(sb.hamming_a_mid),
                hamming_mid_b=float(sb.hamming_mid_b),
                mid_start_error=float(sb.midpoint_start.error(*self.path_set)),
                mid_error=float(sb.midpoint.error(*self.path_set)),
                mid_train_error_10k=float(sb.midpoint.error(self.train10k.x, self.train10k.y)),
                seconds=time.perf_counter() - t0)
            r = out[pair_name(p)]
            print(f"  {pair_name(p)}: barrier {r['max']:.4f} mid start {r['mid_start_error']:.4f} "
                  f"-> {r['mid_error']:.4f}, a-mid {r['hamming_a_mid']:.4f} mid-b "
                  f"{r['hamming_mid_b']:.4f} ({r['seconds']:.0f} s)", flush=True)
        self.res["bend"] = out

    def _search(self, p, **kw):
        a = self.nets[p[:2]]
        t0 = time.perf_counter()
        sp = bt.paths.search(a, self.aligned(p, "overlap"), self.search_set, align=False,
                             quiet=True, points=21, **kw)
        e21 = sp.errors(self.path_set)
        chk = sp.errors(self.check_set)
        fr, mx = downsample_max(sp.trace)
        r = dict(n_search=len(self.search_set[1]), trace_barrier=float(sp.trace.max()),
                 trace_height=float(sp.trace_barrier.height),
                 points21=barrier_dict(e21), check_set=barrier_dict(chk),
                 fractions=sp.fractions.tolist(), n_moves=int(sp.n_moves),
                 n_detours=int(sp.n_detours), evaluations=int(sp.evaluations),
                 search_seconds=float(sp.seconds), evals_per_second=float(sp.evals_per_second),
                 note=sp.note, trace_ds=dict(fractions=fr, max=mx),
                 seconds=time.perf_counter() - t0, kwargs={k: v for k, v in kw.items()})
        print(f"  {pair_name(p)} {kw}: every-move barrier {r['trace_barrier']:.4f} "
              f"({r['n_search']} search images), 21-pt on the path set "
              f"{r['points21']['max']:.4f}, check set {r['check_set']['max']:.4f}, "
              f"{r['n_moves']} moves, {r['evaluations']} evals, {r['seconds']:.0f} s", flush=True)
        return r

    def greedy_stage(self):
        """Greedy search on every pair, stored under ``greedy_n<n_search>_c<candidates>``."""
        key = self.search_key
        out = self.res.get(key, {}) if "greedy" not in self.args.force else {}
        for p in PAIRS:
            if pair_name(p) in out:
                continue
            if self.args.greedy_pairs and len(out) >= self.args.greedy_pairs:
                break
            out[pair_name(p)] = self._search(p, method="greedy", candidates=self.args.candidates,
                                             seed=0)
            self.res[key] = out
            self.save()   # long stage: keep partial results
        self.res[key] = out

    def detour_stage(self):
        p = next(q for q in PAIRS if pair_name(q) == self.args.detour_pair)
        self.res["detour_" + self.search_key.split("_", 1)[1]] = {pair_name(p): self._search(
            p, method="greedy", candidates=self.args.candidates, detours=self.args.detours,
            seed=0)}

    def diagnostics_stage(self):
        """Why the aligned distances stay large: how many weights changed sign during
        training (latent weights at init vs at the end, same seed), how far two untrained
        initialisations are after alignment, and how many hidden units are constant
        ("dead": the same output on every image of the path set)."""
        sizes = self.meta[("sgd", 0)]["sizes"]
        inits = {}
        for s in (0, 1):
            torch.manual_seed(s)   # as experiments/train_minima.py builds the model
            inits[s] = bnn.BinaryMLP(sizes, input_norm=self.meta[("sgd", 0)]["input_norm"]).eval()
        out = {"init_init": dict(raw=float(bt.distance(bt.BinaryNetwork.from_torch(inits[0]),
                                                       bt.BinaryNetwork.from_torch(inits[1])))),
               "nets": {}}
        out["init_init"]["overlap"] = float(bt.distance(
            bt.BinaryNetwork.from_torch(inits[0]),
            bt.align(bt.BinaryNetwork.from_torch(inits[1]), reference=bt.BinaryNetwork.from_torch(inits[0]))))
        x = self.path_set[0]
        for (m, s), net in self.nets.items():
            sd = torch.load(Path(self.args.minima) / f"fmnist-bmlp_{m}_seed{s}.pt", weights_only=True)
            changed, total = 0, 0
            for name, w0 in inits[s].state_dict().items():
                if name.endswith("weight") and w0.ndim == 2:
                    changed += int((bnn.sign(w0) != bnn.sign(sd[name])).sum())
                    total += w0.numel()
            pre = net.preactivations(x)
            dead = []
            for l in range(len(net.layers) - 1):
                on = pre[l] >= net.layers[l].threshold
                dead.append(float(np.mean(on.all(0) | (~on).all(0))))
            out["nets"][f"{m}{s}"] = dict(sign_changed_from_init=changed / total, dead_units=dead)
            print(f"  {m}{s}: {out['nets'][f'{m}{s}']}", flush=True)
        print(f"  two untrained inits: {out['init_init']}", flush=True)
        self.res["diagnostics"] = out

    def exact_random_stage(self):
        """Error after every move of one random order (seed 0) for the figure pair: the
        exact barrier of a random order, to compare with its 21-point estimate."""
        from bnn_toroid.paths.discrete_search import make_evaluator
        p = next(q for q in PAIRS if pair_name(q) == self.args.figure_pair)
        a = self.nets[p[:2]]
        path = bt.paths.random_flip(a, self.aligned(p, "overlap"), points=21, seed=0, align=False)
        ev = make_evaluator(a, self.search_set)
        trace = np.concatenate([[ev.wrong], ev.commit(path.order)]) / ev.n
        fr, mx = downsample_max(trace)
        e21 = path.errors(self.search_set)
        self.res["exact_random"] = {pair_name(p): dict(
            n_images=int(ev.n), trace_barrier=float(trace.max()), points21_max=float(e21.max()),
            trace_ds=dict(fractions=fr, max=mx), n_moves=int(path.n_moves))}
        print(f"  {pair_name(p)}: random order seed 0, every-move barrier {trace.max():.4f}, "
              f"21-pt {e21.max():.4f}", flush=True)

    # ----------------------------------------------------------------------- figures
    def figures(self):
        from bnn_toroid import plots
        figdir = Path(self.args.figures)
        figdir.mkdir(parents=True, exist_ok=True)
        r = self.res
        if "le" in r:
            curves = {}
            for k, v in r["le"].items():
                te = r.get("nets", {}).get(k, {}).get("test_error")
                label = f"{k[:-1].upper()} seed {k[-1]}" + (f" (test {100 * te:.1f}%)" if te else "")
                curves[label] = dict(x=v["eps"], mean=v["mean"], std=v["std"])

            def draw_le(ax):
                plots.local_energy(ax, curves)
                for line in ax.get_lines():
                    if "seed 1" in str(line.get_label()):
                        line.set_linestyle("--")
                        line.set_marker("s")
                ax.legend(fontsize=8)
                ax.set_title("Binary MLP 784-501-501-10, FMNIST: local energy\n"
                             f"(train error rise, {self.args.n_le} train images, "
                             f"{self.args.le_samples} draws per ε; band = ±1 std)")
            plots.save_figure(figdir / "binary_local_energy.png", [draw_le], ncols=1,
                              size=(6.4, 4.6))
        fp = self.args.figure_pair
        gk = self.search_key
        dk = "detour_" + gk.split("_", 1)[1]
        if "random" in r and gk in r and fp in r[gk]:
            a_, b_ = fp.split("-")
            ylab = f"train error (%) on the path set ({self.args.n_path} train images)"

            def curve(ax, x, y, fmt, c, lab, **kw):
                ax.plot(x, 100 * np.asarray(y), fmt, color=c, label=lab, **kw)

            def left(ax):
                rr = r["random"][fp]
                for key, lab, c in (("raw", "random order, raw", "C3"),
                                    ("overlap", "random order, aligned (overlap)", "C1"),
                                    ("weights", "random order, aligned (weights)", "C8")):
                    curve(ax, rr[key]["fractions"], rr[key]["curve"], "o-", c,
                          f"{lab}: {100 * rr[key]['max']:.1f}%", ms=3)
                if "bend" in r and fp in r["bend"]:
                    b = r["bend"][fp]
                    curve(ax, b["fractions"], b["curve"], "s-", "C4",
                          f"single bend (aligned): {100 * b['max']:.1f}%", ms=2.5)
                ax.set_title(f"Random-order paths, {a_.upper()} → {b_.upper()}\n"
                             f"(mean of {self.args.orders} orders, 21 points)")

            def right(ax):
                rr = r["random"][fp]["overlap"]
                curve(ax, rr["fractions"], rr["curve"], "o-", "C1",
                      f"random order, aligned: {100 * rr['max']:.1f}%", ms=3, alpha=0.5)
                keys = [gk] + sorted(k for k in r if k.startswith("greedy_n") and k != gk and fp in r[k])
                for k2, c in zip(keys, ("C2", "C9")):
                    g = r[k2][fp]
                    tag = f"{g['n_search']} search img., {g['kwargs']['candidates']} cand."
                    curve(ax, g["fractions"], g["points21"]["curve"], "^-", c,
                          f"greedy ({tag}): {100 * g['points21']['max']:.1f}%", ms=3)
                    curve(ax, g["fractions"], g["check_set"]["curve"], "--", c,
                          f"  same path, held-out images: {100 * g['check_set']['max']:.1f}%", lw=1)
                if dk in r and fp in r[dk]:
                    d = r[dk][fp]
                    curve(ax, d["fractions"], d["points21"]["curve"], "-", "C0",
                          f"greedy + {d['kwargs']['detours']} detours ({d['n_search']} img.): "
                          f"{100 * d['points21']['max']:.1f}%", lw=1)
                ax.set_title(f"Searched paths (aligned), {a_.upper()} → {b_.upper()}\n"
                             "(21 points; the 2000-image search used the whole path set)")

            def wrap(fn):
                def draw(ax):
                    fn(ax)
                    ax.set_xlabel("fraction of the path (moves)")
                    ax.set_ylabel(ylab)
                    ax.set_ylim(0, 80)
                    ax.grid(alpha=0.3)
                    ax.legend(fontsize=7.5, loc="upper right")
                return draw
            plots.save_figure(figdir / "binary_paths.png", [wrap(left), wrap(right)], ncols=2,
                              size=(6.2, 4.8))

    def run(self):
        stages = dict(nets=self.nets_stage, distance=self.distance_stage, le=self.le_stage,
                      random=self.random_stage, bend=self.bend_stage, greedy=self.greedy_stage,
                      detour=self.detour_stage, exact_random=self.exact_random_stage,
                      diagnostics=self.diagnostics_stage)
        t0 = time.perf_counter()
        for s in self.args.stages:
            if s == "figures":
                self.figures()
            else:
                self.stage(s, stages[s])
        print(f"total wall time this call {time.perf_counter() - t0:.0f} s "
              f"({self.args.threads} thread(s), {platform.processor() or platform.machine()})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/bnn_toroid_results", help="folder for the JSON results")
    ap.add_argument("--minima", default="/work/minima", help="folder with fmnist-bmlp_*.pt/.json")
    ap.add_argument("--figures", default=str(Path(__file__).resolve().parents[1] / "docs" / "figures"))
    ap.add_argument("--stages", nargs="+", default=["nets", "distance", "diagnostics", "le", "random",
                                                    "bend", "greedy", "detour", "exact_random",
                                                    "figures"])
    ap.add_argument("--force", nargs="*", default=[], help="stages to recompute")
    ap.add_argument("--n-path", type=int, default=2000)
    ap.add_argument("--n-le", type=int, default=5000)
    ap.add_argument("--eps", type=float, nargs="+", default=[0, 0.001, 0.002, 0.005, 0.01, 0.02])
    ap.add_argument("--le-samples", type=int, default=10)
    ap.add_argument("--orders", type=int, default=3)
    ap.add_argument("--bend-epochs", type=int, default=10)
    ap.add_argument("--candidates", type=int, default=4)
    ap.add_argument("--n-search", type=int, default=500,
                    help="images the search runs on (the first of the path set)")
    ap.add_argument("--greedy-pairs", type=int, default=0,
                    help="stop the greedy stage after this many pairs (0: all)")
    ap.add_argument("--detours", type=int, default=8)
    ap.add_argument("--detour-pair", default="sgd0-sgd1")
    ap.add_argument("--figure-pair", default="sgd0-sgd1")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    Runner(args).run()


if __name__ == "__main__":
    main()
