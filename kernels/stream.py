"""Float64 stream kernels of residual binary networks (:mod:`bnn_toroid.network.residual_fast`).

Each kernel does in one pass over rows (pixels) what the NumPy evaluation did in several
passes with temporaries, with the same float64 operations in the same order, so the
results are bit-identical to the NumPy expressions they replace:

- :func:`pack_signs`: ``pack_bits`` of a float64 (R, C) array (bit 1 = ``x < 0``);
- :func:`residual_tail`: a residual block whose body is a binary convolution followed by
  element-wise operations: ``out = tail(h) + shortcut`` where ``tail`` is the body's
  per-channel program (``h · scale``, then affine ``x·a + b``, ReLU, PReLU in body order),
  optionally packing ``sign(out)`` for the next binary convolution in the same pass;
- :func:`pool2d`: max or average pooling with padding (padded taps are ``-inf`` for max
  and zeros counted out for average, as the NumPy path's padded views);
- :func:`depthwise2d`: a depthwise convolution, one multiply-add per tap in tap order.
"""
import numba as nb
import numpy as np

from ._threads import twin

# element-wise program codes of residual_tail
SCALE, AFFINE, RELU, PRELU = 0, 1, 2, 3


@twin
def pack_signs(X, out):
    """out[r, w] bit b = [X[r, 64w + b] < 0]; padding bits 0. Returns the NaN count."""
    r_n, c_n = X.shape
    cw = out.shape[1]
    bad = 0
    for r in nb.prange(r_n):
        for w in range(cw):
            word = np.uint64(0)
            c0 = w * 64
            c1 = min(c0 + 64, c_n)
            for c in range(c0, c1):
                v = X[r, c]
                if v < 0.0:
                    word |= np.uint64(1) << np.uint64(c - c0)
                elif v != v:
                    bad += 1
            out[r, w] = word
    return bad


@twin
def residual_tail(H, codes, params, Xs, out, bits):
    """out[s, m, f] = prog(H[s, m, f]) + Xs[s or 0, m, f] for H (S, M, F) int32 and the
    program ``codes`` (n,) with ``params`` (n, 2, F): SCALE v·p0, AFFINE v·p0 + p1, RELU
    max(v, 0), PRELU (v if v >= 0 else v·p0). When ``bits`` (S, M, Fw) is not empty, also
    packs sign(out) into it. Returns the NaN count of out (when packing)."""
    s_n, m_n, f_n = H.shape
    shared = Xs.shape[0] == 1
    pack = bits.size > 0
    n_codes = codes.shape[0]
    bad = 0
    for task in nb.prange(s_n * m_n):
        s = task // m_n
        m = task - s * m_n
        sx = 0 if shared else s
        v = np.empty(f_n, np.float64)
        for f in range(f_n):
            v[f] = np.float64(H[s, m, f])
        for k in range(n_codes):
            code = codes[k]
            if code == 0:
                for f in range(f_n):
                    v[f] = v[f] * params[k, 0, f]
            elif code == 1:
                for f in range(f_n):
                    v[f] = v[f] * params[k, 0, f] + params[k, 1, f]
            elif code == 2:
                for f in range(f_n):
                    x = v[f]
                    v[f] = x if x >= 0.0 or x != x else 0.0
            else:
                for f in range(f_n):
                    x = v[f]
                    v[f] = x if x >= 0.0 else x * params[k, 0, f]
        for f in range(f_n):
            out[s, m, f] = v[f] + Xs[sx, m, f]
        if pack:
            for w in range(bits.shape[2]):
                word = np.uint64(0)
                c0 = w * 64
                c1 = min(c0 + 64, f_n)
                for c in range(c0, c1):
                    y = out[s, m, c]
                    if y < 0.0:
                        word |= np.uint64(1) << np.uint64(c - c0)
                    elif y != y:
                        bad += 1
                bits[s, m, w] = word
    return bad


