"""Binary convolution and max-pooling on packed NHWC activations.

Activations are (SA, N, H, W, Cw) uint64 words: channels packed per pixel, so a conv tap
is ``Cw`` words and ``dot = K_valid - 2 popcount(a XOR w)`` summed over taps.

Padding follows larq's ``pad_values``: with 1 a padded pixel is +1 (bit 0), so it
contributes ``popcount(w)`` and counts in K; with 0 it is a real zero and contributes
nothing, so the tap is skipped and K shrinks at the border.

The convolution is a GEMM over gathered patches: a task takes PIX output pixels of one
image and FGRP filters, gathers the pixels' patches into an im2col block (``taps·Cw``
words per pixel; padded taps as 0 words, corrected afterwards for ``pad_value = 0``),
and runs the Harley–Seal kernel :func:`.gemm.hs_rows` against the filters, repacked once
per call into (taps·Cw, 8)-word tiles. (The direct per-pixel scalar kernel it replaced ran
at 30–110 G/s on this machine; this one at 200–450.)
"""
import numba as nb
import numpy as np

from ._intrinsics import popcount
from ._simd import vload8, vlt_mask, vshl, vsplat8, vsub
from ._threads import twin
from .forms import Form, register
from .gemm import LANES, hs_rows, hs_rows_ternlog, vpt_rows


PIX = 64    # output pixels (rows of the im2col block) per task; 32 measured the same
            # (VGG batch 64: 98 against 101 ms), and round 4's figures were taken with 64
FGRP = 64   # filters per task: one packed output word of the threshold form


@nb.njit(cache=True)
def _repack_filters(W, Wt, P):
    """Wt[s, fb, t, l] = word t of filter 8·fb + l flattened over (dy, dx, c), zero past
    the last filter (the Harley–Seal tiles of :func:`.gemm.hs_rows`); P[s, f, tap] =
    popcount of the filter's words at that tap (for ``pad_value = 0`` corrections)."""
    s_n, f_n, kh, kw, cw = W.shape
    nfb = Wt.shape[1]
    L = kh * kw * cw
    for task in range(s_n * nfb):
        s = task // nfb
        fb = task - s * nfb
        for l in range(LANES):
            f = fb * LANES + l
            if f < f_n:
                for dy in range(kh):
                    for dx in range(kw):
                        tap = dy * kw + dx
                        pc = np.uint64(0)
                        for c in range(cw):
                            v = W[s, f, dy, dx, c]
                            Wt[s, fb, tap * cw + c, l] = v
                            pc += popcount(v)
                        P[s, f, tap] = pc
            else:
                for t in range(L):
                    Wt[s, fb, t, l] = np.uint64(0)


@nb.njit(cache=True)
def _im2col(A, sa, n, p0, p1, wo, kh, kw, sy, sx, pt, pl, X, padded):
    """X[r, tap*Cw + c] = A[sa, n, y, x, c] for output pixel p0 + r (0 words, i.e. +1
    bits, outside the image); padded[r, tap] = 1 there. Returns nothing."""
    h, w, cw = A.shape[2], A.shape[3], A.shape[4]
    for p in range(p0, p1):
        r = p - p0
        oy = p // wo
        ox = p - oy * wo
        for dy in range(kh):
            y = oy * sy - pt + dy
            for dx in range(kw):
                x = ox * sx - pl + dx
                tap = dy * kw + dx
                base = tap * cw
                if 0 <= y < h and 0 <= x < w:
                    for c in range(cw):
                        X[r, base + c] = A[sa, n, y, x, c]
                    padded[r, tap] = 0
                else:
                    for c in range(cw):
                        X[r, base + c] = np.uint64(0)
                    padded[r, tap] = 1


@nb.njit(inline="always")  # once per pixel and filter: inlined (0.5-2 %, docs/performance-history.md, "Round 7")
def _dot_fixed(cnt, r, j, f, s, taps, c_true, pad_one, padded, P):
    """The dot product of pixel r with filter f from its popcount, K and the padded-tap
    corrections: a ``pad_value = 0`` tap holds 0 words (+1) in the im2col row, but real
    zeros add nothing and do not count in K."""
    c = np.int64(cnt[r, j])
    kv = np.int64(taps * c_true)
    if not pad_one:
        for tap in range(taps):
            if padded[r, tap]:
                c -= np.int64(P[s, f, tap])
                kv -= c_true
    return kv - 2 * c


