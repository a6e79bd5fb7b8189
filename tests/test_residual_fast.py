"""The stream kernels of the residual fast path (kernels/stream.py) against naive NumPy
twins on hypothesis shapes: bit-exact for packed signs, float-exact (identical float64
operations in the same order) for the fused residual tail, pools, depthwise convolution
and the im2col blocks; both the parallel and the serial compilation."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import bnn_toroid.kernels as K
import bnn_toroid.kernels.stream as KS


def _both(kernel, *args):
    """The serial and the parallel compilation give the same; returns the serial's result."""
    outs = []
    for f in (kernel.serial, kernel.parallel):
        a = [x.copy() if isinstance(x, np.ndarray) else x for x in args]
        r = f(*a)
        outs.append((r, a))
    (r0, a0), (r1, a1) = outs
    assert r0 == r1
    for x, y in zip(a0, a1):
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)
    return r0, a0


def _stream(rng, shape):
    x = rng.normal(size=shape)
    x[rng.random(shape) < 0.1] = 0.0
    x[rng.random(shape) < 0.05] = -0.0
    return x


@settings(max_examples=15, deadline=None)
@given(r=st.integers(1, 9), c=st.sampled_from([1, 3, 63, 64, 65, 130]), seed=st.integers(0, 2 ** 31))
def test_pack_signs_equals_pack_bits(r, c, seed):
    x = _stream(np.random.default_rng(seed), (r, c))
    bad, (_, out) = _both(KS.pack_signs, x, np.empty((r, (c + 63) // 64), np.uint64))
    assert bad == 0
    np.testing.assert_array_equal(out, K.pack_bits(x))
    x[0, c - 1] = np.nan
    bad, _ = _both(KS.pack_signs, x, np.empty((r, (c + 63) // 64), np.uint64))
    assert bad == 1


def _naive_tail(h, codes, params, xs):
    v = h.astype(np.float64)
    for code, (p0, p1) in zip(codes, params):
        if code == KS.SCALE:
            v = v * p0
        elif code == KS.AFFINE:
            v = v * p0 + p1
        elif code == KS.RELU:
            v = np.maximum(v, 0.0)
        else:
            v = np.where(v >= 0, v, v * p0)
    return v + xs


@settings(max_examples=20, deadline=None)
@given(s=st.sampled_from([1, 3]), shared=st.booleans(), m=st.integers(1, 7),
       f=st.sampled_from([1, 8, 64, 65, 130]), codes=st.lists(st.integers(0, 3), max_size=4),
       pack=st.booleans(), seed=st.integers(0, 2 ** 31))
def test_residual_tail_equals_the_numpy_ops(s, shared, m, f, codes, pack, seed):
    rng = np.random.default_rng(seed)
    h = rng.integers(-50, 51, size=(s, m, f)).astype(np.int32)
    params = rng.normal(size=(len(codes), 2, f))
    xs = _stream(rng, (1 if shared else s, m, f))
    codes = np.array(codes, np.int64)
    fw = (f + 63) // 64
    bits = np.empty((s, m, fw), np.uint64) if pack else np.empty((0, 0, 0), np.uint64)
    bad, (_, _, _, _, out, bits) = _both(KS.residual_tail, h, codes, params, xs,
                                         np.empty((s, m, f)), bits)
    assert bad == 0
    want = _naive_tail(h, codes, params, np.broadcast_to(xs, (s, m, f)))
    np.testing.assert_array_equal(out, want)
    if pack:
        np.testing.assert_array_equal(bits, K.pack_bits(want))
    if not shared:  # in place over the shortcut, as the fast path does
        KS.residual_tail.serial(h, codes, params, xs, xs, bits)
        np.testing.assert_array_equal(xs, want)


def _naive_window(x, kh, kw, sy, sx, pads, fill):
    """Each tap's (B, Ho, Wo, C) window of x padded with ``fill``, in (dy, dx) order."""
    t, b, l, r = pads
    xp = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=fill)
    ho, wo = (xp.shape[1] - kh) // sy + 1, (xp.shape[2] - kw) // sx + 1
    for dy in range(kh):
        for dx in range(kw):
            yield dy, dx, xp[:, dy:dy + sy * (ho - 1) + 1:sy, dx:dx + sx * (wo - 1) + 1:sx]


_geom = dict(b=st.integers(1, 3), h=st.integers(1, 7), w=st.integers(1, 7),
             c=st.sampled_from([1, 3, 8, 17]), k=st.tuples(st.integers(1, 3), st.integers(1, 3)),
             stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
             pads=st.tuples(*[st.integers(0, 2)] * 4), seed=st.integers(0, 2 ** 31))


def _out_hw(h, w, k, stride, pads):
    return ((h + pads[0] + pads[1] - k[0]) // stride[0] + 1,
            (w + pads[2] + pads[3] - k[1]) // stride[1] + 1)


@settings(max_examples=25, deadline=None)
@given(is_max=st.booleans(), **_geom)
def test_pool2d_equals_the_padded_views(is_max, b, h, w, c, k, stride, pads, seed):
    pads = (min(pads[0], k[0] - 1), min(pads[1], k[0] - 1), min(pads[2], k[1] - 1), min(pads[3], k[1] - 1))
    ho, wo = _out_hw(h, w, k, stride, pads)
    if ho < 1 or wo < 1:
        return
    x = _stream(np.random.default_rng(seed), (b, h, w, c))
    _, a = _both(KS.pool2d, x, k[0], k[1], stride[0], stride[1], pads[0], pads[2], is_max,
                 np.empty((b, ho, wo, c)))
    out, want = a[-1], None
    for _, _, v in _naive_window(x, k[0], k[1], stride[0], stride[1], pads, -np.inf if is_max else 0.0):
        want = v.copy() if want is None else (np.maximum(want, v) if is_max else want + v)
    if not is_max:
        ones = np.ones((1, h, w, 1))
        count = sum(v for _, _, v in _naive_window(ones, k[0], k[1], stride[0], stride[1], pads, 0.0))
        want = want / count
    np.testing.assert_array_equal(out, want)


@settings(max_examples=25, deadline=None)
@given(**_geom)
def test_depthwise2d_equals_the_tap_sum(b, h, w, c, k, stride, pads, seed):
    ho, wo = _out_hw(h, w, k, stride, pads)
    if ho < 1 or wo < 1:
        return
    rng = np.random.default_rng(seed)
    x, wd = _stream(rng, (b, h, w, c)), rng.normal(size=(k[0], k[1], c))
    _, a = _both(KS.depthwise2d, x, wd, stride[0], stride[1], pads[0], pads[2], np.empty((b, ho, wo, c)))
    want = np.zeros((b, ho, wo, c))
    for dy, dx, v in _naive_window(x, k[0], k[1], stride[0], stride[1], pads, 0.0):
        want += v * wd[dy, dx]
    np.testing.assert_array_equal(a[-1], want)


@settings(max_examples=25, deadline=None)
@given(p0=st.integers(0, 5), **_geom)
def test_im2col_equals_the_gathered_taps(p0, b, h, w, c, k, stride, pads, seed):
    ho, wo = _out_hw(h, w, k, stride, pads)
    if ho < 1 or wo < 1:
        return
    x = _stream(np.random.default_rng(seed), (b, h, w, c))
    rows = b * ho * wo
    p0 = min(p0, rows - 1)
    cols = np.empty((rows - p0, k[0] * k[1] * c))
    _, a = _both(KS.im2col, x, k[0], k[1], stride[0], stride[1], pads[0], pads[2], ho, wo, p0, cols)
    want = np.empty((b, ho, wo, k[0], k[1], c))
    for dy, dx, v in _naive_window(x, k[0], k[1], stride[0], stride[1], pads, 0.0):
        want[:, :, :, dy, dx] = v
    np.testing.assert_array_equal(a[-1], want.reshape(rows, -1)[p0:])


def test_pack_signs_nan_raises_in_the_fast_path():
    from bnn_toroid.network import residual_fast as rf
    with pytest.raises(ValueError, match="NaN"):
        rf._nan(2)


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_a_conv_then_pool_in_image_blocks_is_the_whole_batch(monkeypatch, pool):
    # a real conv followed by a pool runs a few images at a time when its output is
    # large (the Bi-Real stem); a tiny block size forces one image per block here
    import bnn_toroid.network.residual_fast as RF
    from bnn_toroid.network import ResidualBinaryNetwork
    from bnn_toroid.network.residual_ops import (AvgPool, BinaryConv, GlobalAvgPool, MaxPool,
                                                 RealConv, RealDense, Residual)
    rng = np.random.default_rng(5)
    c = 6
    p = MaxPool(3, 2, "same") if pool == "max" else AvgPool(2, 2, "same")
    ops = [RealConv(rng.normal(size=(c, 5, 5, 3)), rng.normal(size=c), stride=2, padding="same"), p,
           Residual((BinaryConv(rng.choice([-1, 1], (c, 3, 3, c)), rng.uniform(0.5, 2, c),
                                padding="same"),)),
           GlobalAvgPool(), RealDense(rng.normal(size=(4, c)))]
    net = ResidualBinaryNetwork(ops, (15, 17, 3), "NHWC")
    x = rng.normal(size=(5, 15, 17, 3))
    whole = net.logits(x)
    monkeypatch.setattr(RF, "_CONV_POOL_BYTES", 1)
    calls = []
    conv = RF._real_conv
    monkeypatch.setattr(RF, "_real_conv", lambda op, xs: calls.append(xs.shape[1]) or conv(op, xs))
    blocked = ResidualBinaryNetwork(ops, (15, 17, 3), "NHWC").logits(x)
    assert calls == [1] * 5  # one image per block
    np.testing.assert_allclose(blocked, whole, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(whole, net.logits(x, reference=True), rtol=1e-9, atol=1e-9)
