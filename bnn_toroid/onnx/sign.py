"""Binarisation and its quantisers: ``Sign`` (only as larq's ``Sign(Sign(x) + c)``),
``GreaterOrEqual``/``Less`` against a constant followed by ``Where(cond, ±1, ∓1)``, and
QONNX ``BipolarQuant(x, 1)``.

Each turns a symbolic value into a ±1 activation with larq's sign, ``+1 iff x >= t``
(:func:`binarize`): on a pre-activation ``a*h + b`` it appends the layer in integer
threshold form (``fold_sign_affine``) and its pools; on the raw input it sets
``binarize_input``. A bare ``Sign`` (0 maps to 0) is refused where it is used.
"""
from __future__ import annotations

import numpy as np

from .common import QONNX_DOMAIN, OnnxImportError, describe, network_module, op
from .values import (_Act, _Cmp, _Lin, _SignPartial, _SignShifted, broadcast, is_padded,
                     per_unit)


@op("Sign")
def _op_Sign(imp, node, ins, attrs):
    x = ins[0]
    if isinstance(x, _SignShifted):
        return binarize(imp, node, x.src, 0.0)
    if isinstance(x, (_Act, _Lin)):
        return _SignPartial(x, node.name)
    raise OnnxImportError(f"{describe(node)}: Sign of a {type(x).__name__.strip('_')}")


@op("GreaterOrEqual")
def _op_GreaterOrEqual(imp, node, ins, attrs):
    x, c = ins
    if not isinstance(c, np.ndarray) or not isinstance(x, (_Act, _Lin)):
        raise OnnxImportError(f"{describe(node)}: expected GreaterOrEqual(tensor, constant)")
    return _Cmp(x, c, True, node.name)


@op("Less")
def _op_Less(imp, node, ins, attrs):
    x, c = ins
    if not isinstance(c, np.ndarray) or not isinstance(x, (_Act, _Lin)):
        raise OnnxImportError(f"{describe(node)}: expected Less(tensor, constant)")
    return _Cmp(x, c, False, node.name)


@op("Where")
def _op_Where(imp, node, ins, attrs):
    cond, hi, lo = ins
    if not isinstance(cond, _Cmp) or not isinstance(hi, np.ndarray) \
            or not isinstance(lo, np.ndarray):
        raise OnnxImportError(f"{describe(node)}: expected Where(x >= t, 1, -1)")
    hv, lv = np.unique(hi), np.unique(lo)
    if hv.size != 1 or lv.size != 1 or {float(hv[0]), float(lv[0])} != {1.0, -1.0}:
        raise OnnxImportError(f"{describe(node)}: Where outputs {hv} / {lv}; expected "
                              "±1 (a binary activation)")
    positive = (float(hv[0]) == 1.0) == cond.ge  # +1 iff src >= thr
    out = binarize(imp, node, cond.src, cond.thr)
    if not positive:
        out.neg = ~out.neg
    return out


@op("BipolarQuant", domain=QONNX_DOMAIN)
def _op_BipolarQuant(imp, node, ins, attrs):
    x, scale = ins[0], ins[1]
    if not isinstance(scale, np.ndarray) or not np.all(np.asarray(scale) == 1):
        raise OnnxImportError(f"{describe(node)}: BipolarQuant of an activation with scale "
                              f"{scale}; expected 1")
    return binarize(imp, node, x, 0.0)


def binarize(imp, node, x, thr):
    """``+1 iff x >= thr`` (larq sign of ``x - thr``) for a symbolic ``x``."""
    net = network_module()
    if isinstance(x, _Lin):
        t = per_unit(x, thr, node)
        w2, T, _flipped = net.fold_sign_affine(x.weights, x.a, x.b - t, integer=x.integer)
        if x.kind == "dense":
            if x.pools:
                raise OnnxImportError(f"{describe(node)}: pooled dense layer")
            imp.layers.append(net.Dense(w2, T))
        else:
            imp.layers.append(net.Conv2d(w2, T, stride=x.stride, padding=x.padding,
                                         pad_value=x.pad_value))
        sa = np.sign(x.a)
        for (k, s, sa_pool) in x.pools:
            mn = (sa * sa_pool) < 0
            imp.layers.append(net.MaxPool2d(k, s, min_channels=mn if mn.any() else None))
        return _Act(True, x.shape, x.axes, flat_from=x.flat_from,
                    neg=np.zeros(x.shape, dtype=bool), from_input=False)
    if isinstance(x, _Act) and not x.binary:
        t = broadcast(x.shape, thr, node)
        if imp.first_layer_done:
            raise OnnxImportError(f"{describe(node)}: binarising the input twice")
        if np.any(t != 0) or np.any(x.offset != 0) or np.any(x.scale <= 0):
            raise OnnxImportError(
                f"{describe(node)}: the input is binarised with a shift or a non-positive "
                "scale; only sign(x) of the raw (positively scaled) input is supported")
        if is_padded(x):
            raise OnnxImportError(f"{describe(node)}: binarising a padded input")
        imp.binarize_input = True
        return _Act(True, x.shape, x.axes, flat_from=x.flat_from,
                    neg=np.zeros(x.shape, dtype=bool), from_input=True)
    if isinstance(x, _Act) and x.binary:
        t = broadcast(x.shape, thr, node)
        # physical value p = ±1; p >= t is p itself iff -1 < t <= 1
        if np.all((t > -1) & (t <= 1)) and not is_padded(x):
            return x
        raise OnnxImportError(f"{describe(node)}: re-binarising a ±1 activation against "
                              f"threshold {np.unique(t)[:4]} is not the identity")
    raise OnnxImportError(f"{describe(node)}: cannot binarise a "
                          f"{type(x).__name__.strip('_')}")
