"""Local-energy workload against torch float32 (issue 8).

A binary MLP 784-1001-1001-1001-10, 10,000 samples, 100 perturbed networks
(``perturbed_stack`` + ``NetworkStack.errors``), against the same computation in torch
float32 (100 float models, ``matmul``/``bmm`` over stacked ±1 weights): see
``bench.energy_case``. Target: >= 8x. Also times the user-facing ``local_energy`` and a
prototype of the proposed shared first layer (``bench_proto_shared_first_layer``), which
must give identical errors.
"""
import numpy as np
import pytest

from bnn_toroid import bench
from conftest import report

N = 10000
NETWORKS = 100


@pytest.fixture(scope="module")
def setup():
    return bench.energy_setup(n=N, networks=NETWORKS)


def test_stack_errors_vs_torch(benchmark, threads, setup):
    net, x, y, stack = setup
    benchmark.pedantic(stack.errors, args=(x, y), rounds=3, iterations=1)
    row = bench.energy_case(n=N, networks=NETWORKS, threads=threads)
    benchmark.extra_info.update(row.as_dict())
    report(row)


def test_local_energy_end_to_end(benchmark, threads, setup):
    from bnn_toroid.landscape.binary import local_energy
    net, x, y, _ = setup
    eps = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
    benchmark.pedantic(local_energy, args=(net, (x, y)), kwargs=dict(eps=eps, samples=10),
                       rounds=1, iterations=1)


def test_proposed_shared_first_layer(benchmark, threads, setup):
    """Prototype of the proposal in docs/performance.md: x @ W0 computed once, each
    perturbed network's flips applied as a sparse correction. Same errors, exactly."""
    net, x, y, stack = setup
    proto = bench.shared_first_layer_errors(stack, x, y)
    assert np.array_equal(proto(), stack.errors(x, y))
    benchmark.pedantic(proto, rounds=3, iterations=1)
    o, r, ratio = bench.paired(proto, bench.torch_stack_errors(stack, x, y), 3, min_time=0.0, warmup=False)
    benchmark.extra_info.update({"ours_ms": o * 1e3, "torch_ms": r * 1e3, "ratio": ratio})
    print(f"\nshared first layer prototype: {o * 1e3:.0f} ms vs torch {r * 1e3:.0f} ms, ratio {ratio:.2f}x")
