"""The higher-level algorithms against their naive twins (tests/naive.py): alignment
against brute force over the whole symmetry orbit, local energy against re-evaluating
every perturbed copy, barriers against evaluating every network along the path from
scratch. Exact equality for binary networks (integer arithmetic), a float tolerance for
real-valued ones."""
import numpy as np
import pytest
import torch

import bnn_toroid as bt
from bnn_toroid import paths
from bnn_toroid.nn import MLP
from bnn_toroid.symmetry import binary as sb
from bnn_toroid.symmetry import continuous as sc

import naive
from netgen import random_mlp, shuffle


def _data(rng, n_in, classes, n=40):
    return rng.normal(size=(n, n_in)), rng.integers(0, classes, n)


# ------------------------------------------------------------------- the twins themselves

def test_naive_binary_forward_is_the_network():
    rng = np.random.default_rng(0)
    net = random_mlp(rng, [9, 5, 4, 3])
    x, y = _data(rng, 9, 3)
    np.testing.assert_array_equal(naive.logits(naive.params(net), x), net.predict(x))
    assert naive.error(naive.params(net), x, y) == net.error(x, y)


def test_every_member_of_the_naive_binary_orbit_computes_the_same_function():
    rng = np.random.default_rng(1)
    net = random_mlp(rng, [6, 3, 2, 2])  # (3!·2³)·(2!·2²) = 384 members
    x, _ = _data(rng, 6, 2, n=64)
    want = net.predict(x)
    orbit = list(naive.binary_orbit(naive.params(net)))
    assert len(orbit) == 384
    for ps in orbit:
        np.testing.assert_array_equal(naive.logits(ps, x), want)
        np.testing.assert_array_equal(naive.build(net, ps).predict(x), want)


