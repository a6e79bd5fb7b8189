r"""Fast evaluation of residual binary networks on the packed kernels.

The stream is a float64 array (S', N, H, W, C): S' = 1 while every network agrees (the
shared real-valued stem) and S' = S from the first binary convolution on. A
:class:`~.residual_ops.BinaryConv` packs ``sign(x)`` of the stream per pixel
(:func:`bnn_toroid.kernels.pack_bits`: bit 1 = -1, so ``sign(0) = +1``) and runs one
:func:`bnn_toroid.kernels.binary_conv2d_trusted` call for all S networks: the integer

.. math:: h_f = \sum_{dy,dx,c} w_{f,dy,dx,c}\,\mathrm{sign}(x_{\cdot+dy,\cdot+dx,c})
   = K_{\text{valid}} - 2\,\mathrm{popcount}(a \oplus w)

(XNOR-Net, Rastegari et al., ECCV 2016). The element-wise work runs in Numba
(:mod:`bnn_toroid.kernels.stream`): the signs are packed straight from the float64
stream; a residual block whose body is a binary convolution and per-channel operations
is one fused pass (``scale_f · h_f``, affines, ReLU / PReLU, the shortcut added, and
the next binary convolution's signs packed on the way); pools and depthwise
convolutions are tap loops. Real convolutions are BLAS products: a 1×1 one on the
(pixels, C) view, a k×k one over a contiguous im2col built in blocks, and one followed
by a pool a few images at a time, so its full-size output is never made. BLAS runs on
one thread during a call (:func:`_one_blas_thread` says why). :mod:`.residual_eval` is
the float64 reference the tests hold this to.
"""
from __future__ import annotations

import math

import numpy as np

import bnn_toroid.kernels as K
import bnn_toroid.kernels.stream as KS

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
    ctx = _Ctx(get, collect)
    with _one_blas_thread():
        y = _ops(net.ops, np.ascontiguousarray(x[None]), ctx)
    return np.broadcast_to(y, (s,) + y.shape[1:]).copy()


_BLAS = []


def _one_blas_thread():
    """BLAS on one thread while a network runs. Numba's OpenMP workers and OpenBLAS's
    threads both spin after their launches and take the 2 vCPUs from each other when
    the binary convolutions (Numba, 2 threads) and the real ones (BLAS) alternate.
    Measured on this machine, median ms, BLAS at 2 threads / 1 thread: QuickNet-Small
    128² batch 1 33.3 / 6.0, batch 64 210 / 169; Bi-Real-18 batch 1 35.3 / 9.9, batch 64
    486 / 378. (A process-wide setting for the duration of the call: another thread's
    BLAS products meanwhile run on one thread too.)"""
    if not _BLAS:
        from threadpoolctl import ThreadpoolController
        _BLAS.append(ThreadpoolController())
    return _BLAS[0].limit(limits=1, user_api="blas")


class _Ctx:
    """What a run carries: the filters, the collect list, the binary convolution index,
    and ``bits``: the packed signs of a stream array made by the kernel that made it
    (``(array, words)``), so the next binary convolution does not pack it again."""

    def __init__(self, get, collect):
        self.get, self.collect, self.k, self.bits = get, collect, 0, None
        self.owned = None  # the stream array this run made and nothing else still reads


def _ops(ops, x, ctx):
    i = 0
    while i < len(ops):
        op, nxt = ops[i], ops[i + 1] if i + 1 < len(ops) else None
        if isinstance(op, RealConv) and isinstance(nxt, (MaxPool, AvgPool)):
            x = _conv_pool(op, nxt, x)
            i += 2
        else:
            x = _apply(op, x, ctx, nxt)
            i += 1
        ctx.owned = x
    return x


_CONV_POOL_BYTES = 4 << 20  # a convolution output block that a pool reads while cached


