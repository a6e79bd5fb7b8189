"""Landscape tools over the binary weights of residual binary networks: Hamming distance,
local energy, random flip paths and the greedy search, through the public verbs, with
the conformance-style refusals of bad input."""
import numpy as np
import pytest

import bnn_toroid as bt
from bnn_toroid import paths
from bnn_toroid.landscape import BinaryLocalEnergy
from bnn_toroid.landscape import residual as L
from bnn_toroid.symmetry import residual_binary as R

from residual_nets import build


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    a = build(rng, c=4, blocks=1, down=True)
    # b: a's real parameters with other binary weights (a flip path moves binaries only)
    b = a.with_binary_weights([np.where(rng.random(w.shape) < 0.3, -w, w) for w in a.binary_weights()])
    x = rng.normal(size=(24, 3, 8, 8))
    y = a.logits(x).argmax(1)
    y[:4] = (y[:4] + 1) % a.n_classes  # a few errors at a
    return a, b, R.shuffled(b, np.random.default_rng(1)), (x, y)


def _err(net, data):
    x, y = data
    return float((net.logits(x).argmax(1) != y).mean())


def test_distance_counts_binary_weights_and_aligned_finds_the_copy(setup):
    a, b, b2, _ = setup
    diff = sum(int((u != v).sum()) for u, v in zip(a.binary_weights(), b.binary_weights()))
    d = bt.distance(a, b)
    assert isinstance(d, float) and d == diff / a.n_binary > 0
    per = bt.distance(a, b, per_layer=True)
    assert list(per) == ["layer1", "layer2", "total"] and per["total"] == d
    assert bt.distance(b, b2) > 0.1 and bt.distance(b, b2, kind="hamming_aligned") == 0.0
    assert bt.distance(a, b2, kind="hamming_aligned") == d
    assert bt.distance(a, b, kind="hamming_aligned", per_layer=True)["total"] <= d


def test_local_energy_flips_the_given_fraction(setup):
    a, _, _, data = setup
    le = bt.local_energy(a, data, eps=[0.0, 0.05, 0.5], samples=3, seed=2)
    assert isinstance(le, BinaryLocalEnergy)
    assert le.base_error == _err(a, data) and le.errors.shape == (3, 3)
    assert le.mean[0] == 0.0 and (le.errors[:, 0] == le.base_error).all()
    # the draws are reproducible and are the errors of the flipped networks
    rng = np.random.default_rng(2)
    counts = np.rint(np.tile([0.0, 0.05, 0.5], 3) * a.n_binary).astype(np.int64)
    ws = L.flipped_weights(a, counts, rng)
    for w, m in zip(ws, counts):
        assert sum(int((u != v).sum()) for u, v in zip(w, a.binary_weights())) == m
    errs = [_err(a.with_binary_weights(w), data) for w in ws]
    np.testing.assert_array_equal(le.errors.reshape(-1), errs)


def test_random_flip_path_ends_exactly_at_both_networks(setup):
    a, b, b2, data = setup
    p = paths.random_flip(a, b2, points=5, seed=3, orders=2)
    assert len(p) == 5 and p.n_moves == round(bt.distance(a, b) * a.n_binary)
    assert R.canonical_bytes(p.point(-1)) == R.canonical_bytes(bt.align(b2, a))
    np.testing.assert_array_equal(p.point(0).logits(data[0]), a.logits(data[0]))
    e = p.errors(data)
    assert e[0] == _err(a, data) and e[-1] == _err(b, data)
    assert e[2] == np.mean([_err(a.with_binary_weights(L_w), data) for L_w in
                            [_after(a, o, p._ks[2]) for o in p.orders]])
    assert p.barrier(data).max_error == e.max()


def _after(a, order, k):
    from bnn_toroid.paths.residual import _weights_after
    return _weights_after(a, order, k)


def test_search_is_no_worse_than_its_trace_and_ends_at_b(setup):
    a, b, b2, data = setup
    s = paths.search(a, b2, data, candidates=4, seed=4, max_steps=10, points=5)
    assert s.n_moves == len(s.trace) - 1 and s.evaluations >= 10
    assert s.trace[0] == _err(a, data) and s.trace[-1] == _err(b, data)
    assert s.barrier_error == max(s.trace) >= max(s.trace[0], s.trace[-1])
    # each traced error is the error of the network after that many flips
    for k in (1, 7, s.n_moves):
        assert s.trace[k] == _err(a.with_binary_weights(_after(a, s.order, k)), data)
    assert "full re-evaluation" in s.note


