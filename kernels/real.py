"""First layer on real-valued inputs: ±1 weights times real (or uint8) inputs.

The products are done in floating point. For integer-valued inputs the result is exact:
every partial sum is an integer of magnitude below ``max|x| * K``, and float64
represents integers exactly up to 2**53 (float32 up to 2**24), so no rounding happens,
in any order of summation.

The dense product is BLAS's (a Numba kernel blocked for L1 measured 3.0× slower at
batch 1 and 3.8–4.4× at batch 64). The convolution is a direct Numba kernel: a first conv has a tiny
K (27 for 3×3 on RGB), a poor shape for BLAS after im2col, and the kernel fuses the
threshold and the packing, so no float feature map is made. Zero inputs are skipped.
"""
import numba as nb
import numpy as np

from ._threads import twin
from .bits import threshold_pack


def exact_float_dtype(x_max: float, k: int):
    """float32 when every partial sum of an integer input stays below 2**24, else float64."""
    return np.float32 if float(x_max) * k < 2 ** 24 else np.float64


def dense_weights(w_pm1, dtype):
    """±1 weights (M, K) in the layout :func:`real_dense_t` reads: (K, M) in ``dtype``
    (``x @ W^T`` with W^T contiguous, BLAS's fastest case here)."""
    return np.ascontiguousarray(np.asarray(w_pm1, dtype).T)


def real_dense_t(x, wt, threshold=None):
    """:func:`real_dense` on weights already in kernel layout (:func:`dense_weights`);
    ``x`` must have ``wt``'s dtype. ``wt`` (K, M) for one network, or (S, K, M) for S
    networks on the same ``x`` in one batched product (``h`` (S, N, M); thresholds (S, M))."""
    h = x @ wt
    if threshold is None:
        return h
    T = np.asarray(threshold, np.float64)
    if T.shape != wt.shape[:-2] + wt.shape[-1:]:
        raise ValueError(f"real_dense: expected thresholds of shape {wt.shape[:-2] + wt.shape[-1:]}, "
                         f"got {T.shape}")
    return threshold_pack(h, T)


def real_dense(x, w_pm1, dtype=np.float64, threshold=None):
    r"""Dense layer on real input: ``h = x W^T``, i.e. :math:`h_{nj} = \sum_i x_{ni} w_{ji}`,
    for real ``x`` (N, K) and ±1 ``W`` (M, K), computed in ``dtype``; with ``threshold``
    (M,) the result is ``[h < T]`` packed along units, the next binary layer's input.

    Returns:
        (N, M) in ``dtype``, or uint64 (N, ceil(M/64)).
    """
    x = np.ascontiguousarray(x, dtype)
    w_pm1 = np.asarray(w_pm1)
    if x.ndim != 2 or w_pm1.ndim != 2 or x.shape[1] != w_pm1.shape[1]:
        raise ValueError(f"real_dense: expected x (N, K) and weights (M, K), got {x.shape} and {w_pm1.shape}")
    return real_dense_t(x, dense_weights(w_pm1, dtype), threshold)


@twin
def _real_conv(x, wt, sy, sx, pt, pl, padv, T, h, bits):
    """Direct convolution, one task per output row of one image: for each output pixel
    the filters' sums are accumulated in ``acc`` (vectorised over filters), then written
    as ``h`` or, when ``bits`` is not empty, thresholded and packed (no (N, Ho, Wo, F)
    float array is made)."""
    n_n, hh, ww, c = x.shape
    kh, kw, _, f_n = wt.shape
    thresholded = bits.size > 0
    ho = bits.shape[1] if thresholded else h.shape[1]
    wo = bits.shape[2] if thresholded else h.shape[2]
    fw = (f_n + 63) // 64
    for task in nb.prange(n_n * ho):
        n = task // ho
        oy = task - n * ho
        acc = np.empty(f_n, x.dtype)
        for ox in range(wo):
            acc[:] = 0
            for dy in range(kh):
                iy = oy * sy - pt + dy
                for dx in range(kw):
                    ix = ox * sx - pl + dx
                    inside = 0 <= iy < hh and 0 <= ix < ww
                    for ch in range(c):
                        v = x[n, iy, ix, ch] if inside else padv[ch]
                        if v != 0:
                            for f in range(f_n):
                                acc[f] += v * wt[dy, dx, ch, f]
            if thresholded:
                for q in range(fw):
                    b = np.uint64(0)
                    for f in range(q * 64, min(q * 64 + 64, f_n)):
                        if acc[f] < T[f]:
                            b |= np.uint64(1) << np.uint64(f - q * 64)
                    bits[n, oy, ox, q] = b
            else:
                for f in range(f_n):
                    h[n, oy, ox, f] = acc[f]


