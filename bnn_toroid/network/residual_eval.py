"""Evaluation of residual binary networks, S networks at a time.

The stream is a float64 array (S', N, H, W, C) with S' = 1 while every network agrees
(the shared stem) and S' = S from the first binary convolution on. Binary convolutions
compute their exact integer sums from ``sign(x)``; real operations broadcast over S'.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .residual_ops import (Affine, AvgPool, BinaryConv, GlobalAvgPool, MaxPool, PReLU, RealConv,
                           RealDense, ReLU, Residual, resolve_pads)

__all__ = ["run"]


def run(net, x, weights, collect=None) -> np.ndarray:
    """Logits (S, N, classes) of ``net`` with each of the S binary-weight lists in
    ``weights`` on the NHWC float64 samples ``x`` (N, H, W, C). ``collect``: a list that
    receives each binary convolution's integer sums (S, N, Ho, Wo, F), in run order."""
    y = _ops(net.ops, x[None], weights, [0], collect)
    return np.broadcast_to(y, (len(weights),) + y.shape[1:]).copy()


def _pad(x, pads, value):
    t, b, l, r = pads
    if not any(pads):
        return x
    return np.pad(x, ((0, 0), (0, 0), (t, b), (l, r), (0, 0)), constant_values=value)


def _windows(x, kh, kw, sy, sx):
    """(S', N, Ho, Wo, C, kh, kw) views of the windows of a padded map."""
    v = sliding_window_view(x, (kh, kw), axis=(2, 3))
    return v[:, :, ::sy, ::sx]


def _binary_conv(op: BinaryConv, x, w, collect=None):
    """x (S', N, H, W, C) float, w (S, F, kh, kw, C) ±1 -> (S, N, Ho, Wo, F) float64."""
    f, kh, kw, c = op.weights.shape
    sy, sx = op.stride
    pads = resolve_pads(op.padding, x.shape[2], x.shape[3], kh, kw, sy, sx)
    a = np.where(x >= 0, 1, -1).astype(np.int32)  # sign(0) = +1
    a = _pad(a, pads, op.pad_value)
    win = _windows(a, kh, kw, sy, sx)  # (S', N, Ho, Wo, C, kh, kw)
    wt = np.asarray(w, dtype=np.int32).transpose(0, 1, 4, 2, 3)  # (S, F, C, kh, kw)
    if win.shape[0] == 1:
        h = np.einsum("nhwcyx,sfcyx->snhwf", win[0], wt, optimize=True)
    else:
        h = np.einsum("snhwcyx,sfcyx->snhwf", win, wt, optimize=True)
    if collect is not None:
        collect.append(np.broadcast_to(h, (w.shape[0],) + h.shape[1:]))
    h = h.astype(np.float64)
    return h if op.scale is None else h * op.scale


def _real_conv(op: RealConv, x):
    f, kh, kw, cg = op.weights.shape
    sy, sx = op.stride
    pads = resolve_pads(op.padding, x.shape[2], x.shape[3], kh, kw, sy, sx)
    win = _windows(_pad(x, pads, 0.0), kh, kw, sy, sx)  # (S', N, Ho, Wo, C, kh, kw)
    g = op.groups
    fg = f // g
    wt = op.weights.transpose(0, 3, 1, 2).reshape(g, fg, cg, kh, kw)
    sh = win.shape
    win = win.reshape(sh[:4] + (g, cg, kh, kw))
    y = np.einsum("snhwgcyx,gfcyx->snhwgf", win, wt, optimize=True).reshape(sh[:4] + (f,))
    return y if op.bias is None else y + op.bias


def _pool(op, x, reduce_max):
    kh, kw = op.size
    sy, sx = op.stride
    pads = resolve_pads(op.padding, x.shape[2], x.shape[3], kh, kw, sy, sx)
    if reduce_max:
        return _windows(_pad(x, pads, -np.inf), kh, kw, sy, sx).max(axis=(-2, -1))
    total = _windows(_pad(x, pads, 0.0), kh, kw, sy, sx).sum(axis=(-2, -1))
    ones = np.ones((1, 1) + x.shape[2:4] + (1,))
    count = _windows(_pad(ones, pads, 0.0), kh, kw, sy, sx).sum(axis=(-2, -1))
    return total / count


def _ops(ops, x, weights, k, collect=None):
    """Run ``ops`` on ``x``; ``k[0]`` counts the binary convolutions passed (run order:
    a residual's body, then its shortcut, as ``binary_locations`` lists them)."""
    for op in ops:
        x = _apply(op, x, weights, k, collect)
    return x


def _apply(op, x, weights, k, collect=None):
    if isinstance(op, BinaryConv):
        w = np.stack([ws[k[0]] for ws in weights])
        k[0] += 1
        return _binary_conv(op, x, w, collect)
    if isinstance(op, Residual):
        body = _ops(op.body, x, weights, k, collect)
        return body + _ops(op.shortcut, x, weights, k, collect)
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
        flat = x.reshape(x.shape[:2] + (-1,))
        y = flat @ op.weights.T
        return y if op.bias is None else y + op.bias
    raise TypeError(f"unknown operation {type(op).__name__}")
