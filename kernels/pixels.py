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
fused: see docs/performance-history.md, "The first layer on pixels (round 3)".

Layout. The inputs are read as *pairs* of pixels ``(x_{2p}, x_{2p+1})``, each spread
over a 64-bit word (:func:`pixel_pairs`) that one load broadcasts to a whole vector. The weights are repacked once into panels of 64 units
(one packed output word): ``panel[b, p]`` holds, for units ``64b … 64b + 63``, the two
weights of pair ``p`` side by side (128 bytes, four 32-byte vectors), so that one
broadcast pair times one vector gives 16 units' partial sums.
"""
import numba as nb
import numpy as np

from ._simd import (vaddto_i32, vadd16, vbcast4, vbitmask8, vdup2, vload4, vlt16_mask, vlt_i32_mask,
                    vlut4, vmaddubs, vshufb, vstore, vzero4, vzip16)
from ._threads import twin

UNITS = 64        # units per panel: one packed output word
CHUNK = 64        # pixel pairs per int16 accumulation (64 · 510 <= 32767)
GROUP = 16        # samples sharing a panel chunk (8 KB), reused from L1 this often
SPAN = 4          # groups a task takes in turn (many short rows: conv patches)
_SPLAT16 = np.uint64(0x0001000100010001)
_PANEL_WORDS = 2 * UNITS // 8   # uint64 words of int8 weights per panel and pair
_LUT_WORDS = UNITS // 8         # uint64 words of 4-bit patterns per panel and group of 4
MAX_K = (2 ** 31 - 1) // 255  # |h| <= 255 K must fit int32


def pixel_weights(w_pm1, check: bool = True) -> np.ndarray:
    """±1 weights (M, K) → the panels :func:`pixel_dense_t` reads: uint64
    (ceil(M/64), ceil(K/2), 16), i.e. 128 bytes per unit block and pixel pair.
    ``check=False`` skips the ±1 check, for weights just unpacked from bits."""
    w = _pm1("pixel_weights", w_pm1) if check else np.asarray(w_pm1)
    m, k = w.shape
    blocks, pairs = -(-m // UNITS), -(-k // 2)
    w8 = np.zeros((blocks * UNITS, 2 * pairs), np.int8)  # padding units and pixels weigh 0
    w8[:m, :k] = w
    panels = w8.reshape(blocks, UNITS, pairs, 2).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(panels).reshape(blocks, pairs, 2 * UNITS).view(np.uint64)


def pixel_signs(panels) -> np.ndarray:
    """The panels of :func:`pixel_weights` as sign bits, 1 bit a weight: uint64
    (blocks, ceil(pairs/2), 4). Each 32-byte vector covers two pixel pairs, i.e. the
    panel's eight 32-byte weight vectors ``t = 4 (p mod 2) + v``: bit ``t`` of its byte
    ``j`` is set where byte ``j`` of vector ``t`` is -1. The kernels accept either
    layout (:func:`pixel_dense_t`). At batch 1 the int8 panels of a 784 × 1024 layer
    (0.8 MB) come from L3 on every call, the bits (0.1 MB) stay in L2 with the next
    layers' weights (docs/performance-history.md, "Round 4")."""
    p = np.asarray(panels)
    if p.dtype != np.uint64 or p.ndim != 3 or p.shape[2] != _PANEL_WORDS:
        raise ValueError(f"pixel_signs: expected pixel_weights panels uint64 (blocks, pairs, "
                         f"{_PANEL_WORDS}), got {p.dtype} of shape {p.shape}")
    blocks, pairs = p.shape[:2]
    quads = -(-pairs // 2)
    neg = np.zeros((blocks, 2 * quads, 2 * UNITS), bool)  # a missing last pair weighs +1
    neg[:, :pairs] = np.ascontiguousarray(p).view(np.int8).reshape(blocks, pairs, 2 * UNITS) < 0
    slots = neg.reshape(blocks, quads, 8, 32).transpose(0, 1, 3, 2)  # (…, byte j, vector t)
    out = np.packbits(slots, axis=-1, bitorder="little").reshape(blocks, quads, 32)
    return np.ascontiguousarray(out).view(np.uint64)


def pixel_pairs(x) -> np.ndarray:
    """uint8 samples (N, K) → uint64 (N, ceil(K/2)): pixel pair ``(x_{2p}, x_{2p+1})`` as
    a 16-bit value (``x_{2p}`` in the low byte; 0 past the end) repeated in the word's
    four 16-bit lanes, so that the kernel broadcasts it to a whole vector with one load
    (4 bytes per pixel, made once per call instead of once per panel)."""
    x = _pixels("pixel_pairs", x, 2, "(N, K)")
    out = np.empty((x.shape[0], -(-x.shape[1] // 2)), np.uint64)
    _spread_pairs(x, out)
    return out


def _pixels(name, x, ndim, what):
    """uint8 (bool viewed as uint8) C-contiguous, of ``ndim`` dimensions."""
    x = np.asarray(x)
    if x.dtype == np.bool_:
        x = x.view(np.uint8)
    if x.dtype != np.uint8 or x.ndim != ndim:
        raise TypeError(f"{name}: expected uint8 pixels {what}, got {x.dtype} of shape {x.shape}")
    return np.ascontiguousarray(x)


def _pm1(name, w):
    w = np.asarray(w)
    if w.ndim != 2 or w.dtype.kind not in "iuf":
        raise ValueError(f"{name}: expected ±1 weights (M, K), got {w.dtype} of shape {w.shape}")
    if not np.isin(w, (-1, 1)).all():
        raise ValueError(f"{name}: weights must be ±1")
    return w


@nb.njit(cache=True)
def _spread_pairs(x, out):
    n, k = x.shape
    for s in range(n):
        for p in range(k // 2):
            out[s, p] = (np.uint64(x[s, 2 * p]) | (np.uint64(x[s, 2 * p + 1]) << np.uint64(8))) * _SPLAT16
        if k % 2:
            out[s, k // 2] = np.uint64(x[s, k - 1]) * _SPLAT16


@nb.njit(cache=True)
def _float_pixels(xf, out):
    """Whether every value of ``xf`` (flat float) is an integer in [0, 255] (NaN is
    not), converting into ``out`` (flat uint8) on the way. No early exit: the loop
    vectorises, and ``out`` is only used when the answer is yes."""
    ok = True
    for i in range(xf.size):
        v = xf[i]
        ok &= (v >= 0.0) & (v <= 255.0) & (v == np.floor(v))
        out[i] = np.uint8(min(max(v, 0.0), 255.0))  # clamped: NaN or -1 never reach the cast
    return ok


def float_pixels(x):
    """A float array of pixels (every value an integer in [0, 255], as images handed over
    by float32 pipelines are) as uint8 of the same shape, in one compiled pass; None
    when some value is not such an integer. The NumPy route (min, max, cast and compare)
    took 27 µs of a 33 µs batch-1 MLP call."""
    xf = np.ascontiguousarray(x).reshape(-1)
    if xf.dtype not in (np.float32, np.float64):
        xf = xf.astype(np.float32)  # float16 (exact in float32), which Numba does not compute in
    out = np.empty(xf.size, np.uint8)
    return out.reshape(np.shape(x)) if _float_pixels(xf, out) else None


def pixel_patches(x, ksize, stride, pads, pad_value) -> np.ndarray:
    """uint8 images NHWC → the pixel pairs (:func:`pixel_pairs` layout) of every output
    pixel's patch, for a convolution as a dense product: rows ``(n, y, x)`` in order,
    patch entries ``(dy, dx, c)`` in order (the filters' own order, flattened), pixels
    outside the image read as ``pad_value`` (uint8 per channel). Returns uint64
    (N·Ho·Wo, ceil(kh·kw·C/2))."""
    x = _pixels("pixel_patches", x, 4, "NHWC (N, H, W, C)")
    kh, kw = (int(v) for v in ksize)
    sy, sx = (int(v) for v in stride)
    pt, pb, pl, pr = (int(v) for v in pads)
    n, hh, ww, c = x.shape
    if min(kh, kw, sy, sx) < 1 or min(pt, pb, pl, pr) < 0:
        raise ValueError(f"pixel_patches: kernel {ksize} and stride {stride} must be >= 1 and "
                         f"pads {pads} >= 0")
    ho, wo = (hh + pt + pb - kh) // sy + 1, (ww + pl + pr - kw) // sx + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"pixel_patches: a {kh}×{kw} kernel does not fit {hh}×{ww} with pads {pads}")
    pv = np.asarray(pad_value)
    if pv.ndim > 1 or pv.size not in (1, c) or pv.dtype.kind not in "iuf" or not (
            (pv == np.round(pv)) & (pv >= 0) & (pv <= 255)).all():
        raise ValueError(f"pixel_patches: pad_value must be a pixel (an integer in [0, 255]), "
                         f"one or one per channel ({c}); got {pad_value!r}")
    return pixel_patches_t(x, (kh, kw), (sy, sx), (pt, pb, pl, pr),
                           np.ascontiguousarray(np.broadcast_to(pv, (c,)), np.uint8))


def pixel_patches_t(x, ksize, stride, pads, pad_value) -> np.ndarray:
    """:func:`pixel_patches`, unchecked: ``x`` uint8 NHWC C-contiguous, ``pad_value``
    uint8 (C,), the geometry valid (a network checks it once)."""
    n, hh, ww, c = x.shape
    (kh, kw), (sy, sx), (pt, pb, pl, pr) = ksize, stride, pads
    ho, wo = (hh + pt + pb - kh) // sy + 1, (ww + pl + pr - kw) // sx + 1
    out = np.empty((n * ho * wo, -(-(kh * kw * c) // 2)), np.uint64)
    if out.size:
        # padded once, so that every patch row is kw·C contiguous bytes: no bounds tests
        xp = np.empty((n, hh + pt + pb, ww + pl + pr, c), np.uint8)
        xp[:, :pt] = pad_value  # the border only: broadcasting C values over a whole
        xp[:, pt + hh:] = pad_value  # image costs more than the patches themselves
        xp[:, pt:pt + hh, :pl] = pad_value
        xp[:, pt:pt + hh, pl + ww:] = pad_value
        xp[:, pt:pt + hh, pl:pl + ww] = x
        _patch_pairs(out.size, xp, kh, kw, sy, sx, ho, wo, out)
    return out


@twin
def _patch_pairs(xp, kh, kw, sy, sx, ho, wo, out):
    n_n, hp, wp, c = xp.shape
    pairs = out.shape[1]
    k = kh * kw * c
    # patch byte e sits at off[e] from the patch's top-left pixel in the padded image
    off = np.empty(2 * pairs, np.int64)
    for e in range(k):
        tap, ch = e // c, e % c
        off[e] = ((tap // kw) * wp + tap % kw) * c + ch
    odd = k % 2 == 1
    xf = xp.reshape(-1)
    for task in nb.prange(n_n * ho):
        n = task // ho
        oy = task - n * ho
        for ox in range(wo):
            o = ((n * hp + oy * sy) * wp + ox * sx) * c
            row = task * wo + ox
            for q in range(k // 2):
                out[row, q] = (np.uint64(xf[o + off[2 * q]])
                               | (np.uint64(xf[o + off[2 * q + 1]]) << np.uint64(8))) * _SPLAT16
            if odd:  # the last pair's second pixel is 0
                out[row, pairs - 1] = np.uint64(xf[o + off[k - 1]]) * _SPLAT16


@nb.njit(inline="always")
def _zeros():
    """Four zero vectors: a sample's 64 int16 sums."""
    return vzero4(), vzero4(), vzero4(), vzero4()


@nb.njit(inline="always")
def _clear(tot, rows):
    """Zero the first ``rows`` rows of int32 totals."""
    for row in range(rows):
        for q in range(UNITS // 2):
            tot[row, q] = np.uint64(0)


@nb.njit(inline="always")
def _emit(tot, row, b, s, T, t_base, h, bits):
    """Sample ``s``'s 64 totals of panel ``b`` (row ``row`` of ``tot``, int32 two per
    word): thresholded and packed into ``bits[s, b]`` or, when ``bits`` is empty,
    written to ``h``. The thresholds start at word ``t_base`` of ``T``."""
    if bits.size > 0:
        # 16 units per vector compare against the int32 thresholds of pixel_thresholds
        tf = tot.reshape(-1)
        r, t0 = row * (UNITS // 2), t_base + b * (UNITS // 2)
        bits[s, b] = (vlt_i32_mask(tf, r, T, t0)
                      | (vlt_i32_mask(tf, r + 8, T, t0 + 8) << np.uint64(16))
                      | (vlt_i32_mask(tf, r + 16, T, t0 + 16) << np.uint64(32))
                      | (vlt_i32_mask(tf, r + 24, T, t0 + 24) << np.uint64(48)))
    else:
        for j in range(min(UNITS, h.shape[1] - b * UNITS)):
            h[s, b * UNITS + j] = _unit(tot, row, j)


@nb.njit(inline="always")
def _bits16(a0, a1, a2, a3, T, b):
    """The packed word ``[h < T]`` of panel ``b`` from its four int16 sum vectors."""
    t0 = b * (UNITS // 2)
    return (vlt16_mask(a0, T, t0) | (vlt16_mask(a1, T, t0 + 8) << np.uint64(16))
            | (vlt16_mask(a2, T, t0 + 16) << np.uint64(32)) | (vlt16_mask(a3, T, t0 + 24) << np.uint64(48)))


@nb.njit(inline="always")
def _keep(direct, tf, row, s, b, T, bits, a0, a1, a2, a3):
    """A chunk's four int16 sum vectors of sample ``s``: compared and packed at once
    (``direct``, one chunk), or added to its int32 totals (row ``row`` of ``tf``, 8 words a
    row)."""
    if direct:
        bits[s, b] = _bits16(a0, a1, a2, a3, T, b)
    else:
        r = row * (UNITS // 2)
        vaddto_i32(tf, r, a0)
        vaddto_i32(tf, r + 8, a1)
        vaddto_i32(tf, r + 16, a2)
        vaddto_i32(tf, r + 24, a3)


@nb.njit(inline="always")
def _unit(tot, row, j):
    """int32 value ``j`` of the row (two per word)."""
    v = np.int64((tot[row, j >> 1] >> np.uint64(32 * (j & 1))) & np.uint64(0xFFFFFFFF))
    return v - ((v & 0x80000000) << 1)


@twin
def _pixel_dense(xp, panels, T, h, bits):
    """One task per (panel of 64 units, SPAN groups of samples): for each chunk of 64 pixel
    pairs, each sample's 64 int16 sums are built in registers (two samples at a time,
    sharing the panel's vectors) and added to the group's int32 totals; the totals are
    then thresholded and packed into ``bits`` or, when ``bits`` is empty, written to ``h``."""
    n, pairs = xp.shape
    blocks = panels.shape[0]
    pf = panels.reshape(-1)
    xf = xp.reshape(-1)
    # one chunk (K <= 128, e.g. a first conv's 3·3·3 patches) and a threshold: the int16
    # sums are final, and are compared where they are, in registers
    direct = pairs <= CHUNK and bits.size > 0
    span = SPAN * GROUP
    spans = (n + span - 1) // span
    for task in nb.prange(blocks * spans):
        b = task // spans
        r0 = (task - b * spans) * span
        r1 = min(r0 + span, n)
        tot = np.empty((GROUP, UNITS // 2), np.uint64)  # int32 totals, two per word
        tf = tot.reshape(-1)
        for g0 in range(r0, r1, GROUP):
            g1 = min(g0 + GROUP, r1)
            if not direct:
                _clear(tot, g1 - g0)
            for c0 in range(0, pairs, CHUNK):
                c1 = min(c0 + CHUNK, pairs)
                s = g0
                while s < g1:
                    xi = s * pairs
                    base = (b * pairs + c0) * 16
                    if s + 1 < g1:
                        a0, a1, a2, a3 = _zeros()
                        e0, e1, e2, e3 = _zeros()
                        for p in range(c0, c1):
                            w0 = vload4(pf, base)
                            w1 = vload4(pf, base + 4)
                            w2 = vload4(pf, base + 8)
                            w3 = vload4(pf, base + 12)
                            base += 16
                            xa = vbcast4(xf, xi + p)
                            xb = vbcast4(xf, xi + pairs + p)
                            a0 = vadd16(a0, vmaddubs(xa, w0))
                            a1 = vadd16(a1, vmaddubs(xa, w1))
                            a2 = vadd16(a2, vmaddubs(xa, w2))
                            a3 = vadd16(a3, vmaddubs(xa, w3))
                            e0 = vadd16(e0, vmaddubs(xb, w0))
                            e1 = vadd16(e1, vmaddubs(xb, w1))
                            e2 = vadd16(e2, vmaddubs(xb, w2))
                            e3 = vadd16(e3, vmaddubs(xb, w3))
                        _keep(direct, tf, s - g0 + 1, s + 1, b, T, bits, e0, e1, e2, e3)
                        step = 2
                    else:
                        a0, a1, a2, a3 = _zeros()
                        for p in range(c0, c1):
                            xa = vbcast4(xf, xi + p)
                            a0 = vadd16(a0, vmaddubs(xa, vload4(pf, base)))
                            a1 = vadd16(a1, vmaddubs(xa, vload4(pf, base + 4)))
                            a2 = vadd16(a2, vmaddubs(xa, vload4(pf, base + 8)))
                            a3 = vadd16(a3, vmaddubs(xa, vload4(pf, base + 12)))
                            base += 16
                        step = 1
                    _keep(direct, tf, s - g0, s, b, T, bits, a0, a1, a2, a3)
                    s += step
            if not direct:
                for s in range(g1 - g0):
                    _emit(tot, s, b, g0 + s, T, 0, h, bits)


@twin
def _pixel_signed(xp, signs, T, h, bits):
    """:func:`_pixel_dense` on the sign bits of :func:`pixel_signs`, one task per (panel,
    sample). With ``m_i = -1`` where weight ``i`` is -1 and 0 where it is +1,
    ``w_i = 1 + 2 m_i``, so ``h = Σ x + 2 Σ x_i m_i``: the byte products take the masks
    as they are unpacked (2 vector operations per 32 weights, :func:`._simd.vbitmask8`)
    and ``Σ x`` is added once per sample. Each lane gains at most 510 a pair, 64 pairs a
    chunk, as in :func:`_pixel_dense`; panels' padding bits are 0 (+1) and meet pixel 0."""
    n, pairs = xp.shape
    blocks, quads = signs.shape[0], signs.shape[1]
    sf = signs.reshape(-1)
    xf = xp.reshape(-1)
    sums = np.zeros(n, np.int64)  # Σ x of each sample (the low 16 bits of a pair word)
    for s in range(n):
        for p in range(pairs):
            v = xf[s * pairs + p]
            sums[s] += np.int64(v & np.uint64(0xFF)) + np.int64((v >> np.uint64(8)) & np.uint64(0xFF))
    for task in nb.prange(blocks * n):
        b = task // n
        s = task - b * n
        xi = s * pairs
        tot = np.empty((1, UNITS // 2), np.uint64)
        _clear(tot, 1)
        tf = tot.reshape(-1)
        for c0 in range(0, pairs, CHUNK):  # CHUNK is even: chunks start on a quad
            c1 = min(c0 + CHUNK, pairs)
            a0, a1, a2, a3 = _zeros()
            q = (b * quads + c0 // 2) * 4
            p = c0
            while p < c1:
                g = vload4(sf, q)
                xa = vbcast4(xf, xi + p)
                a0 = vadd16(a0, vmaddubs(xa, vbitmask8(g, 0)))
                a1 = vadd16(a1, vmaddubs(xa, vbitmask8(g, 1)))
                a2 = vadd16(a2, vmaddubs(xa, vbitmask8(g, 2)))
                a3 = vadd16(a3, vmaddubs(xa, vbitmask8(g, 3)))
                if p + 1 < c1:
                    xb = vbcast4(xf, xi + p + 1)
                    a0 = vadd16(a0, vmaddubs(xb, vbitmask8(g, 4)))
                    a1 = vadd16(a1, vmaddubs(xb, vbitmask8(g, 5)))
                    a2 = vadd16(a2, vmaddubs(xb, vbitmask8(g, 6)))
                    a3 = vadd16(a3, vmaddubs(xb, vbitmask8(g, 7)))
                q += 4
                p += 2
            _keep(False, tf, 0, s, b, T, bits, a0, a1, a2, a3)
        sx = sums[s]
        for j in range(UNITS // 2):  # both int32 halves of each word: x -> sx + 2x
            lo = _unit(tot, 0, 2 * j) * 2 + sx
            hi = _unit(tot, 0, 2 * j + 1) * 2 + sx
            tot[0, j] = (np.uint64(lo) & np.uint64(0xFFFFFFFF)) | (np.uint64(hi) << np.uint64(32))
        _emit(tot, 0, b, s, T, 0, h, bits)


# --- the lookup form: four pixels at a time ------------------------------------------
# A unit's four weights on pixels 4g … 4g+3 form a 4-bit pattern p (bit i set where
# w_i = -1), and Σ_i w_i x_i is entry p of the 16-entry table of those pixels
# (``_simd.vlut4``), made once per sample, group and task. ``vpshufb`` looks up 32 units
# at once (low and high bytes of the int16 entries, from two 16-byte tables), and two byte
# interleaves rebuild the int16 sums: 128 multiply-adds in 6 vector operations, 4 of them
# on the shuffle units, where ``vpmaddubsw`` gives 32 in 2 on one multiplier port.
QUADS = 32        # groups of four pixels per int16 accumulation (32 · 1020 <= 32767)
# unit order inside a 32-unit vector of patterns, so that the two interleaves give units
# 0-15 and 16-31 in order (each interleave takes 8 bytes from each 16-byte half)
_LUT_ORDER = np.r_[0:8, 16:24, 8:16, 24:32]


def pixel_lut_weights(w_pm1, check: bool = True) -> np.ndarray:
    """±1 weights (M, K) → the patterns :func:`pixel_lut_dense_t` reads: uint64
    (ceil(M/64), ceil(K/4), 8), i.e. per block of 64 units and group of 4 pixels one byte
    per unit, its 4-bit pattern (bit ``i`` set where ``w[u, 4g+i] = -1``; padding units
    and pixels +1)."""
    w = _pm1("pixel_lut_weights", w_pm1) if check else np.asarray(w_pm1)
    m, k = w.shape
    blocks, quads = -(-m // UNITS), -(-k // 4)
    neg = np.zeros((blocks * UNITS, 4 * quads), np.uint8)
    neg[:m, :k] = w < 0
    pat = (neg.reshape(-1, quads, 4) << np.arange(4, dtype=np.uint8)).sum(axis=2, dtype=np.uint8)
    pat = pat.reshape(blocks, 2, 32, quads)[:, :, _LUT_ORDER]  # (blocks, half, byte, group)
    return np.ascontiguousarray(pat.transpose(0, 3, 1, 2)).reshape(blocks, quads, 64).view(np.uint64)


LUT_ROWS = 8      # samples per task of the lookup form: their tables of a chunk (16 KB) stay in L1
LUT_PANELS = 16   # at most this many panels per task (its int32 totals: 32 KB)


@nb.njit(inline="always")
def task_span(task, ranges, rows, n, blocks):
    """Task ``task`` of a table kernel (groups of ``rows`` samples × ``ranges`` panel
    ranges, ranges varying fastest): its first sample, its sample count and its panels
    ``b0 … b1 - 1``."""
    g = task // ranges
    r = task - g * ranges
    s0 = g * rows
    return s0, min(s0 + rows, n) - s0, blocks * r // ranges, blocks * (r + 1) // ranges


@nb.njit(inline="always")
def _quad(x, x32, s, g, k, quads, aligned):
    """Pixels 4g … 4g+3 of sample ``s`` as one word (``x_{4g}`` lowest; 0 past the end)."""
    if aligned:
        return x32[s * quads + g]
    i = 4 * g
    if i + 4 <= k:
        return (np.uint32(x[s, i]) | (np.uint32(x[s, i + 1]) << np.uint32(8))
                | (np.uint32(x[s, i + 2]) << np.uint32(16)) | (np.uint32(x[s, i + 3]) << np.uint32(24)))
    w = np.uint32(0)  # the last group: missing pixels are 0, so they add nothing
    for j in range(k - i):
        w |= np.uint32(x[s, i + j]) << np.uint32(8 * j)
    return w


@twin
def _pixel_lut(x, pats, T, h, bits):
    """:func:`_pixel_dense` in the lookup form, on uint8 pixels ``x`` (N, K) C-contiguous:
    the same totals, with a step of four pixels (one table) instead of two.

    A task takes up to LUT_ROWS samples and up to LUT_PANELS panels. For each chunk of QUADS groups
    of pixels it builds the samples' tables (:func:`._simd.vlut4`), each stored twice
    over (64 bytes, read by plain loads), then runs every panel of its range past them:
    the tables stay in L1 while the panels' patterns stream from L2. Building tables in
    the task costs no launch of its own and no memory that grows with N.

    Every chunk's sums go through the int32 totals, even when one chunk is all of K. A
    branch that compared such sums in registers (as :func:`_pixel_dense` does for short
    K) made the serial compilation of the whole kernel 1.3–1.4× slower at K = 784,
    where it never runs (docs/performance-history.md, "Round 6")."""
    n, k = x.shape
    blocks, quads = pats.shape[0], pats.shape[1]
    wf = pats.reshape(-1)
    flat = x.reshape(-1)
    x32 = flat[:flat.size // 4 * 4].view(np.uint32)  # whole words when rows are (K % 4 == 0)
    aligned = k % 4 == 0
    # small batches get fewer samples per task, for four tasks or more: a task's samples
    # then share fewer loads of the patterns, but no table is built twice
    rows = min(LUT_ROWS, max(1, (n + 3) // 4))
    groups = (n + rows - 1) // rows
    ranges = (blocks + LUT_PANELS - 1) // LUT_PANELS  # each range rebuilds its samples' tables
    for task in nb.prange(groups * ranges):
        s0, ns, b0, b1 = task_span(task, ranges, rows, n, blocks)
        nbk = b1 - b0
        tab = np.empty(LUT_ROWS * QUADS * 8, np.uint64)
        tot = np.empty((LUT_ROWS * nbk, UNITS // 2), np.uint64)  # row si·nbk + (b - b0)
        tf = tot.reshape(-1)
        _clear(tot, ns * nbk)
        for c0 in range(0, quads, QUADS):
            nq = min(c0 + QUADS, quads) - c0
            for si in range(ns):
                for q in range(nq):
                    v = vlut4(_quad(x, x32, s0 + si, c0 + q, k, quads, aligned))
                    o = (si * QUADS + q) * 8
                    vstore(tab, o, vdup2(v, 0))
                    vstore(tab, o + 4, vdup2(v, 1))
            for b in range(b0, b1):
                si = 0
                while si < ns:
                    a0, a1, a2, a3 = _zeros()
                    wi = (b * quads + c0) * 8
                    ta = si * QUADS * 8
                    if si + 1 < ns:  # two samples share each load of the patterns
                        e0, e1, e2, e3 = _zeros()
                        tb = ta + QUADS * 8
                        for q in range(nq):
                            i0 = vload4(wf, wi)
                            i1 = vload4(wf, wi + 4)
                            wi += 8
                            a0, a1, a2, a3 = _lookup64(tab, ta, i0, i1, a0, a1, a2, a3)
                            e0, e1, e2, e3 = _lookup64(tab, tb, i0, i1, e0, e1, e2, e3)
                            ta += 8
                            tb += 8
                        _keep(False, tf, (si + 1) * nbk + b - b0, s0 + si + 1, b, T, bits, e0, e1, e2, e3)
                        step = 2
                    else:
                        for q in range(nq):
                            a0, a1, a2, a3 = _lookup64(tab, ta, vload4(wf, wi), vload4(wf, wi + 4),
                                                       a0, a1, a2, a3)
                            wi += 8
                            ta += 8
                        step = 1
                    _keep(False, tf, si * nbk + b - b0, s0 + si, b, T, bits, a0, a1, a2, a3)
                    si += step
        for si in range(ns):
            for b in range(b0, b1):
                _emit(tot, si * nbk + b - b0, b, s0 + si, T, 0, h, bits)


@nb.njit(inline="always")
def _lookup64(tab, t, i0, i1, a0, a1, a2, a3):
    """One sample's table at ``tab[t:t+8]`` (low bytes twice, high bytes twice) looked up
    by 64 units' patterns ``i0``, ``i1``, and added to its four int16 sum vectors."""
    lo = vload4(tab, t)
    hi = vload4(tab, t + 4)
    l0 = vshufb(lo, i0)
    h0 = vshufb(hi, i0)
    l1 = vshufb(lo, i1)
    h1 = vshufb(hi, i1)
    return (vadd16(a0, vzip16(l0, h0, 0)), vadd16(a1, vzip16(l0, h0, 1)),
            vadd16(a2, vzip16(l1, h1, 0)), vadd16(a3, vzip16(l1, h1, 1)))


def pixel_lut_dense_t(x, pats, m: int, threshold=None):
    """:func:`pixel_dense_t` in the lookup form, on uint8 pixels ``x`` (N, K) C-contiguous
    and the patterns of :func:`pixel_lut_weights`, unchecked: the same integers (or
    bits)."""
    return _run(_pixel_lut, pixel_work(x.shape[0], m, -(-x.shape[1] // 2)), x, pats, m, threshold)


def _run(kernel, work, xs, ws, m: int, threshold):
    """Run a pixel kernel into a new output: int32 (N, m), or with ``threshold`` the
    packed bits (N, panels)."""
    T, h, bits, out = outputs(xs.shape[0], m, ws.shape[0], threshold)
    if out.size:
        kernel(work, xs, ws, T, h, bits)
    return out


def outputs(n: int, m: int, panels: int, threshold):
    """A table kernel's ``T, h, bits`` arguments and the one of them it fills: new int32
    sums (n, m) when ``threshold`` is None, else new packed bits (n, panels) against the
    words ``threshold``; the unused ones are empty placeholders."""
    if threshold is None:
        h = np.empty((n, m), np.int32)
        return _NO_T, h, _NO_BITS, h
    bits = np.empty((n, panels), np.uint64)
    return threshold, _NO_H, bits, bits


def stack_outputs(S: int, n: int, m: int, panels: int, thresholds):
    """:func:`outputs` for S networks: ``T, h, bits, out`` with new int32 sums (S, n, m)
    when ``thresholds`` is None, else new packed bits (S, n, panels) against the stacked
    words ``thresholds`` (S, …); the unused ones are empty, with S rows so that network
    ``s``'s are ``T[s], h[s], bits[s]``."""
    if thresholds is None:
        h = np.empty((S, n, m), np.int32)
        return np.empty((S, 0), np.uint64), h, np.empty((S, 0, 0), np.uint64), h
    bits = np.empty((S, n, panels), np.uint64)
    return thresholds, np.empty((S, 0, 0), np.int32), bits, bits


def one_per_thread(S: int, threads: int) -> bool:
    """Whether S networks run best one per thread, each on one thread: at least two per
    thread, or a multiple of the thread count (no thread idles at the end); else one
    network after another, each on every thread."""
    return S > 1 and (S >= 2 * threads or S % threads == 0)


def pixel_thresholds(threshold, m: int) -> np.ndarray:
    """Real thresholds (m,) → the kernel's int32 thresholds, two per uint64 word, one
    word row per 64 units: ``ceil(T)`` (for an integer ``h``, ``h < T`` iff
    ``h < ceil(T)``), clipped to the int32 range (``|h| <= 255 K`` lies inside it, so
    no comparison changes); padding units get the minimum, so their bits stay 0."""
    t = np.asarray(threshold)
    if t.shape != (m,) or t.dtype.kind not in "iuf" or np.isnan(t).any():
        raise ValueError(f"pixel_thresholds: expected {m} real thresholds, not NaN; got "
                         f"{t.dtype} of shape {t.shape}")
    blocks = -(-m // UNITS)
    out = np.full(blocks * UNITS, np.iinfo(np.int32).min, np.int32)
    out[:m] = np.clip(np.ceil(t), -(2 ** 31 - 1), 2 ** 31 - 1)
    return out.view(np.uint64)


_NO_T = np.empty(0, np.uint64)
_NO_H = np.empty((0, 0), np.int32)
_NO_BITS = np.empty((0, 0), np.uint64)


def pixel_work(n: int, m: int, pairs: int) -> int:
    """The work a pixel product of ``n`` samples, ``m`` units and ``pairs`` pixel pairs
    weighs against ``_threads.PARALLEL_MIN_WORK``, whatever the weights' form: vector
    operations, 4 per pixel pair and panel of 64 units, so that one MNIST-sized sample
    (784 → 1024: 25 K) runs on the calling thread. Measured there: 20 µs serial against
    13 µs on two threads while the machine is quiet, but 22 against 600 µs in the spells
    when waking the second thread takes half a millisecond (docs/performance-history.md, "The first layer on pixels (round 3)")."""
    return n * -(-m // UNITS) * pairs * 4


def pixel_dense_t(xp, panels, m: int, threshold=None, form: str = "bytes"):
    """:func:`pixel_dense` on pixel pairs (:func:`pixel_pairs`) and the weights of
    ``m`` units in ``form``'s layout: "bytes", the int8 panels of :func:`pixel_weights`,
    or "signs", their bits (:func:`pixel_signs`); unchecked. ``threshold`` None or the
    words of :func:`pixel_thresholds`."""
    kernel = _PAIR_KERNELS[form]
    return _run(kernel, pixel_work(xp.shape[0], m, xp.shape[1]), xp, panels, m, threshold)


_PAIR_KERNELS = {"bytes": _pixel_dense, "signs": _pixel_signed}


def pixel_dense(x, w_pm1, threshold=None):
    r"""Dense layer on pixels: :math:`h_{nj} = \sum_i x_{ni} w_{ji}` for uint8 ``x``
    (N, K) and ±1 ``W`` (M, K), exact in integer arithmetic (see the module docstring);
    with ``threshold`` (M,) real, the result is ``[h < T]`` packed along units, the next
    binary layer's input (the same bits as :func:`bnn_toroid.kernels.real_dense` with a
    threshold).

    Returns:
        int32 (N, M), or uint64 (N, ceil(M/64)).
    """
    x = _pixels("pixel_dense", x, 2, "(N, K)")
    w = _pm1("pixel_dense", w_pm1)
    if w.shape[1] != x.shape[1]:
        raise ValueError(f"pixel_dense: expected ±1 weights (M, {x.shape[1]}), got shape {w.shape}")
    if x.shape[1] > MAX_K:
        raise ValueError(f"pixel_dense: K = {x.shape[1]} inputs; sums must fit int32 (K <= {MAX_K})")
    t = None if threshold is None else pixel_thresholds(threshold, w.shape[0])
    return pixel_dense_t(pixel_pairs(x), pixel_weights(w), w.shape[0], t)
