"""Dense layer on pixels: uint8 inputs times ±1 weights, in 8-bit integer arithmetic.

For ``x`` in [0, 255]^K and ``w`` in {-1, +1}^K the pre-activation ``h = Σ_i x_i w_i`` is
an integer, and so is every partial sum. The kernel multiplies bytes: an unsigned pixel
by a signed weight, two products summed into an int16 lane (``|pair| <= 510``), lanes
accumulated over 64 pairs (``64 · 510 = 32 640 < 2**15``, so no lane ever overflows or
saturates) and then widened to int32. On x86 one such step is ``vpmaddubsw``: 32
multiply-adds per instruction against 8 for a float32 FMA, and the weights are read as
one byte each (0.8 MB for 784 × 1024, a quarter of float32's). The result is exact, like
the float product on the same integers, and needs no BLAS call.

Measured against BLAS float32 on the MLP's first layer (784 → 1024) with the threshold
fused: see ``docs/performance.md`` ("First layer on pixels").

Layout. The inputs are read as uint16 *pairs* of pixels ``(x_{2p}, x_{2p+1})`` (a
zero-copy view for even K). The weights are repacked once into panels of 64 units
(one packed output word): ``panel[b, p]`` holds, for units ``64b … 64b + 63``, the two
weights of pair ``p`` side by side (128 bytes, four 32-byte vectors), so that one
broadcast pair times one vector gives 16 units' partial sums.
"""
import numba as nb
import numpy as np

from ._simd import vaddto_i32, vadd16, vbcast4, vload4, vmaddubs, vzero4
from ._threads import twin

UNITS = 64        # units per panel: one packed output word
CHUNK = 64        # pixel pairs per int16 accumulation (64 · 510 <= 32767)
GROUP = 16        # samples per task: a panel chunk (8 KB) is reused from L1 this often
_SPLAT16 = np.uint64(0x0001000100010001)
MAX_K = (2 ** 31 - 1) // 255  # |h| <= 255 K must fit int32


