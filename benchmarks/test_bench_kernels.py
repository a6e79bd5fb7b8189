"""Kernel throughput against torch float32 on the same shapes and thread count (issue 2).

Run: ``pytest benchmarks/ --benchmark-only -s``. Each test times our kernel with
pytest-benchmark and records the side-by-side ratio to torch in ``extra_info``.
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


@pytest.mark.parametrize("n", [256, 1], ids=["batch256", "batch1"])
def test_binary_gemm_4096(benchmark, threads, n):
    rng = np.random.default_rng(0)
    a, w = _packed(rng, n, 4096), _packed(rng, 4096, 4096)
    benchmark(K.binary_gemm, a, w, 4096)
    row = bench.gemm_case(n=n, threads=threads)
    benchmark.extra_info.update(row.as_dict())
    report(row)


def test_fused_threshold_gemm_4096(benchmark, threads):
    rng = np.random.default_rng(0)
    a, w = _packed(rng, 256, 4096), _packed(rng, 4096, 4096)
    t = rng.integers(-64, 64, 4096)
    benchmark(K.binary_gemm, a, w, 4096, t)
    ours = benchmark.stats.stats.median
    benchmark.extra_info["gmacs"] = 256 * 4096 * 4096 / ours / 1e9


@pytest.mark.parametrize("batch", [1, 256])
def test_mlp_predict(benchmark, threads, batch):
    torch.manual_seed(0)
    net = BinaryNetwork.from_torch(BinaryMLP([784, 1024, 1024, 10]).eval())
    x = np.random.default_rng(0).integers(0, 256, (batch, 784)).astype(np.uint8)
    benchmark(net.predict, x)
    row = bench.mlp_case(batch=batch, threads=threads)
    benchmark.extra_info.update(row.as_dict())
    report(row)


def test_conv_3x3_128(benchmark, threads):
    rng = np.random.default_rng(0)
    a = K.pack_bits(rng.choice(np.array([-1, 1], np.int8), (16, 32, 32, 128)))
    w = K.pack_bits(rng.choice(np.array([-1, 1], np.int8), (128, 3, 3, 128)))
    t = np.zeros(128, np.int64)
    benchmark(K.binary_conv2d, a, w, 128, (1, 1), "same", 1, t)
    macs = 16 * 32 * 32 * 128 * 9 * 128
    benchmark.extra_info["gmacs"] = macs / benchmark.stats.stats.median / 1e9


def test_startup(benchmark):
    s = benchmark.pedantic(bench.startup_times, rounds=1, iterations=1)
    benchmark.extra_info.update(s)
