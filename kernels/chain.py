"""A whole chain of dense layers on pixels in one compiled call.

At batch 1 the kernels of an MLP 784-1024-1024-10 take ≈ 20 µs, and the Python between
them (a dispatch, an allocation and the argument handling per layer, the logits'
affine in numpy) took as long again; at batch 64, 60–100 µs of ≈ 0.6 ms. A network
with such a chain calls this instead: the same products, back to back, without
returning to Python. On the calling thread when every layer is small enough
(``threads`` 1: below ``_threads.PARALLEL_MIN_WORK``); above that, the lookup form takes
groups of samples through every layer in one parallel launch (:func:`_split_chain`),
and the other forms run the parallel kernel of each layer whose own work reaches that
size. The binary layers read weights laid out once, which a single call of
:func:`.gemm._gemm` cannot afford to make: the hidden ones as nibble patterns
(:mod:`.nibbles`) in the "nibbles" forms (256- or 512-bit), else as Harley–Seal tiles
(:func:`.gemm.dense_tiles`), and the output layer always as tiles.
"""
import numba as nb
import numpy as np

from ._threads import PARALLEL_MIN_WORK
from .forms import Form, register
from .gemm import tiled_dense, vpt_rows
from .nibbles import ROWS as _NIB_ROWS, _nibble_dense, _nibble_zmm, task_rows
from .pixels import _pixel_dense, _pixel_lut, _pixel_signed, _spread_pairs
from .vnni import _pixel_vnni

# Numba resolves module-level dispatchers inside compiled code, not a Twin's attributes
_pixel_serial, _pixel_parallel = _pixel_dense.serial, _pixel_dense.parallel
_lut_serial = _pixel_lut.serial
_vnni_serial = _pixel_vnni.serial
_signed_serial = _pixel_signed.serial
_tiled_serial, _tiled_parallel = tiled_dense.serial, tiled_dense.parallel
_tiled_vpt = tiled_dense.variant("_vpt", {"hs_rows": vpt_rows})
_vpt_serial, _vpt_parallel = _tiled_vpt.serial, _tiled_vpt.parallel
_nibble_serial, _nibble_parallel = _nibble_dense.serial, _nibble_dense.parallel
_zmm_serial, _zmm_parallel = _nibble_zmm.serial, _nibble_zmm.parallel
SPLIT_ROWS = 32  # samples per task of the lookup form's one-launch chain (16: 1.0–1.04× slower)

# The chain's forms (kernels/forms.py). The first layer on pixels: "first" for batches,
# "first_one" for one sample on the calling thread; the codes are what the compiled
# chain takes. All are exact everywhere: the lookup, byte and VNNI products call x86
# intrinsics where the target has them and generic IR elsewhere; the VNNI form needs
# its instruction to be fast, so the policy names it only where the CPU has it.
FIRST = {"lookup": 0, "signs": 1, "bytes": 2, "vnni": 3}
_FIRST_FORMS = {
    "lookup": ("4-bit pixel-pair patterns (pixels.pixel_lut_weights)",
               "16-entry table lookups (vpshufb) of 4-pixel sums"),
    "signs": ("sign bits of the int8 panels (pixels.pixel_signs)",
              "byte products from sign bits; the weights stay in L2 between calls"),
    "bytes": ("int8 panels (pixels.pixel_weights)", "byte products (vpmaddubsw on AVX2)"),
    "vnni": ("int8 weights, 16 units by 4 pixels a vector (pixels.pixel_vnni_weights)",
             "4-byte dot products into int32 lanes (vpdpbusd zmm, AVX-512 VNNI)"),
}
_NEEDS = {"vnni": frozenset({"avx512f", "avx512vnni"})}
for _workload in ("first", "first_one"):
    for _name, (_layout, _doc) in _FIRST_FORMS.items():
        register(Form(_workload, _name, _NEEDS.get(_name, frozenset()), _layout, FIRST[_name], _doc))
# the hidden binary layers
HIDDEN = {"tiles": 0, "nibbles": 1, "nibbles_zmm": 2, "vpopcnt_tiles": 3}
register(Form("hidden", "tiles", frozenset(), "Harley–Seal tiles (gemm.dense_tiles)", 0,
              "carry-save adders on u64x8 vectors, generic IR"))
