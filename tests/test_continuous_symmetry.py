"""Continuous symmetries: BN folding, normalisation (Alg. 1), alignment (Alg. 2)."""
import numpy as np
import pytest
import torch
from torch import nn

from bnn_toroid.nn import LeNet, MLP, Normalize
from bnn_toroid.symmetry.continuous import (
    UnsupportedLayerError, align, find_permutations, fold_batchnorm, normalize, permute,
    rescale, train_error,
)
from bnn_toroid.geometry.continuous import distance

torch.set_num_threads(1)


def _randomize_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = m.num_features
                m.running_mean.copy_(0.3 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(torch.randn(n, generator=g))
                m.bias.copy_(0.3 * torch.randn(n, generator=g))
    return model.eval()


def mlp():
    torch.manual_seed(0)
    return MLP([64, 24, 16, 10], input_norm=(4.9, 6.0)).eval()


def mlp_bn():
    torch.manual_seed(1)
    return _randomize_bn(MLP([64, 24, 16, 10], batchnorm=True, input_norm=(4.9, 6.0)))


def lenet_bn():
    torch.manual_seed(2)
    # 20×20 -> conv5 16 -> pool 8 -> conv5 4 -> pool 2: a 2×2 channel block at the flatten
    return _randomize_bn(LeNet((1, 20, 20), channels=(4, 6), dense=(16,), batchnorm=True))


def small_conv():
    """1×12×12 conv net with a nested Sequential, Dropout, bias-free conv + BN and a
    3×3 channel block at the conv → dense boundary."""
    torch.manual_seed(3)
    return _randomize_bn(nn.Sequential(
        Normalize(0.5, 2.0),
        nn.Sequential(nn.Conv2d(1, 5, 3, bias=False), nn.BatchNorm2d(5), nn.ReLU(),
                      nn.MaxPool2d(2)),
        nn.Conv2d(5, 7, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.2),
        nn.Flatten(), nn.Linear(7 * 2 * 2, 12), nn.ReLU(), nn.Identity(), nn.Linear(12, 10)))


FACTORIES = {"mlp": mlp, "mlp_bn": mlp_bn, "lenet_bn": lenet_bn, "small_conv": small_conv}
INPUTS = {"mlp": (64,), "mlp_bn": (64,), "lenet_bn": (1, 20, 20), "small_conv": (1, 12, 12)}


def _inputs(name, n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 3 * torch.randn((n,) + INPUTS[name], generator=g) + 2


def _hidden_sizes(model):
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return [m.out_features if isinstance(m, nn.Linear) else m.out_channels for m in layers[:-1]]


def _shuffle(model, seed):
    rng = np.random.default_rng(seed)
    sizes = _hidden_sizes(model)
    perms = [rng.permutation(h) for h in sizes]
    scales = [np.exp(rng.normal(0, 1, h)) for h in sizes]
    return rescale(permute(model, perms), scales), perms


def _same_up_to_scale(out, ref):
    out, ref = out.detach(), ref.detach()
    c = float((out * ref).sum() / (ref * ref).sum())
    assert c > 0
    scale = ref.abs().max().item()
    torch.testing.assert_close(out, c * ref, atol=2e-5 * scale * c, rtol=1e-4)
    assert torch.equal(out.argmax(1), ref.argmax(1))


@pytest.mark.parametrize("name", FACTORIES)
def test_fold_batchnorm_is_exact(name):
    m = FACTORIES[name]()
    x = _inputs(name)
    f = fold_batchnorm(m)
    assert not any(isinstance(k, (nn.BatchNorm1d, nn.BatchNorm2d)) for k in f.modules())
    torch.testing.assert_close(f(x), m(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", FACTORIES)
def test_normalize_preserves_function_and_is_idempotent(name):
    m = FACTORIES[name]()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x = _inputs(name)
    n = normalize(m)
    _same_up_to_scale(n(x), m(x))
    assert not n.training
    # the argument is untouched
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k])
    n2 = normalize(n)
    for p, q in zip(n.parameters(), n2.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6)
    # unit spheres, and the last layer on the sphere of radius sqrt(H_L)
    layers = [k for k in n.modules() if isinstance(k, (nn.Linear, nn.Conv2d))]
    for k in layers[:-1]:
        v = torch.cat([k.weight.reshape(k.weight.shape[0], -1), k.bias[:, None]], 1)
        torch.testing.assert_close(v.norm(dim=1), torch.ones(v.shape[0]), atol=1e-6, rtol=0)
    last = layers[-1]
    r = torch.cat([last.weight.reshape(-1), last.bias]).norm()
    assert abs(r.item() - np.sqrt(10)) < 1e-5


@pytest.mark.parametrize("name", FACTORIES)
def test_permute_and_rescale_preserve_function(name):
    m = FACTORIES[name]()
    x = _inputs(name)
    m2, _ = _shuffle(m, 1)
    torch.testing.assert_close(m2(x), m(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("method", ["cosine", "weights"])
@pytest.mark.parametrize("name", FACTORIES)
def test_shuffled_rescaled_copy_aligns_back(name, method):
    m = FACTORIES[name]()
    m2, perms = _shuffle(m, 2)
    a = align(m2, reference=m, method=method)
    assert distance(normalize(m), a) < 1e-4
    assert distance(m, m2, kind="geodesic_aligned", method=method) < 1e-4
    assert distance(m, m2, kind="normalized_aligned", method=method) < 1e-6
    assert distance(m, m2, kind="geodesic") > 1.0
    # found permutations undo the shuffle: perms[l][found[l]] == identity
    found = find_permutations(m2, m, method=method)
    for p, q in zip(perms, found):
        assert np.array_equal(p[q], np.arange(len(p)))
    x = _inputs(name, seed=5)
    _same_up_to_scale(a(x), m2(x))


def _digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    return torch.tensor(d.images[:, None], dtype=torch.float32), torch.tensor(d.target)


def _train(model, x, y, seed, epochs=8):
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = order[i:i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained():
    x, y = _digits()
    torch.manual_seed(10)
    a = _train(MLP([64, 32, 16, 10], batchnorm=True, input_norm=(4.9, 6.0)), x, y, 10)
    torch.manual_seed(11)
    b = _train(MLP([64, 32, 16, 10], batchnorm=True, input_norm=(4.9, 6.0)), x, y, 11)
    return a, b, (x, y)


def test_activation_matching_recovers_shuffled_trained_copy(trained):
    a, _, data = trained
    a2, _ = _shuffle(a, 3)
    assert distance(a, a2, kind="geodesic_aligned", method="activations", data=data) < 1e-4


@pytest.mark.parametrize("method", ["cosine", "weights", "activations"])
def test_align_two_minima_preserves_function(trained, method):
    a, b, (x, y) = trained
    ab = align(b, a, method=method, data=(x, y))
    _same_up_to_scale(ab(x[:200]), b(x[:200]))
    assert train_error(ab, (x, y)) == train_error(b, (x, y))
    # alignment brings the networks closer than they were
    assert distance(a, ab) < distance(a, b)


def test_weight_matching_never_worse_than_cosine(trained):
    # on the toroid, Σ⟨W_a, P W_b P^T⟩ is −‖Θa − Θb‖²/2 + const, and the coordinate
    # descent starts at the cosine solution
    a, b, _ = trained
    dw = distance(a, b, kind="normalized_aligned", method="weights")
    dc = distance(a, b, kind="normalized_aligned", method="cosine")
    assert dw <= dc + 1e-12


def test_uint8_numpy_data_accepted(trained):
    a, _, (x, y) = trained
    xu = x.numpy().astype(np.uint8)
    assert train_error(a, (xu, y.numpy())) == train_error(a, (x, y))

    class DS:
        pass
    ds = DS()
    ds.x, ds.y = xu, y.numpy()
    assert train_error(a, ds) == train_error(a, (x, y))


# ----------------------------------------------------------------- bad input

def test_unsupported_layer_is_named():
    m = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    with pytest.raises(UnsupportedLayerError, match=r"Tanh at index 2"):
        normalize(m)
    with pytest.raises(UnsupportedLayerError, match="Tanh"):
        align(m, m)


def test_unsupported_layers_misc():
    bad = [
        nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.BatchNorm1d(3), nn.Linear(3, 2)),
        nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.Flatten(), nn.Linear(4, 2)),
        nn.Sequential(nn.Linear(4, 3), nn.ReLU(), Normalize(0.0, 1.0), nn.Linear(3, 2)),
        nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3, track_running_stats=False),
                      nn.Linear(3, 2)),
        nn.Sequential(nn.Linear(4, 3), nn.Sigmoid(), nn.Linear(3, 2)),
    ]
    for m in bad:
        with pytest.raises(UnsupportedLayerError, match="index"):
            normalize(m)
    with pytest.raises(UnsupportedLayerError):
        normalize(nn.Linear(3, 2))


def test_dropout_is_allowed_as_identity():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4, 3)).eval()
    x = torch.randn(8, 5)
    _same_up_to_scale(normalize(m)(x), m(x))


