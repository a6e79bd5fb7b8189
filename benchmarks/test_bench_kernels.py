"""Kernel throughput against torch float32 on the same shapes and thread count (issue 8).

Run: ``pytest benchmarks/ --benchmark-only -s``. Each test times our kernel with
pytest-benchmark and records the side-by-side ratio to torch (``bench.paired``:
interleaved pairs, medians) in ``extra_info``; ``-s`` prints it. Targets (issue 8):
binary_gemm (256, 4096) x (4096, 4096) >= 8x torch.mm, batch 1 >= 30x.
"""
import numpy as np
import pytest
import torch

import bnn_toroid.kernels as K
from bnn_toroid import bench
from bnn_toroid.network import BinaryNetwork
from bnn_toroid.nn import BinaryMLP
from conftest import report


def _packed(rng, n, k):
    return K.pack_bits(rng.choice(np.array([-1, 1], np.int8), (n, k)))


@pytest.mark.parametrize("form", K.forms.runnable("gemm"))
@pytest.mark.parametrize("n", [256, 64, 8, 1], ids=["batch256", "batch64", "batch8", "batch1"])
def test_binary_gemm_4096(benchmark, threads, n, form):
    """Every GEMM form this CPU can execute (kernels/forms.py), side by side."""
    rng = np.random.default_rng(0)
    a, w = _packed(rng, n, 4096), _packed(rng, 4096, 4096)
    benchmark(lambda: K.binary_gemm(a, w, 4096, form=form))
    row = bench.gemm_case(n=n, threads=threads, form=form)
    benchmark.extra_info.update(row.as_dict())
    report(row)


def test_fused_threshold_gemm_4096(benchmark, threads):
    rng = np.random.default_rng(0)
    a, w = _packed(rng, 256, 4096), _packed(rng, 4096, 4096)
    t = rng.integers(-64, 64, 4096)
    benchmark(K.binary_gemm, a, w, 4096, t)
    ours = benchmark.stats.stats.median
    benchmark.extra_info["gmacs"] = 256 * 4096 * 4096 / ours / 1e9


def test_binary_gemm_local_energy_layer(benchmark, threads):
    """The hidden layer of the local-energy workload: 32 networks, 4096 samples, 1001 x 1001."""
    rng = np.random.default_rng(0)
    a = K.pack_bits(rng.choice(np.array([-1, 1], np.int8), (32, 4096, 1001)))
    w = K.pack_bits(rng.choice(np.array([-1, 1], np.int8), (32, 1001, 1001)))
    t = rng.integers(-30, 30, (32, 1001))
    benchmark(K.binary_gemm, a, w, 1001, t)
    benchmark.extra_info["gmacs"] = 32 * 4096 * 1001 * 1001 / benchmark.stats.stats.median / 1e9


@pytest.mark.parametrize("n,form", [(1, f) for f in K.forms.runnable("first_one")]
                         + [(n, f) for n in (64, 256) for f in K.forms.runnable("first")])
def test_pixel_dense_784x1024(benchmark, threads, n, form):
    """The MLP's real-input first layer: uint8 pixels × ±1 weights, threshold fused, in
    every form this CPU can execute (kernels/forms.py; input preparation included)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 784)).astype(np.uint8)
    w = rng.choice(np.array([-1, 1], np.int8), (1024, 784))
    benchmark(bench.pixel_form(x, w, K.pixel_thresholds(np.zeros(1024), 1024), form))
    row = bench.pixel_case(n=n, threads=threads, form=form)
    benchmark.extra_info.update(row.as_dict())
    report(row)


@pytest.mark.parametrize("form", K.forms.runnable("hidden"))
@pytest.mark.parametrize("n", [1, 64])
def test_binary_dense_1024(benchmark, threads, n, form):
    """The MLP's hidden binary layer, 1024 × 1024 with its threshold fused, as
    Harley–Seal tiles and as nibble lookups (``kernels/nibbles.py``)."""
    rng = np.random.default_rng(0)
    a, w = _packed(rng, n, 1024), _packed(rng, 1024, 1024)
    benchmark(bench.dense_form(a, w, 1024, rng.integers(-32, 33, 1024), form))
    row = bench.dense_case(n=n, threads=threads, form=form)
    benchmark.extra_info.update(row.as_dict())
    report(row)


@pytest.mark.parametrize("batch", [1, 256])
def test_mlp_predict(benchmark, threads, batch):
    torch.manual_seed(0)
    net = BinaryNetwork.from_torch(BinaryMLP([784, 1024, 1024, 10]).eval())
    x = np.random.default_rng(0).integers(0, 256, (batch, 784)).astype(np.uint8)
    benchmark(net.predict, x)
    row = bench.mlp_case(batch=batch, threads=threads)
    benchmark.extra_info.update(row.as_dict())
    report(row)


@pytest.mark.parametrize("form", K.forms.runnable("conv"))
@pytest.mark.parametrize("hw,c", [(32, 128), (16, 256), (8, 512)], ids=["32x32x128", "16x16x256", "8x8x512"])
def test_conv_3x3(benchmark, threads, hw, c, form):
    """The binary layers of the VGG-style net (batch 16) in every conv form this CPU can
    execute, against torch conv2d float32."""
    rng = np.random.default_rng(0)
    a = K.pack_bits(rng.choice(np.array([-1, 1], np.int8), (16, hw, hw, c)))
    w = K.pack_bits(rng.choice(np.array([-1, 1], np.int8), (c, 3, 3, c)))
    t = np.zeros(c, np.int64)
    benchmark(lambda: K.binary_conv2d(a, w, c, (1, 1), "same", 1, t, form=form))
    row = bench.conv_case(n=16, hw=hw, c=c, f=c, threads=threads, form=form)
    benchmark.extra_info.update(row.as_dict())
    report(row)


def test_packed_weights_are_small():
    """Issue 8: a packed network's weights take <= 1/30 of their float32 size."""
    torch.manual_seed(0)
    net = BinaryNetwork.from_torch(BinaryMLP([784, 1001, 1001, 1001, 10]).eval(), input_shape=(784,))
    m = bench.packed_sizes(net)
    print(f"\npacked {m}")
    assert m["ratio"] <= 1 / 30


def test_startup(benchmark):
    s = benchmark.pedantic(bench.startup_times, rounds=1, iterations=1)
    benchmark.extra_info.update(s)
