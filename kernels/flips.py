"""A first layer on real input shared by many perturbed networks (local energy, paths).

Networks that differ from a template by a few flipped first-layer weights need not each
redo the float product ``x W^T``. With ``W_s = W`` except at flipped entries,

.. math:: h_s = x W_s^T = h_0 + x D_s^T, \\qquad D_s = W_s - W = -2 W \\text{ at the flips,}

so ``h_0 = x W^T`` is computed once (BLAS) and each network adds ``-2 w_{ji} x_i`` for its
flipped weights ``(j, i)``: ``N`` additions per flip instead of ``N K`` multiply-adds per
unit. On integer input (uint8 pixels) every term is an integer, so the result is exact in
any order and equals the direct product bit for bit.

:func:`flipped_threshold_pack` fuses the correction with the threshold and the packing of
the next layer's input: bit ``(s, n, j) = [h_s[n, j] < T[s, j]]``.

This module is not wired into :mod:`bnn_toroid.network` yet (see ``docs/performance.md``,
"proposed change"); the local-energy benchmark runs it as a prototype.
"""
import numba as nb
import numpy as np

NCHUNK = 512   # samples per task: x[chunk] (K × 128) stays in L2 while every task of the chunk reads it


def flips_csr(w_template, w_stack):
    """Flip lists of each network against the template, as CSR over (network, unit).

    Args:
        w_template: ±1 int8 (M, K).
        w_stack: ±1 int8 (S, M, K).

    Returns:
        ``(ptr, col, coef)``: for network s and unit j the flips are
        ``col[ptr[s*M + j] : ptr[s*M + j + 1]]`` (input index i) with coefficient
        ``coef = -2 w_template[j, i]`` (int32), so ``h_s[:, j] = h0[:, j] + Σ coef x[:, i]``.
    """
    w_template = np.asarray(w_template)
    w_stack = np.asarray(w_stack)
    s_n, m, k = w_stack.shape
    if w_template.shape != (m, k):
        raise ValueError(f"flips_csr: template {w_template.shape} does not match stack {w_stack.shape}")
    diff = w_stack != w_template[None]
    s_i, j_i, i_i = np.nonzero(diff)            # sorted by (s, j, i)
    counts = np.bincount(s_i * m + j_i, minlength=s_n * m)
    ptr = np.zeros(s_n * m + 1, np.int64)
    np.cumsum(counts, out=ptr[1:])
    coef = (-2 * w_template[j_i, i_i]).astype(np.int32)
    return ptr, i_i.astype(np.int64), coef


@nb.njit(parallel=True, cache=True)
def _flipped_threshold_pack(h0, xT, ptr, col, coef, T, out):
    n, m = h0.shape
    s_n, _, mw = out.shape
    nch = (n + NCHUNK - 1) // NCHUNK
    one = np.uint64(1)
    for task in nb.prange(s_n * mw * nch):
        ch = task // (s_n * mw)     # sample chunks outermost: concurrent tasks share x[chunk]
        rem = task - ch * s_n * mw
        s = rem // mw
        w = rem - s * mw
        n0 = ch * NCHUNK
        nn = min(n0 + NCHUNK, n) - n0
        j0 = w * 64
        nj = min(j0 + 64, m) - j0
        acc = np.empty((64, NCHUNK), h0.dtype)
        for r in range(nn):
            hr = h0[n0 + r, j0:j0 + nj]
            for jj in range(nj):
                acc[jj, r] = hr[jj]
        for jj in range(nj):
            a = acc[jj]
            for q in range(ptr[s * m + j0 + jj], ptr[s * m + j0 + jj + 1]):
                c = h0.dtype.type(coef[q])
                xr = xT[col[q], n0:n0 + nn]
                for r in range(nn):
                    a[r] += c * h0.dtype.type(xr[r])
        for r in range(nn):
            b = np.uint64(0)
            for jj in range(nj):
                if np.float64(acc[jj, r]) < T[s, j0 + jj]:
                    b |= one << np.uint64(jj)
            out[s, n0 + r, w] = b


def flipped_threshold_pack(h0, x, flips, threshold):
    """Packed first-layer outputs of S networks that share ``h0 = x W^T`` up to flips.

    Args:
        h0: (N, M) the template's pre-activations ``x W^T``, float32 or float64 (exact
            integers for integer input below 2**24, resp. 2**53: then every correction
            is exact too).
        x: (N, K) the real input (any real dtype; integers for exactness).
        flips: ``flips_csr(W, W_stack)``.
        threshold: (S, M) thresholds (real).

    Returns:
        uint64 (S, N, ceil(M/64)): bit ``[h_s[n, j] < T[s, j]]``, the next layer's packed input.
    """
    x = np.asarray(x)
    h0 = np.asarray(h0)
    if x.dtype in (np.uint8, np.int8, np.int16, np.uint16) and np.abs(h0).max(initial=0) < 2 ** 31 - 2 * 65535 * x.shape[1]:
        # small integers (pixels): int32 sums, 1-2 byte reads of x (exact, and a quarter of
        # the memory traffic of float32)
        h0 = np.ascontiguousarray(h0, dtype=np.int32)
        xT = np.ascontiguousarray(x.T)
    else:
        h0 = np.ascontiguousarray(h0, dtype=h0.dtype if h0.dtype in (np.float32, np.float64) else np.float64)
        xT = np.ascontiguousarray(x.T, dtype=h0.dtype)
    T = np.ascontiguousarray(threshold, dtype=np.float64)
    ptr, col, coef = flips
    s_n, m = T.shape
    if h0.shape[1] != m or (len(ptr) - 1) != s_n * m or xT.shape[1] != h0.shape[0]:
        raise ValueError(f"flipped_threshold_pack: h0 {h0.shape}, x {np.shape(x)}, thresholds "
                         f"{T.shape} and {len(ptr) - 1} flip rows do not fit together")
    out = np.empty((s_n, h0.shape[0], (m + 63) // 64), np.uint64)
    if out.size:
        _flipped_threshold_pack(h0, xT, ptr, col, coef, T, out)
    return out