def real_conv2d(x, w_pm1, stride, pads, pad_value, dtype=np.float64, threshold=None):
    r"""Convolution of real NHWC ``x`` with ±1 filters (F, kh, kw, C):

    .. math:: h[n, y, x, f] = \sum_{dy, dx, c} x_p[n, y s_y + dy, x s_x + dx, c]\, w[f, dy, dx, c]

    with ``x_p`` the input padded by ``pads`` (top, bottom, left, right) with
    ``pad_value`` (a scalar, or one value per channel for a folded input normalisation).
    Computed directly in ``dtype`` (exact for integer inputs, see the module docstring);
    with ``threshold`` (F,) the result is ``[h < T]`` packed along filters, the next
    binary layer's input, and no float output is made.

    Returns:
        (N, Ho, Wo, F) in ``dtype``, or uint64 (N, Ho, Wo, ceil(F/64)).
    """
    x = np.ascontiguousarray(x, dtype)
    w_pm1 = np.asarray(w_pm1)
    if x.ndim != 4 or w_pm1.ndim != 4 or x.shape[3] != w_pm1.shape[3]:
        raise ValueError(f"real_conv2d: expected NHWC input and filters (F, kh, kw, C) with the "
                         f"same C, got {x.shape} and {w_pm1.shape}")
    return real_conv2d_t(x, conv_weights(w_pm1, dtype), stride, pads, pad_value, threshold)


def conv_weights(w_pm1, dtype):
    """±1 filters (F, kh, kw, C) in the layout :func:`real_conv2d_t` reads: (kh, kw, C, F)."""
    return np.ascontiguousarray(np.asarray(w_pm1, dtype).transpose(1, 2, 3, 0))


def real_conv2d_t(x, wt, stride, pads, pad_value, threshold=None):
    """:func:`real_conv2d` on filters already in kernel layout (:func:`conv_weights`);
    ``x`` must be C-contiguous NHWC with ``wt``'s dtype."""
    kh, kw, c, f = wt.shape
    dtype = wt.dtype
    pt, pb, pl, pr = (int(v) for v in pads)
    sy, sx = (int(v) for v in stride)
    n, hh, ww, _ = x.shape
    ho, wo = (hh + pt + pb - kh) // sy + 1, (ww + pl + pr - kw) // sx + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"real_conv2d: a {kh}×{kw} kernel does not fit {hh}×{ww} with pads {pads}")
    padv = np.ascontiguousarray(np.broadcast_to(np.asarray(pad_value, dtype), (c,)))
    work = n * ho * wo * kh * kw * c * f // 8
    if threshold is None:
        out = np.empty((n, ho, wo, f), dtype)
        if out.size:
            _real_conv(work, x, wt, sy, sx, pt, pl, padv, _NO_T, out, _NO_BITS)
        return out
    T = np.ascontiguousarray(threshold, np.float64)
    if T.shape != (f,):
        raise ValueError(f"real_conv2d: expected {f} thresholds, got shape {T.shape}")
    bits = np.empty((n, ho, wo, (f + 63) // 64), np.uint64)
    if bits.size:
        _real_conv(work, x, wt, sy, sx, pt, pl, padv, T, np.empty((0,) * 4, dtype), bits)
    return bits


_NO_T = np.empty(0, np.float64)
_NO_BITS = np.empty((0,) * 4, np.uint64)