@twin
def _conv_hs(A, Wt, P, c_true, kh, kw, sy, sx, pt, pl, pad_one, T, out, bits):
    """int32 dot products into ``out`` (S, N, Ho, Wo, F), or, when ``bits`` is not empty,
    packed ``[dot < T]`` into ``bits`` (S, N, Ho, Wo, Fw). One compiled body for both.

    A task is PIX output pixels of one image × FGRP filters: the pixels' im2col rows
    (``taps·Cw`` words each) are gathered once, then :func:`.gemm.hs_rows` runs them
    against the filters' Harley–Seal tiles, 8 filters at a time."""
    thresholded = bits.size > 0
    s_n, n_n = Wt.shape[0], A.shape[1]
    ho, wo = (bits.shape[2], bits.shape[3]) if thresholded else (out.shape[2], out.shape[3])
    f_n = P.shape[1]
    taps = kh * kw
    npb = (ho * wo + PIX - 1) // PIX
    nfg = (f_n + FGRP - 1) // FGRP
    shared = A.shape[0] == 1
    L = Wt.shape[2]
    kfull = np.int64(taps * c_true)
    for task in nb.prange(s_n * n_n * npb * nfg):
        fg = task % nfg
        rest = task // nfg
        pb = rest % npb
        rest = rest // npb
        n = rest % n_n
        s = rest // n_n
        p0 = pb * PIX
        p1 = min(p0 + PIX, ho * wo)
        f0 = fg * FGRP
        nf = min(f0 + FGRP, f_n) - f0
        X = np.empty((PIX, L), np.uint64)
        padded = np.empty((PIX, taps), np.uint8)
        cnt = np.empty((PIX, FGRP), np.uint64)
        _im2col(A, 0 if shared else s, n, p0, p1, wo, kh, kw, sy, sx, pt, pl, X, padded)
        for fb in range(f0 // LANES, (f0 + nf + LANES - 1) // LANES):
            hs_rows(X, 0, p1 - p0, L, Wt, (s * Wt.shape[1] + fb) * L * LANES, cnt,
                    fb * LANES - f0, FGRP)
        if thresholded:
            nfv = (nf + LANES - 1) // LANES * LANES
            tl = np.zeros(nfv, np.uint64)
            for j in range(nf):
                tl[j] = np.uint64(T[s, f0 + j])
            kv = vsplat8(kfull)
            keep = ~np.uint64(0) if nf == 64 else (np.uint64(1) << np.uint64(nf)) - np.uint64(1)
        for p in range(p0, p1):
            r = p - p0
            oy = p // wo
            ox = p - oy * wo
            border = False
            if not pad_one:
                for tap in range(taps):
                    if padded[r, tap]:
                        border = True
            if thresholded:
                b = np.uint64(0)
                if border:
                    for j in range(nf):
                        if _dot_fixed(cnt, r, j, f0 + j, s, taps, c_true, pad_one, padded, P) < T[s, f0 + j]:
                            b |= np.uint64(1) << np.uint64(j)
                else:
                    for j in range(0, nfv, LANES):
                        d = vsub(kv, vshl(vload8(cnt, r * FGRP + j), 1))
                        b |= vlt_mask(d, vload8(tl, j)) << np.uint64(j)
                    b &= keep
                bits[s, n, oy, ox, fg] = b
            elif border:
                for j in range(nf):
                    out[s, n, oy, ox, f0 + j] = _dot_fixed(cnt, r, j, f0 + j, s, taps, c_true, pad_one, padded, P)
            else:
                for j in range(nf):
                    out[s, n, oy, ox, f0 + j] = kfull - 2 * np.int64(cnt[r, j])


def conv_tiles(W):
    """Filters (S, F, kh, kw, Cw) → ``(Wt, P)``: the Harley–Seal tiles of
    :func:`_repack_filters` and the per-tap popcounts. Constant for a network, so a
    caller that convolves many batches can keep them."""
    s_n, f_n, kh, kw, cw = W.shape
    Wt = np.empty((s_n, (f_n + LANES - 1) // LANES, kh * kw * cw, LANES), np.uint64)
    P = np.empty((s_n, f_n, kh * kw), np.uint64)
    _repack_filters(W, Wt, P)
    return Wt, P


@twin
def _maxpool(A, size, stride, min_mask, out):
    # Over ±1 values packed as bits (1 = -1): max is AND of bits, min is OR.
    s_n, n_n, ho, wo, cw = out.shape
    full = ~np.uint64(0)
    for task in nb.prange(s_n * n_n * ho):
        s = task // (n_n * ho)
        rem = task - s * n_n * ho
        n = rem // ho
        oy = rem - n * ho
        for ox in range(wo):
            for c in range(cw):
                and_ = full
                or_ = np.uint64(0)
                for dy in range(size):
                    for dx in range(size):
                        v = A[s, n, oy * stride + dy, ox * stride + dx, c]
                        and_ &= v
                        or_ |= v
                m = min_mask[s, c]
                out[s, n, oy, ox, c] = (and_ & ~m) | (or_ & m)



# The conv forms (kernels/forms.py): one source, the kernel of pixels × 8 filters swapped.
_conv_ternlog = _conv_hs.variant("_ternlog", {"hs_rows": hs_rows_ternlog})
_conv_vpt = _conv_hs.variant("_vpt", {"hs_rows": vpt_rows})
register(Form("conv", "harley_seal", frozenset(), "im2col rows × filter tiles (conv_tiles)",
              _conv_hs, "Harley–Seal carry-save adders on u64x8 vectors; generic IR"))
register(Form("conv", "harley_seal_ternlog", frozenset({"avx512f"}),
              "im2col rows × filter tiles (conv_tiles)", _conv_ternlog,
              "Harley–Seal with each full adder as two vpternlogq"))
register(Form("conv", "vpopcnt_tiles", frozenset({"avx512f", "avx512vpopcntdq"}),
              "im2col rows × filter tiles (conv_tiles)", _conv_vpt,
              "xor, vpopcntq, add with lanes along 8 filters, 4 pixels per tile load"))
