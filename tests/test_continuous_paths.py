"""Paths between real-valued networks and their barriers."""
import numpy as np
import pytest
import torch
from torch import nn

from bnn_toroid.nn import MLP, Normalize
from bnn_toroid.geometry.continuous import distance
from bnn_toroid.paths.base import Barrier, Path
from bnn_toroid.paths.continuous import geodesic, linear, single_bend
from bnn_toroid.symmetry.continuous import align, normalize, train_error

torch.set_num_threads(1)


def _digits(n=600):
    from sklearn.datasets import load_digits
    d = load_digits()
    x = d.images[:n, None].astype(np.uint8)  # pixel values 0..16, as uint8 images
    return x, d.target[:n].astype(np.int64)


def _train(model, x, y, seed, epochs=10):
    x = torch.as_tensor(x, dtype=torch.float32)
    y = torch.as_tensor(y)
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x))
        for i in range(0, len(x), 32):
            idx = order[i:i + 32]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def _conv(seed):
    torch.manual_seed(seed)
    return nn.Sequential(Normalize(4.9, 6.0), nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 6 * 6, 16), nn.ReLU(), nn.Linear(16, 10))


@pytest.fixture(scope="module")
def data():
    return _digits()


@pytest.fixture(scope="module")
def mlps(data):
    x, y = data
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        out.append(_train(MLP([64, 32, 16, 10], input_norm=(4.9, 6.0)), x, y, seed))
    return out


@pytest.fixture(scope="module")
def bn_mlps(data):
    x, y = data
    out = []
    for seed in (2, 3):
        torch.manual_seed(seed)
        out.append(_train(MLP([64, 32, 16, 10], batchnorm=True, input_norm=(4.9, 6.0)), x, y,
                          seed))
    return out


def _same_params(m1, m2, atol=0.0):
    for p, q in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p, q, atol=atol, rtol=0)


def test_barrier_from_errors():
    b = Barrier.from_errors([0.1, 0.4, 0.2, 0.3])
    assert b.max_error == 0.4 and b.argmax == 1
    assert b.height == pytest.approx(0.4 - 0.2)
    assert b == Barrier.from_errors([0.1, 0.4, 0.2, 0.3])
    with pytest.raises(ValueError):
        Barrier.from_errors([])
    with pytest.raises(ValueError):
        Barrier.from_errors([0.1, float("nan")])
    with pytest.raises(TypeError):
        Path()  # abstract


def test_geodesic_endpoints_exact_and_constant_speed(mlps, data):
    a, b = mlps
    p = geodesic(a, b, points=11)
    assert isinstance(p, Path) and len(p) == 11
    np.testing.assert_allclose(p.fractions, np.linspace(0, 1, 11))
    _same_params(p.point(0), normalize(a))
    _same_params(p.point(-1), align(b, a))
    d = distance(p.point(0), p.point(-1))
    assert d > 1
    for i in (2, 5, 8):
        assert distance(p.point(0), p.point(i)) == pytest.approx(p.fractions[i] * d, abs=1e-5)
        assert distance(p.point(i), p.point(-1)) == pytest.approx((1 - p.fractions[i]) * d,
                                                                  abs=1e-5)
    err = p.errors(data)
    assert err.shape == (11,)
    assert err[0] == train_error(a, data) and err[-1] == train_error(b, data)
    bar = p.barrier(data)
    assert bar.max_error == err.max() and bar.max_error >= max(err[0], err[-1])
    with pytest.raises(IndexError):
        p.point(11)


def test_linear_paths_endpoints(mlps, data):
    a, b = mlps
    x = torch.as_tensor(data[0][:100], dtype=torch.float32)
    for al in (False, True):
        p = linear(a, b, points=5, align=al)
        torch.testing.assert_close(p.point(0)(x), a(x), atol=1e-5, rtol=1e-5)
        # aligned: permuted, not rescaled, so the very same logits as b
        torch.testing.assert_close(p.point(-1)(x), b(x), atol=1e-5, rtol=1e-5)
        err = p.errors(data)
        assert err[0] == train_error(a, data) and err[-1] == train_error(b, data)
    raw = linear(a, b, points=7).barrier(data).max_error
    geo = geodesic(a, b, points=7).barrier(data).max_error
    assert geo <= raw


