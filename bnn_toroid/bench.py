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
    form: str = ""        # the kernel form timed (kernels/forms.py); "" where none applies

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


def paired(ours, ref, repeats: int = 15, min_time: float = 0.2, warmup: bool = True,
           settle: float = 0.02):
    """Alternate ``ours()`` and ``ref()``; return (median ours s, median ref s, median ratio).

    Each side is first called once (warm-up, compilation; skipped with ``warmup=False``
    when the caller has just run both). A round repeats a call until it has run for
    ``min_time / repeats``, so short kernels are timed over many calls; ``min_time=0``
    times single calls (long workloads). ``settle`` seconds of sleep (not timed) before
    each block let the other engine's worker threads stop spin-waiting: torch's and
    Numba's OpenMP workers and onnxruntime's spin after a run and, on a 2-vCPU machine,
    take a vCPU from the next contender (measured: our batch-1 MLP 0.095 → 0.145 ms
    right after onnxruntime). A block's time is the mean of its calls; see
    :func:`paired_stats` for per-call medians too.
    """
    st = paired_stats(ours, ref, repeats, min_time, warmup, settle)
    return st["ours_s"], st["ref_s"], st["ratio"]


def paired_stats(ours, ref, repeats: int = 15, min_time: float = 0.2, warmup: bool = True,
                 settle: float = 0.02) -> dict:
    """:func:`paired`, with two statistics per block: the mean of its calls (``ours_s``,
    ``ref_s``, ``ratio``: what a caller waits for on average, stalls included) and the
    median of its calls (``*_call_median*``: the typical call, without the calls that
    waited for a vCPU held by another process or a spinning thread pool). Both are
    medians over the rounds, and the ratios are medians of per-round ratios."""
    if warmup:
        ours(), ref()
    inner = 1
    if min_time > 0:
        reps = []
        for f in (ours, ref):
            t0 = time.perf_counter()
            f()
            reps.append(max(1, int((min_time / repeats) / max(time.perf_counter() - t0, 1e-7))))
        inner = max(reps)
    means = {"ours": [], "ref": []}
    medians = {"ours": [], "ref": []}
    calls = np.empty(inner + 1)
    clock = time.perf_counter
    for _ in range(repeats):
        for side, f in (("ours", ours), ("ref", ref)):
            if settle:
                time.sleep(settle)
            calls[0] = clock()
            for i in range(1, inner + 1):
                f()
                calls[i] = clock()
            d = np.diff(calls)
            means[side].append(float(d.mean()))
            medians[side].append(float(np.median(d)))
    mo, mr = np.array(means["ours"]), np.array(means["ref"])
    do, dr = np.array(medians["ours"]), np.array(medians["ref"])
    return {"ours_s": float(np.median(mo)), "ref_s": float(np.median(mr)),
            "ratio": float(np.median(mr / mo)),
            "ours_call_median_s": float(np.median(do)), "ref_call_median_s": float(np.median(dr)),
            "call_median_ratio": float(np.median(dr / do)), "calls_per_block": inner}


def gemm_case(n=256, k=4096, m=4096, threads=2, repeats=15, seed=0, form=None):
    """``binary_gemm`` (n, k) × (k, m) in ``form`` (default: this CPU's) against
    ``torch.mm`` float32 on the same shape."""
    import torch
    form = K.forms.chosen("gemm", form).name
    threads = set_threads(threads)
    rng = np.random.default_rng(seed)
    a = K.pack_bits(rng.choice(np.array([-1, 1], np.int8), (n, k)))
    w = K.pack_bits(rng.choice(np.array([-1, 1], np.int8), (m, k)))
    ta, tb = torch.randn(n, k), torch.randn(k, m)
    with torch.inference_mode():
        o, r, ratio = paired(lambda: K.binary_gemm(a, w, k, form=form), lambda: torch.mm(ta, tb), repeats)
    return Row("binary_gemm", f"({n},{k})x({k},{m})", threads, o * 1e3, r * 1e3, ratio,
               n * k * m / o / 1e9, form=form)


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
    chain = net._as_stack()._chain
    form = "" if chain is None or not chain.ok else \
        f"first {chain.first_forms[1] if batch == 1 else chain.first_forms[0]}, hidden {chain.hidden}"
    return Row("BinaryNetwork.predict", f"MLP {'-'.join(map(str, sizes))}, batch {batch}",
               threads, o * 1e3, r * 1e3, ratio, macs / o / 1e9, "same model in torch float32", form)


