r"""Fast evaluation of residual binary networks on the packed kernels.

The stream is a float64 array (S', N, H, W, C): S' = 1 while every network agrees (the
shared real-valued stem) and S' = S from the first binary convolution on. A
:class:`~.residual_ops.BinaryConv` packs ``sign(x)`` of the stream per pixel
(:func:`bnn_toroid.kernels.pack_bits`: bit 1 = -1, so ``sign(0) = +1``) and runs one
:func:`bnn_toroid.kernels.binary_conv2d_trusted` call for all S networks: the integer

.. math:: h_f = \sum_{dy,dx,c} w_{f,dy,dx,c}\,\mathrm{sign}(x_{\cdot+dy,\cdot+dx,c})
   = K_{\text{valid}} - 2\,\mathrm{popcount}(a \oplus w)

(XNOR-Net, Rastegari et al., ECCV 2016), then ``scale_f · h_f`` in float64. Real
operations run in NumPy: convolutions as im2col times the filters (BLAS), a depthwise
convolution as one multiply-add per tap, pools as one max or sum per tap over strided
views. :mod:`.residual_eval` is the float64 reference the tests hold this to.
"""
from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

import bnn_toroid.kernels as K

from .residual_ops import (Affine, AvgPool, BinaryConv, GlobalAvgPool, MaxPool, PReLU, RealConv,
                           RealDense, ReLU, Residual, resolve_pads)

__all__ = ["run", "packed_filters"]


def packed_filters(weights) -> tuple:
    """±1 filters (S, F, kh, kw, C) → the kernels' repacked tiles
    (:func:`bnn_toroid.kernels.conv_tiles` of the per-pixel packed words)."""
    w = np.ascontiguousarray(weights)
    return K.conv_tiles(np.ascontiguousarray(K.pack_bits(w)))


def run(net, x, weights=None, tiles=None, collect=None) -> np.ndarray:
    """Logits (S, N, classes) of ``net`` on the NHWC float64 samples ``x`` (N, H, W, C).

    ``weights``: S lists of binary weights (as :meth:`binary_weights`), or None for the
    network's own (S = 1). ``tiles(k)``: packed filters of binary convolution ``k`` for
    the network's own weights (a cache kept by the network). ``collect``: a list that
    receives each binary convolution's int32 sums (S, N, Ho, Wo, F), in run order."""
    if weights is None:
        get = tiles
    else:
        get = lambda k: packed_filters(np.stack([ws[k] for ws in weights]))  # noqa: E731
    s = 1 if weights is None else len(weights)
    y = _ops(net.ops, x[None], get, [0], collect)
    return np.broadcast_to(y, (s,) + y.shape[1:]).copy()


def _ops(ops, x, get, k, collect):
    for op in ops:
        x = _apply(op, x, get, k, collect)
    return x


def _pad(x, pads, value):
    t, b, l, r = pads
    if not any(pads):
        return x
    return np.pad(x, ((0, 0), (0, 0), (t, b), (l, r), (0, 0)), constant_values=value)


def _binary_conv(op: BinaryConv, x, tiles, collect):
    f, kh, kw, c = op.weights.shape
    pads = resolve_pads(op.padding, x.shape[2], x.shape[3], kh, kw, *op.stride)
    a = np.ascontiguousarray(K.pack_bits(x))  # (S', N, H, W, n_words(C)); sign(0) = +1
    h = K.binary_conv2d_trusted(a, tiles, c, (kh, kw), op.stride, pads, op.pad_value)
    if collect is not None:
        collect.append(h)
    y = h.astype(np.float64)
    if op.scale is not None:
        y *= op.scale
    return y


def _taps(xp, kh, kw, sy, sx, ho, wo):
    """Each tap's strided view (S', N, Ho, Wo, C) of a padded map, with (dy, dx)."""
    for dy in range(kh):
        for dx in range(kw):
            yield dy, dx, xp[:, :, dy:dy + sy * (ho - 1) + 1:sy, dx:dx + sx * (wo - 1) + 1:sx]


def _real_conv(op: RealConv, x):
    f, kh, kw, cg = op.weights.shape
    sy, sx = op.stride
    s_, n, h, w, c = x.shape
    pads = resolve_pads(op.padding, h, w, kh, kw, sy, sx)
    xp = _pad(x, pads, 0.0)
    ho, wo = (xp.shape[2] - kh) // sy + 1, (xp.shape[3] - kw) // sx + 1
    g = op.groups
    if g == c and f == c:  # depthwise: one multiply-add per tap
        y = np.zeros((s_, n, ho, wo, f))
        for dy, dx, v in _taps(xp, kh, kw, sy, sx, ho, wo):
            y += v * op.weights[:, dy, dx, 0]
    else:
        fg = f // g
        win = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::sy, ::sx]
        rows = s_ * n * ho * wo
        parts = []
        for gi in range(g):  # im2col of each group times its filters (BLAS)
            cols = np.ascontiguousarray(win[..., gi * cg:(gi + 1) * cg, :, :]).reshape(rows, -1)
            wt = op.weights[gi * fg:(gi + 1) * fg].transpose(0, 3, 1, 2).reshape(fg, -1)
            parts.append(cols @ wt.T)
        y = (parts[0] if g == 1 else np.concatenate(parts, axis=1)).reshape(s_, n, ho, wo, f)
    return y if op.bias is None else y + op.bias


def _pool(op, x, is_max):
    kh, kw = op.size
    sy, sx = op.stride
    h, w = x.shape[2], x.shape[3]
    pads = resolve_pads(op.padding, h, w, kh, kw, sy, sx)
    xp = _pad(x, pads, -np.inf if is_max else 0.0)
    ho, wo = (xp.shape[2] - kh) // sy + 1, (xp.shape[3] - kw) // sx + 1
    out = None
    for _, _, v in _taps(xp, kh, kw, sy, sx, ho, wo):
        out = v.copy() if out is None else (np.maximum(out, v, out=out) if is_max else
                                             np.add(out, v, out=out))
    if is_max:
        return out
    ones = _pad(np.ones((1, 1, h, w, 1)), pads, 0.0)
    count = sum(v for _, _, v in _taps(ones, kh, kw, sy, sx, ho, wo))
    return out / count


def _apply(op, x, get, k, collect):
    if isinstance(op, BinaryConv):
        tiles = get(k[0])
        k[0] += 1
        return _binary_conv(op, x, tiles, collect)
    if isinstance(op, Residual):
        body = _ops(op.body, x, get, k, collect)
        return body + _ops(op.shortcut, x, get, k, collect)
    if isinstance(op, RealConv):
        return _real_conv(op, x)
    if isinstance(op, Affine):
        return x * op.scale + op.shift
    if isinstance(op, ReLU):
        return np.maximum(x, 0.0)
    if isinstance(op, PReLU):
        return np.where(x >= 0, x, x * op.slope)
    if isinstance(op, MaxPool):
        return _pool(op, x, True)
    if isinstance(op, AvgPool):
        return _pool(op, x, False)
    if isinstance(op, GlobalAvgPool):
        return x.mean(axis=(2, 3))
    if isinstance(op, RealDense):
        flat = x.reshape(x.shape[:2] + (math.prod(x.shape[2:]),))
        y = flat @ op.weights.T
        return y if op.bias is None else y + op.bias
    raise TypeError(f"unknown operation {type(op).__name__}")
