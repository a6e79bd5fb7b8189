"""Binary convolution and max-pooling on packed NHWC activations.

Activations are (SA, N, H, W, Cw) uint64 words: channels packed per pixel, so a conv tap
is ``Cw`` words and ``dot = K_valid - 2 popcount(a XOR w)`` summed over taps.

Padding follows larq's ``pad_values``: with 1 a padded pixel is +1 (bit 0), so it
contributes ``popcount(w)`` and counts in K; with 0 it is a real zero and contributes
nothing, so the tap is skipped and K shrinks at the border.
"""
import numba as nb
import numpy as np

from ._intrinsics import popcount


@nb.njit(cache=True)
def _conv_tile4(A, W, sa, s, n, oy, ox, f, sy, sx, pt, pl, pad_one, c_true):
    kh, kw, cw = W.shape[2], W.shape[3], W.shape[4]
    h, w = A.shape[2], A.shape[3]
    c0 = c1 = c2 = c3 = np.uint64(0)
    kvalid = 0
    for dy in range(kh):
        y = oy * sy - pt + dy
        row_ok = 0 <= y < h
        for dx in range(kw):
            x = ox * sx - pl + dx
            if row_ok and 0 <= x < w:
                for c in range(cw):
                    a = A[sa, n, y, x, c]
                    c0 += popcount(a ^ W[s, f, dy, dx, c])
                    c1 += popcount(a ^ W[s, f + 1, dy, dx, c])
                    c2 += popcount(a ^ W[s, f + 2, dy, dx, c])
                    c3 += popcount(a ^ W[s, f + 3, dy, dx, c])
                kvalid += c_true
            elif pad_one:
                for c in range(cw):
                    c0 += popcount(W[s, f, dy, dx, c])
                    c1 += popcount(W[s, f + 1, dy, dx, c])
                    c2 += popcount(W[s, f + 2, dy, dx, c])
                    c3 += popcount(W[s, f + 3, dy, dx, c])
                kvalid += c_true
    return c0, c1, c2, c3, kvalid


@nb.njit(cache=True)
def _conv_dot1(A, W, sa, s, n, oy, ox, f, sy, sx, pt, pl, pad_one, c_true):
    kh, kw, cw = W.shape[2], W.shape[3], W.shape[4]
    h, w = A.shape[2], A.shape[3]
    c0 = np.uint64(0)
    kvalid = 0
    for dy in range(kh):
        y = oy * sy - pt + dy
        row_ok = 0 <= y < h
        for dx in range(kw):
            x = ox * sx - pl + dx
            if row_ok and 0 <= x < w:
                for c in range(cw):
                    c0 += popcount(A[sa, n, y, x, c] ^ W[s, f, dy, dx, c])
                kvalid += c_true
            elif pad_one:
                for c in range(cw):
                    c0 += popcount(W[s, f, dy, dx, c])
                kvalid += c_true
    return c0, kvalid


@nb.njit(parallel=True, cache=True)
def _conv_int(A, W, c_true, sy, sx, pt, pl, pad_one, out):
    s_n, n_n, ho, wo, f_n = out.shape
    shared = A.shape[0] == 1
    for task in nb.prange(s_n * n_n * ho):
        s = task // (n_n * ho)
        rem = task - s * n_n * ho
        n = rem // ho
        oy = rem - n * ho
        sa = 0 if shared else s
        for ox in range(wo):
            f = 0
            while f + 4 <= f_n:
                c0, c1, c2, c3, kv = _conv_tile4(A, W, sa, s, n, oy, ox, f, sy, sx, pt, pl, pad_one, c_true)
                out[s, n, oy, ox, f] = kv - 2 * np.int64(c0)
                out[s, n, oy, ox, f + 1] = kv - 2 * np.int64(c1)
                out[s, n, oy, ox, f + 2] = kv - 2 * np.int64(c2)
                out[s, n, oy, ox, f + 3] = kv - 2 * np.int64(c3)
                f += 4
            for ff in range(f, f_n):
                c, kv = _conv_dot1(A, W, sa, s, n, oy, ox, ff, sy, sx, pt, pl, pad_one, c_true)
                out[s, n, oy, ox, ff] = kv - 2 * np.int64(c)


@nb.njit(parallel=True, cache=True)
def _conv_threshold(A, W, c_true, sy, sx, pt, pl, pad_one, T, out):
    # out bit = [dot < T[s, f]], packed along filters: (S, N, Ho, Wo, Fw)
    s_n, n_n, ho, wo, fw = out.shape
    f_n = W.shape[1]
    shared = A.shape[0] == 1
    one = np.uint64(1)
    for task in nb.prange(s_n * n_n * ho):
        s = task // (n_n * ho)
        rem = task - s * n_n * ho
        n = rem // ho
        oy = rem - n * ho
        sa = 0 if shared else s
        for ox in range(wo):
            for wi in range(fw):
                f0 = wi * 64
                f1 = min(f0 + 64, f_n)
                b = np.uint64(0)
                f = f0
                while f + 4 <= f1:
                    c0, c1, c2, c3, kv = _conv_tile4(A, W, sa, s, n, oy, ox, f, sy, sx, pt, pl, pad_one, c_true)
                    if kv - 2 * np.int64(c0) < T[s, f]:
                        b |= one << np.uint64(f - f0)
                    if kv - 2 * np.int64(c1) < T[s, f + 1]:
                        b |= one << np.uint64(f + 1 - f0)
                    if kv - 2 * np.int64(c2) < T[s, f + 2]:
                        b |= one << np.uint64(f + 2 - f0)
                    if kv - 2 * np.int64(c3) < T[s, f + 3]:
                        b |= one << np.uint64(f + 3 - f0)
                    f += 4
                for ff in range(f, f1):
                    c, kv = _conv_dot1(A, W, sa, s, n, oy, ox, ff, sy, sx, pt, pl, pad_one, c_true)
                    if kv - 2 * np.int64(c) < T[s, ff]:
                        b |= one << np.uint64(ff - f0)
                out[s, n, oy, ox, wi] = b


@nb.njit(parallel=True, cache=True)
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
