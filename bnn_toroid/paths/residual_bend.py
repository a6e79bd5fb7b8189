r"""Single-bend paths between residual binary networks (docs/methods.md, "Single bend
(binary)" and "Residual binary networks"; Pittorino et al., ICML 2022, §4).

A flip path between residual binary networks moves binary weights only: both ends share
their real-valued parameters (stem, affines, scales, shortcuts, head) after alignment.
The bend keeps that rule. Its midpoint starts as ``a`` with a random half of the weights
where ``a`` and (aligned) ``b`` differ set to ``b``'s, and is trained with BinaryNet SGD
on its binary weights alone, the real-valued parameters frozen, through a torch twin
(:class:`LatentTwin`). The path is ``random_flip(a, m)`` then ``random_flip(m, b)``.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import nn as bnn
from ..landscape.residual import check_data, distance
from ..network import residual_ops as R
from .binary import SingleBendPath
from .residual import _check_int, _endpoint, _weights_after, flips_between, random_flip

__all__ = ["LatentTwin", "ResidualSingleBendPath", "midpoint_start", "single_bend"]


class _LatentConv(bnn.BinaryConv2d):
    """One :class:`~bnn_toroid.network.residual_ops.BinaryConv` with trainable latent
    weights: ``scale · conv(pad(sign_ste(x)), sign_ste(w))``. A ``BinaryConv2d`` so that
    :func:`bnn_toroid.train.fit` treats the twin as binary (its defaults, clipping)."""

    def __init__(self, op: R.BinaryConv, latent: np.ndarray):
        f, kh, kw, c = op.weights.shape
        super().__init__(c, f, (kh, kw), stride=op.stride, pad_value=op.pad_value)
        self.padding_spec = op.padding
        with torch.no_grad():
            self.weight.copy_(torch.as_tensor(latent.transpose(0, 3, 1, 2), dtype=torch.float32))
        scale = np.ones(f) if op.scale is None else op.scale
        self.register_buffer("scale", _buf(scale, (1, f, 1, 1)))

    def forward(self, x):
        kh, kw = self.kernel_size
        t, b, l, r = R.resolve_pads(self.padding_spec, x.shape[2], x.shape[3], kh, kw, *self.stride)
        a = F.pad(bnn.sign_ste(x), (l, r, t, b), value=self.pad_value)
        return F.conv2d(a, self.binary_weight(), None, self.stride) * self.scale


def _buf(v, shape=None):
    t = torch.tensor(np.asarray(v, np.float32))  # a copy: the ops hold read-only arrays
    return t if shape is None else t.view(shape)


class _Frozen(nn.Module):
    """A real-valued operation, its parameters as buffers (never trained here)."""

    def __init__(self, op):
        super().__init__()
        self.op = op
        if isinstance(op, R.RealConv):
            self.register_buffer("w", _buf(op.weights.transpose(0, 3, 1, 2)))
            self.register_buffer("b", None if op.bias is None else _buf(op.bias))
        elif isinstance(op, R.Affine):
            self.register_buffer("scale", _buf(op.scale))
            self.register_buffer("shift", _buf(op.shift))
        elif isinstance(op, R.PReLU):
            self.register_buffer("slope", _buf(op.slope))
        elif isinstance(op, R.RealDense):
            self.register_buffer("w", _buf(op.weights))
            self.register_buffer("b", None if op.bias is None else _buf(op.bias))

    @staticmethod
    def _channels(v, x):  # a per-channel vector against NCHW maps or (N, C) rows
        return v.view(1, -1, 1, 1) if x.ndim == 4 else v

    def forward(self, x):
        op = self.op
        if isinstance(op, R.RealConv):
            kh, kw = op.weights.shape[1:3]
            t, b, l, r = R.resolve_pads(op.padding, x.shape[2], x.shape[3], kh, kw, *op.stride)
            return F.conv2d(F.pad(x, (l, r, t, b)), self.w, self.b, op.stride, groups=op.groups)
        if isinstance(op, R.Affine):
            return x * self._channels(self.scale, x) + self._channels(self.shift, x)
        if isinstance(op, R.ReLU):
            return torch.relu(x)
        if isinstance(op, R.PReLU):
            return torch.where(x >= 0, x, x * self._channels(self.slope, x))
        if isinstance(op, (R.MaxPool, R.AvgPool)):
            t, b, l, r = R.resolve_pads(op.padding, x.shape[2], x.shape[3], *op.size, *op.stride)
            if isinstance(op, R.MaxPool):
                return F.max_pool2d(F.pad(x, (l, r, t, b), value=-float("inf")), op.size, op.stride)
            # padded taps are not counted (TensorFlow, ONNX count_include_pad=0)
            total = F.avg_pool2d(F.pad(x, (l, r, t, b)), op.size, op.stride, divisor_override=1)
            ones = F.pad(torch.ones_like(x[:1, :1]), (l, r, t, b))
            return total / F.avg_pool2d(ones, op.size, op.stride, divisor_override=1)
        if isinstance(op, R.GlobalAvgPool):
            return x.mean(dim=(2, 3))
        if isinstance(op, R.RealDense):
            if x.ndim == 4:  # a map is read flattened in NHWC order
                x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
            return F.linear(x, self.w, self.b)
        raise TypeError(f"LatentTwin: unknown operation {type(op).__name__}")


class _Block(nn.Module):
    def __init__(self, body, shortcut):
        super().__init__()
        self.body, self.shortcut = body, shortcut

    def forward(self, x):
        return self.body(x) + self.shortcut(x)


class LatentTwin(nn.Module):
    """Torch twin of a :class:`~bnn_toroid.network.ResidualBinaryNetwork` whose only
    parameters are the latent weights ``w`` of its binary convolutions (``sign(w)`` are
    the ±1 weights, straight-through gradients, Hubara et al. 2016); every real-valued
    parameter is a frozen buffer. Input: NCHW float32 maps; output: logits.

    ``latent`` gives the starting latent weights (one array per binary convolution, in
    ``binary_locations`` order, shaped like the weights); default ``0.5 · w``."""

    def __init__(self, net, latent=None):
        super().__init__()
        ws = net.binary_weights()
        latent = [0.5 * w.astype(np.float64) for w in ws] if latent is None else latent
        k = [0]

        def build(ops):
            mods = []
            for op in ops:
                if isinstance(op, R.BinaryConv):
                    mods.append(_LatentConv(op, np.asarray(latent[k[0]], np.float64)))
                    k[0] += 1
                elif isinstance(op, R.Residual):
                    body = build(op.body)  # run order: body, then shortcut
                    mods.append(_Block(body, build(op.shortcut)))
                else:
                    mods.append(_Frozen(op))
            return nn.Sequential(*mods)

        self.ops = build(net.ops)
        self.template = net

    def forward(self, x):
        return self.ops(x)

    def binary_convs(self) -> list:
        return [m for m in self.modules() if isinstance(m, _LatentConv)]

    def frozen(self):
        """The template network with the twin's current signs as its binary weights."""
        signs = [np.where(m.weight.detach().double().numpy() >= 0, 1, -1).astype(np.int8)
                 .transpose(0, 2, 3, 1) for m in self.binary_convs()]
        return self.template.with_binary_weights(signs)

    def samples(self, x) -> np.ndarray:
        """Samples as the network takes them, as the NCHW float32 array the twin takes."""
        xs = self.template._input(x, "LatentTwin")  # NHWC float64, checked
        return np.ascontiguousarray(xs.transpose(0, 3, 1, 2), dtype=np.float32)


