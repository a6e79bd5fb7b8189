"""Residual networks through the real-valued tools (issue 22, items 1-4): the permutation
and scale spaces traced from the graph, normalisation onto the toroid, alignment,
distances, paths and local energy, on a torchvision-style ResNet and a pre-activation
ResNet (tests/resnet_models.py)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from torch import nn

import bnn_toroid as bt
from bnn_toroid import paths
from bnn_toroid.network.continuous import UnsupportedLayerError
from bnn_toroid.network.graph import parse
from bnn_toroid.symmetry import continuous as sc
from bnn_toroid.symmetry import graph as sg
from resnet_models import PreActResNet, ResNet, randomize_bn

ARCHS = {"resnet": ResNet, "preact": PreActResNet}


def _net(arch, seed=0, widths=(4, 8), blocks=1):
    torch.manual_seed(seed)
    return randomize_bn(ARCHS[arch](widths=widths, blocks=blocks), seed)


def _x(n=48, seed=0):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _same_up_to_scale(a, b, tol=1e-5):
    """``a = c·b`` for one positive c (normalisation scales the logits as a whole), and
    the argmax identical."""
    a, b = a.detach().double(), b.detach().double()
    c = float((a * b).sum() / (b * b).sum())
    assert c > 0
    assert torch.allclose(a, c * b, atol=tol * float(b.abs().max()), rtol=0)
    assert torch.equal(a.argmax(1), b.argmax(1))


def _random_copy(m, seed):
    rng = np.random.default_rng(seed)
    p = sc.permute(m, [rng.permutation(k) for k in sg.channel_spaces(m)])
    return sc.rescale(p, [rng.uniform(0.2, 5.0, k) for k in sg.scale_spaces(m)])


def _max_diff(a, b):
    return max(float((x - y).abs().max()) for x, y in
               zip(a.state_dict().values(), b.state_dict().values()) if x.is_floating_point())


# ------------------------------------------------------------ spaces from the graph

def test_resnet_spaces_follow_the_stream():
    g = parse(_net("resnet", blocks=2))
    # conv1 + bn1 output, both blocks' bn2 and the stream they add to: one permutation
    stream = next(sp for sp in g.channels if "bn1" in sp.nodes)
    mods = {t.module for t in stream.targets}
    assert {"bn1", "layers.0.bn2", "layers.1.bn2", "layers.0.conv1", "layers.1.conv1",
            "layers.2.downsample.0"} <= mods
    # the stem conv, the two blocks' conv2 and the downsample write it through their BNs
    sc_stream = next(s for s in g.scales if ("bn1", "bn") in s.writers)
    assert {n for n, _ in sc_stream.writers} == {"bn1", "layers.0.bn2", "layers.1.bn2"}
    # the input and the logits are not permuted
    assert g.channels[0].fixed and g.scale_order is not None
    assert g.channels[g.scales[g.output_scale].channel].fixed


def test_preact_stream_is_written_by_convs_and_read_by_bns():
    g = parse(_net("preact", blocks=2))
    s = next(s for s in g.scales if ("conv1", "layer") in s.writers)
    assert {n for n, _ in s.writers} == {"conv1", "layers.0.conv2", "layers.1.conv2"}
    assert set(s.bn_readers) == {"layers.0.bn1", "layers.1.bn1", "layers.2.bn1"}
    head = [t for sp in g.channels for t in sp.targets if t.module == "linear" and t.axis == 1]
    assert head[0].block == 4  # 2×2 pooled positions per channel after view(N, -1)


# ------------------------------------------------------------ function preserved

@settings(max_examples=8, deadline=None)
@given(arch=st.sampled_from(sorted(ARCHS)), w0=st.integers(2, 5), w1=st.integers(2, 6),
       blocks=st.integers(1, 2), seed=st.integers(0, 10_000))
def test_permute_rescale_normalize_keep_the_function(arch, w0, w1, blocks, seed):
    m = _net(arch, seed, (w0, w1), blocks)
    x = _x(32, seed)
    with torch.no_grad():
        y = m(x)
    r = _random_copy(m, seed)
    assert torch.allclose(r(x), y, atol=1e-5 * float(y.abs().max()), rtol=0)
    assert torch.equal(r(x).argmax(1), y.argmax(1))
    n = sc.normalize(m)
    _same_up_to_scale(n(x), y)
    assert type(n) is type(m) and any(isinstance(k, nn.BatchNorm2d) for k in n.modules())


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_normalized_model_is_on_the_toroid(arch):
    m = _net(arch, 3, blocks=2)
    g, n = sg.normalized_model(m)
    from bnn_toroid.geometry.graph import _gather, sphere_pieces
    for ts, per_row, radius in sphere_pieces(g, n):
        norms = _gather(ts, per_row).norm(dim=1)
        assert torch.allclose(norms, torch.full_like(norms, radius), atol=1e-12)
    assert _max_diff(sc.normalize(sc.normalize(m)), sc.normalize(m)) < 1e-5


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_rescaled_copy_has_the_same_toroid_point(arch):
    m = _net(arch, 1)
    rng = np.random.default_rng(0)
    r = sc.rescale(m, [rng.uniform(0.2, 5.0, k) for k in sg.scale_spaces(m)])
    assert _max_diff(sc.normalize(r), sc.normalize(m)) < 1e-5
    assert bt.distance(m, r, "geodesic") < 1e-5 < bt.distance(m, r, "raw")


# ------------------------------------------------------------ alignment and distance

@settings(max_examples=6, deadline=None)
@given(arch=st.sampled_from(sorted(ARCHS)), blocks=st.integers(1, 2),
       method=st.sampled_from(["cosine", "weights"]), seed=st.integers(0, 10_000))
def test_permuted_rescaled_copy_aligns_back(arch, blocks, method, seed):
    m = _net(arch, seed, (5, 7), blocks)
    r = _random_copy(m, seed + 1)
    assert bt.distance(m, r, "geodesic") > 1e-2
    assert bt.distance(m, r, "geodesic_aligned", method=method) < 1e-5
    assert _max_diff(bt.align(r, m, method=method), sc.normalize(m)) < 1e-5
    perms = sc.find_permutations(r, m, method)
    assert bt.distance(m, sc.permute(r, perms), "geodesic") < 1e-5


def test_align_keeps_the_function_of_an_independent_net():
    a, b = _net("resnet", 0), _net("resnet", 1)
    x = _x()
    _same_up_to_scale(bt.align(b, a)(x), b(x))
    # weight matching maximises Σ⟨Θ_a, PΘ_b⟩ from the cosine solution: on the toroid
    # (fixed row norms) that can only shrink the chordal, normalised-aligned distance
    assert bt.distance(a, b, "normalized_aligned", method="weights") <= \
        bt.distance(a, b, "normalized_aligned") + 1e-12
    assert bt.distance(a, b, "geodesic_aligned") < bt.distance(a, b, "geodesic")
    per = bt.distance(a, b, "geodesic_aligned", per_layer=True)
    assert per["total"] == pytest.approx(bt.distance(a, b, "geodesic_aligned"))
    raw = bt.distance(a, b, "raw", per_layer=True)
    assert len(raw) == len(parse(a).layers) + 1


def test_graph_normalize_agrees_with_the_chain_on_a_wrapped_mlp():
    class Wrapped(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)

    torch.manual_seed(0)
    seq = nn.Sequential(nn.Flatten(), nn.Linear(64, 7), nn.ReLU(), nn.Linear(7, 5), nn.ReLU(),
                        nn.Linear(5, 3))
    chain = sc.normalize(seq)
    graph = sc.normalize(Wrapped(seq))
    assert type(chain) is nn.Sequential and isinstance(graph, Wrapped)
    for pc, pg in zip(chain.parameters(), graph.parameters()):
        assert torch.allclose(pc, pg, atol=1e-6)


def test_sequential_keeps_the_chain_behaviour():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                        nn.Linear(3 * 36, 4)).eval()
    n = sc.normalize(seq)
    assert type(n) is nn.Sequential
    assert not any(isinstance(k, nn.BatchNorm2d) for k in n.modules())  # folded, as before


# ------------------------------------------------------------ unsupported graphs

class _Cat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 2, 3), nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(4 * 36, 2)

    def forward(self, x):
        return self.fc(torch.flatten(torch.cat([self.a(x), self.b(x)], 1), 1))


class _Tanh(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.act, self.fc = nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Linear(72, 2)

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).flatten(1))


class _Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.stem = nn.Conv2d(1, 2, 3, padding=1)
        self.fc = nn.Linear(128, 2)

    def forward(self, x):
        return self.fc(torch.flatten(self.conv(F.relu(self.conv(self.stem(x)))), 1))


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 2)

    def forward(self, x):
        if x.sum() > 0:
            x = x * 2
        return self.fc(x.flatten(1))


class _NoBNStream(nn.Module):
    """A residual stream whose writers read, without BN, a space that reads it."""

    def __init__(self):
        super().__init__()
        self.stem, self.c1, self.c2 = (nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1),
                                       nn.Conv2d(3, 3, 3, padding=1))
        self.fc = nn.Linear(3 * 64, 2)

    def forward(self, x):
        s = F.relu(self.stem(x))
        s = F.relu(s + self.c2(F.relu(self.c1(s))))
        return self.fc(torch.flatten(s, 1))


@pytest.mark.parametrize("model, node", [
    (_Cat(), "fx node 'cat'"), (_Tanh(), "fx node 'act'"), (_Twice(), "fx node 'conv_1'"),
])
def test_unsupported_nodes_are_named(model, node):
    for verb in (sc.normalize, lambda m: bt.align(m, m), lambda m: bt.distance(m, m),
                 lambda m: paths.geodesic(m, m, 3)):
        with pytest.raises(UnsupportedLayerError, match=node):
            verb(model)


def test_untraceable_and_cyclic_models_say_why():
    with pytest.raises(UnsupportedLayerError, match="torch.fx cannot trace _Branchy"):
        sc.normalize(_Branchy())
    with pytest.raises(UnsupportedLayerError, match="cycle .*fx nodes"):
        sc.normalize(_NoBNStream())
    # permutations need no section: they still work on such a stream
    m = _NoBNStream()
    x = _x(8)
    rng = np.random.default_rng(0)
    p = sc.permute(m, [rng.permutation(k) for k in sg.channel_spaces(m)])
    assert torch.allclose(p(x), m(x), atol=1e-6)


def test_bad_permutations_and_scales_are_refused():
    m = _net("resnet")
    k = sg.channel_spaces(m)
    with pytest.raises(ValueError, match=f"expected {len(k)} permutations"):
        sc.permute(m, [np.arange(n) for n in k[:-1]])
    with pytest.raises(ValueError, match=r"perms\[0\].*not a permutation"):
        sc.permute(m, [np.zeros(n, int) for n in k])
    with pytest.raises(ValueError, match=r"scales\[0\]: need .* positive"):
        sc.rescale(m, [-np.ones(n) for n in sg.scale_spaces(m)])
    with pytest.raises(ValueError, match="activations.*not available"):
        bt.align(m, m, method="activations", data=(_x(4), torch.zeros(4, dtype=torch.long)))
    with pytest.raises(ValueError, match="different architectures"):
        bt.distance(m, _net("resnet", widths=(4, 6)))


# ------------------------------------------------------------ paths and landscape

@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_geodesic_and_linear_endpoints_reproduce_the_models(arch):
    a, b = _net(arch, 0), _net(arch, 1)
    x = _x()
    y = a(x).argmax(1)
    geo = paths.geodesic(a, b, points=5)
    _same_up_to_scale(geo.point(0)(x), a(x))
    _same_up_to_scale(geo.point(4)(x), b(x))
    assert bt.distance(geo.point(0), geo.point(4), "geodesic") == pytest.approx(
        bt.distance(a, b, "geodesic_aligned"), rel=1e-6)
    # the midpoint is halfway on the toroid
    assert bt.distance(geo.point(0), geo.point(2), "geodesic") == pytest.approx(
        0.5 * bt.distance(geo.point(0), geo.point(4), "geodesic"), rel=1e-4)
    lin = paths.linear(a, b, points=3)
    assert torch.equal(lin.point(0)(x), a(x)) and torch.equal(lin.point(2)(x), b(x))
    e = geo.errors((x, y))
    assert e[0] == 0 and e[-1] == float((b(x).argmax(1) != y).float().mean())
    al = paths.linear(a, b, points=3, align=True)
    assert torch.allclose(al.point(2)(x), b(x), atol=1e-5)


def test_paths_recompute_batchnorm_statistics():
    a, b = _net("resnet", 0), _net("resnet", 1)
    x = _x(64)
    y = a(x).argmax(1)
    p = paths.geodesic(a, b, points=3, bn="recompute", bn_data=(x, y))
    m = p.point(1)
    bn = m.get_submodule("bn1")
    stem = m.get_submodule("conv1")(m.get_submodule("norm")(x))
    assert torch.allclose(bn.running_mean, stem.mean((0, 2, 3)), atol=1e-5)
    with pytest.raises(ValueError, match="bn_data"):
        paths.geodesic(a, b, points=3, bn="recompute").point(1)


def test_single_bend_and_local_energy_on_a_resnet():
    a, b = _net("preact", 0), _net("preact", 1)
    x = _x(64)
    y = a(x).argmax(1)
    sb = paths.single_bend(a, b, (x, y), points=5, epochs=1, batch_size=16)
    assert len(sb) == 5 and sb.fractions[2] == 0.5
    _same_up_to_scale(sb.point(0)(x), a(x))
    _same_up_to_scale(sb.point(4)(x), b(x))
    _same_up_to_scale(sb.point(2)(x), sb.midpoint(x))
    le = bt.local_energy(a, (x, y), sigma=[0.0, 0.3], samples=3)
    assert le.base_error == 0 and le.mean[0] == 0 and le.errors.shape == (3, 2)
    with pytest.raises(UnsupportedLayerError, match="fx node 'act'"):
        bt.local_energy(_Tanh(), (torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)))


def test_the_dispatching_verbs_take_a_resnet_and_refuse_mixed_kinds():
    from netgen import random_mlp

    a = _net("resnet")
    x = _x(16)
    y = a(x).argmax(1)
    assert bt.error(a, (x, y)) == 0.0
    binary = random_mlp(np.random.default_rng(0), [64, 8, 3], constant=False)
    with pytest.raises(TypeError):
        bt.distance(a, binary)
    with pytest.raises(TypeError):
        paths.geodesic(a, binary)
