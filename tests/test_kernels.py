"""Every kernel against its naive reference, bit-exactly, on hypothesis-generated shapes."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import bnn_toroid.kernels as K
from reference import conv2d, gemm, maxpool, sign

SETTINGS = settings(max_examples=30, deadline=None)
EDGE_K = [1, 63, 64, 65, 1000]


def pm1(rng, shape):
    return rng.choice(np.array([-1, 1], np.int8), size=shape)


@SETTINGS
@given(st.integers(0, 7), st.sampled_from(EDGE_K) | st.integers(1, 300), st.integers(0, 2**32 - 1))
def test_pack_unpack_roundtrip(rows, k, seed):
    rng = np.random.default_rng(seed)
    x = pm1(rng, (rows, k))
    p = K.pack_bits(x)
    assert p.shape == (rows, K.n_words(k)) and p.dtype == np.uint64
    assert np.array_equal(K.unpack_bits(p, k), x)
    if k % 64:  # padding bits are zero
        assert not (p[:, -1] >> np.uint64(k % 64)).any()


def test_pack_sign_convention_zero_and_negative_zero():
    x = np.array([[0.0, -0.0, -1e-300, 1e-300, -3.0, 7.0]])
    assert np.array_equal(K.unpack_bits(K.pack_bits(x), 6)[0], [1, 1, -1, 1, -1, 1])


def test_pack_bit_layout_lsb_first():
    x = np.ones(130, np.int8)
    x[[0, 5, 64, 129]] = -1
    p = K.pack_bits(x)
    assert p[0] == (1 | 1 << 5) and p[1] == 1 and p[2] == 1 << 1


@SETTINGS
@given(st.integers(0, 9), st.integers(1, 70), st.sampled_from(EDGE_K) | st.integers(1, 200),
       st.integers(0, 2**32 - 1))
def test_binary_gemm_matches_reference(n, m, k, seed):
    rng = np.random.default_rng(seed)
    x, w = pm1(rng, (n, k)), pm1(rng, (m, k))
    out = K.binary_gemm(K.pack_bits(x), K.pack_bits(w), k)
    assert out.dtype == np.int32 and out.shape == (n, m)
    assert np.array_equal(out, gemm(x, w))


@SETTINGS
@given(st.integers(0, 9), st.integers(1, 150), st.sampled_from(EDGE_K) | st.integers(1, 200),
       st.integers(0, 2**32 - 1))
def test_fused_threshold_pack_matches_reference(n, m, k, seed):
    rng = np.random.default_rng(seed)
    x, w = pm1(rng, (n, k)), pm1(rng, (m, k))
    t = rng.integers(-k - 1, k + 2, size=m)
    ref = np.where(gemm(x, w) >= t, 1, -1)
    fused = K.binary_gemm(K.pack_bits(x), K.pack_bits(w), k, threshold=t)
    assert np.array_equal(K.unpack_bits(fused, m), ref)
    # the standalone kernel agrees on the same int32 pre-activations
    assert np.array_equal(K.threshold_pack(gemm(x, w).astype(np.int32), t), fused)


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 7), st.integers(1, 600), st.integers(1, 5000), st.integers(0, 2**32 - 1))
def test_small_batches_with_long_rows_match_reference(n, m, k, seed):
    """Batches below the Harley-Seal path (1-7 rows: register tiles reading W in place)
    over several 256-column tasks and rows of up to 79 words, int32 and thresholded."""
    rng = np.random.default_rng(seed)
    x, w = pm1(rng, (n, k)), pm1(rng, (m, k))
    ref = gemm(x, w)
    a, b = K.pack_bits(x), K.pack_bits(w)
    assert np.array_equal(K.binary_gemm(a, b, k), ref)
    t = rng.integers(-k - 1, k + 2, size=m)
    assert np.array_equal(K.unpack_bits(K.binary_gemm(a, b, k, threshold=t), m),
                          np.where(ref >= t, 1, -1))


@SETTINGS
@given(st.integers(1, 4), st.integers(0, 6), st.integers(1, 70), st.sampled_from(EDGE_K),
       st.booleans(), st.integers(0, 2**32 - 1))
def test_batched_networks_equal_one_at_a_time(s, n, m, k, shared, seed):
    rng = np.random.default_rng(seed)
    x = pm1(rng, (1 if shared else s, n, k))
    w = pm1(rng, (s, m, k))
    t = rng.integers(-k, k + 1, size=(s, m))
    out = K.binary_gemm(K.pack_bits(x), K.pack_bits(w), k)
    bits = K.binary_gemm(K.pack_bits(x), K.pack_bits(w), k, threshold=t)
    for i in range(s):
        ref = gemm(x[0 if shared else i], w[i])
        assert np.array_equal(out[i], ref)
        assert np.array_equal(K.unpack_bits(bits[i], m), np.where(ref >= t[i][None], 1, -1))


@SETTINGS
@given(st.integers(0, 3), st.integers(3, 9), st.integers(3, 9), st.sampled_from([1, 3, 63, 64, 65]),
       st.integers(1, 9), st.sampled_from([1, 2, 3]), st.sampled_from([1, 2]),
       st.sampled_from(["valid", "same"]), st.sampled_from([0, 1]), st.integers(0, 2**32 - 1))
def test_binary_conv2d_matches_reference(n, h, w, c, f, ksz, stride, padding, pad_value, seed):
    if padding == "valid" and (ksz > h or ksz > w):
        return
    rng = np.random.default_rng(seed)
    x, wt = pm1(rng, (n, h, w, c)), pm1(rng, (f, ksz, ksz, c))
    ref = conv2d(x, wt, (stride, stride), padding, pad_value)
    out = K.binary_conv2d(K.pack_bits(x), K.pack_bits(wt), c, (stride, stride), padding, pad_value)
    assert out.dtype == np.int32
    assert np.array_equal(out, ref)
    t = rng.integers(-ksz * ksz * c, ksz * ksz * c + 1, size=f)
    bits = K.binary_conv2d(K.pack_bits(x), K.pack_bits(wt), c, (stride, stride), padding,
                           pad_value, threshold=t)
    assert np.array_equal(K.unpack_bits(bits, f), np.where(ref >= t, 1, -1))


@SETTINGS
@given(st.integers(0, 3), st.integers(2, 9), st.integers(2, 9), st.sampled_from([1, 5, 64, 65]),
       st.sampled_from([2, 3]), st.sampled_from([1, 2, 3]), st.integers(0, 2**32 - 1))
def test_binary_maxpool_matches_reference(n, h, w, c, size, stride, seed):
    if size > h or size > w:
        return
    rng = np.random.default_rng(seed)
    x = pm1(rng, (n, h, w, c))
    mins = rng.random(c) < 0.5
    out = K.binary_maxpool2d(K.pack_bits(x), size, stride, K.pack_bits(np.where(mins, -1, 1)))
    assert np.array_equal(K.unpack_bits(out, c), maxpool(x, size, stride, mins))
    assert np.array_equal(K.unpack_bits(K.binary_maxpool2d(K.pack_bits(x), size, stride), c),
                          maxpool(x, size, stride))


@SETTINGS
@given(st.integers(1, 5), st.integers(3, 8), st.sampled_from([1, 3, 5]), st.integers(1, 70),
       st.sampled_from([1, 3]), st.sampled_from(["valid", "same"]), st.sampled_from([1, 2]),
       st.booleans(), st.integers(0, 2**32 - 1))
def test_real_input_conv_is_exact_on_uint8(n, h, c, f, ksz, padding, stride, per_channel, seed):
    """Direct first-layer convolution: integer sums, scalar or per-channel pad values
    (a folded input normalisation), and the fused threshold-and-pack."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, h, h, c)).astype(np.uint8)
    wt = pm1(rng, (f, ksz, ksz, c))
    pv = rng.integers(0, 256, c).astype(np.float64) if per_channel else 1.0
    pads, _ = K.conv_pads(h, h, ksz, ksz, (stride, stride), padding)
    ref = conv2d(x, wt, (stride, stride), padding, pv)
    out = K.real_conv2d(x, wt, (stride, stride), pads, pv, dtype=np.float32)
    assert out.dtype == np.float32 and np.array_equal(out, ref)
    t = rng.integers(-200 * ksz * ksz * c, 200 * ksz * ksz * c, f) + 0.5
    bits = K.real_conv2d(x, wt, (stride, stride), pads, pv, dtype=np.float32, threshold=t)
    assert np.array_equal(K.unpack_bits(bits, f), np.where(ref >= t, 1, -1))


