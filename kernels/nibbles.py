"""Binary dense layer by nibble lookups: XNOR-popcount with ``vpshufb`` as the counter.

For packed rows ``a`` (an input) and ``w`` (a unit's weights) of true length ``K``,
``a·w = K - 2 popcount(a XOR w)`` (Rastegari et al., "XNOR-Net", ECCV 2016, §3.2). Cut
both rows into groups of 4 bits: a group of the input has 16 possible values, so the
group's mismatch count for *any* unit is an entry of one 16-byte table,
``T_a[v] = popcount(v XOR a)`` (:func:`._simd.vpop4`), and ``vpshufb`` looks up 32 units'
4-bit weight groups in it at once: 128 binary multiply-adds for one shuffle and one
byte add. This is the table method of the pixel layer's lookup form
(:func:`.pixels._pixel_lut`; Four Russians: Arlazarov et al., 1970) applied to bits,
and it is cheaper there: the entries (0–4) are single bytes, so there is no second
table for high bytes and no interleave. Against the Harley–Seal tiles of
:func:`.gemm.tiled_dense`, whose rows of 1024 bits are one 16-word group plus a
5-popcount tail, it measured 0.79× the time on one thread at 32 rows, 0.69× at 64 and
0.79× at one (docs/performance-history.md, "Round 6").

Byte counts grow by at most 4 a group, so they are exact over ``CHUNK`` = 60 groups
(240 ≤ 255) and then widened into int32 totals. The weights take one byte per unit and
group, twice their packed size (256 KB for 1024 × 1024, inside L2).
"""
import numba as nb
import numpy as np

from ._simd import (vaddb, vload2x2, vload2x4, vload4, vload8, vpop4, vshufb, vstore, vsub2_u8_i32,
                    vzero4, vzero8)
from ._threads import PARALLEL_MIN_WORK, twin
from .pixels import UNITS, _emit, one_per_thread, outputs, pixel_thresholds, stack_outputs, task_span

CHUNK = 60   # groups of 4 bits per byte count (60 · 4 = 240 <= 255); even: tables come in pairs
ROWS = 8     # samples per task: their tables of a chunk (7.5 KB) stay in L1
PANELS = 16  # at most this many panels of 64 units per task (its int32 totals: 32 KB)


