"""ResidualBinaryNetwork.from_torch: torch twins of Bi-Real- and QuickNet-style networks
(bnn_toroid.nn binary layers, torch.nn real layers, residual '+') traced with torch.fx
give networks whose logits equal the torch model's (float64)."""
import numpy as np
import pytest
import torch
from torch import nn

import bnn_toroid.nn as bnn
from bnn_toroid.network import NetworkError, ResidualBinaryNetwork
from bnn_toroid.network.residual_ops import BinaryConv, Residual


class BiRealBlock(nn.Module):
    """x + BN(BinaryConv(sign x)) (Liu et al. 2018); a downsampling block's shortcut is
    AvgPool -> 1x1 Conv -> BN."""

    def __init__(self, c_in, c_out, stride=1):
        super().__init__()
        self.sign = bnn.Sign()
        self.conv = bnn.BinaryConv2d(c_in, c_out, 3, stride=stride, padding="same")
        self.bn = nn.BatchNorm2d(c_out)
        self.short = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.AvgPool2d(stride), nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        return self.bn(self.conv(self.sign(x))) + self.short(x)


class QuickNetBlock(nn.Module):
    """x + BN(ReLU(BinaryConv(sign x))) with larq's pad_values=1 (Bannink et al. 2021)."""

    def __init__(self, c):
        super().__init__()
        self.sign = bnn.Sign()
        self.conv = bnn.BinaryConv2d(c, c, 3, padding="same", pad_value=1)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return x + self.bn(torch.relu(self.conv(self.sign(x))))


def quicknet_transition(c, c2):
    """MaxPool -> depthwise 3x3 -> 1x1 conv -> BN (QuickNet's real-valued transition)."""
    return nn.Sequential(nn.MaxPool2d(3, 2, padding=1), nn.Conv2d(c, c, 3, padding=1, groups=c),
                         nn.Conv2d(c, c2, 1), nn.BatchNorm2d(c2))


def _randomise_bn(model, gen):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(-1.5, 1.5, generator=gen)
                m.bias.normal_(generator=gen)
                m.running_mean.normal_(generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)


def bireal_twin(c=8, classes=5):
    return nn.Sequential(nn.Conv2d(3, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c),
                         BiRealBlock(c, c), BiRealBlock(c, 2 * c, 2), BiRealBlock(2 * c, 2 * c),
                         nn.PReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(2 * c, classes))


def quicknet_twin(c=8, classes=5):
    return nn.Sequential(nn.Conv2d(3, c, 3, stride=2, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                         QuickNetBlock(c), QuickNetBlock(c), nn.ReLU(), quicknet_transition(c, 2 * c),
                         QuickNetBlock(2 * c), nn.ReLU(), nn.Flatten(),
                         nn.Linear(2 * c * 4 * 4, classes))


@pytest.mark.parametrize("build", [bireal_twin, quicknet_twin])
@pytest.mark.parametrize("c", [8, 65])
def test_from_torch_equals_the_torch_model(build, c):
    gen = torch.Generator().manual_seed(c)
    torch.manual_seed(c)
    model = build(c).double().eval()
    _randomise_bn(model, gen)
    net = ResidualBinaryNetwork.from_torch(model, (3, 15, 15) if build is bireal_twin else (3, 16, 16))
    x = torch.randn(4, *net.input_shape, dtype=torch.float64, generator=gen)
    with torch.no_grad():
        want = model(x).numpy()
    got = net.logits(x.numpy())
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * np.abs(want).max())
    np.testing.assert_array_equal(got.argmax(1), want.argmax(1))
    assert sum(isinstance(op, Residual) for op in net.ops) == 3
    for loc in net.binary_locations():
        assert isinstance(net.op_at(loc), BinaryConv)
    convs = [m for m in model.modules() if isinstance(m, bnn.BinaryConv2d)]
    for w, m in zip(net.binary_weights(), convs):
        np.testing.assert_array_equal(w, np.where(m.weight.detach().numpy() >= 0, 1, -1)
                                      .transpose(0, 2, 3, 1))


def test_unsupported_nodes_are_named():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.act = nn.ELU()

        def forward(self, x):
            return self.act(self.conv(x)).mean((2, 3))
    with pytest.raises(NetworkError, match=r"fx node 'act'.*ELU is not supported"):
        ResidualBinaryNetwork.from_torch(Bad(), (3, 8, 8))

    class NoSign(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = bnn.BinaryConv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x)
    with pytest.raises(NetworkError, match=r"fx node 'conv'.*expected bnn_toroid.nn.Sign"):
        ResidualBinaryNetwork.from_torch(NoSign(), (3, 8, 8))

    class Mul(nn.Module):
        def forward(self, x):
            return (x * x).flatten(1)
    with pytest.raises(NetworkError, match=r"fx node 'mul'.*not supported"):
        ResidualBinaryNetwork.from_torch(Mul(), (3, 8, 8))
