"""Elementwise affine ops: ``Add``, ``Sub``, ``Mul``, ``Div``, ``Neg`` with one constant
operand.

On a pre-activation ``a*h + b`` they update ``a`` and ``b`` (one value per unit); on the
real input its ``scale``/``offset`` (and, padded, the border's raw value); on a ±1
activation only a ±1 factor (stored as negation); after a bare ``Sign``, ``Add(c)`` with
``0 < c < 1`` makes larq's ``Sign(Sign(x) + c)``.
"""
from __future__ import annotations

import warnings

import numpy as np

from .common import OnnxImportError, describe, op
from .values import (_Act, _Lin, _SignPartial, _SignShifted, broadcast, is_padded,
                     per_unit)


def split_const(node, ins):
    """``(tensor, constant, constant_first)`` of a binary op with one constant operand."""
    a, b = ins
    if isinstance(a, np.ndarray) and not isinstance(b, np.ndarray):
        return b, a, True
    if isinstance(b, np.ndarray) and not isinstance(a, np.ndarray):
        return a, b, False
    raise OnnxImportError(f"{describe(node)}: needs one constant and one tensor operand")


def affine(node, x, mul, add):
    """Apply ``x -> x*mul + add`` (constants) to a symbolic value; an error says what
    cannot be scaled or shifted."""
    if isinstance(x, _Act) and is_padded(x):
        return affine_padded(node, x, mul, add)
    if isinstance(x, _Lin):
        m = per_unit(x, mul, node)
        c = per_unit(x, add, node)
        x.a = x.a * m
        x.b = x.b * m + c
        return x
    if isinstance(x, _Act) and not x.binary:
        m = broadcast(x.shape, mul, node)
        c = broadcast(x.shape, add, node)
        x.scale = x.scale * m
        x.offset = x.offset * m + c
        return x
    if isinstance(x, _Act) and x.binary:
        m = broadcast(x.shape, mul, node)
        c = broadcast(x.shape, add, node)
        if np.all(c == 0) and np.all(np.abs(m) == 1):
            x.neg = x.neg ^ (m < 0)
            return x
        raise OnnxImportError(
            f"{describe(node)}: a binary activation may only be multiplied by ±1 "
            "(scaled or shifted binary activations are not supported)")
    if isinstance(x, _SignPartial):
        c = np.asarray(add, dtype=np.float64)
        if np.all(np.asarray(mul) == 1) and c.size and np.all((c > 0) & (c < 1)):
            return _SignShifted(x.src, node.name)
        raise OnnxImportError(
            f"{describe(node)}: ONNX Sign maps 0 to 0, so a bare Sign is not larq's "
            "sign; expected Sign -> Add(c, 0 < c < 1) -> Sign (larq ste_sign via tf2onnx)")
    raise OnnxImportError(f"{describe(node)}: cannot apply an affine map to a "
                          f"{type(x).__name__.strip('_')}")


def affine_padded(node, x, mul, add):
    """``x*mul + add`` on a padded real input: the interior updates scale/offset, the
    border updates ``pad_raw``. Constants must not vary along a padded axis, except an
    ``add`` that is zero inside and fills the border (per-channel pad values)."""
    if x.binary:
        raise OnnxImportError(f"{describe(node)}: scaling or shifting a padded binary "
                              "activation")
    m = broadcast(x.shape, mul, node)
    c = broadcast(x.shape, add, node)
    inner = tuple(slice(b, n - e) for (b, e), n in zip(x.pad, x.shape))
    padded_axes = tuple(i for i, p in enumerate(x.pad) if p != (0, 0))

    def along_padded(arr):  # arr restricted to one index on the padded axes, or None
        first = arr[tuple(slice(0, 1) if i in padded_axes else slice(None)
                          for i in range(arr.ndim))]
        return first if np.all(arr == first) else None

    m1 = along_padded(m)
    c1 = along_padded(c)
    if m1 is None:
        raise OnnxImportError(f"{describe(node)}: a factor that varies along a padded axis")
    if c1 is not None:  # pad_raw is in raw units: unchanged
        m_in, c_in = m[inner], c[inner]
        x.scale, x.offset = x.scale * m_in, x.offset * m_in + c_in
        return x
    # border fill: zero inside, constant along the padded axes on the border
    if np.any(c[inner] != 0) or np.any(m != 1):
        raise OnnxImportError(f"{describe(node)}: a constant that varies along a padded "
                              "axis (only a border fill, zero inside, is understood)")
    border = np.ones(x.shape, dtype=bool)
    border[inner] = False
    v = np.where(border, c, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        hi = np.nanmax(v, axis=padded_axes, keepdims=True)
        lo = np.nanmin(v, axis=padded_axes, keepdims=True)
    if not np.array_equal(hi, lo):
        raise OnnxImportError(f"{describe(node)}: the border fill is not constant along "
                              "the padded axes")
    x.pad_raw = x.pad_raw + np.broadcast_to(hi, x.pad_raw.shape) / x.scale
    return x


@op("Add")
def _op_Add(imp, node, ins, attrs):
    x, c, _ = split_const(node, ins)
    return affine(node, x, 1.0, c)


@op("Sub")
def _op_Sub(imp, node, ins, attrs):
    x, c, const_first = split_const(node, ins)
    if const_first:  # c - x
        return affine(node, x, -1.0, c)
    return affine(node, x, 1.0, -np.asarray(c, dtype=np.float64))


@op("Mul")
def _op_Mul(imp, node, ins, attrs):
    x, c, _ = split_const(node, ins)
    return affine(node, x, c, 0.0)


@op("Div")
def _op_Div(imp, node, ins, attrs):
    x, c, const_first = split_const(node, ins)
    if const_first:
        raise OnnxImportError(f"{describe(node)}: division by a tensor is not affine")
    c = np.asarray(c, dtype=np.float64)
    if np.any(c == 0):
        raise OnnxImportError(f"{describe(node)}: division by zero")
    return affine(node, x, 1.0 / c, 0.0)


@op("Neg")
def _op_Neg(imp, node, ins, attrs):
    return affine(node, ins[0], -1.0, 0.0)
