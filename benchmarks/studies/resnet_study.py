r"""The ResNet study of issue 22 (item 5): SGD and RSGD minima of a small residual network
on Fashion-MNIST, and the barrier between two minima of one method along the raw linear
path and along the geodesic between the aligned, normalised minima
(docs/results.md, "Residual networks on the toroid").

Resumable: every training run writes ``<out>/train/<method>_s<seed>.json`` (history,
errors, health) and ``.pt`` (the weights), every comparison ``<out>/pairs/<method>.json``,
each atomically (written to a temporary file, then renamed), and a file that exists is
skipped. ``--stage train`` only trains; ``--stage analyse`` only compares (the trained
runs must exist); ``all`` does both. One thread (``torch.set_num_threads(1)``).

The network is a ResNet-20 of width 16 (He et al. 2016, §4.2: 3 stages of 3 BasicBlocks,
16/32/64 channels, strided 1×1 conv + BN shortcuts where the shape changes, global
average pooling and a linear head), with the Fashion-MNIST input standardisation as its
first module.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from torch import nn

from bnn_toroid import datasets
from bnn_toroid.nn import Normalize
from bnn_toroid.train import fit, evaluate


class BasicBlock(nn.Module):
    """``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        idt = x if self.downsample is None else self.downsample(x)
        return self.relu(out + idt)


class ResNet(nn.Module):
    """ResNet-(6n+2) for 1-channel images: ``n`` blocks per stage, widths w, 2w, 4w."""

    def __init__(self, mean, std, n=3, width=16, classes=10):
        super().__init__()
        self.norm = Normalize(mean, std)
        self.conv1 = nn.Conv2d(1, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        blocks, c = [], width
        for stage in range(3):
            cout = width * 2 ** stage
            for i in range(n):
                blocks.append(BasicBlock(c, cout, 2 if (stage > 0 and i == 0) else 1))
                c = cout
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(self.norm(x))))
        x = self.layers(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def _atomic_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=float))
    os.replace(tmp, path)


