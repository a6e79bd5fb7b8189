"""Binary GEMM: XNOR-popcount dot products of packed ±1 rows.

For packed rows ``a`` and ``w`` of true length ``K``:
``a·w = K - 2 popcount(a XOR w)`` (Rastegari et al., "XNOR-Net", ECCV 2016, §3.2).

Every kernel takes a *batch of networks*: ``A`` is (SA, N, Kw) with SA = 1 (inputs shared
by all networks) or SA = S, and ``W`` is (S, M, Kw). This is the hot loop of local
energy and of paths: S perturbed networks on the same N samples in one launch.

Two algorithms, chosen by the number of rows N (docs/performance-history.md, "Binary GEMM"):

* **N >= HS_MIN_ROWS: Harley–Seal with vector lanes along N** (:func:`hs_rows`). Each
  task takes 64 output columns (one packed output word) and a block of rows. It repacks
  8 columns of ``W`` at a time into a (Kw, 8) tile, so one vector holds word k of 8
  different columns; a word of ``A`` is broadcast and XORed against all 8 at once, and
  each lane accumulates all of K. Carry-save adders (Harley & Seal; Muła, Kurz & Lemire,
  "Faster population counts using AVX2", 2018) add 16 words with 15 full adders of 5
  logic ops and one vector popcount, instead of 16 popcounts. On AVX2 this runs on the
  four vector pipes at ≈ 6.2 ops per 256 binary MACs, against 3 integer ops (xor,
  popcnt, add) per 64 MACs for scalar ``popcnt``.
* **N < HS_MIN_ROWS (batch 1 and small batches): scalar popcnt** in 4×4 / 1×4 register
  tiles that read ``W`` in place (:func:`_small_task`): the W tile repack would cost as
  much as the product, and on Zen 3 four ``popcnt`` per cycle beat a vector popcount
  per word (measured 0.8×). Batch 1 is bound by streaming ``W`` from L3; the next W rows
  are prefetched.

A network that multiplies by the same weights on every call can keep them as Harley–Seal
tiles (:func:`dense_tiles`) and run :func:`tiled_dense` at any batch, batch 1 included
(the MLP chain of :mod:`.chain` does).

The Harley–Seal code is written with the generic LLVM vectors of :mod:`._simd`, so it
compiles to what the CPU has (AVX2 ymm here, AVX-512, SSE or NEON elsewhere).

Entry point: :func:`_gemm`, a :class:`._threads.Twin` (tasks in parallel, or on the
calling thread for small products).
"""
import types

import numba as nb
import numpy as np

from ._intrinsics import popcount
from ._threads import Twin, twin
from .forms import Form, register
from ._simd import (csa, csa_ternlog, load_u64, prefetch, vadd, vbcast8, vhsum, vload8, vlt_mask, vpopcnt,
                    vshl, vsplat8, vstore, vsub, vxor, vzero8)

LANES = 8          # columns per Harley–Seal tile (one u64x8 vector)
COLS = 64          # columns per task: one packed output word of the threshold form
HS_MIN_ROWS = 8    # below this many rows the W repack costs more than it saves
L2_WORDS = 1 << 15  # a row block of A (rows × Kw words) is kept below 256 KB


@nb.njit(cache=True)
def _repack8(W, s, j0, kw, buf):
    """buf[k*8 + l] = W[s, j0 + l, k]; columns past the end of W are zero."""
    m = W.shape[1]
    for l in range(LANES):
        j = j0 + l
        if j < m:
            for k in range(kw):
                buf[k * LANES + l] = W[s, j, k]
        else:
            for k in range(kw):
                buf[k * LANES + l] = np.uint64(0)