@SETTINGS
@given(st.integers(1, 5), st.integers(3, 8), st.sampled_from([1, 3, 4]), st.integers(1, 70),
       st.sampled_from([1, 3]), st.sampled_from(["valid", "same"]), st.sampled_from([1, 2]),
       st.booleans(), st.integers(0, 2**32 - 1))
def test_pixel_conv_as_patches_matches_reference(n, h, c, f, ksz, padding, stride, per_channel, seed):
    """A first-layer convolution on uint8 images as the pixel product over its patches
    (odd and even patch lengths, scalar or per-channel uint8 pad values)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, h, h, c)).astype(np.uint8)
    wt = pm1(rng, (f, ksz, ksz, c))
    pv = rng.integers(0, 256, c) if per_channel else np.ones(c)
    pads, _ = K.conv_pads(h, h, ksz, ksz, (stride, stride), padding)
    ref = conv2d(x, wt, (stride, stride), padding, pv)
    rows = K.pixel_patches(x, (ksz, ksz), (stride, stride), pads, pv.astype(np.uint8))
    panels = K.pixel_weights(wt.reshape(f, -1))
    h_ = K.pixel_dense_t(rows, panels, f)
    assert np.array_equal(h_.reshape(ref.shape), ref)
    t = rng.integers(-200 * ksz * ksz * c, 200 * ksz * ksz * c, f) + 0.5
    bits = K.pixel_dense_t(rows, panels, f, K.pixel_thresholds(t, f)).reshape(ref.shape[:3] + (-1,))
    assert np.array_equal(K.unpack_bits(bits, f), np.where(ref >= t, 1, -1))


def test_real_dense_uint8_is_exact_integer():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(50, 1000)).astype(np.uint8)
    w = pm1(rng, (7, 1000))
    dt = K.exact_float_dtype(255, 1000)
    assert dt == np.float32
    assert np.array_equal(K.real_dense(x, w, dtype=dt), gemm(x, w))


@SETTINGS
@given(st.integers(0, 40), st.sampled_from([1, 63, 64, 65, 200]) | st.integers(1, 150),
       st.sampled_from([1, 2, 127, 128, 129, 257, 784]) | st.integers(1, 300),
       st.sampled_from(["random", "max", "zero"]), st.integers(0, 2**32 - 1))
def test_pixel_dense_matches_reference(n, m, k, fill, seed):
    # "max": every pixel 255 with runs of equal weights, the largest int16 lane sums
    rng = np.random.default_rng(seed)
    x = {"random": lambda: rng.integers(0, 256, (n, k)),
         "max": lambda: np.full((n, k), 255),
         "zero": lambda: np.zeros((n, k))}[fill]().astype(np.uint8)
    w = pm1(rng, (m, k))
    if fill == "max":
        w[: m // 2] = 1
        w[m // 2:] = -1
    ref = gemm(x, w)
    h = K.pixel_dense(x, w)
    assert h.dtype == np.int32 and np.array_equal(h, ref)
    t = rng.integers(-255 * k, 255 * k + 1, m) + rng.choice([0.0, 0.5], m)
    assert np.array_equal(K.pixel_dense(x, w, t), K.threshold_pack(ref.astype(np.float64), t))
    # the sign-bit panels (batch 1's layout) give the same integers and bits
    xp, signs = K.pixel_pairs(x), K.pixel_signs(K.pixel_weights(w))
    assert signs.shape == (-(-m // 64), -(-k // 4), 4)
    assert np.array_equal(K.pixel_dense_t(xp, signs, m, form="signs"), ref)
    assert np.array_equal(K.pixel_dense_t(xp, signs, m, K.pixel_thresholds(t, m), "signs"),
                          K.threshold_pack(ref.astype(np.float64), t))
    # and so does the lookup form (tables of four pixels, 4-bit weight patterns)
    pats = K.pixel_lut_weights(w)
    assert pats.shape == (-(-m // 64), -(-k // 4), 8)
    assert np.array_equal(K.pixel_lut_dense_t(x, pats, m), ref)
    assert np.array_equal(K.pixel_lut_dense_t(x, pats, m, K.pixel_thresholds(t, m)),
                          K.threshold_pack(ref.astype(np.float64), t))
    # the strided (non-contiguous) and bool cases take the copying paths
    assert np.array_equal(K.pixel_dense(np.asfortranarray(x), w), ref)
    xb = x > 127
    assert np.array_equal(K.pixel_dense(xb, w), gemm(xb.astype(np.uint8), w))


def test_tiled_dense_row_blocks():
    """Enough rows for several row blocks per 64 columns (``L2_WORDS`` / Kw rows each)."""
    from bnn_toroid.kernels.gemm import L2_WORDS, dense_tiles, tiled_dense
    rng = np.random.default_rng(9)
    k, m = 4096, 100
    n = 2 * L2_WORDS // (k // 64) + 3
    x, w = pm1(rng, (n, k)), pm1(rng, (m, k))
    tiles = dense_tiles(K.pack_bits(w)).reshape(-1)
    for run in (tiled_dense.serial, tiled_dense.parallel):
        h = np.empty((1, n, m), np.int32)
        run(K.pack_bits(x), tiles, 0, m, k, np.empty((0, 0), np.int64), h, K._NO_BITS3)
        assert np.array_equal(h[0], gemm(x, w))


def _layout(layout, x, w):
    """(inputs, weights, kernel) of one form of the pixel product."""
    if layout == "lookup":
        return x, K.pixel_lut_weights(w), K.pixels._pixel_lut
    if layout == "vnni":
        return x, K.vnni.pixel_vnni_weights(w), K.vnni._pixel_vnni
    panels = K.pixel_weights(w)
    if layout == "signs":
        return K.pixel_pairs(x), K.pixel_signs(panels), K.pixels._pixel_signed
    return K.pixel_pairs(x), panels, K.pixels._pixel_dense


@pytest.mark.parametrize("n", [1, 2, 9, 17])
@pytest.mark.parametrize("k", [13, 300])
def test_lookup_tasks_split_samples_and_panels(n, k):
    """The lookup form's tasks: LUT_ROWS samples each, and panel ranges of at most
    LUT_PANELS (1100 units: 18 panels, two ranges or more), each range rebuilding its
    samples' tables; one chunk of sums (K <= 128) or several alike, on one thread
    or several: the reference's integers and bits."""
    rng = np.random.default_rng(n * 1000 + k)
    m = 1100
    x = rng.integers(0, 256, (n, k)).astype(np.uint8)
    w = pm1(rng, (m, k))
    ref = gemm(x, w)
    t = rng.integers(-60 * k, 60 * k, m) + 0.5
    want = K.threshold_pack(ref.astype(np.float64), t)
    pats, tw = K.pixel_lut_weights(w), K.pixel_thresholds(t, m)
    for run in (K.pixels._pixel_lut.serial, K.pixels._pixel_lut.parallel):
        h = np.empty((n, m), np.int32)
        run(x, pats, K.pixels._NO_T, h, K.pixels._NO_BITS)
        bits = np.empty((n, pats.shape[0]), np.uint64)
        run(x, pats, tw, K.pixels._NO_H, bits)
        assert np.array_equal(h, ref) and np.array_equal(bits, want)


