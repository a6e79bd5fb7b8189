"""Random residual binary networks for the tests (Bi-Real- and QuickNet-shaped)."""
import numpy as np

from bnn_toroid.network import ResidualBinaryNetwork
from bnn_toroid.network.residual_ops import (Affine, AvgPool, BinaryConv, GlobalAvgPool, MaxPool,
                                             PReLU, RealConv, RealDense, ReLU, Residual)


def _pm(rng, *shape):
    return rng.choice(np.array([-1, 1], np.int8), size=shape)


def _aff(rng, c):
    return Affine(rng.uniform(0.5, 1.5, c) * rng.choice([-1, 1], c), rng.normal(size=c))


def random_residual(rng, c=8, hw=(7, 9), in_c=3, stride=2, pad_value=0, classes=5,
                    layout="NCHW", quick=False):
    """A stem conv, an identity Bi-Real block, a downsampling block (stride ``stride``;
    Bi-Real: AvgPool + 1x1 conv shortcut, or QuickNet: ReLU in the body and a MaxPool,
    depthwise and 1x1 conv transition), PReLU, a depthwise conv, global pool, dense head."""
    c2 = c + 1
    alpha = rng.uniform(0.1, 2.0, c)
    ops = [RealConv(rng.normal(size=(c, 3, 3, in_c)), rng.normal(size=c), padding="same"),
           _aff(rng, c),
           Residual((BinaryConv(_pm(rng, c, 3, 3, c), alpha, padding="same",
                                pad_value=pad_value), _aff(rng, c)))]
    if quick:
        ops += [Residual((BinaryConv(_pm(rng, c, 3, 3, c), None, padding="same",
                                     pad_value=pad_value), ReLU(), _aff(rng, c))),
                MaxPool(3, stride, "same"),
                RealConv(rng.normal(size=(c, 3, 3, 1)), None, padding="same", groups=c),
                RealConv(rng.normal(size=(c2, 1, 1, c))), _aff(rng, c2)]
    else:
        ops.append(Residual(
            (BinaryConv(_pm(rng, c2, 3, 3, c), rng.uniform(0.1, 2.0, c2), stride=stride,
                        padding="same", pad_value=pad_value), _aff(rng, c2)),
            (AvgPool(stride, stride, "same"), RealConv(rng.normal(size=(c2, 1, 1, c))),
             _aff(rng, c2))))
    ops += [PReLU(rng.uniform(-0.5, 0.5, c2)),
            RealConv(rng.normal(size=(c2, 3, 3, 1)), rng.normal(size=c2), padding="same",
                     groups=c2),
            GlobalAvgPool(), RealDense(rng.normal(size=(classes, c2)), rng.normal(size=classes))]
    shape = (in_c,) + tuple(hw) if layout == "NCHW" else tuple(hw) + (in_c,)
    return ResidualBinaryNetwork(ops, shape, layout)


def flipped_weights(rng, net, p=0.3):
    """A copy of the binary weights with a fraction ``p`` of them flipped."""
    return [np.where(rng.random(w.shape) < p, -w, w).astype(np.int8) for w in net.binary_weights()]
