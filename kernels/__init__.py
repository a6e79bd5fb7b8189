"""Numba kernels for packed binary networks (installed as ``bnn_toroid.kernels``).

This package knows nothing of ``bnn_toroid``: it takes packed numpy arrays and returns
numpy arrays. The bit convention lives in :mod:`.bits`. Every kernel takes an optional
leading axis of S networks sharing an architecture (see :mod:`.gemm`).

Preconditions of packed operands (the one place they are stated):

- a packed row of ``K`` entries holds ``n_words(K)`` words, or, for a flattened NHWC
  map of ``P`` pixels of ``C`` channels (``K = P·C``), ``P · n_words(C)`` words, one
  group per pixel;
- every padding bit (past ``K``, or past ``C`` in each pixel's last word) is 0: the
  XNOR-popcount ``K - 2 popcount(a ^ w)`` counts every set bit, so a stray padding bit
  changes the result silently.

The checked entry points (:func:`binary_gemm`, :func:`binary_conv2d`) verify both, with
integer sizes only (a float ``k`` is refused, never truncated); reading the last word of
each row or pixel costs a fraction of the product. The ``*_trusted`` entry points check
nothing: their callers (a frozen network, which validates its parameters once) must
meet the preconditions themselves.
"""
import numpy as np

from . import _cache

_cache.drop_stale()  # before any kernel module is imported (and its cache read)

from ._threads import PARALLEL_MIN_WORK  # noqa: E402
from .bits import WORD, as_count, n_words, pack_bits, threshold_pack, unpack_bits
from .conv import _maxpool, conv_tiles
from . import forms
from .nibbles import nibble_dense, nibble_dense_t, nibble_stack_t, nibble_weights
from .pixels import (pixel_dense, pixel_dense_t, pixel_lut_dense_t, pixel_lut_weights, pixel_pairs,
                     pixel_patches, pixel_patches_t, pixel_signs, pixel_thresholds, pixel_weights)
from .real import (conv_weights, dense_weights, exact_float_dtype, real_conv2d, real_conv2d_t,
                   real_dense, real_dense_t)
from .stacks import pixel_stack_t, pixel_stack_weights

__all__ = [
    "WORD", "n_words", "pack_bits", "unpack_bits", "threshold_pack", "binary_gemm",
    "binary_gemm_trusted", "binary_conv2d_trusted", "binary_maxpool2d_trusted", "conv_tiles",
    "binary_dense", "binary_conv2d", "binary_maxpool2d", "conv_pads", "real_dense",
    "real_conv2d", "real_dense_t", "real_conv2d_t", "dense_weights", "conv_weights",
    "exact_float_dtype", "pixel_dense", "pixel_dense_t", "pixel_pairs", "pixel_patches",
    "pixel_patches_t", "pixel_signs", "pixel_thresholds", "pixel_weights", "pixel_lut_dense_t",
    "pixel_lut_weights", "pixel_stack_t", "pixel_stack_weights", "nibble_dense", "nibble_dense_t",
    "nibble_weights", "nibble_stack_t",
    "PARALLEL_MIN_WORK",
]


# Empty placeholders for the output a kernel call does not produce (one compiled body
# serves the int32 and the packed outputs; an empty array marks the unused one).
_NO_T = np.empty((0, 0), np.int64)
_NO_INT3, _NO_BITS3 = np.empty((0, 0, 0), np.int32), np.empty((0, 0, 0), np.uint64)
_NO_INT5, _NO_BITS5 = np.empty((0,) * 5, np.int32), np.empty((0,) * 5, np.uint64)