@twin
def pool2d(X, kh, kw, sy, sx, pt, pl, is_max, out):
    """out[b, oy, ox, c] = max (or mean over the taps inside the image) of X (B, H, W, C)
    over the kh × kw window at (oy·sy - pt, ox·sx - pl). For max, taps outside the image
    are -inf; for average they add 0 and do not count. Taps are taken in (dy, dx) order."""
    b_n, h, w, c_n = X.shape
    ho, wo = out.shape[1], out.shape[2]
    for task in nb.prange(b_n * ho):
        b = task // ho
        oy = task - b * ho
        acc = np.empty(c_n, np.float64)
        for ox in range(wo):
            first = True
            count = 0.0
            for dy in range(kh):
                y = oy * sy - pt + dy
                for dx in range(kw):
                    x = ox * sx - pl + dx
                    inside = 0 <= y < h and 0 <= x < w
                    if inside:
                        count += 1.0
                    if first:
                        first = False
                        if inside:
                            for c in range(c_n):
                                acc[c] = X[b, y, x, c]
                        else:
                            for c in range(c_n):
                                acc[c] = -np.inf if is_max else 0.0
                    elif inside:
                        if is_max:
                            for c in range(c_n):
                                u = X[b, y, x, c]
                                a = acc[c]
                                acc[c] = a if a >= u or a != a else u
                        else:
                            for c in range(c_n):
                                acc[c] = acc[c] + X[b, y, x, c]
                    elif not is_max:  # a padded tap adds +0.0, as the padded
                        for c in range(c_n):  # NumPy sum does (-0.0 + 0.0 is +0.0)
                            acc[c] = acc[c] + 0.0
            if is_max:
                for c in range(c_n):
                    out[b, oy, ox, c] = acc[c]
            else:
                for c in range(c_n):
                    out[b, oy, ox, c] = acc[c] / count


@twin
def depthwise2d(X, Wd, sy, sx, pt, pl, out):
    """out[b, oy, ox, c] = sum over taps (dy, dx order) of X[b, y, x, c] · Wd[dy, dx, c]
    (0 outside the image, multiplied and added as the padded NumPy path does)."""
    b_n, h, w, c_n = X.shape
    kh, kw = Wd.shape[0], Wd.shape[1]
    ho, wo = out.shape[1], out.shape[2]
    for task in nb.prange(b_n * ho):
        b = task // ho
        oy = task - b * ho
        acc = np.empty(c_n, np.float64)
        for ox in range(wo):
            for c in range(c_n):
                acc[c] = 0.0
            for dy in range(kh):
                y = oy * sy - pt + dy
                for dx in range(kw):
                    x = ox * sx - pl + dx
                    if 0 <= y < h and 0 <= x < w:
                        for c in range(c_n):
                            acc[c] = acc[c] + X[b, y, x, c] * Wd[dy, dx, c]
                    else:
                        for c in range(c_n):
                            acc[c] = acc[c] + 0.0 * Wd[dy, dx, c]
            for c in range(c_n):
                out[b, oy, ox, c] = acc[c]


@twin
def im2col(X, kh, kw, sy, sx, pt, pl, ho, wo, p0, cols):
    """cols[r, (dy·kw + dx)·C + c] = X[b, y, x, c] for the output pixel p0 + r (flattened
    over (b, oy, ox)) with y = oy·sy - pt + dy, x = ox·sx - pl + dx; 0.0 outside the image."""
    b_n, h, w, c_n = X.shape
    for r in nb.prange(cols.shape[0]):
        p = p0 + r
        b = p // (ho * wo)
        q = p - b * ho * wo
        oy = q // wo
        ox = q - oy * wo
        for dy in range(kh):
            y = oy * sy - pt + dy
            for dx in range(kw):
                x = ox * sx - pl + dx
                base = (dy * kw + dx) * c_n
                if 0 <= y < h and 0 <= x < w:
                    for c in range(c_n):
                        cols[r, base + c] = X[b, y, x, c]
                else:
                    for c in range(c_n):
                        cols[r, base + c] = 0.0