@nb.njit(cache=True)
def hs_rows(A, a0, nrows, kw, Wt, w0, cnt, c0, ld):
    """Popcounts of (row XOR column) for ``nrows`` rows × 8 columns, Harley–Seal.

    Row i is ``A.flat[a0 + i*kw : a0 + (i+1)*kw]``; the columns are the (kw, 8) tile
    ``Wt.flat[w0 : w0 + kw*8]`` (lane l = column l). Writes ``cnt.flat[c0 + i*ld + l]``.

    The adder tree is the one of Muła, Kurz & Lemire (2018, Fig. 7): ``o, t, f, e`` hold
    the bits of weight 1, 2, 4, 8 pending in each lane, and the carries of weight 16 are
    popcounted once per 16 words.
    """
    kw16 = kw - kw % 16
    for i in range(nrows):
        ab = a0 + i * kw
        o = vzero8()
        t = vzero8()
        f = vzero8()
        e = vzero8()
        c = vzero8()
        for kg in range(0, kw16, 16):
            p = ab + kg
            q = w0 + kg * LANES
            tA, o = csa(o, vxor(vbcast8(A, p), vload8(Wt, q)),
                        vxor(vbcast8(A, p + 1), vload8(Wt, q + 8)))
            tB, o = csa(o, vxor(vbcast8(A, p + 2), vload8(Wt, q + 16)),
                        vxor(vbcast8(A, p + 3), vload8(Wt, q + 24)))
            fA, t = csa(t, tA, tB)
            tA, o = csa(o, vxor(vbcast8(A, p + 4), vload8(Wt, q + 32)),
                        vxor(vbcast8(A, p + 5), vload8(Wt, q + 40)))
            tB, o = csa(o, vxor(vbcast8(A, p + 6), vload8(Wt, q + 48)),
                        vxor(vbcast8(A, p + 7), vload8(Wt, q + 56)))
            fB, t = csa(t, tA, tB)
            eA, f = csa(f, fA, fB)
            tA, o = csa(o, vxor(vbcast8(A, p + 8), vload8(Wt, q + 64)),
                        vxor(vbcast8(A, p + 9), vload8(Wt, q + 72)))
            tB, o = csa(o, vxor(vbcast8(A, p + 10), vload8(Wt, q + 80)),
                        vxor(vbcast8(A, p + 11), vload8(Wt, q + 88)))
            fA, t = csa(t, tA, tB)
            tA, o = csa(o, vxor(vbcast8(A, p + 12), vload8(Wt, q + 96)),
                        vxor(vbcast8(A, p + 13), vload8(Wt, q + 104)))
            tB, o = csa(o, vxor(vbcast8(A, p + 14), vload8(Wt, q + 112)),
                        vxor(vbcast8(A, p + 15), vload8(Wt, q + 120)))
            fB, t = csa(t, tA, tB)
            eB, f = csa(f, fA, fB)
            sx, e = csa(e, eA, eB)
            c = vadd(c, vpopcnt(sx))
        r = vadd(vadd(vshl(c, 4), vshl(vpopcnt(e), 3)),
                 vadd(vadd(vshl(vpopcnt(f), 2), vshl(vpopcnt(t), 1)), vpopcnt(o)))
        for k in range(kw16, kw):
            r = vadd(r, vpopcnt(vxor(vbcast8(A, ab + k), vload8(Wt, w0 + k * LANES))))
        vstore(cnt, c0 + i * ld, r)


# The register tiles and the prefetch are inlined into the task loop: as calls, one per
# tile, they cost 8-12 % of a batch-1 product's time (docs/performance-history.md, "Round 7").
@nb.njit(inline="always")
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


@nb.njit(inline="always")
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
def _emit(cnt, ld, nr, nc, K, s, i0, j0, T, out, bits):
    """Write a block of counts ``cnt[r*ld + c]`` (rows i0.., columns j0.., j0 % 64 == 0)
    as int32 dot products into ``out``, or, when ``bits`` is not empty, as packed bits
    ``[dot < T]`` (the fused threshold)."""
    if bits.size > 0:
        # thresholds of the block's columns, padded to whole vectors (bits past nc are
        # masked off below); compared 8 lanes at a time: [K - 2 cnt < T]
        ncv = (nc + LANES - 1) // LANES * LANES
        tl = np.zeros(ncv, np.uint64)
        for j in range(nc):
            tl[j] = np.uint64(T[s, j0 + j])
        kv = vsplat8(K)
        for r in range(nr):
            for w0 in range(0, nc, 64):
                b = np.uint64(0)
                for j in range(w0, min(w0 + 64, ncv), LANES):
                    d = vsub(kv, vshl(vload8(cnt, r * ld + j), 1))
                    b |= vlt_mask(d, vload8(tl, j)) << np.uint64(j - w0)
                n_in = min(64, nc - w0)
                if n_in < 64:
                    b &= (np.uint64(1) << np.uint64(n_in)) - np.uint64(1)
                bits[s, i0 + r, (j0 + w0) >> 6] = b
    else:
        for r in range(nr):
            for j in range(nc):
                out[s, i0 + r, j0 + j] = K - 2 * np.int64(cnt[r * ld + j])