def test_every_member_of_the_naive_real_orbit_computes_the_same_function():
    torch.manual_seed(0)
    m = MLP([5, 4, 3, 2]).double().eval()
    x = torch.randn(30, 5, dtype=torch.float64)
    orbit = list(naive.real_orbit(m))
    assert len(orbit) == 4 * 3 * 2 * 3 * 2
    with torch.no_grad():
        for _, p in orbit:
            torch.testing.assert_close(p(x), m(x), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------- alignment

@pytest.mark.parametrize("seed", range(6))
def test_binary_weight_matching_of_one_hidden_layer_is_the_brute_force_optimum(seed):
    # with one hidden layer, method="weights" maximises |in + out overlap| over the whole
    # orbit, which is N − 2·Hamming: the exact optimum
    rng = np.random.default_rng(seed)
    a, b = random_mlp(rng, [7, 5, 3]), random_mlp(rng, [7, 5, 3])
    best, _ = naive.best_binary_alignment(b, a)
    fast = bt.distance(a, b, kind="hamming_aligned", method="weights")
    assert fast == best
    assert fast == bt.distance(a, sb.align(b, a, method="weights"))


@pytest.mark.parametrize("seed", range(6))
def test_binary_overlap_alignment_of_one_hidden_layer_maximises_the_incoming_overlap(seed):
    # the paper's criterion: max over the orbit of Σ_i |w^a_i · w^b_π(i)|, by brute force
    rng = np.random.default_rng(seed)
    a, b = random_mlp(rng, [7, 5, 3]), random_mlp(rng, [7, 5, 3])
    wa = naive.params(a)[0]["w"]
    best = max(int((wa * ps[0]["w"]).sum()) for ps in naive.binary_orbit(naive.params(b)))
    al = naive.params(sb.align(b, a, method="overlap"))
    assert int((wa * al[0]["w"]).sum()) == best


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("method", ["overlap", "weights"])
def test_binary_alignment_stays_in_the_orbit_and_never_beats_brute_force(seed, method):
    rng = np.random.default_rng(10 + seed)
    a, b = random_mlp(rng, [6, 3, 3, 2]), random_mlp(rng, [6, 3, 3, 2])
    orbit = list(naive.binary_orbit(naive.params(b)))
    al = naive.params(sb.align(b, a, method=method))
    assert any(all(np.array_equal(p["w"], q["w"]) for p, q in zip(al, ps)) for ps in orbit)
    best, _ = naive.best_binary_alignment(b, a)
    assert bt.distance(a, b, kind="hamming_aligned", method=method) >= best


@pytest.mark.parametrize("seed", range(8))
def test_a_shuffled_binary_copy_aligns_to_the_brute_force_zero(seed):
    rng = np.random.default_rng(20 + seed)
    a = random_mlp(rng, [8, 3, 3, 2], constant=False)
    b = shuffle(rng, a)
    best, _ = naive.best_binary_alignment(b, a)
    assert best == 0.0
    # every hidden unit depends on its input, so the fast alignment finds the copy too
    # (exact twins included: symmetry/binary.py tries their arrangements)
    assert bt.distance(a, b, kind="hamming_aligned") == 0.0
    assert bt.distance(a, b, kind="hamming_aligned", method="weights") == 0.0


def _real_pair(seed, sizes):
    torch.manual_seed(seed)
    return MLP(sizes).double().eval(), MLP(sizes).double().eval()


@pytest.mark.parametrize("seed", range(5))
def test_real_weight_matching_of_one_hidden_layer_is_the_brute_force_optimum(seed):
    # on the toroid permutations preserve norms, so max ⟨Θ_a, PΘ_b⟩ = min ‖Θ_a − PΘ_b‖
    a, b = _real_pair(seed, [6, 5, 3])
    best, _ = naive.best_real_alignment(bt.normalize(b), bt.normalize(a))
    fast = bt.distance(a, b, kind="normalized_aligned", method="weights")
    assert fast == pytest.approx(best, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("method", ["cosine", "weights"])
def test_real_alignment_never_beats_brute_force(seed, method):
    a, b = _real_pair(10 + seed, [5, 4, 3, 2])
    best, _ = naive.best_real_alignment(bt.normalize(b), bt.normalize(a))
    fast = bt.distance(a, b, kind="normalized_aligned", method=method)
    assert fast >= best - 1e-12
    # the aligned network is a member of the orbit: its permutations, applied naively
    perms = sc.find_permutations(b, a, method=method)
    nb = naive.permute_real(bt.normalize(b), perms)
    assert naive.euclidean(bt.normalize(a), nb) == pytest.approx(fast, rel=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_a_permuted_and_rescaled_real_copy_aligns_to_the_brute_force_zero(seed):
    a, _ = _real_pair(20 + seed, [5, 4, 3, 2])
    g = np.random.default_rng(seed)
    b = sc.rescale(sc.permute(a, [g.permutation(4), g.permutation(3)]),
                   [g.uniform(0.3, 3, 4), g.uniform(0.3, 3, 3)])
    best, perms = naive.best_real_alignment(bt.normalize(b), bt.normalize(a))
    assert best == pytest.approx(0, abs=1e-12)
    assert bt.distance(a, b, kind="normalized_aligned") == pytest.approx(0, abs=1e-12)
    for p, q in zip(sc.find_permutations(b, a), perms):
        np.testing.assert_array_equal(p, q)


# ---------------------------------------------------------------------- local energy

@pytest.mark.parametrize("seed", range(3))
def test_binary_local_energy_is_the_naive_re_evaluation(seed):
    rng = np.random.default_rng(seed)
    net = random_mlp(rng, [10, 6, 5, 3])
    data = _data(rng, 10, 3, n=50)
    eps = [0.0, 0.02, 0.1, 0.5]
    # networks_per_call=3 splits the draws over several batched calls
    le = bt.local_energy(net, data, eps=eps, samples=4, seed=seed, networks_per_call=3)
    base, errors, mean, std = naive.binary_local_energy(net, data, eps, 4, seed)
    assert le.base_error == base
    np.testing.assert_array_equal(le.errors, errors)
    np.testing.assert_array_equal(le.mean, mean)
    np.testing.assert_array_equal(le.std, std)


@pytest.mark.parametrize("chunk", [1, 3, 8])
def test_real_local_energy_is_the_naive_re_evaluation(chunk):
    torch.manual_seed(1)
    m = MLP([6, 8, 5, 3]).double().eval()
    rng = np.random.default_rng(1)
    data = _data(rng, 6, 3, n=60)
    sigma = [0.0, 0.1, 0.4, 1.0]
    le = bt.local_energy(m, data, sigma=sigma, samples=5, seed=7, chunk=chunk, batch_size=16)
    base, errors, mean, std = naive.real_local_energy(m, data, sigma, 5, 7, chunk)
    assert le.base_error == pytest.approx(base, abs=1e-12)
    np.testing.assert_allclose(le.errors, errors, rtol=0, atol=1e-12)
    np.testing.assert_allclose(le.mean, mean, rtol=0, atol=1e-12)
    np.testing.assert_allclose(le.std, std, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- barrier

@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("points", [2, 5, 11])
def test_random_flip_barrier_is_the_naive_walk(seed, points):
    rng = np.random.default_rng(seed)
    a, b = random_mlp(rng, [10, 6, 5, 3]), random_mlp(rng, [10, 6, 5, 3])
    data = _data(rng, 10, 3, n=50)
    p = paths.random_flip(a, b, points=points, seed=seed, orders=2)
    ks = np.rint(np.linspace(0, p.n_moves, points)).astype(int)
    per_order = [naive.errors_along(a, p.moves[o], data)[ks] for o in p.orders]
    np.testing.assert_array_equal(p.errors_per_order(data), per_order)
    np.testing.assert_array_equal(p.errors(data), np.mean(per_order, axis=0))
    # the walk ends exactly at the aligned b
    for u, v in zip(_walk(a, p.order), naive.params(p.b)):
        assert u.keys() == v.keys() and all(np.array_equal(u[k], v[k]) for k in u)
    bar = p.barrier(data)
    assert (bar.max_error, bar.height, bar.argmax) == naive.barrier(p.errors(data))


def _walk(a, order):
    ps = naive.params(a)
    for mv in order:
        naive.apply_move(ps, mv)
    return ps


@pytest.mark.parametrize("method", ["greedy", "beam", "anneal"])
def test_search_trace_and_barrier_are_the_naive_walk(method):
    rng = np.random.default_rng(3)
    a, b = random_mlp(rng, [10, 6, 5, 3]), random_mlp(rng, [10, 6, 5, 3])
    data = _data(rng, 10, 3, n=50)
    p = paths.search(a, b, data, method=method, candidates=8, points=7, quiet=True,
                     anneal_steps=200)
    walk = naive.errors_along(a, p.order, data)
    np.testing.assert_array_equal(p.trace, walk)
    np.testing.assert_array_equal(p.errors(data, every_move=True), walk)
    bar = p.barrier(data, every_move=True)
    assert (bar.max_error, bar.height, bar.argmax) == naive.barrier(walk)
    ks = np.rint(np.linspace(0, len(p.order), 7)).astype(int)
    np.testing.assert_array_equal(p.errors(data), walk[ks])
