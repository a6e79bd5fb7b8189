"""Binary GEMM: XNOR-popcount dot products of packed ±1 rows.

For packed rows ``a`` and ``w`` of true length ``K``:
``a·w = K - 2 popcount(a XOR w)`` (Rastegari et al., "XNOR-Net", ECCV 2016, §3.2).

Every kernel takes a *batch of networks*: ``A`` is (SA, N, Kw) with SA = 1 (inputs shared
by all networks) or SA = S, and ``W`` is (S, M, Kw). This is the hot loop of local
energy and of paths: S perturbed networks on the same N samples in one launch.

Work is split into tasks of 4 rows × 256 columns. Row blocks vary fastest inside a
thread's contiguous share of tasks, so a 256-row slice of ``W`` stays in L2 while it is
reused; with few rows (batch 1) the column chunks still give every core work.
"""
import numba as nb
import numpy as np

from ._intrinsics import popcount

ROWS = 4
CHUNK = 256  # columns per task; a multiple of 64 so packed output words never straddle tasks


@nb.njit(cache=True)
def _tile4x4(A, W, sa, s, i, j, kw):
    c00 = c01 = c02 = c03 = np.uint64(0)
    c10 = c11 = c12 = c13 = np.uint64(0)
    c20 = c21 = c22 = c23 = np.uint64(0)
    c30 = c31 = c32 = c33 = np.uint64(0)
    for k in range(kw):
        a0 = A[sa, i, k]
        a1 = A[sa, i + 1, k]
        a2 = A[sa, i + 2, k]
        a3 = A[sa, i + 3, k]
        w0 = W[s, j, k]
        w1 = W[s, j + 1, k]
        w2 = W[s, j + 2, k]
        w3 = W[s, j + 3, k]
        c00 += popcount(a0 ^ w0)
        c01 += popcount(a0 ^ w1)
        c02 += popcount(a0 ^ w2)
        c03 += popcount(a0 ^ w3)
        c10 += popcount(a1 ^ w0)
        c11 += popcount(a1 ^ w1)
        c12 += popcount(a1 ^ w2)
        c13 += popcount(a1 ^ w3)
        c20 += popcount(a2 ^ w0)
        c21 += popcount(a2 ^ w1)
        c22 += popcount(a2 ^ w2)
        c23 += popcount(a2 ^ w3)
        c30 += popcount(a3 ^ w0)
        c31 += popcount(a3 ^ w1)
        c32 += popcount(a3 ^ w2)
        c33 += popcount(a3 ^ w3)
    return (c00, c01, c02, c03, c10, c11, c12, c13,
            c20, c21, c22, c23, c30, c31, c32, c33)


@nb.njit(cache=True)
def _tile1x4(A, W, sa, s, i, j, kw):
    c0 = c1 = c2 = c3 = np.uint64(0)
    for k in range(kw):
        a = A[sa, i, k]
        c0 += popcount(a ^ W[s, j, k])
        c1 += popcount(a ^ W[s, j + 1, k])
        c2 += popcount(a ^ W[s, j + 2, k])
        c3 += popcount(a ^ W[s, j + 3, k])
    return c0, c1, c2, c3


@nb.njit(cache=True)
def _dot1(A, W, sa, s, i, j, kw):
    c = np.uint64(0)
    for k in range(kw):
        c += popcount(A[sa, i, k] ^ W[s, j, k])
    return c


@nb.njit(cache=True)
def _task_bounds(task, n, m):
    nrb = (n + ROWS - 1) // ROWS
    ncc = (m + CHUNK - 1) // CHUNK
    s = task // (nrb * ncc)
    rem = task - s * nrb * ncc
    cc = rem // nrb
    rb = rem - cc * nrb
    i0 = rb * ROWS
    j0 = cc * CHUNK
    return s, i0, min(i0 + ROWS, n), j0, min(j0 + CHUNK, m)