@nb.njit(cache=True)
def _hs_task(A, W, s, sa, i0, nr, j0, nc, cnt):
    """Counts of rows i0 .. i0+nr × columns j0 .. j0+nc (nc <= COLS) into cnt[r*COLS + c]."""
    n, kw = A.shape[1], A.shape[2]
    a0 = (sa * n + i0) * kw
    buf = np.empty(kw * LANES, np.uint64)
    for jb in range(0, nc, LANES):
        _repack8(W, s, j0 + jb, kw, buf)
        hs_rows(A, a0, nr, kw, buf, 0, cnt, jb, COLS)


def dense_tiles(w) -> np.ndarray:
    """Packed weights (M, Kw) → the Harley–Seal tiles of :func:`hs_rows`, made once:
    uint64 (ceil(M/8), Kw, 8), tile ``b`` holding word ``k`` of columns ``8b … 8b + 7``
    side by side, zero past the last column. :func:`tiled_dense` then runs a few rows
    without the per-call repack that makes :func:`_gemm` use scalar tiles below
    ``HS_MIN_ROWS`` rows (1024 × 1024 at batch 1: 5.3 against 11.1 µs,
    docs/performance-history.md, "Round 4")."""
    w = np.asarray(w, np.uint64)
    m, kw = w.shape
    tiles = -(-m // LANES)
    out = np.zeros((tiles * LANES, kw), np.uint64)
    out[:m] = w
    return np.ascontiguousarray(out.reshape(tiles, LANES, kw).transpose(0, 2, 1))


@twin
def tiled_dense(A, Wt, w0, m, k_true, T, out, bits):
    """:func:`_gemm` for one network on ``n`` rows ``A`` (n, Kw), reading :func:`dense_tiles`
    at ``Wt.flat[w0:]`` (``m`` columns): ``out[0, i, j]`` int32 dots, or the packed
    ``bits[0, i, :]`` of ``[dot < T[0, j]]``. One task per 64 columns (one output word)
    and block of rows, as :func:`_gemm`'s Harley–Seal path but without its repack."""
    n, kw = A.shape
    tiles = (m + LANES - 1) // LANES
    ncb = (m + COLS - 1) // COLS
    rb = max(1, min(n, L2_WORDS // max(kw, 1)))
    nrb = (n + rb - 1) // rb
    K = np.int64(k_true)
    for task in nb.prange(ncb * nrb):
        cb = task // nrb
        i0 = (task - cb * nrb) * rb
        nr = min(i0 + rb, n) - i0
        j0 = cb * COLS
        nc = min(j0 + COLS, m) - j0
        cnt = np.empty(nr * COLS, np.uint64)
        for jb in range(j0 // LANES, min(j0 + COLS, tiles * LANES) // LANES):
            hs_rows(A, i0 * kw, nr, kw, Wt, w0 + jb * kw * LANES, cnt, jb * LANES - j0, COLS)
        _emit(cnt, COLS, nr, nc, K, 0, i0, j0, T, out, bits)


# Few rows: tasks of 4 rows × SMALL_CHUNK columns, 4×4 or 1×4 scalar register tiles that
# read W in place (no repack). A multiple of 64: packed output words never straddle tasks.
SMALL_CHUNK = 256


@nb.njit(inline="always")
def _prefetch_rows(W, s, j, kw):
    """Prefetch rows j .. j+3 of W[s] (a batch-1 product streams W from L3)."""
    m = W.shape[1]
    if j + 4 <= m:
        base = (s * m + j) * kw
        for q in range(0, 4 * kw, 8):
            prefetch(W, base + q)


@nb.njit(cache=True)
def _small_task(A, W, s, sa, i0, nr, j0, nc, K, T, out, bits):
    """Rows i0 .. i0+nr (nr <= 4) × columns j0 .. j0+nc, written straight to ``out``
    (int32 dots) or, when ``bits`` is not empty, to ``bits`` ([dot < T], packed)."""
    kw = A.shape[2]
    thresholded = bits.size > 0
    one = np.uint64(1)
    for w0 in range(j0, j0 + nc, 64):
        w1 = min(w0 + 64, j0 + nc)
        wi = w0 >> 6
        if nr == 4:
            b0 = b1 = b2 = b3 = np.uint64(0)
            j = w0
            while j + 4 <= w1:
                c = _tile4x4(A, W, sa, s, i0, j, kw)
                for q in range(4):
                    if thresholded:
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
                    else:
                        for r in range(4):
                            out[s, i0 + r, j + q] = K - 2 * np.int64(c[4 * r + q])
                j += 4
            for jj in range(j, w1):
                bit = np.uint64(jj - w0)
                for r in range(4):
                    d = K - 2 * np.int64(_dot1(A, W, sa, s, i0 + r, jj, kw))
                    if not thresholded:
                        out[s, i0 + r, jj] = d
                    elif d < T[s, jj]:
                        if r == 0:
                            b0 |= one << bit
                        elif r == 1:
                            b1 |= one << bit
                        elif r == 2:
                            b2 |= one << bit
                        else:
                            b3 |= one << bit
            if thresholded:
                bits[s, i0, wi] = b0
                bits[s, i0 + 1, wi] = b1
                bits[s, i0 + 2, wi] = b2
                bits[s, i0 + 3, wi] = b3
        else:
            for i in range(i0, i0 + nr):
                b = np.uint64(0)
                j = w0
                while j + 4 <= w1:
                    _prefetch_rows(W, s, j + 4, kw)
                    c0, c1, c2, c3 = _tile1x4(A, W, sa, s, i, j, kw)
                    if thresholded:
                        if K - 2 * np.int64(c0) < T[s, j]:
                            b |= one << np.uint64(j - w0)
                        if K - 2 * np.int64(c1) < T[s, j + 1]:
                            b |= one << np.uint64(j + 1 - w0)
                        if K - 2 * np.int64(c2) < T[s, j + 2]:
                            b |= one << np.uint64(j + 2 - w0)
                        if K - 2 * np.int64(c3) < T[s, j + 3]:
                            b |= one << np.uint64(j + 3 - w0)
                    else:
                        out[s, i, j] = K - 2 * np.int64(c0)
                        out[s, i, j + 1] = K - 2 * np.int64(c1)
                        out[s, i, j + 2] = K - 2 * np.int64(c2)
                        out[s, i, j + 3] = K - 2 * np.int64(c3)
                    j += 4
                for jj in range(j, w1):
                    d = K - 2 * np.int64(_dot1(A, W, sa, s, i, jj, kw))
                    if not thresholded:
                        out[s, i, jj] = d
                    elif d < T[s, jj]:
                        b |= one << np.uint64(jj - w0)
                if thresholded:
                    bits[s, i, wi] = b


@nb.njit(cache=True)
def _plan(A, W):
    """(hs, row block, column block, row blocks, column blocks, tasks)."""
    n, kw = A.shape[1], A.shape[2]
    s_n, m = W.shape[0], W.shape[1]
    hs = n >= HS_MIN_ROWS
    if hs:  # Harley–Seal: row blocks that stay in L2 × 64 columns
        rb = max(HS_MIN_ROWS, min(n, L2_WORDS // max(kw, 1)))
        cols = COLS
    else:   # scalar tiles: 4 rows × SMALL_CHUNK columns
        rb = 4
        cols = SMALL_CHUNK
    nrb = (n + rb - 1) // rb
    ncb = (m + cols - 1) // cols
    return hs, rb, cols, nrb, ncb, s_n * ncb * nrb


@nb.njit(cache=True)
def _gemm_task(task, A, W, k_true, T, out, bits, hs, rb, cols, nrb, ncb):
    n = A.shape[1]
    m = W.shape[1]
    K = np.int64(k_true)
    s = task // (ncb * nrb)
    rem = task - s * ncb * nrb
    cb = rem // nrb
    i0 = (rem - cb * nrb) * rb
    nr = min(i0 + rb, n) - i0
    j0 = cb * cols
    nc = min(j0 + cols, m) - j0
    sa = 0 if A.shape[0] == 1 else s
    if hs:
        cnt = np.empty(nr * COLS, np.uint64)
        _hs_task(A, W, s, sa, i0, nr, j0, nc, cnt)
        _emit(cnt, COLS, nr, nc, K, s, i0, j0, T, out, bits)
    else:
        _small_task(A, W, s, sa, i0, nr, j0, nc, K, T, out, bits)


@twin
def _gemm(A, W, k_true, T, out, bits):
    """int32 dot products ``out[s, i, j] = K - 2 popcount(A[sa, i] ^ W[s, j])``, or, when
    ``bits`` is not empty, the next layer's packed activation ``bit (s, i, j) =
    [dot < T[s, j]]`` (then ``out`` is an empty placeholder, and vice versa): one compiled
    body serves both outputs."""
    hs, rb, cols, nrb, ncb, ntask = _plan(A, W)
    for task in nb.prange(ntask):
        _gemm_task(task, A, W, k_true, T, out, bits, hs, rb, cols, nrb, ncb)


# ---------------------------------------------------------------- the vpopcnt form
# On CPUs with AVX-512 VPOPCNTDQ, ``llvm.ctpop`` on 8 words is one ``vpopcntq``, so the
# plain sum ``Σ_k popcount(a_k ^ w_k)`` with vector lanes along K costs 3 zmm operations
# (xor, popcount, add) per 512 MACs, against ≈ 4 for Harley–Seal's carry-save adders as
# LLVM builds them. A 2-row × 4-column register tile shares each W load between 2 rows
# and each A load between 4 columns. Without a vector popcount (AVX2) LLVM expands the
# ctpop into nibble lookups and this form loses to Harley–Seal (kernels/forms.py).

@nb.njit(inline="always")
def _vp_tile(A, W, a0, a1, w0, w1, w2, w3, kw):
    """Popcounts of (row XOR column) for rows at flat offsets a0, a1 and columns at
    w0..w3, each ``kw`` words: (c00, c01, c02, c03, c10, c11, c12, c13)."""
    c00 = c01 = c02 = c03 = vzero8()
    c10 = c11 = c12 = c13 = vzero8()
    kv = kw - kw % LANES
    for k in range(0, kv, LANES):
        x0 = vload8(A, a0 + k)
        x1 = vload8(A, a1 + k)
        y = vload8(W, w0 + k)
        c00 = vadd(c00, vpopcnt(vxor(x0, y)))
        c10 = vadd(c10, vpopcnt(vxor(x1, y)))
        y = vload8(W, w1 + k)
        c01 = vadd(c01, vpopcnt(vxor(x0, y)))
        c11 = vadd(c11, vpopcnt(vxor(x1, y)))
        y = vload8(W, w2 + k)
        c02 = vadd(c02, vpopcnt(vxor(x0, y)))
        c12 = vadd(c12, vpopcnt(vxor(x1, y)))
        y = vload8(W, w3 + k)
        c03 = vadd(c03, vpopcnt(vxor(x0, y)))
        c13 = vadd(c13, vpopcnt(vxor(x1, y)))
    r00, r01, r02, r03 = vhsum(c00), vhsum(c01), vhsum(c02), vhsum(c03)
    r10, r11, r12, r13 = vhsum(c10), vhsum(c11), vhsum(c12), vhsum(c13)
    for k in range(kv, kw):
        x0 = load_u64(A, a0 + k)
        x1 = load_u64(A, a1 + k)
        y0, y1 = load_u64(W, w0 + k), load_u64(W, w1 + k)
        y2, y3 = load_u64(W, w2 + k), load_u64(W, w3 + k)
        r00 += popcount(x0 ^ y0)
        r01 += popcount(x0 ^ y1)
        r02 += popcount(x0 ^ y2)
        r03 += popcount(x0 ^ y3)
        r10 += popcount(x1 ^ y0)
        r11 += popcount(x1 ^ y1)
        r12 += popcount(x1 ^ y2)
        r13 += popcount(x1 ^ y3)
    return r00, r01, r02, r03, r10, r11, r12, r13


@nb.njit(cache=True)
def _vp_task(A, W, s, sa, i0, nr, j0, nc, cnt):
    """Counts of rows i0 .. i0+nr × columns j0 .. j0+nc into cnt[r*COLS + c]. An odd last
    row or a short last column group repeats an index, and the repeat is not stored."""
    n, kw = A.shape[1], A.shape[2]
    m = W.shape[1]
    wb = s * m + j0
    for r in range(0, nr, 2):
        r1 = min(r + 1, nr - 1)
        a0 = (sa * n + i0 + r) * kw
        a1 = (sa * n + i0 + r1) * kw
        for jj in range(0, nc, 4):
            q1, q2, q3 = min(jj + 1, nc - 1), min(jj + 2, nc - 1), min(jj + 3, nc - 1)
            c = _vp_tile(A, W, a0, a1, (wb + jj) * kw, (wb + q1) * kw, (wb + q2) * kw,
                         (wb + q3) * kw, kw)
            for q in range(min(4, nc - jj)):
                cnt[r * COLS + jj + q] = c[q]
                if r + 1 < nr:
                    cnt[(r + 1) * COLS + jj + q] = c[4 + q]


@nb.njit(cache=True)
def vpt_rows(A, a0, nrows, kw, Wt, w0, cnt, c0, ld):
    """:func:`hs_rows` (same arguments, same counts) as plain sums on the column tiles:
    4 rows share each load of the (kw, 8) tile, a row's word is broadcast and XORed
    against 8 columns at once, and ``vpopcnt`` adds each lane's count. The lanes are
    columns, so no horizontal sum is left at the end: 3 zmm operations (xor,
    ``vpopcntq``, add) per 512 MACs with every load shared, the CPU's limit mix."""
    i = 0
    while i + 4 <= nrows:
        b0 = a0 + i * kw
        c0v = vzero8()
        c1v = vzero8()
        c2v = vzero8()
        c3v = vzero8()
        for k in range(kw):
            y = vload8(Wt, w0 + k * LANES)
            c0v = vadd(c0v, vpopcnt(vxor(vbcast8(A, b0 + k), y)))
            c1v = vadd(c1v, vpopcnt(vxor(vbcast8(A, b0 + kw + k), y)))
            c2v = vadd(c2v, vpopcnt(vxor(vbcast8(A, b0 + 2 * kw + k), y)))
            c3v = vadd(c3v, vpopcnt(vxor(vbcast8(A, b0 + 3 * kw + k), y)))
        vstore(cnt, c0 + i * ld, c0v)
        vstore(cnt, c0 + (i + 1) * ld, c1v)
        vstore(cnt, c0 + (i + 2) * ld, c2v)
        vstore(cnt, c0 + (i + 3) * ld, c3v)
        i += 4
    while i < nrows:
        b0 = a0 + i * kw
        c0v = vzero8()
        for k in range(kw):
            c0v = vadd(c0v, vpopcnt(vxor(vbcast8(A, b0 + k), vload8(Wt, w0 + k * LANES))))
        vstore(cnt, c0 + i * ld, c0v)
        i += 1


@nb.njit(cache=True)
def _vp_plan(A, W):
    """(vp, row block, column block, row blocks, column blocks, tasks): below
    HS_MIN_ROWS rows the product streams W once and the scalar tiles of _small_task
    are as fast (a 2-row tile would compute its one row twice)."""
    n, kw = A.shape[1], A.shape[2]
    vp = n >= HS_MIN_ROWS
    if vp:
        rb = max(1, min(n, L2_WORDS // max(kw, 1)))
        cols = COLS
    else:
        rb = 4
        cols = SMALL_CHUNK
    nrb = (n + rb - 1) // rb
    ncb = (W.shape[1] + cols - 1) // cols
    return vp, rb, cols, nrb, ncb, W.shape[0] * ncb * nrb


def _clone(f, replace: dict, suffix: str):
    """The njit function ``f`` compiled again with the module globals in ``replace``."""
    g = dict(globals())
    g.update(replace)
    py = f.py_func
    c = types.FunctionType(py.__code__, g, py.__name__ + suffix, py.__defaults__, py.__closure__)
    c.__qualname__ = py.__qualname__ + suffix
    c.__module__ = py.__module__
    c.__doc__ = py.__doc__
    return nb.njit(cache=True)(c)


def _variant(suffix: str, replace: dict, chain: tuple, top: str) -> Twin:
    """The Twin ``top`` compiled again with the globals in ``replace`` swapped in: each
    function of ``chain`` (callees first) is cloned with one shared globals dict, so the
    clones call each other. One source for several GEMM forms; each clone has its
    own qualname, hence its own on-disk cache entry."""
    g = dict(globals())
    g.update(replace)

    def clone(f):
        c = types.FunctionType(f.__code__, g, f.__name__ + suffix, f.__defaults__, f.__closure__)
        c.__qualname__ = f.__qualname__ + suffix
        c.__module__ = f.__module__
        c.__doc__ = f.__doc__
        return c

    for name in chain:
        g[name] = nb.njit(cache=True)(clone(globals()[name].py_func))
    return Twin(clone(globals()[top].parallel.py_func))


# Harley–Seal with each full adder as two vpternlogq: for AVX-512 CPUs without
# VPOPCNTDQ (Skylake-X, Cascade Lake), where the adders are the loop's cost. The row
# kernel is public: the conv and hidden-layer forms swap it in too.
hs_rows_ternlog = _clone(hs_rows, {"csa": csa_ternlog}, "_ternlog")
_gemm_ternlog = _variant("_ternlog", {"hs_rows": hs_rows_ternlog}, ("_hs_task", "_gemm_task"),
                         "_gemm")
# The vpopcnt form: _gemm's task structure with the vpopcnt plan and tile task.
_gemm_vpopcnt = _variant("_vpopcnt", {"_plan": _vp_plan, "_hs_task": _vp_task}, ("_gemm_task",),
                         "_gemm")


# The vpopcnt sums on Harley–Seal's column tiles: _gemm with vpt_rows for hs_rows.
_gemm_vpt = _variant("_vpt", {"hs_rows": vpt_rows}, ("_hs_task", "_gemm_task"), "_gemm")


register(Form("gemm", "harley_seal", frozenset(), "packed rows (S, N, Kw); W repacked per call",
              _gemm, "Harley–Seal carry-save adders on u64x8 vectors (≥ 8 rows), scalar "
              "popcnt tiles below; generic IR"))
register(Form("gemm", "vpopcnt", frozenset({"avx512f", "avx512vpopcntdq"}),
              "packed rows (S, N, Kw), read in place", _gemm_vpopcnt,
              "xor, vpopcntq, add on zmm, 2×4 register tiles (≥ 8 rows), scalar popcnt "
              "tiles below"))
register(Form("gemm", "harley_seal_ternlog", frozenset({"avx512f"}),
              "packed rows (S, N, Kw); W repacked per call", _gemm_ternlog,
              "Harley–Seal with each full adder as two vpternlogq (0xE8 carry, 0x96 sum)"))
register(Form("gemm", "vpopcnt_tiles", frozenset({"avx512f", "avx512vpopcntdq"}),
              "packed rows (S, N, Kw); W repacked per call into 8-column tiles", _gemm_vpt,
              "xor, vpopcntq, add on zmm with lanes along the columns: 4 rows share each "
              "tile load and no horizontal sum is left (≥ 8 rows), scalar popcnt tiles below"))
