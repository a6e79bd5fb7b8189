"""Small residual networks for the graph-symmetry tests, written here (torchvision is not a
dependency): a torchvision-style ResNet (BasicBlock, 1×1 conv + BN downsample shortcuts)
and a pre-activation ResNet (He et al. 2016, "Identity mappings in deep residual
networks"), both for 1×8×8 inputs."""
import torch
import torch.nn.functional as F
from torch import nn

from bnn_toroid.nn import Normalize


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """Stem conv + BN + ReLU + max pool, ``len(widths)`` stages of ``blocks`` BasicBlocks
    (stride 2 from the second stage), global average pooling and a linear head."""

    def __init__(self, widths=(4, 8), blocks=1, classes=3, cin=1, normalize=True):
        super().__init__()
        self.norm = Normalize(0.5, 0.25) if normalize else nn.Identity()
        self.conv1 = nn.Conv2d(cin, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(2)
        layers, c = [], widths[0]
        for i, w in enumerate(widths):
            for j in range(blocks):
                layers.append(BasicBlock(c, w, 2 if (i > 0 and j == 0) else 1))
                c = w
        self.layers = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.norm(x)))))
        x = self.layers(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


class PreActBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        short = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + short


class PreActResNet(nn.Module):
    """Stem conv (with bias), pre-activation blocks (BN → ReLU → conv; a 1×1 conv
    shortcut on the pre-activated input where the shape changes), BN → ReLU, 2×2
    average pooling, ``view(N, -1)`` and a linear head (for 8×8 inputs)."""

    def __init__(self, widths=(4, 8), blocks=1, classes=3, cin=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, widths[0], 3, 1, 1, bias=True)
        layers, c = [], widths[0]
        for i, w in enumerate(widths):
            for j in range(blocks):
                layers.append(PreActBlock(c, w, 2 if (i > 0 and j == 0) else 1))
                c = w
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(c)
        self.linear = nn.Linear(c * 4, classes)

    def forward(self, x):
        out = self.layers(self.conv1(x))
        out = F.relu(self.bn(out))
        out = F.avg_pool2d(out, 2)  # 4×4 → 2×2: the head reads 4-feature blocks
        out = out.view(out.size(0), -1)
        return self.linear(out)


@torch.no_grad()
def randomize_bn(model, seed=0):
    """Give every BN non-trivial affine parameters and running statistics (a freshly
    built net has γ=1, β=0, μ=0, σ²=1, which hides mistakes)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.weight.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.copy_(torch.randn(n, generator=g) * 0.3)
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model.eval()