def _atomic_torch(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _data(args):
    tr = datasets.load("fashion-mnist", "train", n=args.n_train, seed=0)
    te = datasets.load("fashion-mnist", "test", n=args.n_test, seed=0)
    return tr, te


def _model(tr, args, seed):
    torch.manual_seed(seed)
    return ResNet(tr.mean, tr.std, n=args.blocks, width=args.width)


def train_one(args, method, seed, tr, te, out: Path):
    js, pt = out / f"{method}_s{seed}.json", out / f"{method}_s{seed}.pt"
    if js.exists() and pt.exists():
        return json.loads(js.read_text())
    model = _model(tr, args, seed)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    opts = dict(epochs=args.epochs, seed=seed, quiet=True, batch_size=args.batch_size,
                weight_decay=args.weight_decay)
    if method == "rsgd":
        opts.update(replicas=args.replicas)
    log = open(out / f"{method}_s{seed}.log", "w")
    t0 = time.time()
    hist = fit(model, tr, method, log=lambda s: (log.write(s + "\n"), log.flush()), **opts)
    log.close()
    # how far the minimum moved: ‖w − w0‖ / ‖w0‖ over all conv/linear weights
    num = sum(float(((model.state_dict()[k] - init[k]) ** 2).sum()) for k in init if k.endswith("weight") and init[k].dim() > 1)
    den = sum(float((init[k] ** 2).sum()) for k in init if k.endswith("weight") and init[k].dim() > 1)
    res = dict(method=method, seed=seed, options=opts, n_train=len(tr), n_test=len(te),
               seconds=time.time() - t0,
               train_error=evaluate(model, tr)[1], test_error=evaluate(model, te)[1],
               relative_change=(num / den) ** 0.5, loss=hist.loss,
               history_train_error=hist.train_error)
    _atomic_torch(pt, model.state_dict())
    _atomic_json(js, res)
    return res


def analyse_method(args, method, tr, te, out: Path, tdir: Path):
    """Barriers between the two seeds' minima of one method, along the raw linear path,
    the linear path after alignment and the geodesic between the aligned, normalised
    minima; BN statistics recomputed at every point on ``bn_samples`` training images.
    Heights are :class:`bnn_toroid.paths.Barrier`'s, ``max_i E_i − ½ (E_0 + E_{n−1})``."""
    from bnn_toroid import distance, paths
    from bnn_toroid.network.continuous import as_tensors, misclassified
    from bnn_toroid.paths.base import Barrier

    js = out / f"{method}.json"
    if js.exists():
        return json.loads(js.read_text())
    nets = []
    for seed in args.seeds:
        m = _model(tr, args, seed)
        m.load_state_dict(torch.load(tdir / f"{method}_s{seed}.pt", weights_only=True))
        nets.append(m.eval())
    a, b = nets
    bn_data = tr.subset(min(len(tr), args.bn_samples), seed=1)
    splits = {"train": as_tensors(tr), "test": as_tensors(te)}
    t0 = time.time()
    res = dict(method=method, seeds=list(args.seeds), points=args.points,
               bn_samples=len(bn_data), eval_samples=dict(train=len(tr), test=len(te)),
               distance=dict(raw=distance(a, b, "raw"), geodesic=distance(a, b, "geodesic"),
                             geodesic_aligned=distance(a, b, "geodesic_aligned")))
    builds = (("linear_raw", lambda: paths.linear(a, b, args.points, bn="recompute",
                                                  bn_data=bn_data)),
              ("linear_aligned", lambda: paths.linear(a, b, args.points, align=True,
                                                      bn="recompute", bn_data=bn_data)),
              ("geodesic_aligned", lambda: paths.geodesic(a, b, args.points, bn="recompute",
                                                          bn_data=bn_data)))
    for kind, build in builds:
        p = build()
        curves = {k: [] for k in splits}
        for i in range(len(p)):
            m = p.point(i)
            for k, (x, y) in splits.items():
                curves[k].append(misclassified(m, x, y) / x.shape[0])
        row = dict(curves=curves)
        for k, c in curves.items():
            bar = Barrier.from_errors(c)
            row[f"barrier_{k}"] = bar.height
            row[f"max_error_{k}"] = bar.max_error
        res[kind] = row
        print(f"  {method} {kind}: train {[round(e, 4) for e in curves['train']]}", flush=True)
    res["seconds"] = time.time() - t0
    _atomic_json(js, res)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="/work/study_runs/resnet")
    ap.add_argument("--stage", choices=("train", "analyse", "all"), default="all")
    ap.add_argument("--methods", nargs="+", default=["sgd", "rsgd"])
    ap.add_argument("--seeds", nargs=2, type=int, default=[0, 1])
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--blocks", type=int, default=3, help="blocks per stage (3: ResNet-20)")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--points", type=int, default=11)
    ap.add_argument("--bn-samples", type=int, default=1000)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    tdir, pdir = out / "train", out / "pairs"
    tdir.mkdir(parents=True, exist_ok=True)
    pdir.mkdir(parents=True, exist_ok=True)
    _atomic_json(out / "args.json", vars(args)) if not (out / "args.json").exists() else None
    tr, te = _data(args)
    if args.stage in ("train", "all"):
        for method in args.methods:
            for seed in args.seeds:
                r = train_one(args, method, seed, tr, te, tdir)
                print(f"{method} seed {seed}: train {r['train_error']:.4f} test "
                      f"{r['test_error']:.4f} moved {r['relative_change']:.3f} "
                      f"({r['seconds']:.0f} s)", flush=True)
    if args.stage in ("analyse", "all"):
        for method in args.methods:
            r = analyse_method(args, method, tr, te, pdir, tdir)
            print(f"{method}: barrier height (train / test) " + "; ".join(
                f"{k} {r[k]['barrier_train']:.4f} / {r[k]['barrier_test']:.4f}"
                for k in ("linear_raw", "linear_aligned", "geodesic_aligned"))
                + f" ({r['seconds']:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