def _torch():
    from bnn_toroid.nn import MLP
    return MLP([12, 8, 3]).eval()


BAD = {
    "distance: two kinds": (lambda a, b, d: bt.distance(a, _torch()), TypeError,
                            ["distance", "same kind"]),
    "align: two kinds": (lambda a, b, d: bt.align(_torch(), a), TypeError, ["align", "same kind"]),
    "distance: not a network": (lambda a, b, d: bt.distance(a, "net"), TypeError,
                                ["distance", "expected a BinaryNetwork or a real-valued torch",
                                 "got str"]),
    "distance: bad kind": (lambda a, b, d: bt.distance(a, b, kind="euclid"), ValueError,
                           ["distance", "kind must be one of", "'euclid'"]),
    "distance: other architecture": (lambda a, b, d: bt.distance(a, build(np.random.default_rng(9), c=6)),
                                     ValueError, ["different architectures"]),
    "align: bad method": (lambda a, b, d: bt.align(b, a, method="nearest"), ValueError,
                          ["align", "method must be", "'nearest'"]),
    "local_energy: no data set": (lambda a, b, d: bt.local_energy(a, 42), TypeError,
                                  ["data", "expected a Dataset", "got int"]),
    "local_energy: samples=0": (lambda a, b, d: bt.local_energy(a, d, samples=0), ValueError,
                                ["local_energy", "samples must be an integer >= 1", "got 0"]),
    "local_energy: negative level": (lambda a, b, d: bt.local_energy(a, d, eps=[-0.1]), ValueError,
                                     ["local_energy", "-0.1"]),
    "local_energy: the other kind's level": (lambda a, b, d: bt.local_energy(a, d, sigma=[0.1]),
                                             ValueError, ["local_energy", "not"]),
    "local_energy: labels outside the classes": (
        lambda a, b, d: bt.local_energy(a, (d[0], d[1] + 3), samples=1), ValueError,
        ["local_energy", "holds labels in", "expected class indices"]),
    "local_energy: samples of another shape": (
        lambda a, b, d: bt.local_energy(a, (d[0][:, :2], d[1]), samples=1), ValueError,
        ["local_energy", "samples of shape (3, 8, 8)"]),
    "random_flip: one point": (lambda a, b, d: paths.random_flip(a, b, points=1), ValueError,
                               ["random_flip", "points must be", "got 1"]),
    "search: beam": (lambda a, b, d: paths.search(a, b, d, method="beam"), ValueError,
                     ["search", "greedy", "'beam'"]),
    "path errors: no data set": (lambda a, b, d: paths.random_flip(a, b, points=3).errors(7),
                                 TypeError, ["data", "expected a Dataset", "got int"]),
    "random_flip: other real parameters": (
        lambda a, b, d: paths.random_flip(a, build(np.random.default_rng(5), c=4, blocks=1, down=True)),
        ValueError, ["random_flip", "real-valued parameters"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_fails_as_for_chains(setup, case):
    a, b, _, data = setup
    call, exc, parts = BAD[case]
    with pytest.raises(exc) as e:
        call(a, b, data)
    for p in parts:
        assert p in str(e.value), f"{p!r} not in {str(e.value)!r}"


def test_a_chain_and_a_residual_network_are_not_compared(setup):
    from netgen import random_mlp
    a = setup[0]
    chain = random_mlp(np.random.default_rng(0), [12, 8, 3])
    with pytest.raises(TypeError, match="expected a ResidualBinaryNetwork, got BinaryNetwork"):
        bt.distance(a, chain)
    with pytest.raises(TypeError, match="ResidualBinaryNetwork"):
        paths.random_flip(a, chain)


def test_error_and_score_are_the_same_verbs_as_for_chains(setup):
    a, _, _, data = setup
    x, y = data
    want = _err(a, data)
    assert bt.error(a, data) == a.error(x, y) == want
    assert a.error(x, y, batch_size=5) == want  # batches add up to the same count
    assert a.score(x, y) == 1.0 - want
    assert np.array_equal(a.predict_classes(x), a.logits(x).argmax(1))
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        a.error(x, y, batch_size=0)
    with pytest.raises(ValueError, match=r"error: y has shape \(3,\); expected \(24,\)"):
        a.error(x, y[:3])
