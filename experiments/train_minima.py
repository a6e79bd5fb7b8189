"""Train the minima of docs/training.md (Pittorino et al. 2022, §5; docs/methods.md, "Training").

Binary MLPs (BinaryMLP with BatchNorm) on Fashion-MNIST and real 2x512 MLPs on MNIST,
each with SGD, RSGD and ADV, for a few seeds. Prints a markdown table, writes
``results.json`` and, for every run, ``<task>_<method>_seed<s>.pt`` (a torch state_dict;
read it back with ``torch.load(path, weights_only=True)``) and ``<same>.json`` (how to
rebuild the model, the hyperparameters, the history and the errors) into ``--out``.

    python experiments/train_minima.py --out /work/minima            # the docs table
    python experiments/train_minima.py --out /tmp/m --quick          # a smoke test

Rebuilding a model::

    meta = json.load(open("fmnist-bmlp_sgd_seed0.json"))
    model = bnn_toroid.nn.BinaryMLP(meta["sizes"], input_norm=meta["input_norm"])
    model.load_state_dict(torch.load("fmnist-bmlp_sgd_seed0.pt", weights_only=True))
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bnn_toroid import datasets as D  # noqa: E402
from bnn_toroid import nn as bnn  # noqa: E402
from bnn_toroid import train as T  # noqa: E402


def tasks(args):
    """(task name, data set, subset size, model factory, fit kwargs per method)."""
    bsizes = [784] + [args.bwidth] * args.bdepth + [10]
    rsizes = [784, 512, 512, 10]
    common_b = dict(epochs=args.bepochs, batch_size=128, lr=args.blr)
    common_r = dict(epochs=args.repochs, batch_size=128, lr=args.rlr)
    return [
        ("fmnist-bmlp", "fashion-mnist", args.fmnist_n, "BinaryMLP", bsizes,
         {"sgd": dict(common_b),
          "rsgd": dict(common_b, replicas=args.replicas),
          "adv": dict(common_b, adv_epochs=args.badv_epochs)}),
        ("mnist-mlp", "mnist", args.mnist_n, "MLP", rsizes,
         {"sgd": dict(common_r),
          "rsgd": dict(common_r, replicas=args.replicas),
          "adv": dict(common_r, adv_epochs=args.radv_epochs)}),
    ]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for state_dicts and results")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--methods", nargs="+", default=["sgd", "rsgd", "adv"])
    ap.add_argument("--tasks", nargs="+", default=["fmnist-bmlp", "mnist-mlp"])
    ap.add_argument("--bepochs", type=int, default=10, help="binary MLP epochs")
    ap.add_argument("--badv-epochs", type=int, default=5, help="binary ADV pre-training")
    ap.add_argument("--repochs", type=int, default=15, help="real MLP epochs")
    ap.add_argument("--radv-epochs", type=int, default=10, help="real ADV pre-training")
    ap.add_argument("--replicas", type=int, default=5)
    ap.add_argument("--fmnist-n", type=int, default=10000)
    ap.add_argument("--mnist-n", type=int, default=10000)
    ap.add_argument("--bwidth", type=int, default=501)
    ap.add_argument("--bdepth", type=int, default=2)
    ap.add_argument("--blr", type=float, default=10.0)
    ap.add_argument("--rlr", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="tiny smoke-test sizes")
    ap.add_argument("--suffix", default="",
                    help="appended to the task names (for variants, e.g. --suffix=-adv30)")
    ap.add_argument("--fresh", action="store_true",
                    help="ignore an existing results.json instead of merging into it")
    ap.add_argument("--table-only", action="store_true",
                    help="print the table of an existing results.json and exit")
    args = ap.parse_args(argv)
    if args.quick:
        args.bepochs = args.repochs = 2
        args.badv_epochs = args.radv_epochs = 1
        args.fmnist_n = args.mnist_n = 500
        args.bwidth, args.seeds, args.replicas = 64, [0], 2
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.table_only:
        print(table(json.loads((out / "results.json").read_text())["results"]))
        return
    out.mkdir(parents=True, exist_ok=True)
    res_file = out / "results.json"
    results = []
    if res_file.exists() and not args.fresh:
        # keep earlier runs (e.g. other seeds) that this invocation does not redo
        redo = {(t + args.suffix, m, s) for t in args.tasks for m in args.methods
                for s in args.seeds}
        results = [r for r in json.loads(res_file.read_text())["results"]
                   if (r["task"], r["method"], r["seed"]) not in redo]
    t0 = time.perf_counter()
    for task, dname, n, arch, sizes, per_method in tasks(args):
        if task not in args.tasks:
            continue
        task = task + args.suffix
        train = D.load(dname, "train", n=n, seed=0)
        test = D.load(dname, "test")
        norm = T.input_norm(train)
        for method in args.methods:
            for seed in args.seeds:
                torch.manual_seed(seed)
                cls = getattr(bnn, arch)
                model = cls(sizes, input_norm=norm)
                kw = per_method[method]
                hist = T.fit(model, train, method, seed=seed, quiet=True, **kw)
                tr_loss, tr_err = T.evaluate(model, train)
                te_loss, te_err = T.evaluate(model, test)
                stem = f"{task}_{method}_seed{seed}"
                torch.save(model.state_dict(), out / f"{stem}.pt")
                row = dict(task=task, dataset=dname, n_train=len(train), subset_seed=0,
                           arch=arch, sizes=sizes, input_norm=list(norm), method=method,
                           seed=seed, fit_kwargs=kw, train_error=tr_err, test_error=te_err,
                           train_loss=tr_loss, test_loss=te_loss, seconds=hist.seconds,
                           history={k: getattr(hist, k) for k in (
                               "loss", "train_error", "lr", "phase", "gamma",
                               "replica_distance", "replica_hamming",
                               "random_label_error")},
                           config=hist.config, state_dict=f"{stem}.pt")
                (out / f"{stem}.json").write_text(json.dumps(row, indent=1))
                results.append(row)
                res_file.write_text(json.dumps(dict(
                    results=results, torch=torch.__version__, threads=args.threads,
                    python=platform.python_version(), cpu=platform.processor(),
                    wall_seconds_this_call=time.perf_counter() - t0), indent=1))
                extra = ""
                if hist.random_label_error:
                    extra = f" random-label err {hist.random_label_error[-1]:.3f}"
                if hist.replica_distance:
                    extra = f" replica dist {hist.replica_distance[0]:.3g}->{hist.replica_distance[-1]:.3g}"
                print(f"{stem}: train {100 * tr_err:.2f} %  test {100 * te_err:.2f} %  "
                      f"{hist.seconds:.0f} s{extra}", flush=True)
    print(f"total wall time {time.perf_counter() - t0:.0f} s")
    print(table(results))


def table(results):
    import numpy as np

    lines = ["| task | method | seeds | train error % | test error % | s / run |",
             "|---|---|---|---|---|---|"]
    keys = []
    for r in results:
        if (r["task"], r["method"]) not in keys:
            keys.append((r["task"], r["method"]))
    for task, method in keys:
        rs = [r for r in results if r["task"] == task and r["method"] == method]
        tr = np.array([r["train_error"] for r in rs]) * 100
        te = np.array([r["test_error"] for r in rs]) * 100
        sec = np.mean([r["seconds"] for r in rs])
        lines.append(f"| {task} | {method} | {len(rs)} | {tr.mean():.2f} ± {tr.std():.2f} | "
                     f"{te.mean():.2f} ± {te.std():.2f} | {sec:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