def nibble_weights(w_packed, k: int) -> np.ndarray:
    """Packed weights (M, Kw) of true length ``k`` → the patterns :func:`nibble_dense_t`
    reads: uint64 (ceil(M/64), ceil(k/4), 8), i.e. per panel of 64 units and group of 4
    bits one byte per unit (bits ``4g … 4g+3`` of its row, lowest first), units in order;
    padding units 0. The rows' padding bits must be 0, as :func:`.bits.pack_bits` leaves
    them."""
    w = np.ascontiguousarray(w_packed, np.uint64)
    m, kw = w.shape
    blocks, groups = -(-m // UNITS), -(-k // 4)
    nib = np.zeros((blocks * UNITS, kw * 16), np.uint8)
    by = w.view(np.uint8).reshape(m, kw * 8)  # little-endian words: byte i holds bits 8i … 8i+7
    if np.little_endian:
        nib[:m, 0::2] = by & 15
        nib[:m, 1::2] = by >> 4
    else:  # pragma: no cover - every supported host is little-endian
        raise NotImplementedError("nibble_weights: big-endian hosts are not supported")
    nib = nib[:, :groups].reshape(blocks, UNITS, groups)
    return np.ascontiguousarray(nib.transpose(0, 2, 1)).reshape(blocks, groups, UNITS).view(np.uint64)


# The inner loop's vector operations, at two widths. The kernel below is written once in
# these; the zmm form (:data:`_nibble_zmm`) is the same source with the 512-bit helpers
# swapped in: one pattern load and one ``vpshufb`` count 64 units of a group, where the
# 256-bit form needs two of each.
@nb.njit(inline="always")
def _zero():
    """A sample's 64 byte counts of one panel, zero."""
    return vzero4(), vzero4()


@nb.njit(inline="always")
def _pats(pf, wi):
    """The 64 units' 4-bit patterns of one group of a panel (8 words at ``pf[wi]``)."""
    return vload4(pf, wi), vload4(pf, wi + 4)


@nb.njit(inline="always")
def _count(acc, tab, ta, pats):
    """``acc`` plus the mismatch counts of the group whose table is at ``tab[ta:ta+2]``."""
    x = vload2x2(tab, ta)
    return vaddb(acc[0], vshufb(x, pats[0])), vaddb(acc[1], vshufb(x, pats[1]))


@nb.njit(inline="always")
def _spend(tf, rr, acc):
    """Int32 totals at word ``rr`` of ``tf`` minus twice the byte counts ``acc``."""
    vsub2_u8_i32(tf, rr, acc[0])
    vsub2_u8_i32(tf, rr + 16, acc[1])


@nb.njit(inline="always")
def _zero8():
    return vzero8()


@nb.njit(inline="always")
def _pats8(pf, wi):
    return vload8(pf, wi)


@nb.njit(inline="always")
def _count8(acc, tab, ta, pats):
    return vaddb(acc, vshufb(vload2x4(tab, ta), pats))


@nb.njit(inline="always")
def _spend8(tf, rr, acc):
    vsub2_u8_i32(tf, rr, acc)


@twin
def _nibble_dense(A, pf, p0, m, k, T, t0, h, bits, rows):
    """``A`` (N, Kw) packed rows against the patterns of :func:`nibble_weights` stored at
    ``pf[p0:]`` (``m`` units, ``k`` bits): int32 dots into ``h`` (N, m) or, when ``bits``
    is not empty, ``[dot < T]`` packed into ``bits`` (N, ceil(m/64)), with the int32
    thresholds of :func:`.pixels.pixel_thresholds` at ``T[t0:]``.

    A task takes up to ``rows`` (<= ROWS) samples and up to PANELS panels. For each chunk of CHUNK
    groups it builds its samples' tables, two groups per vector (one byte of the row,
    :func:`._simd.vpop4`, read back by broadcast loads), then runs every panel of its
    range past them, four samples per load of the patterns; the byte counts go into
    int32 totals that start at K (``K - 2 · mismatches``)."""
    n, kw = A.shape
    blocks, groups = (m + UNITS - 1) // UNITS, (k + 3) // 4
    ab = A.reshape(-1).view(np.uint8)
    rows = max(1, min(rows, ROWS))
    ngroups = (n + rows - 1) // rows
    ranges = (blocks + PANELS - 1) // PANELS
    for task in nb.prange(ngroups * ranges):
        s0, ns, b0, b1 = task_span(task, ranges, rows, n, blocks)
        nbk = b1 - b0
        tab = np.empty(ROWS * CHUNK * 2, np.uint64)  # sample si, group q: words (si·CHUNK + q)·2
        tot = np.empty((ROWS * nbk, UNITS // 2), np.uint64)  # int32 totals, row si·nbk + (b - b0)
        t32 = tot.reshape(-1).view(np.int32)
        tf = tot.reshape(-1)
        for j in range(ns * nbk * UNITS):
            t32[j] = np.int32(k)
        step = nbk * (UNITS // 2)  # words from one sample's totals to the next one's
        for c0 in range(0, groups, CHUNK):
            nq = min(c0 + CHUNK, groups) - c0
            for si in range(ns):
                base = (s0 + si) * kw * 8 + c0 // 2
                for q in range(0, nq, 2):
                    vstore(tab, (si * CHUNK + q) * 2, vpop4(ab[base + q // 2]))
            for b in range(b0, b1):
                wi0 = p0 + (b * groups + c0) * 8
                si = 0
                while si < ns:
                    ta = si * CHUNK * 2
                    rr = (si * nbk + b - b0) * (UNITS // 2)
                    wi = wi0
                    if si + 3 < ns:
                        a = _zero()
                        e = _zero()
                        c = _zero()
                        d = _zero()
                        for q in range(nq):
                            pats = _pats(pf, wi)
                            wi += 8
                            a = _count(a, tab, ta, pats)
                            e = _count(e, tab, ta + CHUNK * 2, pats)
                            c = _count(c, tab, ta + CHUNK * 4, pats)
                            d = _count(d, tab, ta + CHUNK * 6, pats)
                            ta += 2
                        _spend(tf, rr, a)
                        _spend(tf, rr + step, e)
                        _spend(tf, rr + 2 * step, c)
                        _spend(tf, rr + 3 * step, d)
                        si += 4
                    else:
                        a = _zero()
                        for q in range(nq):
                            a = _count(a, tab, ta, _pats(pf, wi))
                            wi += 8
                            ta += 2
                        _spend(tf, rr, a)
                        si += 1
        for si in range(ns):
            for b in range(b0, b1):
                _emit(tot, si * nbk + b - b0, b, s0 + si, T, t0, h, bits)


# the zmm form: the kernel above with the 512-bit helpers (AVX-512BW's vpshufb zmm)
_nibble_zmm = _nibble_dense.variant("_zmm", {"_zero": _zero8, "_pats": _pats8, "_count": _count8,
                                               "_spend": _spend8})


def nibble_work(n: int, m: int, k: int) -> int:
    """The work of ``n`` rows against ``m`` units of ``k`` bits, counted as the binary
    products count theirs (``n · m · Kw`` words) against ``_threads.PARALLEL_MIN_WORK``."""
    return n * m * -(-k // 64)


def nibble_dense_t(A, pats, m: int, k: int, threshold=None, form: str = "nibbles"):
    """:func:`nibble_dense` on packed rows ``A`` (N, Kw) C-contiguous and the patterns of
    :func:`nibble_weights`, unchecked; ``threshold`` None or the words of
    :func:`.pixels.pixel_thresholds`; ``form`` "nibbles" (256-bit lookups) or
    "nibbles_zmm" (512-bit, AVX-512BW), the same layout."""
    n = A.shape[0]
    pf = pats.reshape(-1)
    work = nibble_work(n, m, k)
    rows = task_rows(n) if work >= PARALLEL_MIN_WORK else ROWS
    T, h, bits, out = outputs(n, m, pats.shape[0], threshold)
    if out.size:
        _kernels(form)[0](work, A, pf, 0, m, k, T, 0, h, bits, rows)
    return out


_nibble_serial = _nibble_dense.serial  # a module-level dispatcher, for compiled callers


@twin
def _nibble_stack(A, pats, m, k, T, h, bits):
    """:func:`_nibble_dense` for S networks: rows ``A`` (S, N, Kw) against each one's
    patterns ``pats`` (S, L), thresholds ``T`` (S, words), into ``h`` (S, N, m) or
    ``bits`` (S, N, panels); one network per task."""
    for s in nb.prange(pats.shape[0]):
        _nibble_serial(A[s], pats[s], 0, m, k, T[s], 0, h[s], bits[s], ROWS)


_nibble_stack_zmm = _nibble_stack.variant("_zmm", {"_nibble_serial": _nibble_zmm.serial})
FORMS = {"nibbles": (_nibble_dense, _nibble_stack), "nibbles_zmm": (_nibble_zmm, _nibble_stack_zmm)}


def _kernels(form):
    if form not in FORMS:
        raise ValueError(f"nibble product: unknown form {form!r}; expected one of {', '.join(FORMS)}")
    return FORMS[form]


def nibble_stack_t(A, pats, m: int, k: int, thresholds=None, form: str = "nibbles"):
    """:func:`nibble_dense_t` for S networks in one call, unchecked: packed rows ``A``
    (S, N, Kw) C-contiguous (each network's own input), the stacked patterns ``pats``
    (S, …) of :func:`nibble_weights`, ``thresholds`` None or (S, words) stacked
    :func:`.pixels.pixel_thresholds`. Networks run one per thread when there are at
    least two per thread or a multiple of the thread count, else one after another on
    every thread (as :func:`.stacks.pixel_stack_t`). ``form`` as for :func:`nibble_dense_t`.

    Returns:
        int32 (S, N, m), or with ``thresholds`` the packed bits uint64 (S, N, ceil(m/64)).
    """
    S, n = A.shape[0], A.shape[1]
    pf = pats.reshape(S, -1)
    T, h, bits, out = stack_outputs(S, n, m, -(-m // UNITS), thresholds)
    if out.size == 0:
        return out
    work = nibble_work(n, m, k)
    if one_per_thread(S, nb.get_num_threads()):
        _kernels(form)[1](S * work, A, pf, m, k, T, h, bits)
    else:
        rows = task_rows(n) if work >= PARALLEL_MIN_WORK else ROWS
        single = _kernels(form)[0]
        for s in range(S):
            single(work, A[s], pf[s], 0, m, k, T[s], 0, h[s], bits[s], rows)
    return out


@nb.njit(cache=True)
def task_rows(n):
    """Samples per task of a parallel call on ``n`` samples: ROWS, or fewer so that
    there are four tasks or more (a serial call takes ROWS: four samples share each load
    of the patterns)."""
    return min(ROWS, max(1, (n + 3) // 4))


def nibble_dense(a_packed, w_packed, k: int, threshold=None):
    r"""Binary dense layer by nibble lookups: :math:`h_{nj} = a_n \cdot w_j = K - 2\,
    \mathrm{popcount}(a_n \oplus w_j)` for packed ±1 rows ``a`` (N, Kw) and ``w`` (M, Kw)
    of true length ``k`` (:mod:`.bits` convention, padding bits 0), the same integers as
    :func:`bnn_toroid.kernels.binary_gemm`; with ``threshold`` (M,) real, ``[h < T]``
    packed along units.

    Returns:
        int32 (N, M), or uint64 (N, ceil(M/64)).
    """
    a = np.ascontiguousarray(a_packed)
    w = np.ascontiguousarray(w_packed)
    for name, x in (("a_packed", a), ("w_packed", w)):
        if x.dtype != np.uint64 or x.ndim != 2:
            raise ValueError(f"nibble_dense: expected {name} as uint64 (rows, words), got "
                             f"{x.dtype} of shape {x.shape}")
    kw = -(-int(k) // 64)
    if k < 1 or a.shape[1] != kw or w.shape[1] != kw:
        raise ValueError(f"nibble_dense: rows of k = {k} bits are {kw} uint64 words long; got "
                         f"a_packed {a.shape}, w_packed {w.shape}")
    if k % 64:
        pad = np.uint64(~((1 << (k % 64)) - 1) & (2 ** 64 - 1))
        for name, x in (("a_packed", a), ("w_packed", w)):
            if (x[:, -1] & pad).any():
                raise ValueError(f"nibble_dense: {name} has bits set past k = {k} (padding "
                                 f"bits must be 0, as pack_bits leaves them)")
    m = w.shape[0]
    if threshold is not None and np.shape(threshold) != (m,):
        raise ValueError(f"nibble_dense: expected {m} real thresholds (one per row of w_packed), "
                         f"got shape {np.shape(threshold)}")
    t = None if threshold is None else pixel_thresholds(threshold, m)
    return nibble_dense_t(a, nibble_weights(w, k), m, int(k), t)
