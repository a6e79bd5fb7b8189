"""First layer on real-valued inputs: ±1 weights times real (or uint8) inputs.

The products are done by BLAS in floating point. For integer-valued inputs the result is
exact: every partial sum is an integer of magnitude below ``max|x| * K``, and float64
represents integers exactly up to 2**53 (float32 up to 2**24), so no rounding happens.
"""
import numpy as np

# BLAS keeps its own thread count for every size. Limiting small products to one
# thread (threadpoolctl) was measured slower even at batch 1: 72 against 41 µs for
# (1, 784) × (784, 1024) float32, plus ≈ 100 µs for the limit context itself.


def exact_float_dtype(x_max: float, k: int):
    """float32 when every partial sum of an integer input stays below 2**24, else float64."""
    return np.float32 if float(x_max) * k < 2 ** 24 else np.float64


def im2col(x, kh, kw, sy, sx, pads, pad_value):
    """(N, H, W, C) → (N, Ho, Wo, kh*kw*C) patches, tap-major then channel (HWC order)."""
    pt, pb, pl, pr = pads
    if pt or pb or pl or pr:
        x = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=pad_value)
    n, h, w, c = x.shape
    ho = (h - kh) // sy + 1
    wo = (w - kw) // sx + 1
    sn, sh, sw, sc = x.strides
    view = np.lib.stride_tricks.as_strided(
        x, (n, ho, wo, kh, kw, c), (sn, sh * sy, sw * sx, sh, sw, sc), writeable=False)
    return view.reshape(n, ho, wo, kh * kw * c)


def real_dense(x, w_pm1, dtype=np.float64):
    """``h = x W^T`` for real ``x`` (N, K) and ±1 ``W`` (M, K), in ``dtype``."""
    x = np.asarray(x, dtype)
    return x @ np.asarray(w_pm1, dtype).T


def real_conv2d(x, w_pm1, stride, pads, pad_value, dtype=np.float64):
    """Convolution of real NHWC ``x`` with ±1 filters (F, kh, kw, C) → (N, Ho, Wo, F)."""
    f, kh, kw, c = w_pm1.shape
    cols = im2col(np.asarray(x, dtype), kh, kw, stride[0], stride[1], pads, pad_value)
    return cols @ np.asarray(w_pm1, dtype).reshape(f, -1).T
