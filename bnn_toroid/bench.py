"""Throughput measurements shared by ``bnn-toroid bench`` and ``benchmarks/``.

Shared machines drift by up to 2× from minute to minute, so every figure is a *ratio*
measured side by side: the two contenders run alternately, pair by pair, and the median of
the per-pair ratios is reported (with medians of the raw times for context). Thread counts
of Numba and torch are set equal.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from . import kernels as K


@dataclass
class Row:
    name: str
    shape: str
    threads: int
    ours_ms: float
    ref_ms: float
    ratio: float          # reference time / our time (> 1: we are faster)
    gmacs: float          # our binary multiply-accumulates per second, in G
    reference: str = "torch float32"

    def as_dict(self):
        return asdict(self)


def set_threads(n: int) -> int:
    """Set Numba's and torch's thread counts to the same value."""
    import numba
    import torch
    n = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    torch.set_num_threads(n)
    return n


def paired(ours, ref, repeats: int = 15, min_time: float = 0.2):
    """Alternate ``ours()`` and ``ref()``; return (median ours s, median ref s, median ratio).

    Each side is first called once (warm-up, compilation). A round repeats a call until
    it has run for ``min_time / repeats`` so short kernels are timed over many calls.
    """
    ours(), ref()
    reps = []
    for f in (ours, ref):
        t0 = time.perf_counter()
        f()
        reps.append(max(1, int((min_time / repeats) / max(time.perf_counter() - t0, 1e-7))))
    inner = max(reps)
    to, tr = [], []
    for _ in range(repeats):
        for f, acc in ((ours, to), (ref, tr)):
            t0 = time.perf_counter()
            for _ in range(inner):
                f()
            acc.append((time.perf_counter() - t0) / inner)
    to, tr = np.array(to), np.array(tr)
    return float(np.median(to)), float(np.median(tr)), float(np.median(tr / to))


def gemm_case(n=256, k=4096, m=4096, threads=2, repeats=15, seed=0):
    """``binary_gemm`` (n, k) × (k, m) against ``torch.mm`` float32 on the same shape."""
    import torch
    threads = set_threads(threads)
    rng = np.random.default_rng(seed)
    a = K.pack_bits(rng.choice(np.array([-1, 1], np.int8), (n, k)))
    w = K.pack_bits(rng.choice(np.array([-1, 1], np.int8), (m, k)))
    ta, tb = torch.randn(n, k), torch.randn(k, m)
    with torch.inference_mode():
        o, r, ratio = paired(lambda: K.binary_gemm(a, w, k), lambda: torch.mm(ta, tb), repeats)
    return Row("binary_gemm", f"({n},{k})x({k},{m})", threads, o * 1e3, r * 1e3, ratio, n * k * m / o / 1e9)


def mlp_case(sizes=(784, 1024, 1024, 10), batch=256, threads=2, repeats=15, seed=0):
    """``BinaryNetwork.predict`` against the same torch model (eval mode, float32)."""
    import torch
    from .network import BinaryNetwork
    from .nn import BinaryMLP
    threads = set_threads(threads)
    torch.manual_seed(seed)
    model = BinaryMLP(list(sizes)).eval()
    net = BinaryNetwork.from_torch(model)
    x = np.random.default_rng(seed).integers(0, 256, (batch, sizes[0])).astype(np.uint8)
    tx = torch.as_tensor(x, dtype=torch.float32)
    with torch.inference_mode():
        o, r, ratio = paired(lambda: net.predict(x), lambda: model(tx), repeats)
    macs = batch * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return Row("BinaryNetwork.predict", f"MLP {'-'.join(map(str, sizes))}, batch {batch}",
               threads, o * 1e3, r * 1e3, ratio, macs / o / 1e9, "same model in torch float32")


def startup_times(fresh_cache_dir: str | None = None) -> dict:
    """Seconds to import the package, to compile the kernels on first use (empty Numba
    cache) and to load them from the cache on a second run. Each in a fresh process."""
    import tempfile
    code = ("import time; t=time.perf_counter(); import bnn_toroid, bnn_toroid.kernels as K; "
            "import numpy as np; t1=time.perf_counter(); "
            "a=K.pack_bits(np.ones((8,200))); K.binary_gemm(a,a,200); K.binary_gemm(a,a,200,threshold=np.zeros(8,int)); "
            "K.binary_conv2d(K.pack_bits(np.ones((1,5,5,3))),K.pack_bits(np.ones((4,3,3,3))),3); "
            "t2=time.perf_counter(); print(t1-t, t2-t1)")
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, NUMBA_CACHE_DIR=fresh_cache_dir or d)
        out = []
        for _ in range(2):
            res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            out.append([float(v) for v in res.stdout.split()])
    return {"import_s": out[1][0], "first_call_compile_s": out[0][1], "cached_first_call_s": out[1][1]}


def run(quick: bool = False, threads: int = 2) -> dict:
    """The kernel throughput table of ``bnn-toroid bench``."""
    reps = 5 if quick else 15
    rows = [gemm_case(threads=threads, repeats=reps),
            gemm_case(n=1, threads=threads, repeats=reps),
            mlp_case(batch=1, threads=threads, repeats=reps),
            mlp_case(batch=256, threads=threads, repeats=reps)]
    return {"rows": [r.as_dict() for r in rows], "threads": threads,
            "startup": startup_times(), "cpu": _cpu_name()}


def _cpu_name() -> str:
    try:
        import llvmlite.binding as ll
        return ll.get_host_cpu_name()
    except Exception:  # pragma: no cover - informational only
        return "unknown"


def format_table(report: dict) -> str:
    lines = [f"CPU {report['cpu']}, {report['threads']} threads (numba = torch)",
             f"{'kernel':24s} {'shape':34s} {'ours ms':>9s} {'ref ms':>9s} {'speed-up':>9s} {'G bMAC/s':>9s}"]
    for r in report["rows"]:
        lines.append(f"{r['name']:24s} {r['shape']:34s} {r['ours_ms']:9.3f} {r['ref_ms']:9.3f} "
                     f"{r['ratio']:8.1f}x {r['gmacs']:9.0f}")
    s = report.get("startup")
    if s:
        lines.append(f"import {s['import_s']:.2f} s; first call compiles in {s['first_call_compile_s']:.1f} s; "
                     f"cached first call {s['cached_first_call_s']:.2f} s")
    return "\n".join(lines)


def to_json(report: dict) -> str:
    return json.dumps(report, indent=2)
