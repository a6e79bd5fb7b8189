"""Local-energy workload against torch float32 (issue 8).

A binary MLP 784-1001-1001-1001-10, 10,000 samples, 100 perturbed networks
(``perturbed_stack`` + ``NetworkStack.errors``), against the same computation in torch
float32 (100 float models, ``matmul``/``bmm`` over stacked ±1 weights): see
``bench.energy_case``. Target: >= 8x. The stack computes the real-input first layer once
for a template (the networks' bitwise majority) and adds each network's flips as a
sparse correction
(``network/first.py``). Also times the user-facing ``local_energy``.
"""
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

