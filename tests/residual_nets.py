"""Small residual binary networks for the tests of residual symmetries and landscapes
(8x8 inputs, 4-8 channels), and a reference walk that records every binary
convolution's integer pre-activations."""
import dataclasses

import numpy as np

from bnn_toroid.network import residual_eval as E
from bnn_toroid.network.residual import ResidualBinaryNetwork
from bnn_toroid.network.residual_ops import (Affine, AvgPool, BinaryConv, GlobalAvgPool, MaxPool,
                                             PReLU, RealConv, RealDense, ReLU, Residual)


def build(rng, c=4, blocks=1, relu=False, pad_value=0, scale=True, down=True, prelu=False,
          maxpool=False, depthwise=False, real_branch=False, classes=3):
    """A Bi-Real / QuickNet-style network: stem conv + affine, ``blocks`` residual blocks
    (binary conv [ReLU] affine, identity shortcut), an optional downsampling block (binary
    conv stride 2 with an AvgPool + 1x1 conv shortcut), optional PReLU / MaxPool /
    depthwise conv, optional real-only 1x1 branch, global pool and a dense head."""
    def pm(*s):
        return rng.choice(np.array([-1, 1], np.int8), size=s)

    def aff(n):
        return Affine(rng.normal(size=n), rng.normal(size=n))

    def bconv(f, cin, stride=1):
        return BinaryConv(pm(f, 3, 3, cin), np.abs(rng.normal(size=f)) + 0.1 if scale else None,
                          stride=stride, padding="same", pad_value=pad_value)

    ops = [RealConv(rng.normal(size=(c, 3, 3, 3)), rng.normal(size=c), padding="same"), aff(c)]
    for _ in range(blocks):
        body = [bconv(c, c)] + ([ReLU()] if relu else []) + [aff(c)]
        ops.append(Residual(tuple(body)))
    if down:
        ops.append(Residual((bconv(2 * c, c, 2), aff(2 * c)),
                            (AvgPool(2, 2), RealConv(rng.normal(size=(2 * c, 1, 1, c))), aff(2 * c))))
        c *= 2
    if prelu:
        ops.append(PReLU(rng.normal(size=c)))
    if maxpool:
        ops.append(MaxPool(3, 2, "same"))
    if depthwise:
        ops.append(RealConv(rng.normal(size=(c, 3, 3, 1)), rng.normal(size=c), groups=c, padding="same"))
    if real_branch:
        ops.append(RealConv(rng.normal(size=(c + 1, 1, 1, c)), rng.normal(size=c + 1)))
        ops.append(aff(c + 1))
        ops.append(AvgPool(2, 2))
        c += 1
    ops += [GlobalAvgPool(), RealDense(rng.normal(size=(classes, c)), rng.normal(size=classes))]
    return ResidualBinaryNetwork(ops, (3, 8, 8), "NCHW")


def preactivations(net, x):
    """Integer pre-activations ``h`` (N, Ho, Wo, F) of every binary convolution, run order."""
    x = net._input(x, "preactivations")[None]
    out = []

    def run(ops, x):
        for op in ops:
            if isinstance(op, Residual):
                x = run(op.body, x) + run(op.shortcut, x)
            elif isinstance(op, BinaryConv):
                h = E._binary_conv(dataclasses.replace(op, scale=None), x, op.weights[None])
                out.append(h[0])
                x = h if op.scale is None else h * op.scale
            else:
                x = E._apply(op, x, [[]], [0])
        return x
    run(net.ops, x)
    return out
