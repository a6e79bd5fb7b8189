"""Bit packing: the one place where the bit convention lives.

Convention (as in larq-compute-engine): words are ``uint64``, packed along the last
axis, least significant bit first; bit 1 means -1 and bit 0 means +1, so
``x >= 0`` (including ``-0.0``) packs as +1. The padding bits of the last word are 0.
Then for two packed vectors of true length ``K``:
``dot = K - 2 * popcount(a ^ w)``.
"""
import math
import operator

import numba as nb
import numpy as np

from ._threads import twin

WORD = 64


def n_words(k: int) -> int:
    """Number of uint64 words that hold ``k`` bits."""
    return (int(k) + WORD - 1) // WORD


@twin
def _pack_rows(x, out):
    rows, k = x.shape
    kw = out.shape[1]
    for r in nb.prange(rows):
        for w in range(kw):
            word = np.uint64(0)
            lo = w * 64
            hi = min(lo + 64, k)
            for j in range(lo, hi):
                if not (x[r, j] >= 0):
                    word |= np.uint64(1) << np.uint64(j - lo)
            out[r, w] = word


@twin
def _unpack_rows(p, k, out):
    rows = p.shape[0]
    for r in nb.prange(rows):
        for j in range(k):
            bit = (p[r, j >> 6] >> np.uint64(j & 63)) & np.uint64(1)
            out[r, j] = 1 - 2 * np.int8(bit)


@twin
def _threshold_pack(h, t, out):
    # h: (S, R, M) pre-activations, t: (S, M) thresholds -> out (S, R, Mw); bit = h < t.
    s_n, r_n, m = h.shape
    mw = out.shape[2]
    for task in nb.prange(s_n * r_n):
        s = task // r_n
        r = task - s * r_n
        for w in range(mw):
            word = np.uint64(0)
            lo = w * 64
            hi = min(lo + 64, m)
            for j in range(lo, hi):
                if h[s, r, j] < t[s, j]:
                    word |= np.uint64(1) << np.uint64(j - lo)
            out[s, r, w] = word


@nb.njit(cache=True)
def sign_pack_finite(x, out) -> bool:
    """:func:`pack_bits` of float rows ``x`` (N, K) C-contiguous into ``out`` (N, Kw),
    unchecked, on the calling thread; returns whether every value was finite (NaN and
    ±inf are not: then ``out`` is not to be used). One pass, for a network that
    binarises its input, where the NumPy checks (min, max) and the general packer took
    most of a batch-1 call."""
    rows, k = x.shape
    kw = out.shape[1]
    ok = True
    for r in range(rows):
        for w in range(kw):
            word = np.uint64(0)
            lo = w * 64
            for j in range(lo, min(lo + 64, k)):
                v = x[r, j]
                ok &= np.isfinite(v)
                word |= np.uint64(v < 0) << np.uint64(j - lo)
            out[r, w] = word
    return ok


def _as_rows(x):
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError("pack_bits: expected an array with at least 1 dimension, got a scalar")
    # explicit row count: reshape(-1, 0) is ambiguous for an empty last axis
    return x.reshape(math.prod(x.shape[:-1]), x.shape[-1])