class ResidualSingleBendPath(SingleBendPath):
    """Two residual flip paths joined at the trained midpoint (as
    :class:`~bnn_toroid.paths.binary.SingleBendPath`); ``hamming`` is over binary weights."""

    _hamming = staticmethod(distance)


def midpoint_start(a, b, seed: int = 0):
    """``a`` with ``⌊d/2⌋`` of the ``d`` binary weights where ``a`` and ``b`` differ (a
    random half from ``default_rng(seed)``) set to ``b``'s; real-valued parameters are
    the shared ones."""
    idx = flips_between(a, b)
    take = idx[np.random.default_rng(seed).permutation(len(idx))[:len(idx) // 2]]
    return a.with_binary_weights(_weights_after(a, take, len(take)))


def single_bend(a, b, data, epochs: int = 20, lr=None, seed: int = 0, points: int = 21,
                align=True, batch_size: int = 128, quiet: bool = True,
                orders: int = 1) -> ResidualSingleBendPath:
    r"""Single-bend path ``a → m → b`` between residual binary networks.

    1. ``b`` is aligned onto ``a`` and must then share its real-valued parameters (as in
       :func:`bnn_toroid.paths.residual.random_flip`).
    2. ``m`` starts at Hamming distance ``⌊d/2⌋`` / ``⌈d/2⌉`` from the ends
       (:func:`midpoint_start`).
    3. Its binary weights are trained on ``data`` with BinaryNet SGD
       (:func:`bnn_toroid.train.fit`, ``method="sgd"``: Nesterov momentum, cosine rate
       from ``lr``, default 10; straight-through estimator; latent weights clipped to
       [−1, 1], starting at ``±0.5``), the real-valued parameters frozen, then
       binarised: :math:`m = \operatorname{sign}(w)`.
    4. The path is ``random_flip(a, m)`` then ``random_flip(m, b)``, ``points`` points on
       each half (seeds ``seed`` and ``seed + 1``).
    """
    from ..train import fit

    points = _check_int("single_bend: points", points, 2)
    b = _endpoint(a, b, align, "single_bend")
    x, y = check_data(a, data, "single_bend")
    m0 = midpoint_start(a, b, seed)
    twin = LatentTwin(m0)
    history = fit(twin, (twin.samples(x), y), method="sgd", epochs=epochs,
                  lr=10.0 if lr is None else lr, optimizer="sgd", seed=seed,
                  batch_size=batch_size, quiet=quiet)
    mid = twin.frozen()
    first = random_flip(a, mid, points=points, seed=seed, align=False, orders=orders)
    second = random_flip(mid, b, points=points, seed=seed + 1, align=False, orders=orders)
    return ResidualSingleBendPath(a, b, mid, m0, first, second, history)