@pytest.mark.parametrize("layout", ["int8", "signs", "lookup", "vnni"])
def test_pixel_dense_serial_and_parallel_agree(layout):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (37, 301)).astype(np.uint8)
    w = pm1(rng, (130, 301))
    xp, panels, kernel = _layout(layout, x, w)
    outs = []
    for run in (kernel.serial, kernel.parallel):
        h = np.empty((37, 130), np.int32)
        run(xp, panels, K.pixels._NO_T, h, K.pixels._NO_BITS)
        outs.append(h)
    assert np.array_equal(outs[0], gemm(x, w)) and np.array_equal(outs[1], outs[0])


@SETTINGS
@given(st.integers(0, 12), st.sampled_from([1, 8, 10, 64, 65]) | st.integers(1, 150),
       st.sampled_from([1, 64, 65, 1024, 1152]) | st.integers(1, 300), st.integers(0, 2**32 - 1))
def test_tiled_dense_matches_reference(n, m, k, seed):
    """The batch-1 chain's binary layer: weights tiled once, behind another layer's tiles
    in the same buffer (a nonzero offset), dots and thresholded bits."""
    from bnn_toroid.kernels.gemm import dense_tiles, tiled_dense
    rng = np.random.default_rng(seed)
    x, w = pm1(rng, (n, k)), pm1(rng, (m, k))
    other = dense_tiles(K.pack_bits(pm1(rng, (3, k))))
    tiles = dense_tiles(K.pack_bits(w))
    assert tiles.shape == (-(-m // 8), -(-k // 64), 8)
    buf = np.concatenate([other.reshape(-1), tiles.reshape(-1)])
    a = K.pack_bits(x).reshape(n, -(-k // 64))
    ref = gemm(x, w)
    t = rng.integers(-k, k + 1, (1, m))
    for run in (tiled_dense.serial, tiled_dense.parallel):
        h = np.empty((1, n, m), np.int32)
        run(a, buf, other.size, m, k, np.empty((0, 0), np.int64), h, K._NO_BITS3)
        assert np.array_equal(h[0], ref)
        bits = np.empty((1, n, -(-m // 64)), np.uint64)
        run(a, buf, other.size, m, k, t, K._NO_INT3, bits)
        assert np.array_equal(bits[0], K.threshold_pack(ref.astype(np.float64), t[0]))


def test_batch_one_and_empty_batches():
    rng = np.random.default_rng(1)
    x, w = pm1(rng, (1, 4096)), pm1(rng, (300, 4096))
    assert np.array_equal(K.binary_gemm(K.pack_bits(x), K.pack_bits(w), 4096), gemm(x, w))
    empty = K.binary_gemm(np.zeros((0, 64), np.uint64), K.pack_bits(w), 4096)
    assert empty.shape == (0, 300)
    e2 = K.binary_conv2d(np.zeros((0, 5, 5, 1), np.uint64), K.pack_bits(pm1(rng, (3, 3, 3, 2))), 2)
    assert e2.shape == (0, 3, 3, 3)


@SETTINGS
@given(st.integers(0, 20), st.sampled_from([1, 63, 64, 65, 200]) | st.integers(1, 150),
       st.sampled_from([1, 4, 63, 64, 65, 240, 241, 1000]) | st.integers(1, 300), st.integers(0, 2**32 - 1))
def test_nibble_dense_matches_reference(n, m, k, seed):
    """Binary dense by nibble lookups: the reference's integers, and its thresholded bits
    (padding units 0), on one thread or several, at any number of samples per task."""
    rng = np.random.default_rng(seed)
    x, w = pm1(rng, (n, k)), pm1(rng, (m, k))
    A, W = K.pack_bits(x), K.pack_bits(w)
    ref = gemm(x, w)
    t = rng.integers(-k - 1, k + 2, size=m) + 0.5
    out = K.nibble_dense(A, W, k)
    assert out.dtype == np.int32 and out.shape == (n, m) and np.array_equal(out, ref)
    bits = K.nibble_dense(A, W, k, threshold=t)
    assert bits.shape == (n, -(-m // 64))
    assert np.array_equal(np.unpackbits(bits.view(np.uint8), axis=1, bitorder="little")[:, :m],
                          (ref < t).astype(np.uint8))
    assert not np.unpackbits(bits.view(np.uint8), axis=1, bitorder="little")[:, m:].any()
    pats = K.nibble_weights(W, k)
    for run in (K.nibbles._nibble_dense.serial, K.nibbles._nibble_dense.parallel):
        for rows in (1, 3, 8):
            h = np.empty((n, m), np.int32)
            run(A, pats.reshape(-1), 0, m, k, K.pixels._NO_T, 0, h, K.pixels._NO_BITS, rows)
            assert np.array_equal(h, ref), (run, rows)


def test_nibble_counts_are_exact_at_their_byte_limit():
    """Every group disagreeing (4 a group, 240 over a chunk of 60 groups: the byte
    counts' limit) over several chunks, with the layer's weights read at an offset and
    its thresholds at another, as the MLP chain stores them."""
    rng = np.random.default_rng(3)
    k, m, n = 4001, 130, 11
    x = pm1(rng, (n, k))
    w = pm1(rng, (m, k))
    w[:40] = -x[0]  # rows 0-39 disagree with sample 0 everywhere: dot = -k
    w[40:50] = x[1]
    A, W = K.pack_bits(x), K.pack_bits(w)
    ref = gemm(x, w)
    assert ref[0, 0] == -k and ref[1, 45] == k
    pats = K.nibble_weights(W, k).reshape(-1)
    t = rng.integers(-k, k, size=m) + 0.5
    tw = K.pixel_thresholds(t, m)
    pf = np.concatenate([np.full(24, 7, np.uint64), pats])
    tf = np.concatenate([np.full(10, 3, np.uint64), tw])
    bits = np.empty((n, 3), np.uint64)
    K.nibbles._nibble_dense.serial(A, pf, 24, m, k, tf, 10, K.pixels._NO_H, bits, 8)
    assert np.array_equal(np.unpackbits(bits.view(np.uint8), axis=1, bitorder="little")[:, :m],
                          (ref < t).astype(np.uint8))


def test_nibble_kernel_compiles_to_byte_shuffles():
    """A code-generation guard for the nibble lookups: the gain rests on ``vpshufb``
    counting 32 units' groups at once, added as bytes."""
    import llvmlite.binding as llvm
    import numba
    if "+avx2" not in llvm.get_host_cpu_features().flatten().split(","):
        pytest.skip("the instructions are x86 AVX2's; other targets get the generic code")
    fresh = numba.njit(K.nibbles._nibble_dense.serial.py_func)
    A, W = np.zeros((3, 2), np.uint64), np.zeros((5, 2), np.uint64)
    fresh(A, K.nibble_weights(W, 100).reshape(-1), 0, 5, 100, K.pixels._NO_T, 0,
          np.empty((3, 5), np.int32), K.pixels._NO_BITS, 8)
    asm = fresh.inspect_asm(fresh.signatures[0])
    assert asm.count("vpshufb") >= 8 and asm.count("vpaddb") >= 8


def test_generic_nibble_lookups_are_exact(monkeypatch):
    """Hosts without AVX2 compile ``vpop4`` and ``vshufb`` from generic IR; compiled
    here with that path forced, the nibble kernel still gives the reference's integers."""
    import numba
    from bnn_toroid.kernels import _simd
    monkeypatch.setattr(_simd, "_target_has", lambda context, feature: False)
    rng = np.random.default_rng(6)
    x, w = pm1(rng, (9, 203)), pm1(rng, (70, 203))
    w[:35] = -x[0]
    A, W = K.pack_bits(x), K.pack_bits(w)
    fresh = numba.njit(K.nibbles._nibble_dense.serial.py_func)  # uncached: compiled with the patch
    h = np.empty((9, 70), np.int32)
    fresh(A, K.nibble_weights(W, 203).reshape(-1), 0, 70, 203, K.pixels._NO_T, 0, h,
          K.pixels._NO_BITS, 8)
    assert np.array_equal(h, gemm(x, w))


@pytest.mark.parametrize("call,match", [
    (lambda: K.pack_bits(np.array([1.0, np.nan])), "NaN"),
    (lambda: K.pack_bits(np.array([1, 0, -1]), check_binary=True), r"\+1/-1"),
    (lambda: K.pack_bits(np.array(["a"])), "numeric"),
    (lambda: K.binary_gemm(np.zeros((2, 2), np.int64), np.zeros((2, 2), np.uint64), 64), "uint64"),
    (lambda: K.binary_gemm(np.zeros((2, 2), np.uint64), np.zeros((3, 1), np.uint64), 64), "words per row"),
    (lambda: K.binary_gemm(np.zeros((2, 1), np.uint64), np.zeros((3, 1), np.uint64), 65), "k=65"),
    (lambda: K.binary_gemm(np.zeros((2, 1), np.uint64), np.zeros((3, 1), np.uint64), 6,
                           threshold=np.zeros(3)), "integers"),
    (lambda: K.binary_gemm(np.zeros((2, 2, 1), np.uint64), np.zeros((3, 3, 1), np.uint64), 6), "networks"),
    (lambda: K.binary_conv2d(np.zeros((1, 4, 4, 1), np.uint64), np.zeros((2, 3, 3, 1), np.uint64), 3,
                             pad_value=2), "pad_value"),
    (lambda: K.binary_conv2d(np.zeros((1, 2, 2, 1), np.uint64), np.zeros((2, 3, 3, 1), np.uint64), 3),
     "does not fit"),
    (lambda: K.unpack_bits(np.zeros((2, 1), np.uint64), 65), "k=65"),
    (lambda: K.pixel_dense(np.zeros((2, 3), np.float32), np.ones((4, 3))), "uint8"),
    (lambda: K.pixel_dense(np.zeros((2, 3), np.uint8), np.ones((4, 5))), r"\(M, 3\)"),
    (lambda: K.pixel_dense(np.zeros((2, 3), np.uint8), np.zeros((4, 3))), "±1"),
    (lambda: K.pixel_dense(np.zeros((2, 3), np.uint8), np.ones((4, 3)), threshold=np.zeros(3)),
     "4 real thresholds"),
    (lambda: K.pixel_thresholds(np.array([0.0, np.nan]), 2), "not NaN"),
    (lambda: K.pixel_pairs(np.zeros((2, 3))), "uint8 pixels"),
    (lambda: K.pixel_pairs(np.zeros(3, np.uint8)), r"\(N, K\)"),
    (lambda: K.pixel_weights(np.full((2, 3), 300)), "±1"),
    (lambda: K.pixel_signs(np.zeros((1, 3, 2), np.uint64)), r"\(blocks, pairs, 16\)"),
    (lambda: K.pixel_lut_weights(np.zeros((2, 3))), "±1"),
    (lambda: K.nibble_dense(np.zeros((2, 1), np.int64), np.zeros((3, 1), np.uint64), 6), "uint64"),
    (lambda: K.nibble_dense(np.zeros((2, 1), np.uint64), np.zeros((3, 2), np.uint64), 6), "1 uint64 words long"),
    (lambda: K.nibble_dense(np.full((2, 1), 1 << 40, np.uint64), np.zeros((3, 1), np.uint64), 6),
     "past k = 6"),
    (lambda: K.nibble_dense(np.zeros((2, 1), np.uint64), np.zeros((3, 1), np.uint64), 6,
                            threshold=np.zeros(2)), "nibble_dense: expected 3 real thresholds"),
    (lambda: K.pixel_patches(np.zeros((1, 4, 4, 3)), (3, 3), (1, 1), (1, 1, 1, 1), 1), "uint8"),
    (lambda: K.pixel_patches(np.zeros((1, 4, 4), np.uint8), (3, 3), (1, 1), (1, 1, 1, 1), 1), "NHWC"),
    (lambda: K.pixel_patches(np.zeros((1, 4, 4, 3), np.uint8), (3, 3), (0, 1), (1, 1, 1, 1), 1), "stride"),
    (lambda: K.pixel_patches(np.zeros((1, 4, 4, 3), np.uint8), (3, 3), (1, 1), (1, 1, 1, 1), [1, 2]),
     "one per channel"),
    (lambda: K.pixel_patches(np.zeros((1, 4, 4, 3), np.uint8), (3, 3), (1, 1), (1, 1, 1, 1), 300),
     "a pixel"),
    (lambda: K.pixel_patches(np.zeros((1, 2, 2, 3), np.uint8), (3, 3), (1, 1), (0, 0, 0, 0), 0),
     "does not fit"),
])
def test_bad_input_is_named(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_sign_reference_agrees_with_pack():
    x = np.random.default_rng(2).normal(size=(4, 77))
    assert np.array_equal(K.unpack_bits(K.pack_bits(x), 77), sign(x))


@SETTINGS
@given(st.integers(0, 9), st.integers(1, 3), st.integers(1, 70), st.sampled_from([1, 63, 64, 65, 300]),
       st.sampled_from(["uint8", "float64"]), st.integers(0, 2**32 - 1))
def test_flipped_threshold_pack_matches_direct_products(n, s, m, k, dtype, seed):
    from bnn_toroid.kernels.flips import flipped_threshold_pack, flips_csr
    rng = np.random.default_rng(seed)
    w = pm1(rng, (m, k))
    stack = np.repeat(w[None], s, axis=0)
    stack[rng.random(stack.shape) < 0.05] *= -1  # a few flips per network
    x = (rng.integers(0, 256, (n, k)).astype(np.uint8) if dtype == "uint8"
         else np.round(rng.normal(size=(n, k)) * 8))  # integer-valued floats: exact sums
    t = rng.integers(-300, 300, (s, m)) + 0.5
    flips = flips_csr(K.pack_bits(w), K.pack_bits(stack))
    ptr, col, coef = flips
    for i in range(s):  # the lists name exactly the differing weights, with -2 w_template
        for j in range(m):
            q = slice(ptr[i * m + j], ptr[i * m + j + 1])
            assert np.array_equal(col[q], np.flatnonzero(stack[i, j] != w[j]))
            assert np.array_equal(coef[q], -2 * w[j, col[q]])
    out = flipped_threshold_pack(x.astype(np.float64) @ w.T.astype(np.float64), x, flips, t)
    for i in range(s):
        ref = np.where(gemm(x, stack[i]) >= t[i], 1, -1)
        assert np.array_equal(K.unpack_bits(out[i], m), ref)


@SETTINGS
@given(st.integers(1, 9), st.integers(1, 5), st.sampled_from([1, 63, 64, 65, 200]), st.integers(0, 2**32 - 1))
def test_majority_matches_vote_count(s, m, k, seed):
    from bnn_toroid.kernels.flips import majority
    rng = np.random.default_rng(seed)
    w = pm1(rng, (s, m, k))
    ref = np.where(2 * (w < 0).sum(axis=0) > s, -1, 1)
    assert np.array_equal(K.unpack_bits(majority(K.pack_bits(w)), k), ref)


def test_pixel_kernel_compiles_to_byte_multiply_adds():
    """A code-generation guard, not a timing: the pixel kernel's speed rests on LLVM
    recognising its byte products as ``vpmaddubsw`` (32 multiply-adds per instruction).
    A Numba or LLVM upgrade that loses the pattern would still be exact but several
    times slower; this catches it on x86 hosts with AVX2."""
    import llvmlite.binding as llvm
    import numba
    if "+avx2" not in llvm.get_host_cpu_features().flatten().split(","):
        pytest.skip("the pattern is x86 AVX2's; other targets get the generic code")
    fresh = numba.njit(K.pixels._pixel_dense.serial.py_func)  # uncached, so it can be inspected
    x = np.zeros((3, 10), np.uint8)
    fresh(K.pixel_pairs(x), K.pixel_weights(np.ones((5, 10))), K.pixels._NO_T,
          np.empty((3, 5), np.int32), K.pixels._NO_BITS)
    asm = fresh.inspect_asm(fresh.signatures[0])
    assert asm.count("vpmaddubsw") >= 12  # 8 in the two-sample loop, 4 in the one-sample loop


def test_sign_bit_pixel_kernel_compiles_to_byte_multiply_adds():
    """The same guard for the batch-1 kernel, where it matters more: its weights are
    masks unpacked in registers, and LLVM's generic form then folds the products into
    slower code (measured 3.5× slower), so ``vmaddubs`` emits the x86 instruction
    directly on AVX2 hosts."""
    import llvmlite.binding as llvm
    import numba
    if "+avx2" not in llvm.get_host_cpu_features().flatten().split(","):
        pytest.skip("the instruction is x86 AVX2's; other targets get the generic code")
    fresh = numba.njit(K.pixels._pixel_signed.serial.py_func)
    x = np.zeros((3, 10), np.uint8)
    fresh(K.pixel_pairs(x), K.pixel_signs(K.pixel_weights(np.ones((5, 10)))), K.pixels._NO_T,
          np.empty((3, 5), np.int32), K.pixels._NO_BITS)
    assert fresh.inspect_asm(fresh.signatures[0]).count("vpmaddubsw") >= 8


@pytest.mark.parametrize("layout", ["int8", "signs", "lookup", "vnni"])
def test_generic_byte_products_are_exact(monkeypatch, layout):
    """Hosts without AVX2 (AVX-512 VNNI) compile ``vmaddubs``, ``vshufb`` and ``vlut4``
    (``vdpbusd``) from generic IR;
    compiled here with that path forced, the pixel kernels still give the reference's
    integers."""
    import numba
    from bnn_toroid.kernels import _simd
    monkeypatch.setattr(_simd, "_target_has", lambda context, feature: False)
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (5, 203)).astype(np.uint8)
    x[0] = 255
    w = pm1(rng, (70, 203))
    w[:35, :] = -1
    xp, panels, kernel = _layout(layout, x, w)
    fresh = numba.njit(kernel.serial.py_func)  # uncached: compiled with the patch
    h = np.empty((5, 70), np.int32)
    fresh(xp, panels, K.pixels._NO_T, h, K.pixels._NO_BITS)
    assert np.array_equal(h, gemm(x, w))


def test_kernel_cache_is_dropped_when_any_kernel_source_changes(tmp_path, monkeypatch):
    """Numba checks only a kernel's own file; the package drops every cached kernel when
    any kernel source changes, since a kernel embeds others (a stale mix crashed)."""
    from bnn_toroid.kernels import _cache
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    (tmp_path / "a.py").write_text("x = 1\n")
    cache = tmp_path / "__pycache__"
    cache.mkdir()
    (cache / "a.f-1.py311.nbi").write_bytes(b"index")
    _cache.drop_stale(tmp_path)  # no digest yet: dropped, digest recorded
    assert not list(cache.glob("*.nbi")) and (cache / "kernels.digest").is_file()
    (cache / "a.f-1.py311.nbi").write_bytes(b"index")
    _cache.drop_stale(tmp_path)  # sources unchanged: kept
    assert list(cache.glob("*.nbi"))
    (tmp_path / "b.py").write_text("y = 2\n")  # another file changes
    _cache.drop_stale(tmp_path)
    assert not list(cache.glob("*.nbi"))


def test_lookup_kernel_compiles_to_byte_shuffles():
    """A code-generation guard for the lookup form: its gain rests on ``vpshufb`` (32
    lookups an instruction) and byte interleaves, and on ``vlut4``'s multiply-adds."""
    import llvmlite.binding as llvm
    import numba
    if "+avx2" not in llvm.get_host_cpu_features().flatten().split(","):
        pytest.skip("the instructions are x86 AVX2's; other targets get the generic code")
    x, w = np.zeros((3, 10), np.uint8), np.ones((5, 10))
    fresh = numba.njit(K.pixels._pixel_lut.serial.py_func)
    fresh(x, K.pixel_lut_weights(w), K.pixels._NO_T, np.empty((3, 5), np.int32),
          K.pixels._NO_BITS)
    asm = fresh.inspect_asm(fresh.signatures[0])
    assert asm.count("vpshufb") >= 8 and asm.count("vpunpcklbw") >= 4
    assert asm.count("vpmaddubsw") >= 2  # the tables, built inside the kernel


def test_vnni_pixel_kernel_compiles_to_dot_products_without_spills(tmp_path):
    """The VNNI form's inner loops, compiled for a CPU with AVX-512 VNNI (whatever this
    host has: the code is inspected, not run): ``vpdpbusd`` on zmm registers, and no
    reference-count call among the dot products, which is what kept every accumulator
    spilling to the stack in an earlier draft (26x slower)."""
    import os
    import platform
    import subprocess
    import sys
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("the instruction is x86's; other targets compile the generic lowering")
    code = (
        "import numba, numpy as np\n"
        "from bnn_toroid.kernels import pixels as P, vnni as V\n"
        "f = numba.njit(V._pixel_vnni.serial.py_func)\n"
        "args = (np.zeros((4, 8), np.uint8), V.pixel_vnni_weights(np.ones((64, 8))), P._NO_T,"
        " P._NO_H, P._NO_BITS)\n"
        "f.compile(tuple(numba.typeof(a) for a in args))\n"
        "print(f.inspect_asm(f.signatures[0]))\n")
    env = dict(os.environ, NUMBA_CPU_NAME="sapphirerapids", NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    blocks, block = [], []  # the basic blocks: split at the labels
    for line in out.stdout.splitlines():
        if line.startswith(".LBB"):
            blocks.append(block)
            block = []
        block.append(line.strip())
    loops = [b for b in blocks + [block] if any(i.startswith("vpdpbusd") for i in b)]
    dots = [i for b in loops for i in b if i.startswith("vpdpbusd")]
    assert len(dots) >= 20 and all("zmm" in i for i in dots)  # 16 + 4 in the two loops
    for b in loops:  # no call, and no accumulator stored to the stack
        assert not any(i.startswith("call") or ("%zmm" in i and "(%rsp)" in i.split(",")[-1])
                       for i in b), "\n".join(b)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([np.float32, np.float64]), st.integers(1, 300),
       st.sampled_from([None, np.nan, np.inf, -np.inf, -1.0, 256.0, 0.5, 254.75, -0.0, 255.0]),
       st.integers(0, 2**32 - 1))
def test_float_pixels_matches_the_numpy_route(dtype, size, odd, seed):
    """Floats become uint8 pixels only when every value is an integer in [0, 255]: the
    compiled pass against the naive check (range, then integer equality)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size).astype(dtype)
    if odd is not None:
        x[rng.integers(size)] = odd
    naive = bool(np.all((x >= 0) & (x <= 255) & (x == np.floor(x))))
    got = K.pixels.float_pixels(x)
    assert (got is not None) == naive
    if naive:
        assert got.dtype == np.uint8 and np.array_equal(got, x)