def _words(name, arr, ndim):
    arr = np.asarray(arr)
    if arr.dtype != np.uint64:
        raise TypeError(f"{name}: expected packed uint64 words, got dtype {arr.dtype}")
    if arr.ndim == ndim:
        arr = arr[None]
    if arr.ndim != ndim + 1:
        raise ValueError(f"{name}: expected {ndim} dims (or {ndim + 1} with a leading "
                         f"network axis), got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _batch(name, a, w):
    if a.shape[0] not in (1, w.shape[0]):
        raise ValueError(f"{name}: inputs hold {a.shape[0]} networks' activations but the "
                         f"weights hold {w.shape[0]} networks; expected 1 or {w.shape[0]}")


def _thresholds(name, t, s, m):
    t = np.asarray(t)
    if t.dtype.kind not in "iu":
        raise TypeError(f"{name}: thresholds must be integers, got dtype {t.dtype}")
    if t.ndim == 1:
        t = np.broadcast_to(t, (s, t.shape[0]))
    if t.shape != (s, m):
        raise ValueError(f"{name}: thresholds of shape {t.shape} do not match {s} networks "
                         f"× {m} units")
    # always a fresh writable copy: a read-only array would compile a second kernel
    return np.array(t, dtype=np.int64, order="C")


def _padding_words(func, name, arr, groups, c):
    """Refuse set padding bits: ``arr`` (..., groups · n_words(c)) holds ``groups`` groups
    of ``c`` bits; only each group's last word can hold padding, so only it is read."""
    if c % WORD == 0 or arr.size == 0:
        return
    last = arr.reshape(arr.shape[:-1] + (groups, n_words(c)))[..., -1]
    stray = last & ~np.uint64((1 << (c % WORD)) - 1)
    if stray.any():
        n = int(np.count_nonzero(stray))
        raise ValueError(f"{func}: {name} has padding bits set in {n} word{'s' if n > 1 else ''} "
                         f"(bits past {c} in a group of {c}); expected 0, as pack_bits writes them")


def binary_gemm(a, w, k, threshold=None, *, channels=None, form=None):
    r"""Dot products of packed ±1 rows: ``out[i, j] = a_i · w_j = K - 2 popcount(a_i ⊕ w_j)``.

    XNOR-Net (Rastegari et al., ECCV 2016, §3.2); bit convention in :mod:`.bits`, the
    operands' preconditions in this package's docstring.

    Args:
        a: packed inputs (N, Kw), or (SA, N, Kw) with SA = 1 or S.
        w: packed weights (M, Kw), or (S, M, Kw) for S networks.
        k: true number of ±1 entries per row, an integer: ``Kw`` must be ``n_words(k)``.
        threshold: optional integer thresholds (M,) or (S, M). When given, the result is
            fused-thresholded and packed: bit ``[a_i·w_j < T_j]``, i.e. the next layer's
            ±1 input ``+1 iff a_i·w_j >= T_j`` (docs/methods.md, "Integer threshold form"), shape (..., N, ceil(M/64)).
        channels: for rows that are flattened NHWC maps packed per pixel, the channels
            per pixel ``C`` (``k`` a multiple of it; ``Kw = (k / C) · n_words(C)``).
        form: a form of the "gemm" workload (:mod:`.forms`: "vpopcnt", "harley_seal");
            default the one chosen for this CPU. Every form gives the same integers.

    Returns:
        int32 (N, M) or (S, N, M); uint64 words when ``threshold`` is given.

    Raises:
        TypeError: non-uint64 operands, or a ``k``/``channels`` that is not an integer.
        ValueError: ``Kw`` not what ``k`` needs, padding bits set in either operand.
    """
    squeeze = np.asarray(w).ndim == 2 and np.asarray(a).ndim == 2
    A = _words("binary_gemm", a, 2)
    W = _words("binary_gemm", w, 2)
    _batch("binary_gemm", A, W)
    k = as_count("binary_gemm", "k", k)
    c = k if channels is None else as_count("binary_gemm", "channels", channels)
    if A.shape[2] != W.shape[2]:
        raise ValueError(f"binary_gemm: a has {A.shape[2]} words per row and w has "
                         f"{W.shape[2]}; expected the same")
    if k < 0 or c < 0 or (c == 0) != (k == 0) or (c and k % c):
        raise ValueError(f"binary_gemm: k={k} with channels={c}; expected k >= 0, a multiple "
                         "of channels")
    groups = k // c if c else 0
    need = groups * n_words(c)
    if W.shape[2] != need:
        what = f"k={k}" if channels is None else f"k={k} as {groups} pixels of {c} channels"
        raise ValueError(f"binary_gemm: {what} needs {need} word{'s' if need != 1 else ''} "
                         f"per row, but a and w hold {W.shape[2]}")
    _padding_words("binary_gemm", "a", A, groups, c)
    _padding_words("binary_gemm", "w", W, groups, c)
    T = None if threshold is None else _thresholds("binary_gemm", threshold, W.shape[0], W.shape[1])
    kernel = forms.chosen("gemm", form).kernel
    out = binary_gemm_trusted(A, W, k, T, kernel)
    return out[0] if squeeze else out


binary_dense = binary_gemm


def binary_gemm_trusted(A, W, k, T=None, kernel=None):
    """:func:`binary_gemm` without the checks, for callers that validated their arrays
    once (a frozen network runs this per layer and batch; the checks cost ≈ 10 µs, a
    third of a batch-1 layer). The operands must meet the preconditions of this
    package's docstring; nothing here verifies them. ``A`` (SA, N, Kw) and ``W`` (S, M, Kw) C-contiguous uint64,
    ``T`` None or C-contiguous int64 (S, M). ``kernel``: a "gemm" form's kernel
    (:mod:`.forms`), default the one chosen for this CPU."""
    if kernel is None:
        kernel = forms.chosen("gemm").kernel
    s, n, m = W.shape[0], A.shape[1], W.shape[1]
    work = s * n * m * W.shape[2]
    if T is None:
        out = np.empty((s, n, m), np.int32)
        if out.size:
            kernel(work, A, W, k, _NO_T, out, _NO_BITS3)
    else:
        out = np.empty((s, n, (m + WORD - 1) // WORD), np.uint64)
        if out.size:
            kernel(work, A, W, k, T, _NO_INT3, out)
    return out


def conv_pads(h, w, kh, kw, stride, padding):
    """(top, bottom, left, right) padding and output size for ``valid`` or TF ``same``."""
    sy, sx = stride
    if padding == "valid":
        pads = (0, 0, 0, 0)
    elif padding == "same":
        ho, wo = -(-h // sy), -(-w // sx)
        th = max((ho - 1) * sy + kh - h, 0)
        tw = max((wo - 1) * sx + kw - w, 0)
        pads = (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    elif isinstance(padding, tuple) and len(padding) == 4:
        pads = tuple(int(p) for p in padding)
    else:
        raise ValueError(f"padding must be 'valid', 'same' or (top, bottom, left, right), got {padding!r}")
    ho = (h + pads[0] + pads[1] - kh) // sy + 1
    wo = (w + pads[2] + pads[3] - kw) // sx + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"a {kh}×{kw} kernel with stride {stride} and padding {padding!r} "
                         f"does not fit an input of {h}×{w}")
    return pads, (ho, wo)


def binary_conv2d(a, w, c, stride=(1, 1), padding="valid", pad_value=0, threshold=None, *,
                  form=None):
    """Binary 2-D convolution (cross-correlation) on packed NHWC activations.

    ``out[n, y, x, f] = Σ_taps a[n, y*sy-pt+dy, x*sx-pl+dx, :] · w[f, dy, dx, :]`` with
    ±1 values, computed as ``K_valid - 2 popcount(a ⊕ w)``. ``pad_value`` is larq's
    ``pad_values``: 1 pads with +1, 0 pads with real zeros (those taps add nothing).

    Args:
        a: packed activations (N, H, W, Cw) or (SA, N, H, W, Cw).
        w: packed filters (F, kh, kw, Cw) or (S, F, kh, kw, Cw).
        c: true number of input channels.
        stride: (sy, sx). padding: 'valid', 'same' (TensorFlow's) or explicit 4-tuple.
        threshold: optional integer thresholds (F,) or (S, F) → packed output bits.
        form: a form of the "conv" workload (:mod:`.forms`), default the one chosen for
            this CPU. Every form gives the same integers.

    Returns:
        int32 (N, Ho, Wo, F), or packed uint64 (N, Ho, Wo, ceil(F/64)); leading S if batched.
    """
    squeeze = np.asarray(w).ndim == 4 and np.asarray(a).ndim == 4
    A = _words("binary_conv2d", a, 4)
    W = _words("binary_conv2d", w, 4)
    _batch("binary_conv2d", A, W)
    c = as_count("binary_conv2d", "c", c)
    if A.shape[4] != W.shape[4] or c < 0 or n_words(c) != W.shape[4]:
        raise ValueError(f"binary_conv2d: activations have {A.shape[4]} words per pixel and "
                         f"filters {W.shape[4]}; c={c} channels need {n_words(c)}")
    _padding_words("binary_conv2d", "a", A, 1, c)
    _padding_words("binary_conv2d", "w", W, 1, c)
    if isinstance(pad_value, (bool, np.bool_)) or pad_value not in (0, 1):
        raise ValueError(f"binary_conv2d: pad_value must be 0 or 1 (larq pad_values), got {pad_value!r}")
    stride = tuple(as_count("binary_conv2d", "stride", v)
                   for v in np.broadcast_to(np.asarray(stride, dtype=object), (2,)))
    if min(stride) < 1:
        raise ValueError(f"binary_conv2d: stride must be >= 1, got {stride}")
    pads, _ = conv_pads(A.shape[2], A.shape[3], W.shape[2], W.shape[3], stride, padding)
    T = None if threshold is None else _thresholds("binary_conv2d", threshold, W.shape[0], W.shape[1])
    out = binary_conv2d_trusted(A, conv_tiles(W), c, W.shape[2:4], stride, pads, pad_value, T,
                                form=form)
    return out[0] if squeeze else out


def binary_conv2d_trusted(A, tiles, c, ksize, stride, pads, pad_value, T=None, form=None):
    """:func:`binary_conv2d` without the checks, on filters already repacked
    (:func:`conv_tiles`), for callers that validated their arrays once and convolve many
    batches with the same filters (a frozen network). ``A`` (SA, N, H, W, Cw) C-contiguous;
    ``ksize`` (kh, kw); ``pads`` (top, bottom, left, right); ``T`` None or int64 (S, F).
    ``form``: a form of the "conv" workload (:mod:`.forms`), default the one chosen here."""
    conv = forms.chosen("conv", form).kernel
    Wt, P = tiles
    s, f = P.shape[0], P.shape[1]
    kh, kw = ksize
    n, h, w = A.shape[1], A.shape[2], A.shape[3]
    ho = (h + pads[0] + pads[1] - kh) // stride[0] + 1
    wo = (w + pads[2] + pads[3] - kw) // stride[1] + 1
    args = (A, Wt, P, c, kh, kw, stride[0], stride[1], pads[0], pads[2], bool(pad_value))
    work = s * n * ho * wo * f * kh * kw * A.shape[4]
    if T is None:
        out = np.empty((s, n, ho, wo, f), np.int32)
        if out.size:
            conv(work, *args, _NO_T, out, _NO_BITS5)
    else:
        out = np.empty((s, n, ho, wo, (f + WORD - 1) // WORD), np.uint64)
        if out.size:
            conv(work, *args, T, _NO_INT5, out)
    return out


def binary_maxpool2d(a, size=2, stride=None, min_mask=None):
    """Max-pooling over packed ±1 NHWC activations (``valid`` windows).

    Over ±1 values the max is -1 only when all are -1, i.e. the AND of the bits (bit 1 =
    -1); the min is the OR. ``min_mask`` (uint64 words, (Cw,) or (S, Cw)) selects min
    pooling per channel: a unit whose weights were flipped to fold a negative BatchNorm
    scale pools with min (``sign(g(max h)) = min sign(g(h))`` for decreasing g).

    Returns:
        packed (N, Ho, Wo, Cw), or (S, N, Ho, Wo, Cw).
    """
    squeeze = np.asarray(a).ndim == 4
    A = _words("binary_maxpool2d", a, 4)
    size = as_count("binary_maxpool2d", "size", size)
    stride = size if stride is None else as_count("binary_maxpool2d", "stride", stride)
    if size < 1 or stride < 1:
        raise ValueError(f"binary_maxpool2d: size and stride must be >= 1, got {size}, {stride}")
    s, n, h, w, cw = A.shape
    ho, wo = (h - size) // stride + 1, (w - size) // stride + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"binary_maxpool2d: a {size}×{size} pool does not fit {h}×{w}")
    if min_mask is None:
        mask = np.zeros((s, cw), np.uint64)
    else:
        mask = np.asarray(min_mask)
        if mask.dtype != np.uint64:
            raise TypeError(f"binary_maxpool2d: min_mask must be packed uint64, got {mask.dtype}")
        mask = np.ascontiguousarray(np.broadcast_to(mask, (s, cw)))
    out = binary_maxpool2d_trusted(A, size, stride, mask)
    return out[0] if squeeze else out


def binary_maxpool2d_trusted(A, size, stride, mask):
    """:func:`binary_maxpool2d` without the checks: ``A`` (S, N, H, W, Cw) and ``mask``
    uint64 (S, Cw), both C-contiguous."""
    s_n, n, h, w, cw = A.shape
    out = np.empty((s_n, n, (h - size) // stride + 1, (w - size) // stride + 1, cw), np.uint64)
    if out.size:
        _maxpool(out.size * size * size * 16, A, size, stride, mask, out)
    return out