def test_different_shapes_raise():
    torch.manual_seed(0)
    a = MLP([64, 24, 16, 10])
    b = MLP([64, 24, 12, 10])
    with pytest.raises(ValueError, match="different shapes"):
        align(b, a)
    with pytest.raises(ValueError, match="different shapes"):
        distance(a, b)
    c = MLP([64, 24, 10])
    with pytest.raises(ValueError, match="different shapes"):
        distance(a, c, kind="raw")


def test_nan_weights_raise():
    m = mlp()
    with torch.no_grad():
        m[2].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        normalize(m)


def test_bad_arguments():
    m = mlp()
    with pytest.raises(ValueError, match="method"):
        align(m, m, method="nope")
    with pytest.raises(ValueError, match="data"):
        align(m, m, method="activations")
    with pytest.raises(ValueError, match="permutation"):
        permute(m, [np.arange(24), np.zeros(16, dtype=int)])
    with pytest.raises(ValueError, match="positive"):
        rescale(m, [np.ones(24), -np.ones(16)])


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=12, deadline=None)
@given(widths=st.lists(st.integers(1, 7), min_size=1, max_size=3), bn=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_property_align_undoes_any_shuffle(widths, bn, seed):
    torch.manual_seed(seed)
    m = _randomize_bn(MLP([5, *widths, 3], batchnorm=bn), seed)
    m2, _ = _shuffle(m, seed)
    x = torch.randn(16, 5)
    torch.testing.assert_close(m2(x), m(x), atol=1e-4, rtol=1e-4)
    _same_up_to_scale(normalize(m2)(x), m(x))
    assert distance(m, m2, kind="geodesic_aligned") < 1e-4
