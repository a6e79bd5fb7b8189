"""Every kernel form this CPU can execute, against the form it chooses, in one process.

    python benchmarks/forms_compare.py [--threads 1 2] [--json FILE]

For each workload of ``kernels/forms.py`` and each runnable form, the time of one call
and the ratio to the chosen form (``bench.paired``: interleaved blocks, the median of
per-round ratios; > 1 means the chosen form is faster). The MLP rows time
``BinaryNetwork.predict`` with a network built under each (first, hidden) pair. Run it
on a quiet machine: a 2-thread figure is void while another process runs.
"""
from __future__ import annotations

import argparse
import json

import numpy as np

import bnn_toroid.kernels as K
from bnn_toroid import bench
from bnn_toroid.kernels import forms


def _gemm(n, threads):
    rng = np.random.default_rng(0)
    a = K.pack_bits(rng.choice(np.array([-1, 1], np.int8), (n, 4096)))
    w = K.pack_bits(rng.choice(np.array([-1, 1], np.int8), (4096, 4096)))
    return {f: (lambda f=f: K.binary_gemm(a, w, 4096, form=f)) for f in forms.runnable("gemm")}, \
        f"binary_gemm ({n},4096)x(4096,4096)"


def _conv(hw, c):
    rng = np.random.default_rng(0)
    a = K.pack_bits(rng.choice(np.array([-1, 1], np.int8), (16, hw, hw, c)))
    w = K.pack_bits(rng.choice(np.array([-1, 1], np.int8), (c, 3, 3, c)))
    t = np.zeros(c, np.int64)
    return {f: (lambda f=f: K.binary_conv2d(a, w, c, (1, 1), "same", 1, t, form=f))
            for f in forms.runnable("conv")}, f"conv 3x3 16x{hw}x{hw}x{c}"


def _dense(n):
    rng = np.random.default_rng(0)
    a = K.pack_bits(rng.choice(np.array([-1, 1], np.int8), (n, 1024)))
    w = K.pack_bits(rng.choice(np.array([-1, 1], np.int8), (1024, 1024)))
    t = rng.integers(-32, 33, 1024)
    return {f: bench.dense_form(a, w, 1024, t, f) for f in forms.runnable("hidden")}, \
        f"hidden dense ({n},1024)x(1024,1024)"


def _pixels(n):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 784)).astype(np.uint8)
    w = rng.choice(np.array([-1, 1], np.int8), (1024, 784))
    t = K.pixel_thresholds(rng.normal(0, 128 * 28, 1024), 1024)
    wl = "first_one" if n == 1 else "first"
    return {f: bench.pixel_form(x, w, t, f) for f in forms.runnable(wl)}, f"pixel layer ({n},784)x(784,1024)"


def _mlp(n):
    import torch
    from bnn_toroid.network import BinaryNetwork
    from bnn_toroid.nn import BinaryMLP
    torch.manual_seed(0)
    model = BinaryMLP([784, 1024, 1024, 10]).eval()
    x = np.random.default_rng(0).integers(0, 256, (n, 784)).astype(np.uint8)
    calls = {}
    wl = "first_one" if n == 1 else "first"
    for first in forms.runnable(wl):
        for hidden in forms.runnable("hidden"):
            with forms.override(**{wl: first, "hidden": hidden}):
                net = BinaryNetwork.from_torch(model)
                net.predict(x)
            calls[f"first {first}, hidden {hidden}"] = (lambda net=net: net.predict(x))
    return calls, f"MLP 784-1024-1024-10 predict, batch {n}"


def _chosen_key(title, calls):
    if title.startswith("binary_gemm"):
        return forms.chosen("gemm").name
    if title.startswith("conv"):
        return forms.chosen("conv").name
    if title.startswith("hidden"):
        return forms.chosen("hidden").name
    if title.startswith("pixel"):
        return forms.chosen("first_one" if "(1," in title else "first").name
    one = "batch 1" in title
    return f"first {forms.chosen('first_one' if one else 'first').name}, hidden {forms.chosen('hidden').name}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    rows = []
    print(forms.report())
    for threads in args.threads:
        bench.set_threads(threads)
        for calls, title in (_gemm(256, threads), _gemm(1, threads), _conv(32, 128), _conv(8, 512),
                             _dense(64), _dense(1),
                             _pixels(64), _pixels(1), _mlp(64), _mlp(1)):
            base = _chosen_key(title, calls)
            for name, f in calls.items():
                o, r, ratio = bench.paired(calls[base], f, args.repeats)
                rows.append({"workload": title, "threads": threads, "form": name,
                             "chosen": name == base, "ms": r * 1e3, "chosen_ms": o * 1e3,
                             "time_vs_chosen": ratio})
                print(f"{threads}t  {title:42s} {name:34s} {r * 1e3:9.3f} ms  "
                      f"{'(chosen)' if name == base else f'{ratio:5.2f}x the chosen form'}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"report": forms.report(), "cpu": bench._cpu_model(), "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