@nb.njit(parallel=True, cache=True)
def _gemm_int(A, W, k_true, out):
    n = A.shape[1]
    kw = A.shape[2]
    s_n, m = W.shape[0], W.shape[1]
    shared = A.shape[0] == 1
    ntask = s_n * ((n + ROWS - 1) // ROWS) * ((m + CHUNK - 1) // CHUNK)
    K = np.int64(k_true)
    for task in nb.prange(ntask):
        s, i0, i1, j0, j1 = _task_bounds(task, n, m)
        sa = 0 if shared else s
        if i1 - i0 == ROWS:
            j = j0
            while j + 4 <= j1:
                c = _tile4x4(A, W, sa, s, i0, j, kw)
                for r in range(4):
                    for q in range(4):
                        out[s, i0 + r, j + q] = K - 2 * np.int64(c[4 * r + q])
                j += 4
            for jj in range(j, j1):
                for r in range(4):
                    out[s, i0 + r, jj] = K - 2 * np.int64(_dot1(A, W, sa, s, i0 + r, jj, kw))
        else:
            for i in range(i0, i1):
                j = j0
                while j + 4 <= j1:
                    c4 = _tile1x4(A, W, sa, s, i, j, kw)
                    for q in range(4):
                        out[s, i, j + q] = K - 2 * np.int64(c4[q])
                    j += 4
                for jj in range(j, j1):
                    out[s, i, jj] = K - 2 * np.int64(_dot1(A, W, sa, s, i, jj, kw))


@nb.njit(parallel=True, cache=True)
def _gemm_threshold(A, W, k_true, T, out):
    # out bit (s, i, j) = [dot(s, i, j) < T[s, j]]: the next layer's packed activation.
    n = A.shape[1]
    kw = A.shape[2]
    s_n, m = W.shape[0], W.shape[1]
    shared = A.shape[0] == 1
    ntask = s_n * ((n + ROWS - 1) // ROWS) * ((m + CHUNK - 1) // CHUNK)
    K = np.int64(k_true)
    one = np.uint64(1)
    for task in nb.prange(ntask):
        s, i0, i1, j0, j1 = _task_bounds(task, n, m)
        sa = 0 if shared else s
        for w0 in range(j0, j1, 64):
            w1 = min(w0 + 64, j1)
            wi = w0 >> 6
            if i1 - i0 == ROWS:
                b0 = b1 = b2 = b3 = np.uint64(0)
                j = w0
                while j + 4 <= w1:
                    c = _tile4x4(A, W, sa, s, i0, j, kw)
                    for q in range(4):
                        t = T[s, j + q]
                        bit = np.uint64(j + q - w0)
                        if K - 2 * np.int64(c[q]) < t:
                            b0 |= one << bit
                        if K - 2 * np.int64(c[4 + q]) < t:
                            b1 |= one << bit
                        if K - 2 * np.int64(c[8 + q]) < t:
                            b2 |= one << bit
                        if K - 2 * np.int64(c[12 + q]) < t:
                            b3 |= one << bit
                    j += 4
                for jj in range(j, w1):
                    t = T[s, jj]
                    bit = np.uint64(jj - w0)
                    if K - 2 * np.int64(_dot1(A, W, sa, s, i0, jj, kw)) < t:
                        b0 |= one << bit
                    if K - 2 * np.int64(_dot1(A, W, sa, s, i0 + 1, jj, kw)) < t:
                        b1 |= one << bit
                    if K - 2 * np.int64(_dot1(A, W, sa, s, i0 + 2, jj, kw)) < t:
                        b2 |= one << bit
                    if K - 2 * np.int64(_dot1(A, W, sa, s, i0 + 3, jj, kw)) < t:
                        b3 |= one << bit
                out[s, i0, wi] = b0
                out[s, i0 + 1, wi] = b1
                out[s, i0 + 2, wi] = b2
                out[s, i0 + 3, wi] = b3
            else:
                for i in range(i0, i1):
                    b = np.uint64(0)
                    j = w0
                    while j + 4 <= w1:
                        c4 = _tile1x4(A, W, sa, s, i, j, kw)
                        for q in range(4):
                            if K - 2 * np.int64(c4[q]) < T[s, j + q]:
                                b |= one << np.uint64(j + q - w0)
                        j += 4
                    for jj in range(j, w1):
                        if K - 2 * np.int64(_dot1(A, W, sa, s, i, jj, kw)) < T[s, jj]:
                            b |= one << np.uint64(jj - w0)
                    out[s, i, wi] = b