def pixel_form(x, w, t, form):
    """A call of the pixel product in ``form`` (a name of the "first" workload,
    kernels/forms.py: "bytes", "signs", "lookup", "vnni") on uint8 ``x`` (N, K), ±1 ``w``
    (M, K) and the thresholds ``t`` of ``pixel_thresholds``; the weights are laid out
    once, the input's preparation (pixel pairs for the forms that read them) is part of
    the call."""
    m = w.shape[0]
    weights = K.pixel_stack_weights(form, w[None])
    T = t[None]
    if form in K.stacks.PAIR_FORMS:
        return lambda: K.pixel_stack_t(form, K.pixel_pairs(x), weights, m, T)
    return lambda: K.pixel_stack_t(form, x, weights, m, T)


def pixel_case(n=64, k=784, m=1024, threads=2, repeats=15, seed=0, form="bytes"):
    """The pixel product (uint8 pixels × ±1 weights, threshold fused) against ``torch.mm``
    float32 on the same shape: the real-input first layer of an MLP on MNIST-sized
    images, in one of the forms of :mod:`bnn_toroid.kernels.pixels`: "bytes" (int8
    panels, ``vpmaddubsw``), "signs" (sign bits unpacked in registers, one thread),
    "lookup" (tables of four pixels) or "vnni" (``vpdpbusd``). The input's preparation
    (pixel pairs; the lookup form builds its tables inside) is timed with the product. The MAC rate is of 8-bit multiply-adds, not binary ones."""
    import torch
    threads = set_threads(threads)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, k)).astype(np.uint8)
    w = rng.choice(np.array([-1, 1], np.int8), (m, k))
    t = K.pixel_thresholds(rng.normal(0, 128 * np.sqrt(k), m), m)
    ours = pixel_form(x, w, t, form)
    tx, tw = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(w.T, dtype=torch.float32)
    with torch.inference_mode():
        o, r, ratio = paired(ours, lambda: torch.mm(tx, tw), repeats)
    return Row("pixel_dense", f"uint8 ({n},{k})x({k},{m})", threads, o * 1e3, r * 1e3, ratio,
               n * k * m / o / 1e9, "torch.mm float32 (8-bit MACs)", form)


