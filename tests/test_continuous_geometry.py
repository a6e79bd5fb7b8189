"""Toroidal distances, interpolation and local energy of real-valued networks."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from bnn_toroid.nn import LeNet, MLP
from bnn_toroid.geometry.continuous import (
    DISTANCE_KINDS, distance, interpolate, sphere_angles,
)
from bnn_toroid.landscape.continuous import local_energy
from bnn_toroid.symmetry.continuous import normalize, permute, rescale, train_error

torch.set_num_threads(1)


def _pair(batchnorm=False):
    torch.manual_seed(0)
    a = MLP([20, 12, 8, 4], batchnorm=batchnorm).eval()
    torch.manual_seed(1)
    b = MLP([20, 12, 8, 4], batchnorm=batchnorm).eval()
    return a, b


def _shuffled(m, seed=0):
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(12), rng.permutation(8)]
    scales = [np.exp(rng.normal(size=12)), np.exp(rng.normal(size=8))]
    return rescale(permute(m, perms), scales)


@pytest.mark.parametrize("kind", DISTANCE_KINDS)
def test_distance_to_itself_is_zero_and_symmetric(kind):
    a, b = _pair()
    assert distance(a, a, kind=kind) < 1e-6
    assert distance(a, b, kind=kind) > 0
    if kind in ("geodesic", "raw", "normalized"):
        assert distance(a, b, kind=kind) == pytest.approx(distance(b, a, kind=kind), rel=1e-9)


def test_geodesic_is_blind_to_rescaling_but_not_to_permutation():
    a, _ = _pair()
    s = rescale(a, [np.exp(np.random.default_rng(0).normal(size=12)), np.full(8, 3.0)])
    assert distance(a, s) < 1e-5
    assert distance(a, s, kind="normalized") < 1e-6
    assert distance(a, s, kind="raw") > 1e-2
    p = _shuffled(a)
    assert distance(a, p) > 1.0
    assert distance(a, p, kind="geodesic_aligned") < 1e-5
    assert distance(a, p, kind="normalized_aligned") < 1e-6


def test_geodesic_distance_formula_by_hand():
    a, b = _pair()
    na, nb = normalize(a), normalize(b)
    la = [m for m in na if isinstance(m, nn.Linear)]
    lb = [m for m in nb if isinstance(m, nn.Linear)]
    total = 0.0
    for i, (x, y) in enumerate(zip(la, lb)):
        va = torch.cat([x.weight, x.bias[:, None]], 1).detach().double()
        vb = torch.cat([y.weight, y.bias[:, None]], 1).detach().double()
        if i == len(la) - 1:
            va, vb, r = va.reshape(1, -1), vb.reshape(1, -1), math.sqrt(4)
        else:
            r = 1.0
        cos = ((va * vb).sum(1) / (va.norm(dim=1) * vb.norm(dim=1))).clamp(-1, 1)
        total += float(((r * torch.arccos(cos)) ** 2).sum())
    assert distance(a, b) == pytest.approx(math.sqrt(total), rel=1e-5)
    per = distance(a, b, per_layer=True)
    assert list(per) == ["layer1", "layer2", "layer3", "total"]
    assert per["total"] == distance(a, b)
    layers = [per[f"layer{l}"] for l in (1, 2, 3)]
    assert math.sqrt(sum(v * v for v in layers)) == pytest.approx(distance(a, b), rel=1e-9)


def test_euclidean_kinds_by_hand():
    a, b = _pair()
    pa = torch.cat([p.detach().reshape(-1) for p in a.parameters()])
    pb = torch.cat([p.detach().reshape(-1) for p in b.parameters()])
    ref = float((pa - pb).norm() / math.sqrt(pa.numel()))
    assert distance(a, b, kind="raw") == pytest.approx(ref, rel=1e-5)
    per = distance(a, b, kind="raw", per_layer=True)
    w, bias = (a[1].weight - b[1].weight).detach(), (a[1].bias - b[1].bias).detach()
    ref1 = math.sqrt(float((w ** 2).sum() + (bias ** 2).sum()) / (w.numel() + bias.numel()))
    assert per["layer1"] == pytest.approx(ref1, rel=1e-5)


def test_distance_bad_kind_and_bn_models():
    a, b = _pair(batchnorm=True)
    with pytest.raises(ValueError, match="kind"):
        distance(a, b, kind="hamming")
    # raw parameters of BN models include the BN affine
    assert distance(a, b, kind="raw") > 0


def test_sphere_angles_accurate_near_zero_and_pi():
    u = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    v = torch.tensor([[math.cos(1e-9), math.sin(1e-9)], [-1.0, 1e-10], [0.0, 2.0]],
                     dtype=torch.float64)
    phi = sphere_angles(u, v)
    assert phi[0].item() == pytest.approx(1e-9, rel=1e-6)
    assert phi[1].item() == pytest.approx(math.pi - 1e-10, rel=1e-12)
    assert phi[2].item() == pytest.approx(math.pi / 2, rel=1e-12)


@pytest.mark.parametrize("x", [0.0, 0.3, 0.75, 1.0])
def test_interpolate_geodesic_lies_at_fraction_of_distance(x):
    a, b = _pair()
    d = distance(a, b)
    m = interpolate(a, b, x)
    assert distance(a, m) == pytest.approx(x * d, abs=1e-5)
    assert distance(m, b) == pytest.approx((1 - x) * d, abs=1e-5)
    with pytest.raises(ValueError):
        interpolate(a, b, 1.5)


# ------------------------------------------------------------------ local energy

def _toy_data(n=120, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 20, generator=g)
    y = (x[:, :4].argmax(1))
    return x, y


def _fit(m, x, y, steps=150):
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    return m.eval()


def test_local_energy_matches_naive_loop():
    x, y = _toy_data()
    torch.manual_seed(0)
    m = _fit(MLP([20, 12, 8, 4]), x, y)
    sig = [0.0, 0.2, 0.6]
    res = local_energy(m, (x, y), sigma=sig, samples=5, seed=3, chunk=5, batch_size=50)
    assert res.errors.shape == (5, 3)
    base = train_error(m, (x, y))
    assert res.base_error == base
    assert res.mean[0] == 0 and np.all(res.errors[:, 0] == base)
    # naive reference: the same draws, one perturbed copy at a time
    gen = torch.Generator().manual_seed(3)
    params = dict(m.named_parameters())
    z = {n: torch.randn((5,) + tuple(p.shape), generator=gen, dtype=torch.float64).float()
         for n, p in params.items()}
    for j, s in enumerate(sig):
        for k in range(5):
            c = MLP([20, 12, 8, 4]).eval()
            c.load_state_dict({n: p.detach() * (1 + s * z[n][k]) for n, p in params.items()})
            assert res.errors[k, j] == train_error(c, (x, y))
    np.testing.assert_allclose(res.mean, (res.errors - base).mean(0))
    # reproducible, and chunking does not change the statistics' shape
    res2 = local_energy(m, (x, y), sigma=sig, samples=5, seed=3, chunk=2, batch_size=50)
    assert res2.errors.shape == (5, 3)
    res3 = local_energy(m, (x, y), sigma=sig, samples=5, seed=3, chunk=5, batch_size=50)
    np.testing.assert_array_equal(res.errors, res3.errors)


def test_local_energy_conv_bn_and_uint8():
    torch.manual_seed(0)
    m = LeNet((1, 16, 16), channels=(3, 4), dense=(8,), batchnorm=True).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 255, (40, 1, 16, 16), generator=g, dtype=torch.uint8).numpy()
    y = np.arange(40) % 10
    res = local_energy(m, (x, y), sigma=[0, 0.1, 0.5], samples=4, chunk=3)
    assert res.errors.shape == (4, 3)
    assert np.all(np.abs(res.mean) <= 1) and res.std.shape == (3,)


def test_local_energy_bad_input():
    x, y = _toy_data(20)
    torch.manual_seed(0)
    m = MLP([20, 12, 8, 4]).eval()
    with pytest.raises(ValueError, match="sigma"):
        local_energy(m, (x, y), sigma=[0.1, -0.1])
    with pytest.raises(ValueError, match="samples"):
        local_energy(m, (x, y), samples=0)
    xn = x.clone()
    xn[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        local_energy(m, (xn, y), samples=2)
    with torch.no_grad():
        m[1].bias[0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        local_energy(m, (x, y), samples=2)
    with pytest.raises(TypeError):
        local_energy(MLP([20, 4]), x, samples=2)