def _conv_pool(op: RealConv, pool, x):
    """A real convolution and the pool after it, a few images at a time: the full-size
    convolution output (134 MB for the Bi-Real stem at batch 64) is never made, and each
    block's is still in cache when the pool reads it. The same operations per image as
    :func:`_real_conv` then :func:`_pool`, so the same results."""
    is_max = isinstance(pool, MaxPool)
    s_, n, h, w, c = x.shape
    f, kh, kw, _ = op.weights.shape
    pads = resolve_pads(op.padding, h, w, kh, kw, *op.stride)
    ho = (h + pads[0] + pads[1] - kh) // op.stride[0] + 1
    wo = (w + pads[2] + pads[3] - kw) // op.stride[1] + 1
    chunk = max(1, _CONV_POOL_BYTES // max(1, 8 * s_ * ho * wo * f))
    if chunk >= n:
        return _pool(pool, _real_conv(op, x), is_max)
    out = None
    for n0 in range(0, n, chunk):
        y = _pool(pool, _real_conv(op, x[:, n0:n0 + chunk]), is_max)
        if out is None:
            out = np.empty((s_, n) + y.shape[2:])
        out[:, n0:n0 + chunk] = y
    return out


def _pad(x, pads, value):
    t, b, l, r = pads
    if not any(pads):
        return x
    return np.pad(x, ((0, 0), (0, 0), (t, b), (l, r), (0, 0)), constant_values=value)


def _nan(bad):
    if bad:
        raise ValueError(f"pack_bits: x holds {bad} NaN value{'s' if bad > 1 else ''}; sign(NaN) "
                         "is undefined, expected real numbers")


def _signs(x, ctx):
    """Packed sign words (S', N, H, W, Cw) of the stream ``x`` (bit 1 = -1, sign(0) = +1)."""
    if ctx.bits is not None and ctx.bits[0] is x:
        a, ctx.bits = ctx.bits[1], None
        return a
    x = np.ascontiguousarray(x)
    c = x.shape[-1]
    a = np.empty(x.shape[:-1] + ((c + 63) // 64,), np.uint64)
    rows = a.size // max(a.shape[-1], 1)
    _nan(_k(KS.pack_signs, x.size, x.reshape(rows, c), a.reshape(rows, a.shape[-1])))
    return a


def _conv_sums(op: BinaryConv, x, ctx):
    f, kh, kw, c = op.weights.shape
    tiles = ctx.get(ctx.k)
    ctx.k += 1
    pads = resolve_pads(op.padding, x.shape[2], x.shape[3], kh, kw, *op.stride)
    h = K.binary_conv2d_trusted(_signs(x, ctx), tiles, c, (kh, kw), op.stride, pads, op.pad_value)
    if ctx.collect is not None:
        ctx.collect.append(h)
    return h


def _binary_conv(op: BinaryConv, x, ctx):
    h = _conv_sums(op, x, ctx)
    y = h.astype(np.float64)
    if op.scale is not None:
        y *= op.scale
    return y


def _program(op: BinaryConv, rest):
    """The element-wise ops after a binary convolution as :func:`kernels.stream.residual_tail`
    codes and parameters, or None when one of them is not element-wise."""
    f = op.weights.shape[0]
    codes, params = [], []
    if op.scale is not None:
        codes.append(KS.SCALE)
        params.append((op.scale, 0.0))
    for o in rest:
        if isinstance(o, Affine):
            codes.append(KS.AFFINE)
            params.append((o.scale, o.shift))
        elif isinstance(o, ReLU):
            codes.append(KS.RELU)
            params.append((0.0, 0.0))
        elif isinstance(o, PReLU):
            codes.append(KS.PRELU)
            params.append((o.slope, 0.0))
        else:
            return None
    p = np.zeros((len(codes), 2, f))
    for i, (a, b) in enumerate(params):
        p[i, 0], p[i, 1] = a, b
    return np.array(codes, np.int64), p


def _wants_bits(nxt):
    """Whether the next op packs the stream's signs first."""
    while isinstance(nxt, Residual):
        if not nxt.body:
            return False
        nxt = nxt.body[0]
    return isinstance(nxt, BinaryConv)


def _residual(op: Residual, x, ctx, nxt):
    body = op.body
    prog = _program(body[0], body[1:]) if body and isinstance(body[0], BinaryConv) else None
    if prog is None:
        ctx.owned = None  # the shortcut still reads x
        y = _ops(body, x, ctx)
        return y + _ops(op.shortcut, x, ctx)
    h = _conv_sums(body[0], x, ctx)
    xs = _ops(op.shortcut, x, ctx)
    s_, m, f = h.shape[0], h.shape[1] * h.shape[2] * h.shape[3], h.shape[4]
    if xs.shape[1:] != h.shape[1:] or xs.shape[0] not in (1, s_):
        return _ops(body[1:], _binary_conv_from(body[0], h), ctx) + xs  # unusual broadcast
    # write over the shortcut when this run made it and it is read no more (an identity
    # shortcut of a block whose input this run made, or a shortcut's fresh output): no
    # fresh stream-sized array, whose first touch costs more than the pass itself
    inplace = (xs is ctx.owned and xs.shape == h.shape and xs.dtype == np.float64
               and xs.flags.c_contiguous and xs.flags.writeable)
    xs = np.ascontiguousarray(xs)
    out = xs if inplace else np.empty(h.shape)
    ctx.bits = None
    fw = (f + 63) // 64
    pack = _wants_bits(nxt)
    bits = np.empty(h.shape[:4] + (fw,), np.uint64) if pack else _NO_BITS
    _nan(_k(KS.residual_tail, h.size * (len(prog[0]) + 1), h.reshape(s_, m, f), prog[0], prog[1],
                          xs.reshape(xs.shape[0], m, f), out.reshape(s_, m, f),
                          bits.reshape(s_, m, fw) if pack else bits))
    if pack:
        ctx.bits = (out, bits)
    return out


def _binary_conv_from(op, h):
    y = h.astype(np.float64)
    if op.scale is not None:
        y *= op.scale
    return y


_NO_BITS = np.empty((0, 0, 0), np.uint64)
_COLS_BYTES = 1 << 20  # an im2col block: within L2
# The stream kernels are memory-bound: two threads gain little, and a parallel launch
# left spinning slows the BLAS product or binary convolution that follows (quicknet at
# batch 1: 32.2 ms all serial against 35.8 ms with the kernels' default threshold).
_STREAM_PARALLEL_MIN = 1 << 21


def _k(kernel, work, *args):
    return (kernel.parallel if work >= _STREAM_PARALLEL_MIN else kernel.serial)(*args)


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
    ho = (h + pads[0] + pads[1] - kh) // sy + 1
    wo = (w + pads[2] + pads[3] - kw) // sx + 1
    g = op.groups
    if g == c and f == c and cg == 1:  # depthwise: one multiply-add per tap (Numba)
        xc = np.ascontiguousarray(x).reshape(s_ * n, h, w, c)
        y = np.empty((s_ * n, ho, wo, f))
        wd = np.ascontiguousarray(op.weights[:, :, :, 0].transpose(1, 2, 0))
        _k(KS.depthwise2d, y.size * kh * kw, xc, wd, sy, sx, pads[0], pads[2], y)
        y = y.reshape(s_, n, ho, wo, f)
    elif kh == kw == 1 and sy == sx == 1 and not any(pads) and g == 1:
        # 1 x 1: one product of the (S'·N·H·W, C) view with the filters
        y = (np.ascontiguousarray(x).reshape(-1, c) @ op.weights[:, 0, 0, :].T).reshape(s_, n, ho, wo, f)
    else:  # im2col in blocks of rows that stay in cache, each block one BLAS product
        xc = np.ascontiguousarray(x).reshape(s_ * n, h, w, c)
        fg = f // g
        rows = s_ * n * ho * wo
        y = np.empty((rows, f))
        kk = kh * kw * cg
        block = max(64, min(rows, _COLS_BYTES // (8 * kh * kw * c)))
        cols = np.empty((block, kh * kw * c))
        wts = [np.ascontiguousarray(op.weights[gi * fg:(gi + 1) * fg].reshape(fg, kk).T)
               for gi in range(g)]
        for r0 in range(0, rows, block):
            r1 = min(r0 + block, rows)
            cb = cols[:r1 - r0]
            KS.im2col.serial(xc, kh, kw, sy, sx, pads[0], pads[2], ho, wo, r0, cb)
            if g == 1:
                np.matmul(cb, wts[0], out=y[r0:r1])
            else:
                cg3 = cb.reshape(r1 - r0, kh * kw, c)
                for gi in range(g):
                    part = np.ascontiguousarray(cg3[:, :, gi * cg:(gi + 1) * cg]).reshape(r1 - r0, kk)
                    np.matmul(part, wts[gi], out=y[r0:r1, gi * fg:(gi + 1) * fg])
        y = y.reshape(s_, n, ho, wo, f)
    if op.bias is not None:
        y += op.bias
    return y


def _pool(op, x, is_max):
    kh, kw = op.size
    sy, sx = op.stride
    s_, n, h, w, c = x.shape
    pads = resolve_pads(op.padding, h, w, kh, kw, sy, sx)
    ho = (h + pads[0] + pads[1] - kh) // sy + 1
    wo = (w + pads[2] + pads[3] - kw) // sx + 1
    xc = np.ascontiguousarray(x).reshape(s_ * n, h, w, c)
    out = np.empty((s_ * n, ho, wo, c))
    _k(KS.pool2d, out.size * kh * kw, xc, kh, kw, sy, sx, pads[0], pads[2], is_max, out)
    return out.reshape(s_, n, ho, wo, c)


def _apply(op, x, ctx, nxt=None):
    if isinstance(op, BinaryConv):
        return _binary_conv(op, x, ctx)
    if isinstance(op, Residual):
        return _residual(op, x, ctx, nxt)
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
