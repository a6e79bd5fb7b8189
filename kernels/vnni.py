"""The first layer on pixels by ``vpdpbusd`` (AVX-512 VNNI): the VNNI form.

``vpdpbusd`` multiplies 64 unsigned bytes by 64 signed bytes and adds each group of four
products into one of 16 int32 lanes: 64 multiply-adds an instruction, with nothing to
widen and no int16 lane to overflow (|h| <= 255 K fits int32 for K <= :data:`.pixels.MAX_K`),
where ``vpmaddubsw`` (:func:`.pixels._pixel_dense`) gives 32 into int16 lanes that must
be widened every 64 pairs. Four pixels of a sample, broadcast to every lane, meet the
four weights of 16 units on them (Intel, "Intel 64 and IA-32 Architectures Software
Developer's Manual", VPDPBUSD). The sums stay in registers to the end of K, then are
thresholded and packed by :func:`.pixels._emit`, as in the other pixel forms.
"""
import numba as nb
import numpy as np

from ._simd import vdpbusd, vload8, vsplat32, vstore, vzero8
from ._threads import twin
from .pixels import UNITS, _emit, _pm1, _quad

VNNI_ROWS = 4     # samples sharing each load of the weights: 16 accumulators of 32


def pixel_vnni_weights(w_pm1, check: bool = True) -> np.ndarray:
    """±1 weights (M, K) → the layout of the VNNI form: uint64 (ceil(M/64), ceil(K/4),
    32), i.e. per block of 64 units and group of 4 pixels, 256 int8 weights, unit-major
    (byte ``4u + i`` is unit ``u``'s weight on pixel ``4g + i``); padding weights 0."""
    w = _pm1("pixel_vnni_weights", w_pm1) if check else np.asarray(w_pm1)
    m, k = w.shape
    blocks, quads = -(-m // UNITS), -(-k // 4)
    out = np.zeros((blocks * UNITS, 4 * quads), np.int8)
    out[:m, :k] = w
    out = out.reshape(blocks, UNITS, quads, 4).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(out).reshape(blocks, quads, 4 * UNITS).view(np.uint64)


@nb.njit(inline="always")
def _vnni_keep(tot, row, a0, a1, a2, a3):
    """A sample's 64 int32 sums into row ``row`` of ``tot`` (32 words)."""
    tf = tot.reshape(-1)
    r = row * (UNITS // 2)
    vstore(tf, r, a0)
    vstore(tf, r + 8, a1)
    vstore(tf, r + 16, a2)
    vstore(tf, r + 24, a3)


@twin
def _pixel_vnni(x, wv, T, h, bits):
    """:func:`_pixel_dense` in the VNNI form, on uint8 pixels ``x`` (N, K) C-contiguous
    and the weights of :func:`pixel_vnni_weights`: one task per (VNNI_ROWS samples,
    block of 64 units); each step of four pixels is 4 weight loads, one broadcast per
    sample and 4 ``vpdpbusd`` per sample, into int32 sums kept in registers to the end,
    then thresholded and packed (or written out) by :func:`_emit`."""
    n, k = x.shape
    blocks, quads = wv.shape[0], wv.shape[1]
    wf = wv.reshape(-1)
    flat = x.reshape(-1)
    x32 = flat[:flat.size // 4 * 4].view(np.uint32)
    aligned = k % 4 == 0
    groups = (n + VNNI_ROWS - 1) // VNNI_ROWS
    # every sample's pixels, four to a word, gathered once for all tasks and read from
    # here in the loop: read through _quad there, the serial compilation kept an array's
    # reference count in the loop, with every accumulator spilled around the call
    # (8.4 ms against 0.32 ms at batch 64)
    xq = np.empty((groups * VNNI_ROWS, quads), np.uint32)
    for s in range(n):
        for q in range(quads):
            xq[s, q] = _quad(x, x32, s, q, k, quads, aligned)
    for task in nb.prange(groups * blocks):
        g = task // blocks
        b = task - g * blocks
        s0 = g * VNNI_ROWS
        ns = min(VNNI_ROWS, n - s0)
        tot = np.empty((VNNI_ROWS, UNITS // 2), np.uint64)
        base = b * quads * 32
        if ns == VNNI_ROWS:
            a0, a1, a2, a3 = vzero8(), vzero8(), vzero8(), vzero8()
            b0, b1, b2, b3 = vzero8(), vzero8(), vzero8(), vzero8()
            c0, c1, c2, c3 = vzero8(), vzero8(), vzero8(), vzero8()
            d0, d1, d2, d3 = vzero8(), vzero8(), vzero8(), vzero8()
            wi = base
            for q in range(quads):
                w0 = vload8(wf, wi)
                w1 = vload8(wf, wi + 8)
                w2 = vload8(wf, wi + 16)
                w3 = vload8(wf, wi + 24)
                wi += 32
                xa = vsplat32(xq[s0, q])
                a0, a1 = vdpbusd(a0, xa, w0), vdpbusd(a1, xa, w1)
                a2, a3 = vdpbusd(a2, xa, w2), vdpbusd(a3, xa, w3)
                xb = vsplat32(xq[s0 + 1, q])
                b0, b1 = vdpbusd(b0, xb, w0), vdpbusd(b1, xb, w1)
                b2, b3 = vdpbusd(b2, xb, w2), vdpbusd(b3, xb, w3)
                xc = vsplat32(xq[s0 + 2, q])
                c0, c1 = vdpbusd(c0, xc, w0), vdpbusd(c1, xc, w1)
                c2, c3 = vdpbusd(c2, xc, w2), vdpbusd(c3, xc, w3)
                xd = vsplat32(xq[s0 + 3, q])
                d0, d1 = vdpbusd(d0, xd, w0), vdpbusd(d1, xd, w1)
                d2, d3 = vdpbusd(d2, xd, w2), vdpbusd(d3, xd, w3)
            _vnni_keep(tot, 0, a0, a1, a2, a3)
            _vnni_keep(tot, 1, b0, b1, b2, b3)
            _vnni_keep(tot, 2, c0, c1, c2, c3)
            _vnni_keep(tot, 3, d0, d1, d2, d3)
        else:
            for si in range(ns):
                a0, a1, a2, a3 = vzero8(), vzero8(), vzero8(), vzero8()
                wi = base
                for q in range(quads):
                    xa = vsplat32(xq[s0 + si, q])
                    a0 = vdpbusd(a0, xa, vload8(wf, wi))
                    a1 = vdpbusd(a1, xa, vload8(wf, wi + 8))
                    a2 = vdpbusd(a2, xa, vload8(wf, wi + 16))
                    a3 = vdpbusd(a3, xa, vload8(wf, wi + 24))
                    wi += 32
                _vnni_keep(tot, si, a0, a1, a2, a3)
        for si in range(ns):
            _emit(tot, si, b, s0 + si, T, 0, h, bits)


