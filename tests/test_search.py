"""Connectivity search and the incremental evaluator (docs/methods.md, "Incremental evaluation")."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import bnn_toroid as bt
from bnn_toroid.network import BinaryNetwork, Dense
from bnn_toroid.paths import moves as mv
from bnn_toroid.paths.binary import random_flip
from bnn_toroid.paths.discrete_search import (FullEvaluator, IncrementalEvaluator, make_evaluator,
                                     search)
from netgen import inputs, pm1, random_convnet, random_mlp, shuffle, thresholds
from test_binary_paths import perturb

SETTINGS = settings(max_examples=10, deadline=None)


def image_mlp(rng, layout, binarize):
    """A dense network reading images (NHWC or NCHW) through its flattened features."""
    shape = (3, 4, 2) if layout == "NHWC" else (2, 3, 4)
    k = 24
    layers = [Dense(pm1(rng, (9, k)), threshold=thresholds(rng, 9, k, real=not binarize)),
              Dense(pm1(rng, (7, 9)), threshold=thresholds(rng, 7, 9)),
              Dense(pm1(rng, (4, 7)), out_scale=rng.uniform(0.5, 2, 4), out_bias=rng.normal(0, 1, 4))]
    return BinaryNetwork(layers, shape, layout, binarize_input=binarize)


def dense_nets():
    mlp = st.builds(lambda seed, sizes, binarize: random_mlp(np.random.default_rng(seed), sizes, binarize),
                    st.integers(0, 10**6), st.lists(st.integers(1, 20), min_size=3, max_size=5), st.booleans())
    img = st.builds(lambda seed, layout, binarize: image_mlp(np.random.default_rng(seed), layout, binarize),
                    st.integers(0, 10**6), st.sampled_from(["NHWC", "NCHW"]), st.booleans())
    return mlp | img


# ------------------------------------------------------------------------------ incremental evaluator
@SETTINGS
@given(dense_nets(), st.integers(0, 10**6))
def test_incremental_equals_full_evaluation_after_every_move(a, seed):
    """Candidates and commits (flips in every layer, threshold steps and sets, output-affine
    moves) against NetworkStack / net.error and per-layer pre-activations, after every move."""
    rng = np.random.default_rng(seed)
    b = perturb(a, rng, frac=0.4)
    moves = mv.moves_between(a, b)
    order = moves[rng.permutation(len(moves))][:60]
    x, y = inputs(rng, a, 37), rng.integers(0, a.num_classes, 37)
    inc, full = IncrementalEvaluator(a, (x, y)), FullEvaluator(a, (x, y), chunk=7)
    assert inc.wrong == full.wrong == round(a.error(x, y) * 37)
    for k in range(len(order)):
        cands = order[k:k + 9]
        assert np.array_equal(inc.evaluate(cands), full.evaluate(cands))
        got = inc.commit(order[k:k + 1])
        full.commit(order[k:k + 1])
        net = mv.apply_moves(a, order[:k + 1])
        assert got[0] == inc.wrong == full.wrong == round(net.error(x, y) * 37)
        assert inc.network().equals(net)
        for h_inc, h_ref in zip(inc.preactivations(), net.preactivations(x)):
            assert np.array_equal(h_inc, h_ref)
    # a replay of many moves in one call equals the stacked evaluation of every prefix
    inc2 = IncrementalEvaluator(a, (x, y))
    trace = inc2.commit(order)
    ks = np.arange(1, len(order) + 1)
    assert np.array_equal(trace, np.rint(mv.errors_along(a, order, ks, (x, y)) * 37))


def test_incremental_copy_and_load_are_independent():
    rng = np.random.default_rng(0)
    a = random_mlp(rng, [10, 8, 6, 3])
    b = perturb(a, rng)
    moves = mv.moves_between(a, b)
    x, y = inputs(rng, a, 30), rng.integers(0, 3, 30)
    ev = IncrementalEvaluator(a, (x, y))
    snap = ev.copy()
    ev.commit(moves[:10])
    assert snap.network().equals(a) and ev.network().equals(mv.apply_moves(a, moves[:10]))
    ev.load(snap)
    assert ev.network().equals(a) and ev.wrong == snap.wrong


def test_evaluator_choice():
    rng = np.random.default_rng(0)
    mlp, conv = random_mlp(rng, [6, 5, 3]), random_convnet(rng, hw=6, c_in=1)
    single = BinaryNetwork([Dense(pm1(rng, (3, 6)))], (6,), binarize_input=True)
    x = inputs(rng, mlp, 5)
    assert isinstance(make_evaluator(mlp, (x, np.zeros(5, np.int64))), IncrementalEvaluator)
    assert isinstance(make_evaluator(mlp, (x, np.zeros(5, np.int64)), incremental=False), FullEvaluator)
    assert isinstance(make_evaluator(single, (x, np.zeros(5, np.int64))), FullEvaluator)
    assert isinstance(make_evaluator(conv, (inputs(rng, conv, 5), np.zeros(5, np.int64))), FullEvaluator)
    with pytest.raises(NotImplementedError, match="dense"):
        IncrementalEvaluator(conv, (inputs(rng, conv, 5), np.zeros(5, np.int64)))


# ------------------------------------------------------------------------------ search
@pytest.fixture(scope="module")
def trained_pair():
    d = bt.datasets.load("digits", split="train")
    x, y = d.x[:500], d.y[:500]
    nets = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        m = bt.nn.BinaryMLP([64, 24, 10], input_norm=bt.train.input_norm(d))
        bt.train.fit(m, (x, y), epochs=8, seed=seed, quiet=True)
        nets.append(BinaryNetwork.from_torch(m.eval(), input_shape=d.x.shape[1:]))
    return nets[0], nets[1], (x, y)


def test_greedy_and_beam_beat_random_orders(trained_pair):
    a, b, data = trained_pair
    rnd = random_flip(a, b, points=21, seed=0)
    rnd_barrier = rnd.barrier(data).max_error
    g = search(a, b, data, method="greedy", candidates=16, seed=0, quiet=True)
    assert g.point(0).equals(a) and g.point(-1).equals(rnd.b)
    assert mv.apply_moves(a, g.order).equals(rnd.b)
    assert len(g.trace) == g.n_moves + 1 == len(mv.moves_between(a, rnd.b)) + 1
    # the search's barrier counts every move; the random path's only 21 points
    assert g.trace.max() <= rnd_barrier
    assert g.trace.max() < rnd_barrier - 0.02
    # the recorded trace is the exact error after every move (independent batched check)
    assert np.array_equal(g.errors(data, every_move=True), g.trace)
    ks = np.arange(0, g.n_moves + 1, 37)
    assert np.array_equal(mv.errors_along(a, g.order, ks, data), g.trace[ks])
    assert g.evaluations > 0 and g.evals_per_second > 0
    bm = search(a, b, data, method="beam", candidates=8, beam_width=3, seed=0, quiet=True)
    assert mv.apply_moves(a, bm.order).equals(rnd.b)
    assert bm.trace.max() <= rnd_barrier
    assert np.array_equal(bm.errors(data, every_move=True), bm.trace)


def test_anneal_does_not_worsen_its_start(trained_pair):
    a, b, data = trained_pair
    start = search(a, b, data, method="greedy", candidates=2, seed=1, quiet=True)
    an = search(a, b, data, method="anneal", candidates=2, seed=1, anneal_steps=300, quiet=True)
    assert mv.apply_moves(a, an.order).equals(start.b)
    assert np.array_equal(an.errors(data, every_move=True), an.trace)
    assert an.trace.max() <= start.trace.max()
    rnd = search(a, b, data, method="anneal", start="random", anneal_steps=200, seed=2, quiet=True)
    assert mv.apply_moves(a, rnd.order).equals(start.b)
    assert np.array_equal(rnd.errors(data, every_move=True), rnd.trace)


def test_detours_end_at_b_with_bounded_outstanding_flips(trained_pair):
    a, b, data = trained_pair
    k = 2
    s = search(a, b, data, method="greedy", candidates=12, detours=k, seed=3, quiet=True)
    assert mv.apply_moves(a, s.order).equals(s.b)
    assert s.point(-1).equals(s.b)
    assert np.array_equal(s.errors(data, every_move=True), s.trace)
    required = mv.moves_between(a, s.b)
    assert s.n_moves == len(required) + 2 * s.n_detours
    # a detour position is where a and b agree; it is flipped out and back, never > k open
    diff = {(int(m["layer"]), int(m["index"])) for m in required if m["kind"] == mv.FLIP}
    open_ = set()
    for m in s.order:
        key = (int(m["layer"]), int(m["index"]))
        if m["kind"] == mv.FLIP and key not in diff:
            open_ ^= {key}
            assert len(open_) <= k
    assert not open_


def test_max_steps_still_ends_at_b_and_seeds_repeat(trained_pair):
    a, b, data = trained_pair
    s1 = search(a, b, data, candidates=4, max_steps=20, seed=5, quiet=True)
    s2 = search(a, b, data, candidates=4, max_steps=20, seed=5, quiet=True)
    assert mv.apply_moves(a, s1.order).equals(s1.b)
    assert np.array_equal(s1.order, s2.order) and np.array_equal(s1.trace, s2.trace)
    assert len(s1.errors(data)) == 21 and s1.fractions[-1] == 1.0


def test_identical_networks_search_is_flat():
    rng = np.random.default_rng(0)
    a = random_mlp(rng, [8, 6, 3])
    x, y = inputs(rng, a, 20), rng.integers(0, 3, 20)
    s = search(a, a, (x, y), quiet=True)
    assert s.n_moves == 0 and np.all(s.errors((x, y)) == a.error(x, y))


def test_conv_search_falls_back_to_full_evaluation():
    rng = np.random.default_rng(0)
    a = random_convnet(rng, hw=6, c_in=1, channels=(3, 2), dense=4)
    b = shuffle(rng, perturb(a, rng, frac=0.1))
    x, y = inputs(rng, a, 12), rng.integers(0, 3, 12)
    s = search(a, b, (x, y), candidates=4, quiet=True)
    assert "full" in s.note
    assert mv.apply_moves(a, s.order).equals(s.b)
    assert np.array_equal(s.errors((x, y), every_move=True), s.trace)


def test_bad_inputs_are_named():
    rng = np.random.default_rng(0)
    a, c = random_mlp(rng, [6, 5, 3]), random_mlp(rng, [6, 4, 3])
    x, y = inputs(rng, a, 5), np.zeros(5, np.int64)
    with pytest.raises(ValueError, match="different architectures"):
        search(a, c, (x, y))
    with pytest.raises(TypeError, match="from_torch"):
        search(bt.nn.BinaryMLP([6, 5, 3]), a, (x, y))
    with pytest.raises(ValueError, match="empty"):
        search(a, a, (x[:0], y[:0]))
    with pytest.raises(ValueError, match="unknown method"):
        search(a, a, (x, y), method="dfs")
    with pytest.raises(ValueError, match="candidates"):
        search(a, a, (x, y), candidates=0)
    with pytest.raises(ValueError, match="beam"):
        search(a, a, (x, y), method="beam", detours=2)
    with pytest.raises(ValueError, match="labels"):
        search(a, a, (x, y + 7))