def dense_form(a, w, k, t, form):
    """A call of a binary dense layer in ``form`` ("tiles": Harley–Seal tiles made once,
    :func:`bnn_toroid.kernels.gemm.tiled_dense`; "nibbles", "nibbles_zmm": nibble lookups,
    :mod:`bnn_toroid.kernels.nibbles`) on packed rows ``a`` (N, Kw) and ``w`` (M, Kw) of
    ``k`` bits ("vpopcnt_tiles": the same tiles, :func:`bnn_toroid.kernels.gemm.vpt_rows`), with the int64 thresholds ``t`` (M,) fused; the weights are laid out once."""
    from .kernels import chain, gemm, nibbles
    n, m = a.shape[0], w.shape[0]
    if form in ("tiles", "vpopcnt_tiles"):
        kernel = gemm.tiled_dense if form == "tiles" else chain._tiled_vpt
        tiles = gemm.dense_tiles(w).reshape(-1)
        tt = np.ascontiguousarray(t, np.int64).reshape(1, m)
        no_h = np.empty((0, 0, 0), np.int32)

        def call():
            bits = np.empty((1, n, -(-m // 64)), np.uint64)
            kernel(n * m * a.shape[1], a, tiles, 0, m, k, tt, no_h, bits)
            return bits
        return call
    if form in nibbles.FORMS:
        pats, tw = nibbles.nibble_weights(w, k), K.pixel_thresholds(t, m)
        return lambda: nibbles.nibble_dense_t(a, pats, m, k, tw, form)
    raise ValueError(f"dense_form: form must be 'tiles', 'vpopcnt_tiles' or one of "
                     f"{', '.join(nibbles.FORMS)}, "
                     f"got {form!r}")


def dense_case(n=64, k=1024, m=1024, threads=2, repeats=15, seed=0, form="nibbles"):
    """A binary dense layer with its threshold fused (the MLP's 1024 × 1024 hidden layer)
    in one of the forms of :func:`dense_form`, against ``torch.mm`` float32 on the same
    shape."""
    import torch
    threads = set_threads(threads)
    rng = np.random.default_rng(seed)
    x, w = (rng.choice(np.array([-1, 1], np.int8), s) for s in ((n, k), (m, k)))
    a, wp = K.pack_bits(x), K.pack_bits(w)
    t = rng.integers(-int(np.sqrt(k)), int(np.sqrt(k)) + 1, m)
    ours = dense_form(a, wp, k, t, form)
    tx, tw = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(w.T, dtype=torch.float32)
    with torch.inference_mode():
        o, r, ratio = paired(ours, lambda: torch.mm(tx, tw), repeats)
    return Row("binary dense", f"({n},{k})x({k},{m})", threads, o * 1e3, r * 1e3, ratio,
               n * k * m / o / 1e9, form=form)


def conv_case(n=16, hw=32, c=128, f=128, threads=2, repeats=15, seed=0, form=None):
    """``binary_conv2d`` (3×3, ``same``, pad 1, fused threshold) in ``form`` (default:
    this CPU's) against ``torch`` float32 ``conv2d`` (channels-last) on the same shape."""
    import torch
    form = K.forms.chosen("conv", form).name
    threads = set_threads(threads)
    rng = np.random.default_rng(seed)
    a = K.pack_bits(rng.choice(np.array([-1, 1], np.int8), (n, hw, hw, c)))
    w = K.pack_bits(rng.choice(np.array([-1, 1], np.int8), (f, 3, 3, c)))
    t = np.zeros(f, np.int64)
    tx = torch.randn(n, c, hw, hw).contiguous(memory_format=torch.channels_last)
    tw = torch.randn(f, c, 3, 3).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        o, r, ratio = paired(lambda: K.binary_conv2d(a, w, c, (1, 1), "same", 1, t, form=form),
                             lambda: torch.nn.functional.conv2d(tx, tw, padding=1), repeats)
    macs = n * hw * hw * f * 9 * c
    return Row("binary_conv2d", f"{n}x{hw}x{hw}x{c} * 3x3x{f}", threads, o * 1e3, r * 1e3, ratio,
               macs / o / 1e9, form=form)


def energy_setup(sizes=(784, 1001, 1001, 1001, 10), n=10000, networks=100, seed=0, eps=None):
    """A random binary MLP, ``n`` random uint8 images with labels, and ``networks``
    perturbed copies (``perturbed_stack``; flip fractions cycle through ``eps``, by
    default the binary grid of every front end, ``analysis.default_grid("binary")``: 0 to 0.1)."""
    from .analysis import default_grid
    eps = default_grid("binary") if eps is None else eps
    import torch
    from .landscape.binary import perturbed_stack
    from .network import BinaryNetwork
    from .nn import BinaryMLP
    torch.manual_seed(seed)
    net = BinaryNetwork.from_torch(BinaryMLP(list(sizes)).eval())
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, sizes[0])).astype(np.uint8)
    y = rng.integers(0, sizes[-1], n)
    counts = np.rint(np.resize(np.asarray(eps), networks) * net.n_weights).astype(np.int64)
    stack = perturbed_stack(net, counts, rng)
    return net, x, y, stack


def torch_stack_errors(stack, x, y, net_chunk=10, sample_chunk=10000):
    """The errors of every network of ``stack``, computed by torch float32 the plain way:
    ±1 float weights stacked per network, ``matmul``/``bmm`` per layer, ``h >= T`` as
    ±1 floats (exact: every sum is an integer below 2**24). Returns a function."""
    import torch
    from .network.layers import Dense
    net = stack.template
    if not all(isinstance(l, Dense) for l in net.layers) or net.binarize_input:
        raise ValueError("torch_stack_errors: dense networks on real input only")
    Ws, Ts = [], []
    for i, (layer, p) in enumerate(zip(net.layers, stack.params)):
        w = p["w"]
        if w.dtype == np.uint64:
            w = K.unpack_bits(w, layer.weights.shape[1])
        Ws.append(torch.as_tensor(w.astype(np.float32)).transpose(1, 2).contiguous())  # (S, in, out)
        if "T" in p:
            Ts.append(torch.as_tensor(p["T"].astype(np.float32))[:, None, :])
    scale = torch.as_tensor(stack.params[-1]["scale"].astype(np.float32))[:, None, :]
    bias = torch.as_tensor(stack.params[-1]["bias"].astype(np.float32))[:, None, :]
    tx = torch.as_tensor(x.reshape(len(x), -1).astype(np.float32))
    ty = torch.as_tensor(np.asarray(y))
    one = torch.tensor(1.0)

    def run():
        wrong = torch.zeros(stack.size, dtype=torch.int64)
        with torch.inference_mode():
            for s0 in range(0, stack.size, net_chunk):
                s1 = min(s0 + net_chunk, stack.size)
                for n0 in range(0, len(tx), sample_chunk):
                    h = torch.matmul(tx[n0:n0 + sample_chunk], Ws[0][s0:s1])
                    for li in range(1, len(Ws)):
                        a = torch.where(h >= Ts[li - 1][s0:s1], one, -one)
                        h = torch.bmm(a, Ws[li][s0:s1])
                    logits = h * scale[s0:s1] + bias[s0:s1]
                    wrong[s0:s1] += (logits.argmax(2) != ty[None, n0:n0 + sample_chunk]).sum(1)
        return wrong.numpy() / len(tx)
    return run


def energy_case(n=10000, networks=100, threads=2, repeats=3, seed=0):
    """Local-energy workload: errors of ``networks`` perturbed binary MLPs
    784-1001-1001-1001-10 on ``n`` samples, ``NetworkStack.errors`` against the same
    computation in torch float32 (:func:`torch_stack_errors`). The errors must agree."""
    threads = set_threads(threads)
    net, x, y, stack = energy_setup(n=n, networks=networks, seed=seed)
    ref = torch_stack_errors(stack, x, y)
    ours = lambda: stack.errors(x, y)  # noqa: E731
    e1, e2 = ours(), ref()
    if not np.array_equal(e1, e2):
        raise AssertionError(f"energy_case: errors differ: max |diff| {np.abs(e1 - e2).max()}")
    o, r, ratio = paired(ours, ref, repeats, min_time=0.0, warmup=False)
    macs = networks * n * sum(a * b for a, b in zip((784, 1001, 1001, 1001), (1001, 1001, 1001, 10)))
    return Row("NetworkStack.errors", f"{networks} MLPs 784-1001x3-10, {n} samples", threads,
               o * 1e3, r * 1e3, ratio, macs / o / 1e9, "torch float32 matmul/bmm")


def packed_sizes(net) -> dict:
    """Bytes of the packed network's weights (what is stored and what the binary kernels
    read) against float32 weights of the same shapes. A first layer on real input is
    stored packed too, but evaluated on an unpacked copy kept while the network is in
    use: ``first_layer_pixel_bytes`` (int8 panels, for uint8 input) and
    ``first_layer_float_bytes`` (float32, for other input)."""
    params = net.packed_params()
    packed = sum(p["w"].nbytes for p in params if "w" in p)
    f32 = 4 * net.n_weights
    first = 0 if net.binarize_input else 4 * net.layers[0].weights.size
    pixel = 0
    if first:  # the pixel kernel's int8 panels of the weights (a filter flattened)
        w = net.layers[0].weights
        pixel = K.pixel_weights(w.reshape(w.shape[0], -1), check=False).nbytes
    return {"float32_bytes": f32, "packed_bytes": packed, "ratio": packed / f32,
            "first_layer_float_bytes": first, "first_layer_pixel_bytes": pixel}


def peak_rss(case: str, **kw) -> dict:
    """Run ``bench.<case>(**kw)`` (both contenders) in a fresh process; return its row and
    the process's peak resident set size (``ru_maxrss``) in MB, and the RSS after imports."""
    code = ("import json, resource, sys; from bnn_toroid import bench; "
            "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
            f"row = bench.{case}(**json.loads(sys.argv[1])); "
            "print(json.dumps({'row': row.as_dict(), 'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "
            "'rss_after_import_mb': base / 1024}))")
    res = subprocess.run([sys.executable, "-c", code, json.dumps(kw)], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


MEMORY_CASES = {
    # name: (setup, statement) run in a fresh process; peak RSS reported per side
    "gemm 256x4096x4096 ours": (
        "import numpy as np, bnn_toroid.kernels as K; r = np.random.default_rng(0); "
        "a = K.pack_bits(r.choice(np.array([-1, 1], np.int8), (256, 4096))); "
        "w = K.pack_bits(r.choice(np.array([-1, 1], np.int8), (4096, 4096)))",
        "K.binary_gemm(a, w, 4096)"),
    "gemm 256x4096x4096 torch": (
        "import torch; a = torch.randn(256, 4096); b = torch.randn(4096, 4096)", "torch.mm(a, b)"),
    "MLP predict batch 256 ours": (
        "import numpy as np, torch; from bnn_toroid.network import BinaryNetwork; "
        "from bnn_toroid.nn import BinaryMLP; torch.manual_seed(0); "
        "net = BinaryNetwork.from_torch(BinaryMLP([784, 1024, 1024, 10]).eval()); "
        "x = np.random.default_rng(0).integers(0, 256, (256, 784)).astype(np.uint8)",
        "net.predict(x)"),
    "VGG predict batch 64 ours": (
        "import numpy as np; from bnn_toroid import bench; net = bench.vgg_net(); "
        "x = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3)).astype(np.uint8)",
        "net.predict(x)"),
    "local energy 100 nets x 10000 ours": (
        "from bnn_toroid import bench; net, x, y, stack = bench.energy_setup()", "stack.errors(x, y)"),
    "local energy 100 nets x 10000 torch": (
        "from bnn_toroid import bench; net, x, y, stack = bench.energy_setup(); "
        "f = bench.torch_stack_errors(stack, x, y)", "f()"),
}


def memory_report(cases=None, threads: int = 2) -> dict:
    """Peak RSS (MB) of each of :data:`MEMORY_CASES`, each in a fresh process: after its
    setup, and after running its statement (the increase is the workload's own)."""
    out = {}
    for name in cases or MEMORY_CASES:
        setup, stmt = MEMORY_CASES[name]
        code = (f"import resource; from bnn_toroid import bench; bench.set_threads({threads}); "
                f"{setup}; r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; {stmt}; "
                "r1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; print(r0 / 1024, r1 / 1024)")
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        r0, r1 = (float(v) for v in res.stdout.split()[-2:])
        out[name] = {"after_setup_mb": r0, "peak_mb": r1, "workload_mb": r1 - r0}
    return out


def vgg_net(seed=0):
    """The VGG-style network of the peer benchmark, random ±1 weights and thresholds:
    32×32×3 real input → conv 128 → [128 + pool, 256, 256 + pool, 512, 512 + pool] →
    dense 1024 → 10; 3×3 kernels, ``same`` padding, pad value 1."""
    from .network import BinaryNetwork
    from .network.layers import Conv2d, Dense, MaxPool2d
    rng = np.random.default_rng(seed)

    def pm1(*shape):
        return rng.choice(np.array([-1, 1], np.int8), shape)
    layers = [Conv2d(pm1(128, 3, 3, 3), rng.normal(0, 400, 128), padding="same", pad_value=1.0)]
    c, hw = 128, 32
    for f, pool in ((128, True), (256, False), (256, True), (512, False), (512, True)):
        layers.append(Conv2d(pm1(f, 3, 3, c), rng.integers(-30, 30, f), padding="same", pad_value=1.0))
        if pool:
            layers.append(MaxPool2d(2))
            hw //= 2
        c = f
    layers.append(Dense(pm1(1024, hw * hw * c), rng.integers(-60, 60, 1024)))
    layers.append(Dense(pm1(10, 1024)))
    return BinaryNetwork(layers, (32, 32, 3), "NHWC")


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


def run(quick: bool = False, threads: int = 2, all_forms: bool = False) -> dict:
    """The kernel throughput table of ``bnn-toroid bench``: each workload in the form this
    CPU runs (kernels/forms.py), or with ``all_forms`` in every form it can execute,
    row after row in one process, so the winner on a new CPU is plain to see."""
    reps = 5 if quick else 15
    load = os.getloadavg()
    chosen = K.forms.report()

    def each(workload):
        return K.forms.runnable(workload) if all_forms else [chosen["forms"][workload]]

    rows = [gemm_case(threads=threads, repeats=reps, form=f) for f in each("gemm")]
    rows += [gemm_case(n=1, threads=threads, repeats=reps, form=f) for f in each("gemm")]
    rows += [pixel_case(n=1, threads=threads, repeats=reps, form=f) for f in each("first_one")]
    rows += [pixel_case(n=64, threads=threads, repeats=reps, form=f) for f in each("first")]
    rows += [dense_case(n=64, threads=threads, repeats=reps, form=f) for f in each("hidden")]
    rows += [conv_case(threads=threads, repeats=reps, form=f) for f in each("conv")]
    rows += [mlp_case(batch=1, threads=threads, repeats=reps),
             mlp_case(batch=256, threads=threads, repeats=reps),
             energy_case(n=2000 if quick else 10000, networks=20 if quick else 100,
                         threads=threads, repeats=1 if quick else 2)]
    from .network import BinaryNetwork
    from .nn import BinaryMLP
    mem = packed_sizes(BinaryNetwork.from_torch(BinaryMLP([784, 1001, 1001, 1001, 10]).eval()))
    return {"rows": [r.as_dict() for r in rows], "threads": threads,
            "startup": startup_times(), "cpu": _cpu_name(), "cpu_model": _cpu_model(),
            "cpu_class": chosen["cpu_class"], "features": chosen["features"],
            "forms": chosen["forms"], "all_forms": all_forms, "memory": mem,
            "loadavg": [load, os.getloadavg()]}


def _cpu_name() -> str:
    try:
        import llvmlite.binding as ll
        return ll.get_host_cpu_name()
    except Exception:  # pragma: no cover - informational only
        return "unknown"


def _cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo``), or "unknown"."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def format_table(report: dict) -> str:
    forms = report.get("forms", {})
    lines = [f"CPU {report.get('cpu_model', '')} ({report['cpu']}), {report['threads']} threads "
             "(numba = torch)",
             f"class {report.get('cpu_class', '?')}, features used: "
             f"{', '.join(report.get('features', [])) or 'none'}; forms chosen: "
             + ", ".join(f"{w} {n}" for w, n in sorted(forms.items())),
             f"{'kernel':22s} {'form':26s} {'shape':34s} {'ours ms':>9s} {'ref ms':>9s} "
             f"{'speed-up':>9s} {'G bMAC/s':>9s}"]
    for r in report["rows"]:
        lines.append(f"{r['name']:22s} {r.get('form', ''):26s} {r['shape']:34s} {r['ours_ms']:9.3f} "
                     f"{r['ref_ms']:9.3f} {r['ratio']:8.1f}x {r['gmacs']:9.0f}")
    m = report.get("memory")
    if m:
        lines.append(f"packed MLP 784-1001x3-10: {m['packed_bytes'] / 1e6:.2f} MB vs float32 "
                     f"{m['float32_bytes'] / 1e6:.2f} MB (1/{1 / m['ratio']:.1f}); while evaluating, the real-input "
                     f"first layer adds {m['first_layer_pixel_bytes'] / 1e6:.2f} MB (int8, pixel input) "
                     f"or {m['first_layer_float_bytes'] / 1e6:.2f} MB (float32, other input)")
    if report.get("loadavg"):
        lines.append(f"load average (1, 5, 15 min) before {tuple(round(v, 2) for v in report['loadavg'][0])}, "
                     f"after {tuple(round(v, 2) for v in report['loadavg'][1])}")
    s = report.get("startup")
    if s:
        lines.append(f"import {s['import_s']:.2f} s; first call compiles in {s['first_call_compile_s']:.1f} s; "
                     f"cached first call {s['cached_first_call_s']:.2f} s")
    return "\n".join(lines)


def to_json(report: dict) -> str:
    return json.dumps(report, indent=2)