def pixel_weights(w_pm1) -> np.ndarray:
    """±1 weights (M, K) → the panels :func:`pixel_dense_t` reads: uint64
    (ceil(M/64), ceil(K/2), 16), i.e. 128 bytes per unit block and pixel pair."""
    w = np.asarray(w_pm1)
    if w.ndim != 2:
        raise ValueError(f"pixel_weights: expected ±1 weights (M, K), got shape {w.shape}")
    m, k = w.shape
    blocks, pairs = -(-m // UNITS), -(-k // 2)
    w8 = np.zeros((blocks * UNITS, 2 * pairs), np.int8)  # padding units and pixels weigh 0
    w8[:m, :k] = w
    panels = w8.reshape(blocks, UNITS, pairs, 2).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(panels).reshape(blocks, pairs, 2 * UNITS).view(np.uint64)


def pixel_pairs(x) -> np.ndarray:
    """uint8 samples (N, K) → uint16 (N, ceil(K/2)), pixel ``2p`` in the low byte
    (little-endian memory order; a view when K is even and rows are contiguous)."""
    n, k = x.shape
    if k % 2 == 0 and x.flags.c_contiguous:
        return x.view(np.uint16)
    xp = np.zeros((n, k + 1), np.uint8)
    xp[:, :k] = x
    return xp.view(np.uint16)


@nb.njit(inline="always")
def _zero(tot, row):
    for q in range(UNITS // 2):
        tot[row, q] = np.uint64(0)


@nb.njit(inline="always")
def _unit(tot, row, j):
    """int32 value ``j`` of the row (two per word)."""
    v = np.int64((tot[row, j >> 1] >> np.uint64(32 * (j & 1))) & np.uint64(0xFFFFFFFF))
    return v - ((v & 0x80000000) << 1)


@twin
def _pixel_dense(xp, panels, T, h, bits):
    """One task per (panel of 64 units, group of samples): for each chunk of 64 pixel
    pairs, each sample's 64 int16 sums are built in registers (two samples at a time,
    sharing the panel's vectors) and added to the group's int32 totals; the totals are
    then thresholded and packed into ``bits`` or, when ``bits`` is empty, written to ``h``."""
    n, pairs = xp.shape
    blocks = panels.shape[0]
    pf = panels.reshape(-1)
    thresholded = bits.size > 0
    m = T.shape[0] if thresholded else h.shape[1]
    groups = (n + GROUP - 1) // GROUP
    for task in nb.prange(blocks * groups):
        b = task // groups
        g0 = (task - b * groups) * GROUP
        g1 = min(g0 + GROUP, n)
        tot = np.empty((GROUP, UNITS // 2), np.uint64)  # int32 totals, two per word
        for s in range(g1 - g0):
            _zero(tot, s)
        tf = tot.reshape(-1)
        # each pixel pair spread over a word's four 16-bit lanes, so the inner loop
        # broadcasts it straight from memory (a load, no ALU op)
        xq = np.empty(GROUP * CHUNK, np.uint64)
        for c0 in range(0, pairs, CHUNK):
            c1 = min(c0 + CHUNK, pairs)
            for s in range(g0, g1):
                for p in range(c0, c1):
                    xq[(s - g0) * CHUNK + p - c0] = np.uint64(xp[s, p]) * _SPLAT16
            s = g0
            while s < g1:
                xi = (s - g0) * CHUNK - c0
                base = (b * pairs + c0) * 16
                if s + 1 < g1:
                    a0 = vzero4()
                    a1 = vzero4()
                    a2 = vzero4()
                    a3 = vzero4()
                    e0 = vzero4()
                    e1 = vzero4()
                    e2 = vzero4()
                    e3 = vzero4()
                    for p in range(c0, c1):
                        w0 = vload4(pf, base)
                        w1 = vload4(pf, base + 4)
                        w2 = vload4(pf, base + 8)
                        w3 = vload4(pf, base + 12)
                        base += 16
                        xa = vbcast4(xq, xi + p)
                        xb = vbcast4(xq, xi + CHUNK + p)
                        a0 = vadd16(a0, vmaddubs(xa, w0))
                        a1 = vadd16(a1, vmaddubs(xa, w1))
                        a2 = vadd16(a2, vmaddubs(xa, w2))
                        a3 = vadd16(a3, vmaddubs(xa, w3))
                        e0 = vadd16(e0, vmaddubs(xb, w0))
                        e1 = vadd16(e1, vmaddubs(xb, w1))
                        e2 = vadd16(e2, vmaddubs(xb, w2))
                        e3 = vadd16(e3, vmaddubs(xb, w3))
                    r = (s - g0 + 1) * (UNITS // 2)
                    vaddto_i32(tf, r, e0)
                    vaddto_i32(tf, r + 8, e1)
                    vaddto_i32(tf, r + 16, e2)
                    vaddto_i32(tf, r + 24, e3)
                    step = 2
                else:
                    a0 = vzero4()
                    a1 = vzero4()
                    a2 = vzero4()
                    a3 = vzero4()
                    for p in range(c0, c1):
                        xa = vbcast4(xq, xi + p)
                        a0 = vadd16(a0, vmaddubs(xa, vload4(pf, base)))
                        a1 = vadd16(a1, vmaddubs(xa, vload4(pf, base + 4)))
                        a2 = vadd16(a2, vmaddubs(xa, vload4(pf, base + 8)))
                        a3 = vadd16(a3, vmaddubs(xa, vload4(pf, base + 12)))
                        base += 16
                    step = 1
                r = (s - g0) * (UNITS // 2)
                vaddto_i32(tf, r, a0)
                vaddto_i32(tf, r + 8, a1)
                vaddto_i32(tf, r + 16, a2)
                vaddto_i32(tf, r + 24, a3)
                s += step
        units = min(UNITS, m - b * UNITS)
        for s in range(g0, g1):
            if thresholded:
                word = np.uint64(0)
                for j in range(units):
                    if _unit(tot, s - g0, j) < T[b * UNITS + j]:
                        word |= np.uint64(1) << np.uint64(j)
                bits[s, b] = word
            else:
                for j in range(units):
                    h[s, b * UNITS + j] = _unit(tot, s - g0, j)


_NO_T = np.empty(0, np.float64)
_NO_H = np.empty((0, 0), np.int32)
_NO_BITS = np.empty((0, 0), np.uint64)


def pixel_dense_t(xp, panels, m: int, threshold=None):
    """:func:`pixel_dense` on pixel pairs (:func:`pixel_pairs`) and panels
    (:func:`pixel_weights`) of ``m`` units, unchecked; ``threshold`` float64 (m,) or None."""
    n = xp.shape[0]
    # ≈ word operations, the unit of _threads.PARALLEL_MIN_WORK: 4 vectors per pair and panel
    work = n * panels.shape[0] * panels.shape[1] * 16
    if threshold is None:
        h = np.empty((n, m), np.int32)
        if h.size:
            _pixel_dense(work, xp, panels, _NO_T, h, _NO_BITS)
        return h
    bits = np.empty((n, panels.shape[0]), np.uint64)
    if bits.size:
        _pixel_dense(work, xp, panels, threshold, _NO_H, bits)
    return bits


def pixel_dense(x, w_pm1, threshold=None):
    r"""Dense layer on pixels: :math:`h_{nj} = \sum_i x_{ni} w_{ji}` for uint8 ``x``
    (N, K) and ±1 ``W`` (M, K), exact in integer arithmetic (see the module docstring);
    with ``threshold`` (M,) real, the result is ``[h < T]`` packed along units, the next
    binary layer's input (the same bits as :func:`bnn_toroid.kernels.real_dense` with a
    threshold).

    Returns:
        int32 (N, M), or uint64 (N, ceil(M/64)).
    """
    x = np.asarray(x)
    if x.dtype == np.bool_:
        x = x.view(np.uint8)
    if x.dtype != np.uint8 or x.ndim != 2:
        raise TypeError(f"pixel_dense: expected uint8 pixels (N, K), got {x.dtype} of shape {x.shape}")
    w = np.asarray(w_pm1)
    if w.ndim != 2 or w.shape[1] != x.shape[1]:
        raise ValueError(f"pixel_dense: expected ±1 weights (M, {x.shape[1]}), got shape {w.shape}")
    if not np.isin(w, (-1, 1)).all():
        raise ValueError("pixel_dense: weights must be ±1")
    if x.shape[1] > MAX_K:
        raise ValueError(f"pixel_dense: K = {x.shape[1]} inputs; sums must fit int32 (K <= {MAX_K})")
    t = None
    if threshold is not None:
        t = np.ascontiguousarray(threshold, np.float64)
        if t.shape != (w.shape[0],) or np.isnan(t).any():
            raise ValueError(f"pixel_dense: expected {w.shape[0]} real thresholds, got shape {t.shape}"
                             + (" with NaN" if t.shape == (w.shape[0],) else ""))
    return pixel_dense_t(pixel_pairs(np.ascontiguousarray(x)), pixel_weights(w), w.shape[0], t)
