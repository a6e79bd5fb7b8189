"""Candidate moves scored per second by the connectivity search: incremental evaluation
(:mod:`bnn_toroid.kernels.incremental`) against full re-evaluation (one NetworkStack call,
one network per candidate), on the paper's binary MLP 784-1001-1001-1001-10 with
N = 10,000 samples (issue 8 asks for >= 50x; docs/methods.md, "Connectivity search").

Run: ``pytest benchmarks/test_bench_search.py --benchmark-only -s``. The speed-up is the
median ratio of interleaved pairs (``bnn_toroid.bench.paired``), so machine load affects
both sides alike.
"""
import sys

import numpy as np
import pytest

from bnn_toroid import bench
from bnn_toroid.network import BinaryNetwork, Dense, NetworkStack
from bnn_toroid.paths.moves import FLIP, MOVE_DTYPE, _ParamWalker, _stack
from bnn_toroid.paths.discrete_search import IncrementalEvaluator

SIZES = (784, 1001, 1001, 1001, 10)
N = 10_000
CANDIDATES = 64   # per incremental call, as a greedy step with the default candidates
FULL_BATCH = 4    # networks per NetworkStack call (each costs N · 2.8 M binary MACs)


def _net(rng, binarize):
    layers = []
    for i, (k, u) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        w = rng.choice(np.array([-1, 1], np.int8), (u, k))
        if i == len(SIZES) - 2:
            layers.append(Dense(w))
        elif i == 0 and not binarize:
            # uint8 input: h = w·x has mean 0 and std ~ 150·sqrt(784); thresholds near it
            layers.append(Dense(w, threshold=rng.normal(0, 2000, u)))
        else:
            layers.append(Dense(w, threshold=rng.integers(-30, 31, u)))
    return BinaryNetwork(layers, (SIZES[0],), binarize_input=binarize)


def _flips(rng, net, n):
    """``n`` random weight flips, uniform over all weights (what search draws)."""
    sizes = np.array([l.weights.size for l in net.layers])
    layer = rng.choice(len(sizes), n, p=sizes / sizes.sum())
    out = np.zeros(n, MOVE_DTYPE)
    out["kind"], out["layer"] = FLIP, layer
    out["index"] = [rng.integers(sizes[l]) for l in layer]
    return out


@pytest.fixture(scope="module", params=["pm1", "uint8"])
def problem(request):
    rng = np.random.default_rng(0)
    binarize = request.param == "pm1"
    net = _net(rng, binarize)
    if binarize:
        x = rng.choice(np.array([-1, 1], np.int8), (N, SIZES[0]))
    else:
        x = rng.integers(0, 256, (N, SIZES[0])).astype(np.uint8)
    y = rng.integers(0, SIZES[-1], N)
    ev = IncrementalEvaluator(net, (x, y))
    cands = _flips(rng, net, CANDIDATES)
    snaps = []
    for m in cands[:FULL_BATCH]:
        w = _ParamWalker(net)
        w.apply(m[None])
        snaps.append(w.params)
    stack = NetworkStack(net, _stack(snaps))
    # the two evaluators agree on the candidates they share
    full = np.rint(stack.errors(x, y) * N).astype(np.int64)
    assert np.array_equal(ev.evaluate(cands[:FULL_BATCH]), full)
    return dict(name=request.param, net=net, x=x, y=y, ev=ev, cands=cands, stack=stack)


def test_incremental_candidates(benchmark, threads, problem):
    ev, cands = problem["ev"], problem["cands"]
    benchmark.pedantic(ev.evaluate, args=(cands,), rounds=5, iterations=1, warmup_rounds=1)
    rate = CANDIDATES / benchmark.stats.stats.median
    benchmark.extra_info.update(evals_per_second=rate, candidates=CANDIDATES, n=N, input=problem["name"])
    print(f"\nincremental [{problem['name']}]: {rate:.0f} candidate evaluations/s", file=sys.stderr)


def test_full_candidates(benchmark, threads, problem):
    stack, x, y = problem["stack"], problem["x"], problem["y"]
    benchmark.pedantic(stack.errors, args=(x, y), rounds=2, iterations=1, warmup_rounds=1)
    rate = FULL_BATCH / benchmark.stats.stats.median
    benchmark.extra_info.update(evals_per_second=rate, networks_per_call=FULL_BATCH, n=N, input=problem["name"])
    print(f"\nfull NetworkStack [{problem['name']}]: {rate:.2f} candidate evaluations/s", file=sys.stderr)


def test_speedup(benchmark, threads, problem):
    """Interleaved pairs: per-candidate time of the full evaluation over the incremental's."""
    ev, cands, stack, x, y = problem["ev"], problem["cands"], problem["stack"], problem["x"], problem["y"]
    t_inc, t_full, _ = bench.paired(lambda: ev.evaluate(cands), lambda: stack.errors(x, y),
                                    repeats=3, min_time=0.0)
    ratio = (t_full / FULL_BATCH) / (t_inc / CANDIDATES)
    benchmark.pedantic(ev.evaluate, args=(cands,), rounds=1, iterations=1)
    benchmark.extra_info.update(speedup=ratio, incremental_evals_per_second=CANDIDATES / t_inc,
                                full_evals_per_second=FULL_BATCH / t_full, threads=threads,
                                input=problem["name"])
    print(f"\nspeed-up [{problem['name']}, {threads} threads]: incremental {CANDIDATES / t_inc:.0f} "
          f"vs full {FULL_BATCH / t_full:.2f} candidate evaluations/s = {ratio:.0f}x", file=sys.stderr)
