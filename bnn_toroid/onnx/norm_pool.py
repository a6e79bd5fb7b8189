"""Normalisation, pooling and the output head: ``BatchNormalization`` (inference),
``MaxPool`` and a final ``Softmax``/``LogSoftmax``.

A BatchNormalization is a per-channel affine map (:func:`.affine.affine`). A MaxPool of
a pre-activation is remembered with the sign of its ``a`` at that point: a later
decreasing affine turns it into a min-pool (``MaxPool2d.min_channels``). A final softmax
over the logits is dropped with a warning.
"""
from __future__ import annotations

import numpy as np

from .affine import affine
from .common import OnnxImportError, describe, network_module, op
from .values import _Act, _Lin, _Softmax


@op("BatchNormalization")
def _op_BatchNormalization(imp, node, ins, attrs):
    x = ins[0]
    if attrs.get("training_mode", 0):
        raise OnnxImportError(f"{describe(node)}: BatchNormalization in training mode")
    if len([o for o in node.output if o]) != 1:
        raise OnnxImportError(f"{describe(node)}: BatchNormalization with running-stat "
                              "outputs")
    names = ["scale", "B", "mean", "var"]
    scale, bias, mean, var = (np.asarray(imp.const(n, node, names[i]), dtype=np.float64)
                              for i, n in enumerate(node.input[1:5]))
    eps = float(attrs.get("epsilon", 1e-5))
    g = scale / np.sqrt(var + eps)
    if not isinstance(x, (_Lin, _Act)):
        raise OnnxImportError(f"{describe(node)}: BatchNormalization of a "
                              f"{type(x).__name__.strip('_')}")
    # BN normalises axis 1 of (N, C, ...): shape the per-channel vectors for that.
    extra = len(x.shape) - 1
    shp = (1, -1) + (1,) * extra
    return affine(node, x, g.reshape(shp), (bias - mean * g).reshape(shp))


@op("MaxPool")
def _op_MaxPool(imp, node, ins, attrs):
    x = ins[0]
    ks = list(attrs.get("kernel_shape", []))
    st = list(attrs.get("strides", [1] * len(ks)))
    if len(ks) != 2 or ks[0] != ks[1] or st[0] != st[1]:
        raise OnnxImportError(f"{describe(node)}: kernel {ks}, strides {st}; expected a "
                              "square 2-D pool with equal strides")
    if any(attrs.get("pads", [0, 0, 0, 0])) or attrs.get("auto_pad", "NOTSET") not in (
            "NOTSET", "VALID") or attrs.get("ceil_mode", 0) or any(
            d != 1 for d in attrs.get("dilations", [1, 1])):
        raise OnnxImportError(f"{describe(node)}: padded, dilated or ceil-mode pooling")
    k, s = int(ks[0]), int(st[0])
    if not isinstance(x, (_Lin, _Act)) or len(x.shape) != 3 or x.axes != ("C", "H", "W"):
        raise OnnxImportError(f"{describe(node)}: max-pooling a "
                              f"{type(x).__name__.strip('_')} with axes "
                              f"{getattr(x, 'axes', None)}; expected an NCHW layer output")
    C, H, W = x.shape
    Ho, Wo = (H - k) // s + 1, (W - k) // s + 1
    if Ho < 1 or Wo < 1:
        raise OnnxImportError(f"{describe(node)}: pool larger than its {H}x{W} input")
    if isinstance(x, _Lin):
        if x.kind != "conv":
            raise OnnxImportError(f"{describe(node)}: pooling a dense layer")
        x.pools.append((k, s, np.sign(x.a)))
    else:
        if not x.binary:
            raise OnnxImportError(f"{describe(node)}: pooling the real-valued input")
        n2 = x.neg.reshape(C, -1)
        if not np.all(n2 == n2[:, :1]):
            raise OnnxImportError(f"{describe(node)}: activation negated per pixel")
        mn = n2[:, 0].copy()
        net = network_module()
        imp.layers.append(net.MaxPool2d(k, s, min_channels=mn if mn.any() else None))
        x.neg = np.broadcast_to(mn[:, None, None], (C, Ho, Wo)).copy()
    x.shape = (C, Ho, Wo)
    return x


@op("Softmax", "LogSoftmax")
def _op_Softmax(imp, node, ins, attrs):
    x = ins[0]
    axis = int(attrs.get("axis", -1))
    if not isinstance(x, _Lin) or x.kind != "dense" or axis not in (1, -1):
        raise OnnxImportError(f"{describe(node)}: only a final softmax over the logits "
                              "is supported")
    return _Softmax(x, node)