register(Form("hidden", "vpopcnt_tiles", frozenset({"avx512f", "avx512vpopcntdq"}),
              "Harley–Seal tiles (gemm.dense_tiles)", 3,
              "xor, vpopcntq, add with lanes along 8 units, 4 rows per tile load (gemm.vpt_rows)"))
register(Form("hidden", "nibbles", frozenset(), "4-bit patterns (nibbles.nibble_weights)", 1,
              "vpshufb counts of 32 units' 4-bit groups at once (generic IR off AVX2)"))
register(Form("hidden", "nibbles_zmm", frozenset({"avx512f", "avx512bw"}),
              "4-bit patterns (nibbles.nibble_weights)", 2,
              "vpshufb zmm: 64 units' 4-bit groups at once (AVX-512BW)"))


@nb.njit(cache=True)
def pixel_dense_chain(x, first, panels, t0, wbuf, woff, tbuf, toff, dims, scale, bias, nib,
                      hidden, threads):
    """Logits (N, M_last) float64 of: the pixel layer (uint8 ``x`` (N, K) C-contiguous,
    in the form with code ``first`` (:data:`FIRST`) and ``panels`` in its layout, ``t0`` as for
    :func:`.pixels.pixel_dense_t`, threshold fused), then L binary dense layers. Layer
    ``i`` has ``dims[i] = (M, Kw, K)``, its :func:`.gemm.dense_tiles` flattened in
    ``wbuf[woff[i]:woff[i+1]]`` and, for all but the last, int64 thresholds
    ``tbuf[toff[i]:toff[i+1]]``; the last one's integer pre-activations ``h`` give
    ``h · scale + bias``, computed as :func:`bnn_toroid.network` does, so the logits are
    the same floats. ``nib`` = (patterns, their offsets, thresholds, their offsets): when
    ``hidden`` is a nibble form's code (:data:`HIDDEN`), the layers but the last run as
    nibble lookups (:mod:`.nibbles`) from layer ``i``'s :func:`.nibbles.nibble_weights` at word
    ``nib[1][i]`` of ``nib[0]`` and its :func:`.pixels.pixel_thresholds` at word
    ``nib[3][i]`` of ``nib[2]``. ``threads``: 1 runs every layer on the calling thread,
    more the parallel kernels (Numba's current thread count, passed in: reading it in
    compiled code would keep this function out of the cache)."""
    parallel = threads > 1
    if parallel and (first == 0 or first == 3):
        return _split_chain(x, first, panels, t0, wbuf, woff, tbuf, toff, dims, scale, bias,
                            nib, hidden, threads)
    n = x.shape[0]
    act = np.empty((n, panels.shape[0]), np.uint64)
    no_h = np.empty((0, 0), np.int32)
    if first == 0:
        _lut_serial(x, panels, t0, no_h, act)
    elif first == 3:
        _vnni_serial(x, panels, t0, no_h, act)
    else:
        xp = np.empty((n, (x.shape[1] + 1) // 2), np.uint64)
        _spread_pairs(x, xp)
        if first == 1:
            _signed_serial(xp, panels, t0, no_h, act)
        elif parallel:
            _pixel_parallel(xp, panels, t0, no_h, act)
        else:
            _pixel_serial(xp, panels, t0, no_h, act)
    return _binary(act, wbuf, woff, tbuf, toff, dims, scale, bias, nib, hidden, parallel)


@nb.njit(cache=True)
def binary_chain(act, wbuf, woff, tbuf, toff, dims, scale, bias, nib, hidden, threads):
    """Logits (N, M_last) float64 of L binary dense layers on packed rows ``act`` (N, Kw):
    a network that binarises its input, whose first layer is then binary too. The
    arguments are those of :func:`pixel_dense_chain` after its first layer's."""
    return _binary(act, wbuf, woff, tbuf, toff, dims, scale, bias, nib, hidden, threads > 1)


@nb.njit(parallel=True, cache=True)
def _split_chain(x, first, pats, t0, wbuf, woff, tbuf, toff, dims, scale, bias, nib, hidden, per):
    """The chain of the forms that read pixels as they are (lookup, VNNI: code
    ``first``) in one parallel launch: each task takes a group of about
    SPLIT_ROWS samples through every layer with the serial kernels, on one thread. The
    layer-by-layer chain launches the second thread once per layer, and in the spells
    when waking it takes ≈ 0.5 ms each launch costs that (docs/performance-history.md, "Round 5"); the
    group-by-group chain launches once, and measured as fast (batch 64: 398–434 against
    400–437 µs)."""
    n = x.shape[0]
    groups = min(n, per * max(1, -(-n // (per * SPLIT_ROWS))))  # a multiple of the threads
    out = np.empty((n, dims[dims.shape[0] - 1, 0]))
    no_h = np.empty((0, 0), np.int32)
    for g in nb.prange(groups):
        s0 = n * g // groups
        s1 = n * (g + 1) // groups
        act = np.empty((s1 - s0, pats.shape[0]), np.uint64)
        if first == 3:
            _vnni_serial(x[s0:s1], pats, t0, no_h, act)
        else:
            _lut_serial(x[s0:s1], pats, t0, no_h, act)
        out[s0:s1] = _binary(act, wbuf, woff, tbuf, toff, dims, scale, bias, nib, hidden, False)
    return out


@nb.njit(cache=True)
def _binary(act, wbuf, woff, tbuf, toff, dims, scale, bias, nib, hidden, parallel):
    """The chain's binary layers after the pixel layer; a layer runs the parallel kernel
    when ``parallel`` and its work reaches PARALLEL_MIN_WORK (a 10-class output layer
    rarely does). The output layer always takes the Harley–Seal tiles: a nibble panel
    is 64 units wide, and its integers are needed, not bits (the vpopcnt sums on the
    tiles when ``hidden`` is that form)."""
    n = act.shape[0]
    last = dims.shape[0] - 1
    no_h3 = np.empty((0, 0, 0), np.int32)
    no_h2 = np.empty((0, 0), np.int32)
    pats, poff, nthr, ntoff = nib
    for i in range(last):
        m, k = dims[i, 0], dims[i, 2]
        nxt = np.empty((n, (m + 63) // 64), np.uint64)
        big = parallel and n * m * dims[i, 1] >= PARALLEL_MIN_WORK
        if hidden == 1:
            if big:
                _nibble_parallel(act, pats, poff[i], m, k, nthr, ntoff[i], no_h2, nxt, task_rows(n))
            else:
                _nibble_serial(act, pats, poff[i], m, k, nthr, ntoff[i], no_h2, nxt, _NIB_ROWS)
        elif hidden == 2:
            if big:
                _zmm_parallel(act, pats, poff[i], m, k, nthr, ntoff[i], no_h2, nxt, task_rows(n))
            else:
                _zmm_serial(act, pats, poff[i], m, k, nthr, ntoff[i], no_h2, nxt, _NIB_ROWS)
        else:
            t = tbuf[toff[i]:toff[i + 1]].reshape((1, m))
            out3 = nxt.reshape((1, n, (m + 63) // 64))
            if hidden == 3:
                if big:
                    _vpt_parallel(act, wbuf, woff[i], m, k, t, no_h3, out3)
                else:
                    _vpt_serial(act, wbuf, woff[i], m, k, t, no_h3, out3)
            elif big:
                _tiled_parallel(act, wbuf, woff[i], m, k, t, no_h3, out3)
            else:
                _tiled_serial(act, wbuf, woff[i], m, k, t, no_h3, out3)
        act = nxt
    m, k = dims[last, 0], dims[last, 2]
    h = np.empty((1, n, m), np.int32)
    no_t, no_bits = np.empty((0, 0), np.int64), np.empty((0, 0, 0), np.uint64)
    big = parallel and n * m * dims[last, 1] >= PARALLEL_MIN_WORK
    if hidden == 3:
        if big:
            _vpt_parallel(act, wbuf, woff[last], m, k, no_t, h, no_bits)
        else:
            _vpt_serial(act, wbuf, woff[last], m, k, no_t, h, no_bits)
    elif big:
        _tiled_parallel(act, wbuf, woff[last], m, k, no_t, h, no_bits)
    else:
        _tiled_serial(act, wbuf, woff[last], m, k, no_t, h, no_bits)
    out = np.empty((n, m))
    for r in range(n):
        for j in range(m):
            out[r, j] = np.float64(h[0, r, j]) * scale[j] + bias[j]
    return out