def as_count(func: str, name: str, value) -> int:
    """``value`` as a Python int when it is an integer (Python or numpy, not bool);
    anything else raises ``TypeError`` naming ``func`` and ``name``. A float is never
    truncated: ``k=1.5`` is an error, not 1."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{func}: {name} must be an integer, got the bool {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{func}: {name} must be an integer, got {value!r} "
                        f"({type(value).__name__})") from None


# dtypes the compiled packer takes; others (float16, longdouble) are reduced to their
# signs first, which is exact (a cast could round a tiny negative to -0.0, i.e. +1)
_NATIVE = frozenset(np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64, np.uint8,
                                          np.uint16, np.uint32, np.uint64, np.float32,
                                          np.float64))


def pack_bits(x, check_binary: bool = False) -> np.ndarray:
    r"""Pack ``sign(x)`` along the last axis into uint64 words.

    .. math:: \text{bit}_j = [x_j < 0], \qquad \text{word}_w = \sum_{b<64} \text{bit}_{64w+b}\, 2^b

    so ``x >= 0`` (also ``-0.0``) is +1 (larq's sign, Courbariaux et al. 2016).

    Args:
        x: real array of shape (..., K): any integer or float dtype (float16 and
            longdouble included); an empty axis gives an empty result.
        check_binary: if true, every value must be exactly +1 or -1.

    Returns:
        uint64 array of shape (..., ceil(K/64)); the padding bits are 0.

    Raises:
        TypeError: for bool, complex and non-numeric dtypes.
        ValueError: on NaN, or on values other than ±1 when ``check_binary``.
    """
    x = np.asarray(x)
    if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise TypeError(f"pack_bits: expected a real numeric array, got dtype {x.dtype}")
    if np.issubdtype(x.dtype, np.floating) and np.isnan(x).any():
        n = int(np.isnan(x).sum())
        raise ValueError(f"pack_bits: x holds {n} NaN value{'s' if n > 1 else ''}; sign(NaN) is "
                         "undefined, expected real numbers")
    if check_binary:
        bad = (x != 1) & (x != -1)
        if bad.any():
            v = x[bad].flat[0]
            raise ValueError(f"pack_bits: expected only +1/-1 values, found {v!r} "
                             f"({int(bad.sum())} non-binary entries)")
    if x.dtype not in _NATIVE:
        x = np.where(x < 0, np.int8(-1), np.int8(1))
    rows = np.ascontiguousarray(_as_rows(x))
    out = np.empty((rows.shape[0], n_words(x.shape[-1])), np.uint64)
    if rows.size:
        _pack_rows(rows.size, rows, out)
    return out.reshape(x.shape[:-1] + (out.shape[1],))


def unpack_bits(packed, k: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: uint64 words (..., W) → int8 ±1 array (..., k).

    Raises:
        TypeError: if ``k`` is not an integer.
        ValueError: if ``k`` does not need exactly ``W`` words.
    """
    packed = np.asarray(packed)
    if packed.dtype != np.uint64:
        raise TypeError(f"unpack_bits: expected uint64 words, got dtype {packed.dtype}")
    if packed.ndim == 0:
        raise ValueError("unpack_bits: expected an array of words, got a scalar")
    k = as_count("unpack_bits", "k", k)
    if not 0 <= k <= packed.shape[-1] * WORD or n_words(k) != packed.shape[-1]:
        raise ValueError(f"unpack_bits: k={k} needs {n_words(k)} words per row, "
                         f"but the array has {packed.shape[-1]}")
    rows = np.ascontiguousarray(packed.reshape(math.prod(packed.shape[:-1]), packed.shape[-1]))
    out = np.empty((rows.shape[0], k), np.int8)
    if rows.size and k:
        _unpack_rows(out.size, rows, k, out)
    return out.reshape(packed.shape[:-1] + (k,))


def threshold_pack(h, threshold) -> np.ndarray:
    r"""Fused threshold and pack: the next layer's packed input from pre-activations.

    .. math:: y_{j} = +1 \iff h_{j} \ge T_j, \qquad \text{bit}_j = [h_j < T_j]

    (the integer threshold form of docs/methods.md, "Integer threshold form"). No float detour: integer ``h`` and
    ``T`` compare exactly.

    Args:
        h: pre-activations, (R, M) or (S, R, M), integer or float.
        threshold: (M,) or (S, M).

    Returns:
        uint64 words, (R, ceil(M/64)) or (S, R, ceil(M/64)).
    """
    h = np.asarray(h)
    t = np.asarray(threshold)
    squeeze = h.ndim == 2
    if squeeze:
        h = h[None]
    if h.ndim != 3:
        raise ValueError(f"threshold_pack: expected h of shape (R, M) or (S, R, M), got {h.shape}")
    if t.ndim == 1:
        t = np.broadcast_to(t, (h.shape[0], t.shape[0]))
    if t.shape != (h.shape[0], h.shape[2]):
        raise ValueError(f"threshold_pack: thresholds of shape {t.shape} do not match "
                         f"h of shape {h.shape}; expected ({h.shape[0]}, {h.shape[2]})")
    if h.dtype.kind in "iu" and t.dtype.kind in "iu":
        h, t = h.astype(np.int64, copy=False), t.astype(np.int64, copy=False)
    else:
        # float32 h compares exactly with float64 T (promoted per element): no copy of h
        h = h if h.dtype in (np.float32, np.float64) else h.astype(np.float64)
        t = t.astype(np.float64, copy=False)
    out = np.empty(h.shape[:2] + (n_words(h.shape[2]),), np.uint64)
    if out.size:
        _threshold_pack(h.size, np.ascontiguousarray(h), np.ascontiguousarray(t), out)
    return out[0] if squeeze else out
