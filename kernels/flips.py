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

:class:`bnn_toroid.network.first.RealFirstLayer` uses it for stacks of networks
(local energy, path points); ``docs/performance-history.md, "Local energy" has the measurements.
"""
import numba as nb
import numpy as np

from ._intrinsics import popcount
from ._threads import twin

NCHUNK = 512   # samples per task: x[chunk] (K × 128) stays in L2 while every task of the chunk reads it


@nb.njit(cache=True)
def _count_flips(Wt, Ws, counts):
    s_n, m, kw = Ws.shape
    for s in range(s_n):
        for j in range(m):
            c = np.uint64(0)
            for w in range(kw):
                c += popcount(Ws[s, j, w] ^ Wt[j, w])
            counts[s * m + j] = c


@nb.njit(cache=True)
def _list_flips(Wt, Ws, ptr, col, coef):
    s_n, m, kw = Ws.shape
    one = np.uint64(1)
    for s in range(s_n):
        for j in range(m):
            q = ptr[s * m + j]
            for w in range(kw):
                d = Ws[s, j, w] ^ Wt[j, w]
                while d:
                    low = d & (~d + one)           # lowest set bit
                    b = popcount(low - one)        # its index
                    col[q] = w * 64 + np.int64(b)
                    # template bit 1 is -1: the flip adds +2 x_i, else -2 x_i
                    coef[q] = 2 if Wt[j, w] & low else -2
                    q += 1
                    d ^= low


@nb.njit(cache=True)
def _majority(Ws, out):
    s_n, m, kw = Ws.shape
    votes = np.empty(64, np.int64)
    for j in range(m):
        for w in range(kw):
            votes[:] = 0
            for s in range(s_n):
                v = Ws[s, j, w]
                for b in range(64):
                    votes[b] += np.int64((v >> np.uint64(b)) & np.uint64(1))
            word = np.uint64(0)
            for b in range(64):
                if 2 * votes[b] > s_n:
                    word |= np.uint64(1) << np.uint64(b)
            out[j, w] = word


def majority(w_stack):
    """Bitwise majority of S packed weight arrays (S, M, Kw) → (M, Kw): bit 1 (-1) where
    more than half of the networks have it; ties give +1. The template that minimises the
    total number of flips of the stack (the coordinate-wise median in Hamming space)."""
    w_stack = np.ascontiguousarray(w_stack)
    if w_stack.dtype != np.uint64 or w_stack.ndim != 3:
        raise ValueError(f"majority: expected packed uint64 words (S, M, Kw), got {w_stack.dtype} {w_stack.shape}")
    out = np.empty(w_stack.shape[1:], np.uint64)
    _majority(w_stack, out)
    return out


def flips_csr(w_template, w_stack):
    """Flip lists of each network against the template, as CSR over (network, unit).

    Args:
        w_template: packed ±1 rows, uint64 (M, Kw) (:func:`.bits.pack_bits` layout).
        w_stack: packed rows of S networks, uint64 (S, M, Kw).

    Returns:
        ``(ptr, col, coef)``: for network s and unit j the flips are
        ``col[ptr[s*M + j] : ptr[s*M + j + 1]]`` (input index i, increasing) with
        coefficient ``coef = -2 w_template[j, i]`` (int32), so
        ``h_s[:, j] = h0[:, j] + Σ coef x[:, i]``. ``ptr[-1]`` is the number of flips.
    """
    w_template = np.ascontiguousarray(w_template)
    w_stack = np.ascontiguousarray(w_stack)
    if w_template.dtype != np.uint64 or w_stack.dtype != np.uint64:
        raise TypeError(f"flips_csr: expected packed uint64 words, got {w_template.dtype} and {w_stack.dtype}")
    if w_stack.ndim != 3 or w_template.shape != w_stack.shape[1:]:
        raise ValueError(f"flips_csr: template {w_template.shape} does not match stack {w_stack.shape}; "
                         "expected (M, Kw) and (S, M, Kw)")
    s_n, m, _ = w_stack.shape
    counts = np.empty(s_n * m, np.int64)
    _count_flips(w_template, w_stack, counts)
    ptr = np.zeros(s_n * m + 1, np.int64)
    np.cumsum(counts, out=ptr[1:])
    col = np.empty(ptr[-1], np.int64)
    coef = np.empty(ptr[-1], np.int32)
    _list_flips(w_template, w_stack, ptr, col, coef)
    return ptr, col, coef


@twin
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
        _flipped_threshold_pack(len(col) * h0.shape[0] + out.size * 64, h0, xT, ptr, col, coef, T, out)
    return out
