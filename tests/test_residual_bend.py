"""The single-bend path of residual binary networks: its torch twin computes the network's
function, its midpoint moves binary weights only and is trained, and the path runs a → m
→ b through the public verb."""
import numpy as np
import pytest
import torch

import bnn_toroid as bt
from bnn_toroid.paths import residual_bend as RB
from bnn_toroid.symmetry import residual_binary as R

from residual_nets import build
from resgen import random_residual


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(0)
    a = build(rng, c=4, blocks=1, down=True)
    b = a.with_binary_weights([np.where(rng.random(w.shape) < 0.3, -w, w) for w in a.binary_weights()])
    x = rng.normal(size=(64, 3, 8, 8))
    y = a.logits(x).argmax(1)  # a fits its labels; b and a random midpoint do not
    return a, b, (x, y)


def _err(net, data):
    x, y = data
    return float((net.logits(x).argmax(1) != y).mean())


@pytest.mark.parametrize("quick", [False, True])
@pytest.mark.parametrize("pad_value", [0, 1])
def test_the_twin_computes_the_network(quick, pad_value):
    # stem, Bi-Real and QuickNet blocks, average and max pooling with padding, PReLU,
    # depthwise conv, dense head: float32 logits of the twin against the float64 network
    rng = np.random.default_rng(4 + pad_value)
    net = random_residual(rng, pad_value=pad_value, quick=quick)
    x = rng.normal(size=(5,) + net.input_shape)
    twin = RB.LatentTwin(net)
    with torch.no_grad():
        z = twin(torch.as_tensor(twin.samples(x))).double().numpy()
    ref = net.logits(x)
    np.testing.assert_allclose(z, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    assert np.array_equal(z.argmax(1), ref.argmax(1))
    # only the latent weights train; frozen() gives the network back, bit for bit
    assert [p.shape[0] for p in twin.parameters()] == [w.shape[0] for w in net.binary_weights()]
    back = twin.frozen()
    assert all(np.array_equal(u, v) for u, v in zip(back.binary_weights(), net.binary_weights()))
    assert R.canonical_bytes(back) == R.canonical_bytes(net)


def test_midpoint_start_is_halfway(pair):
    a, b, _ = pair
    m = RB.midpoint_start(a, b, seed=3)
    d = len(bt.paths.residual.flips_between(a, b))
    da, db = (len(bt.paths.residual.flips_between(m, e)) for e in (a, b))
    assert (da, db) == (d // 2, d - d // 2)


def test_single_bend_trains_the_midpoint_and_joins_both_ends(pair):
    a, b, data = pair
    path = bt.paths.single_bend(a, b, data, epochs=15, points=5, seed=1)
    assert isinstance(path, RB.ResidualSingleBendPath) and len(path) == 9
    mid = path.midpoint
    # the midpoint moved binary weights only (real-valued parameters are a's)
    assert R.canonical_bytes(mid.with_binary_weights(a.binary_weights())) == R.canonical_bytes(a)
    assert _err(mid, data) < _err(path.midpoint_start, data)
    assert path.history.train_error[-1] == pytest.approx(_err(mid, data), abs=0.1)
    for i, end in ((0, a), (-1, b), (4, mid)):
        assert all(np.array_equal(u, v) for u, v in
                   zip(path.point(i).binary_weights(), end.binary_weights()))
    errs = path.errors(data)
    np.testing.assert_array_equal(errs, [_err(path.point(i), data) for i in range(len(path))])
    assert path.barrier(data).max_error == errs.max()
    assert path.hamming == bt.distance(a, b)
    assert path.hamming_a_mid + path.hamming_mid_b >= path.hamming


def test_single_bend_aligns_a_shuffled_end(pair):
    a, b, data = pair
    b2 = R.shuffled(b, np.random.default_rng(7))
    path = bt.paths.single_bend(a, b2, data, epochs=1, points=2)
    assert path.second.b is not b2  # aligned onto a first
    assert bt.distance(path.point(-1), b) == 0.0


def test_single_bend_refuses_ends_with_other_real_parameters(pair):
    a, _, data = pair
    other = build(np.random.default_rng(9), c=4, blocks=1, down=True)
    with pytest.raises(ValueError, match="single_bend: the endpoints differ in their real-valued"):
        bt.paths.single_bend(a, other, data, epochs=1, align=False)