def test_shuffled_copy_has_flat_geodesic(mlps, data):
    from bnn_toroid.symmetry.continuous import permute, rescale
    a, _ = mlps
    rng = np.random.default_rng(0)
    c = rescale(permute(a, [rng.permutation(32), rng.permutation(16)]),
                [np.exp(rng.normal(size=32)), np.exp(rng.normal(size=16))])
    e = geodesic(a, c, points=5).errors(data)
    assert np.all(e == train_error(a, data))
    assert linear(a, c, points=5).barrier(data).height > 0


@pytest.mark.parametrize("bn", ["fold", "recompute"])
def test_bn_paths(bn_mlps, data, bn):
    a, b = bn_mlps
    for p in (linear(a, b, points=5, bn=bn), linear(a, b, points=5, align=True, bn=bn),
              geodesic(a, b, points=5, bn=bn)):
        err = p.errors(data)
        assert err.shape == (5,) and np.all((0 <= err) & (err <= 1))
        if bn == "fold":
            assert err[0] == train_error(a, data) and err[-1] == train_error(b, data)
        else:
            # statistics recomputed on the training set: the endpoints stay good networks
            assert err[0] <= train_error(a, data) + 0.05
            with pytest.raises(ValueError, match="bn_data"):
                p.point(2)
            m = p.point(2, data=data)
            assert any(isinstance(k, nn.BatchNorm1d) for k in m.modules())
    if bn == "fold":
        assert not any(isinstance(k, nn.BatchNorm1d) for k in geodesic(a, b, 3).point(1).modules())


def test_single_bend(mlps, data):
    a, b = mlps
    p = single_bend(a, b, data, points=7, epochs=6, lr=0.05, seed=0)
    assert len(p) == 7
    np.testing.assert_allclose(p.fractions, [0, 1 / 6, 1 / 3, 0.5, 2 / 3, 5 / 6, 1])
    _same_params(p.point(3), p.midpoint)
    _same_params(p.point(0), normalize(a))
    _same_params(p.point(-1), align(b, a))
    err = p.errors(data)
    assert err[3] == p.train_log[-1] == train_error(p.midpoint, data)
    assert p.train_log[-1] <= p.train_log[0]
    # the bend is a trained network; the path is no worse than the straight geodesic
    assert p.barrier(data).max_error <= geodesic(a, b, points=7).barrier(data).max_error + 0.02


def test_single_bend_conv_bn_recompute(data):
    x, y = data
    a = _train(_conv(0), x, y, 0, epochs=3)
    b = _train(_conv(1), x, y, 1, epochs=3)
    p = single_bend(a, b, data, points=5, epochs=1, bn="recompute")
    assert p.errors(data).shape == (5,)
    assert any(isinstance(k, nn.BatchNorm2d) for k in p.midpoint.modules())
    g = geodesic(a, b, points=5, method="activations", data=data)
    _same_params(g.point(-1), align(b, a, method="activations", data=data))


def test_paths_bad_input(mlps, data):
    a, b = mlps
    with pytest.raises(ValueError, match="points"):
        linear(a, b, points=1)
    with pytest.raises(ValueError, match="bn"):
        geodesic(a, b, bn="interpolate")
    with pytest.raises(ValueError, match="odd"):
        single_bend(a, b, data, points=6)
    torch.manual_seed(0)
    c = MLP([64, 32, 12, 10], input_norm=(4.9, 6.0))
    for f in (linear, geodesic):
        with pytest.raises(ValueError, match="different shapes"):
            f(a, c)
    with pytest.raises(TypeError):
        geodesic(a, b).errors(data[0])
