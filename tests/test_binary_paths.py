"""Binary paths: elementary moves, random flip orders and the single bend (docs/methods.md, "Elementary moves of binary networks", "Random flip orders" and "Single bend (binary)")."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import bnn_toroid as bt
from bnn_toroid.network import BinaryNetwork, Conv2d, Dense, MaxPool2d
from bnn_toroid.paths import moves as mv
from bnn_toroid.paths.binary import (FlipPath, midpoint_start, random_flip, single_bend,
                                     to_torch)
from netgen import inputs, random_convnet, random_mlp, shuffle

SETTINGS = settings(max_examples=12, deadline=None)


def perturb(net, rng, frac=0.3, thresholds=True):
    """``net`` with a fraction of weights flipped, thresholds moved, output affine, pool modes
    changed: the second endpoint of a path."""
    layers = []
    for i, layer in enumerate(net.layers):
        if isinstance(layer, MaxPool2d):
            mc = None if layer.min_channels is None else layer.min_channels ^ (rng.random(layer.min_channels.size) < 0.5)
            layers.append(MaxPool2d(layer.size, layer.stride, mc))
            continue
        w = layer.weights.copy()
        w[rng.random(w.shape) < frac] *= -1
        kw = {}
        if layer.threshold is not None:
            t = layer.threshold.copy()
            if thresholds:
                if t.dtype.kind == "f":
                    t = t + rng.normal(0, 30, t.shape) * (rng.random(t.shape) < 0.5)
                else:
                    t = t + rng.integers(-5, 6, t.shape) * (rng.random(t.shape) < 0.5)
            kw["threshold"] = t
        else:
            sc, b = layer.out_scale.copy(), layer.out_bias.copy()
            if thresholds:
                sc[0] *= 1.5
                b[-1] += 0.5
            kw.update(out_scale=sc, out_bias=b)
        if isinstance(layer, Dense):
            layers.append(Dense(w, **kw))
        else:
            layers.append(Conv2d(w, stride=layer.stride, padding=layer.padding, pad_value=layer.pad_value, **kw))
    return net.with_layers(layers)


def nets():
    mlp = st.builds(lambda seed, sizes, binarize: random_mlp(np.random.default_rng(seed), sizes, binarize),
                    st.integers(0, 10**6), st.lists(st.integers(1, 24), min_size=2, max_size=4), st.booleans())
    conv = st.builds(lambda seed, binarize, padding, pv: random_convnet(
        np.random.default_rng(seed), hw=8, c_in=2, binarize=binarize, padding=padding, pad_value=pv),
        st.integers(0, 10**6), st.booleans(), st.sampled_from(["same", "valid"]), st.sampled_from([0, 1]))
    return mlp | conv


def labels(rng, net, n):
    return rng.integers(0, net.num_classes, n)


# ------------------------------------------------------------------------------ moves
@SETTINGS
@given(nets(), st.integers(0, 10**6))
def test_every_order_of_the_moves_ends_exactly_at_b(a, seed):
    rng = np.random.default_rng(seed)
    b = perturb(a, rng)
    moves = mv.moves_between(a, b)
    for _ in range(3):
        assert mv.apply_moves(a, moves[rng.permutation(len(moves))]).equals(b)
    assert mv.apply_moves(a, moves[:0]).equals(a)
    counts = mv.count_moves(moves)
    n_diff = sum(int((la.weights != lb.weights).sum()) for la, lb in zip(a.layers, b.layers)
                 if not isinstance(la, MaxPool2d))
    assert counts["flip"] == n_diff


@SETTINGS
@given(nets(), st.integers(0, 10**6))
def test_batched_path_points_equal_each_network(a, seed):
    rng = np.random.default_rng(seed)
    b = perturb(a, rng)
    moves = mv.moves_between(a, b)
    order = moves[rng.permutation(len(moves))]
    ks = np.sort(rng.integers(0, len(order) + 1, 7))
    x = inputs(rng, a, 30)
    y = labels(rng, a, 30)
    got = mv.errors_along(a, order, ks, (x, y), chunk=3)
    ref = [n.error(x, y) for n in mv.networks_along(a, order, ks)]
    assert np.array_equal(got, ref)
    for k, n in zip(ks, mv.networks_along(a, order, ks)):
        assert n.equals(mv.apply_moves(a, order[:k]))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 30), st.integers(-40, 40), st.integers(-40, 40), st.integers(0, 10**6))
def test_each_threshold_step_crosses_exactly_one_level(n, ta, tb, seed):
    """In any order, every step moves the unit's decision level h >= T by one parity level
    (on the range where h lives); equal levels give one neutral step."""
    ta = int(np.clip(ta, -n - 1, n + 2))
    tb = int(np.clip(tb, -n - 1, n + 2))
    steps = mv._threshold_steps(ta, tb, n)
    assert sum(steps) == tb - ta
    rng = np.random.default_rng(seed)
    t = ta + np.concatenate([[0], np.cumsum(rng.permutation(steps))]) if steps else np.array([ta])
    levels = mv.threshold_level(t, n)
    la, lb = mv.threshold_level(ta, n), mv.threshold_level(tb, n)
    if la == lb:
        assert len(steps) == (0 if ta == tb else 1)
    else:
        assert np.array_equal(np.abs(np.diff(levels)), np.full(len(steps), 2))
        assert len(steps) == abs(lb - la) // 2
    h = np.arange(-n, n + 1, 2)  # every value a pre-activation of fan-in n can take
    for t0, t1 in zip(t[:-1], t[1:]):
        assert ((h >= t0) != (h >= t1)).sum() <= 1


def test_real_input_thresholds_move_in_one_step():
    rng = np.random.default_rng(0)
    a = random_mlp(rng, [10, 8, 3], binarize=False)
    b = perturb(a, rng)
    moves = mv.moves_between(a, b)
    first = moves[moves["layer"] == 0]
    n_diff = int((a.layers[0].threshold != b.layers[0].threshold).sum())
    assert (first["kind"] == mv.THRESHOLD_SET).sum() == n_diff
    assert mv.apply_moves(a, moves[::-1]).equals(b)


def test_moves_are_checked():
    rng = np.random.default_rng(0)
    a = random_mlp(rng, [6, 5, 3])
    bad = np.zeros(1, mv.MOVE_DTYPE)
    bad["layer"], bad["index"] = 0, 30
    with pytest.raises(ValueError, match="out of range"):
        mv.apply_moves(a, bad)
    bad["kind"], bad["layer"], bad["index"] = mv.THRESHOLD, 1, 0
    with pytest.raises(ValueError, match="cannot take"):
        mv.apply_moves(a, bad)
    with pytest.raises(TypeError, match="MOVE_DTYPE"):
        mv.apply_moves(a, np.zeros(3))


# ------------------------------------------------------------------------------ random flip
def test_identical_networks_give_a_flat_curve():
    rng = np.random.default_rng(1)
    a = random_mlp(rng, [12, 10, 4])
    x, y = inputs(rng, a, 50), labels(rng, a, 50)
    p = random_flip(a, a, points=11)
    e = p.errors((x, y))
    assert isinstance(p, FlipPath) and p.n_moves == 0 and p.hamming == 0.0 and len(e) == 11
    assert np.all(e == a.error(x, y))
    assert p.barrier((x, y)).height == 0.0


@SETTINGS
@given(nets(), st.integers(0, 10**6), st.sampled_from([True, False]))
def test_endpoints_are_a_and_aligned_b(a, seed, align):
    rng = np.random.default_rng(seed)
    b = shuffle(rng, perturb(a, rng, thresholds=False))
    p = random_flip(a, b, points=5, seed=seed, align=align)
    b_al = bt.align(b, reference=a) if align else b
    assert p.point(0).equals(a) and p.point(-1).equals(b_al)
    assert p.b.equals(b_al)
    assert p.hamming == bt.distance(a, b_al)
    x, y = inputs(rng, a, 20), labels(rng, a, 20)
    e = p.errors((x, y))
    assert e[0] == a.error(x, y) and e[-1] == b_al.error(x, y)
    # interior points follow the first order
    assert p.point(2).equals(mv.apply_moves(a, p.order[:p._ks[2]]))
    assert p.fractions[0] == 0 and p.fractions[-1] == (1 if p.n_moves else 0)


def test_random_flip_averages_orders():
    rng = np.random.default_rng(2)
    a = random_mlp(rng, [16, 12, 5])
    b = perturb(a, rng)
    x, y = inputs(rng, a, 60), labels(rng, a, 60)
    p = random_flip(a, b, points=9, seed=3, orders=4, align=False)
    per = p.errors_per_order((x, y))
    assert per.shape == (4, 9)
    assert np.allclose(p.errors((x, y)), per.mean(axis=0))
    assert np.all(per[:, 0] == a.error(x, y)) and np.all(per[:, -1] == b.error(x, y))
    for r in range(4):
        order = p.moves[p.orders[r]]
        ref = [n.error(x, y) for n in mv.networks_along(a, order, p._ks)]
        assert np.array_equal(per[r], ref)
    again = random_flip(a, b, points=9, seed=3, orders=4, align=False)
    assert np.array_equal(again.orders, p.orders)


def test_bad_inputs_are_named():
    rng = np.random.default_rng(0)
    a, c = random_mlp(rng, [6, 5, 3]), random_mlp(rng, [6, 4, 3])
    with pytest.raises(ValueError, match="different architectures"):
        random_flip(a, c)
    model = bt.nn.BinaryMLP([6, 5, 3])
    with pytest.raises(TypeError, match="from_torch"):
        random_flip(a, model)
    with pytest.raises(TypeError, match="from_torch"):
        mv.moves_between(model, a)
    p = random_flip(a, a)
    with pytest.raises(ValueError, match="empty"):
        p.errors((np.zeros((0, 6)), np.zeros(0, np.int64)))
    with pytest.raises(ValueError, match="points"):
        random_flip(a, a, points=1)


# ------------------------------------------------------------------------------ single bend
@pytest.fixture(scope="module")
def digits_pair():
    d = bt.datasets.load("digits", split="train")
    x, y = d.x[:600], d.y[:600]
    nets = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        m = bt.nn.BinaryMLP([64, 24, 10], input_norm=bt.train.input_norm(d))
        bt.train.fit(m, (x, y), epochs=6, seed=seed, quiet=True)
        nets.append(BinaryNetwork.from_torch(m.eval(), input_shape=d.x.shape[1:]))
    return nets[0], nets[1], (x, y)


def test_midpoint_starts_halfway():
    rng = np.random.default_rng(4)
    a = random_mlp(rng, [20, 15, 9, 4])
    b = perturb(a, rng)
    m = midpoint_start(a, b, seed=0)
    d = int(round(bt.distance(a, b) * a.n_weights))
    assert round(bt.distance(a, m) * a.n_weights) == d // 2
    assert round(bt.distance(m, b) * a.n_weights) == d - d // 2
    n = a.layers[1].weights.shape[1]
    assert np.all((m.layers[1].threshold - n) % 2 == 0)


def test_to_torch_reproduces_the_network(digits_pair):
    a, _, (x, y) = digits_pair
    model, order = to_torch(a, x)
    with torch.no_grad():
        logits = model(torch.as_tensor(np.array(order(x)), dtype=torch.float32)).numpy()
    assert np.array_equal(logits.argmax(1), a.predict_classes(x))
    rng = np.random.default_rng(0)
    for pool, binarize in ((False, True), (True, True), (True, False)):
        conv = _max_pooled(random_convnet(rng, hw=8, c_in=2, pool=pool, padding="same", pad_value=1,
                                          binarize=binarize))
        model, order = to_torch(conv)
        xc = inputs(rng, conv, 20)
        with torch.no_grad():
            pred = model(torch.as_tensor(np.array(order(xc)), dtype=torch.float32)).numpy().argmax(1)
        assert np.array_equal(pred, conv.predict_classes(xc))


def _max_pooled(net):
    return net.with_layers([MaxPool2d(l.size, l.stride) if isinstance(l, MaxPool2d) else l
                            for l in net.layers])


def test_single_bend_on_a_conv_network():
    rng = np.random.default_rng(5)
    a = _max_pooled(random_convnet(rng, hw=8, c_in=2, padding="same", pad_value=1))
    b = shuffle(rng, perturb(a, rng, frac=0.2, thresholds=False))
    x, y = inputs(rng, a, 40), labels(rng, a, 40)
    p = single_bend(a, b, (x, y), epochs=1, points=3, seed=0)
    assert p.point(0).equals(a) and p.point(-1).equals(p.b) and p.point(2).equals(p.midpoint)
    assert len(p.errors((x, y))) == 5


def test_single_bend_on_trained_networks(digits_pair):
    a, b, data = digits_pair
    p = single_bend(a, b, data, epochs=3, points=6, seed=0)
    assert len(p) == 11 and len(p.errors(data)) == 11
    assert p.point(0).equals(a) and p.point(-1).equals(bt.align(b, reference=a))
    assert p.point(5).equals(p.midpoint)
    assert p.fractions[5] == 0.5
    e = p.errors(data)
    assert e[5] == p.midpoint.error(*data)
    assert p.midpoint.error(*data) <= p.midpoint_start.error(*data) + 0.05


def test_single_bend_refuses_min_pooled_channels():
    rng = np.random.default_rng(0)
    a = random_convnet(rng, hw=6, c_in=2)
    a = a.with_layers([MaxPool2d(2, min_channels=np.ones(5, bool)) if isinstance(l, MaxPool2d) else l
                       for l in a.layers])
    x, y = inputs(rng, a, 10), labels(rng, a, 10)
    with pytest.raises(NotImplementedError, match="min-pooled"):
        single_bend(a, a, (x, y), epochs=1)
