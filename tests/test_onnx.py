"""ONNX import/export of binary networks (bnn_toroid.onnx), larq semantics.

- The shared larq fixtures (real larq 0.14 + tf2onnx 1.16.1 files, not made by this
  project) must load and reproduce larq's logits.
- Hand-built graphs in tf2onnx's style (pool before a BatchNorm with negative gammas,
  fused-BN kernels, Pad value 1, NHWC transposes) must load and agree with onnxruntime
  running the same file.
- Round trips network -> ONNX -> network and network -> ONNX -> onnxruntime are exact.
- Malformed and unsupported files raise OnnxImportError naming the node and op.

An independent numpy evaluator (``ref_predict``) checks the networks' own predictions.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from bnn_toroid import onnx as bo  # noqa: E402
from bnn_toroid.network import BinaryNetwork, Conv2d, Dense, MaxPool2d  # noqa: E402

FIXTURE_NAMES = ("mlp_float_input", "mlp_binary_input", "conv_small")


def fixtures_dir() -> Path:
    """``shared/fixtures/larq`` beside the repository (CI clones it with a copy of shared/)."""
    d = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "larq"
    if not d.is_dir():
        pytest.fail(f"larq fixtures not found at {d}: the repository must sit beside a copy "
                    "of shared/ (shared/fixtures/larq/NAME.onnx, .npz, .json)")
    return d


# ----------------------------------------------------------------------------------------
# independent numpy reference of BinaryNetwork semantics
# ----------------------------------------------------------------------------------------

def _sign(x):
    return np.where(x >= 0, 1.0, -1.0)


def _tf_same(n, k, s):
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def _conv(x, w, stride, padding, pad_value):
    """x (N, H, W, C) float, w (F, kh, kw, C) ±1; pad_value scalar or per channel."""
    n, h, wd, c = x.shape
    f, kh, kw, _ = w.shape
    sy, sx = stride
    if padding == "same":
        (pt, pb), (pl, pr) = _tf_same(h, kh, sy), _tf_same(wd, kw, sx)
    else:
        pt = pb = pl = pr = 0
    xp = np.empty((n, h + pt + pb, wd + pl + pr, c))
    xp[...] = np.broadcast_to(np.asarray(pad_value, dtype=np.float64), (c,))
    xp[:, pt:pt + h, pl:pl + wd] = x
    ho, wo = (h + pt + pb - kh) // sy + 1, (wd + pl + pr - kw) // sx + 1
    out = np.zeros((n, ho, wo, f))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i:i + sy * (ho - 1) + 1:sy, j:j + sx * (wo - 1) + 1:sx, :]
            out += patch @ w[:, i, j, :].T.astype(np.float64)
    return out


def _pool(x, size, stride, min_channels):
    n, h, w, c = x.shape
    ho, wo = (h - size) // stride + 1, (w - size) // stride + 1
    sg = np.where(np.zeros(c, bool) if min_channels is None else min_channels, -1.0, 1.0)
    y = x * sg
    out = np.full((n, ho, wo, c), -np.inf)
    for i in range(size):
        for j in range(size):
            out = np.maximum(out, y[:, i:i + stride * (ho - 1) + 1:stride,
                                    j:j + stride * (wo - 1) + 1:stride, :])
    return out * sg


def ref_predict(net, x):
    """Logits of ``net`` on ``x`` by plain numpy (float64), from the layer fields."""
    x = np.asarray(x, dtype=np.float64).reshape((len(x),) + tuple(net.input_shape))
    if net.input_layout == "NCHW":
        x = x.transpose(0, 2, 3, 1)
    elif net.input_layout == "flat":
        x = x.reshape(len(x), -1)
    scale = 1.0 if net.input_scale is None else np.asarray(net.input_scale)
    if net.binarize_input:
        x = _sign(x)
    else:
        x = x * scale
    for i, layer in enumerate(net.layers):
        real = i == 0 and not net.binarize_input
        if isinstance(layer, Dense):
            h = x.reshape(len(x), -1) @ layer.weights.T.astype(np.float64)
            if layer.threshold is None:
                return layer.out_scale * h + layer.out_bias
            x = np.where(h >= layer.threshold, 1.0, -1.0)
        elif isinstance(layer, Conv2d):
            pv = layer.pad_value
            if real:
                pv = np.broadcast_to(np.asarray(pv, dtype=np.float64), (x.shape[-1],)) * scale
            h = _conv(x, layer.weights, layer.stride, layer.padding, pv)
            x = np.where(h >= layer.threshold, 1.0, -1.0)
        else:
            x = _pool(x, layer.size, layer.stride, layer.min_channels)
    raise AssertionError("network without an output layer")


def ort_run(path_or_model, x):
    data = path_or_model.SerializeToString() if isinstance(path_or_model, onnx.ModelProto) \
        else str(path_or_model)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: np.asarray(x, dtype=np.float32)})[0]


# ----------------------------------------------------------------------------------------
# the larq fixtures
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_larq_fixture_loads_and_matches_larq_logits(name):
    d = fixtures_dir()
    data = np.load(d / f"{name}.npz")
    x, logits = data["x"], data["logits"]
    net = bo.load(d / f"{name}.onnx")
    got = net.predict(x)
    assert got.shape == logits.shape
    np.testing.assert_array_equal(got.argmax(1), logits.argmax(1))
    assert np.max(np.abs(got - logits)) <= 1e-4
    # the network's own evaluator agrees with the plain numpy reference
    np.testing.assert_allclose(ref_predict(net, x), got, rtol=0, atol=1e-9)
    # the file itself: onnxruntime reproduces larq exactly (README), so this is a sanity check
    np.testing.assert_array_equal(ort_run(d / f"{name}.onnx", x), logits)


def test_larq_fixture_architectures():
    d = fixtures_dir()
    f = bo.load(d / "mlp_float_input.onnx")
    assert [type(l).__name__ for l in f.layers] == ["Dense"] * 3
    assert f.input_layout == "flat" and not f.binarize_input
    assert f.layers[0].threshold.dtype == np.float64      # real-valued first layer
    assert f.layers[1].threshold.dtype == np.int64
    b = bo.load(d / "mlp_binary_input.onnx")
    assert b.binarize_input and b.layers[0].threshold.dtype == np.int64
    # BN after the output layer: an affine on the logits
    assert not np.all(b.layers[-1].out_scale == 1)
    c = bo.load(d / "conv_small.onnx")
    assert [type(l).__name__ for l in c.layers] == ["Conv2d", "Conv2d", "MaxPool2d", "Conv2d",
                                                     "Dense"]
    assert c.input_layout == "NHWC" and c.input_shape == (12, 12, 1)
    assert c.layers[0].padding == "same" and float(np.asarray(c.layers[0].pad_value)) == 1.0
    assert c.layers[1].padding == "same" and c.layers[1].pad_value == 1
    assert c.layers[3].padding == "valid"


def test_larq_fixture_sign_of_zero_is_plus_one():
    """The first 32 fixture inputs are integers with exact zeros; sign(0) must be +1."""
    d = fixtures_dir()
    data = np.load(d / "mlp_binary_input.npz")
    x = data["x"][:32]
    assert np.any(x == 0)
    net = bo.load(d / "mlp_binary_input.onnx")
    np.testing.assert_array_equal(net.predict(x).argmax(1), data["logits"][:32].argmax(1))
    # with torch.sign semantics (0 -> 0) the first layer would see zeros; with larq's, +1:
    xneg0 = np.where(x == 0, -0.0, x)
    np.testing.assert_array_equal(net.predict(xneg0), net.predict(x))


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_larq_fixture_export_round_trip(name, tmp_path):
    d = fixtures_dir()
    data = np.load(d / f"{name}.npz")
    net = bo.load(d / f"{name}.onnx")
    p = tmp_path / "rt.onnx"
    bo.export(net, p)
    want = net.predict(data["x"])
    np.testing.assert_array_equal(ort_run(p, data["x"]), want)
    back = bo.load(p)
    assert back.equals(net)
    np.testing.assert_array_equal(back.predict(data["x"]), want)


# ----------------------------------------------------------------------------------------
# random networks
# ----------------------------------------------------------------------------------------

def pm1(rng, shape):
    return np.where(rng.random(shape) < 0.5, -1, 1).astype(np.int8)


def ithr(rng, units, fan_in):
    return rng.integers(-(fan_in // 3) - 1, fan_in // 3 + 2, size=units).astype(np.int64)


def out_dense(rng, classes, fan_in, affine=True):
    if affine:
        return Dense(pm1(rng, (classes, fan_in)), None,
                     out_scale=rng.uniform(-2, 2, classes), out_bias=rng.normal(size=classes))
    return Dense(pm1(rng, (classes, fan_in)))


def mlp_binary(rng, affine=True):
    return BinaryNetwork([Dense(pm1(rng, (15, 20)), ithr(rng, 15, 20)),
                          Dense(pm1(rng, (7, 15)), ithr(rng, 7, 15)),
                          out_dense(rng, 4, 7, affine)], (20,), "flat", binarize_input=True)


def mlp_real(rng):
    # thresholds at half-integers and power-of-two scales: no ties on integer inputs,
    # and float32 arithmetic in onnxruntime stays exact
    return BinaryNetwork([Dense(pm1(rng, (9, 12)), rng.integers(-6, 6, 9) + 0.5),
                          Dense(pm1(rng, (5, 9)), ithr(rng, 5, 9)),
                          out_dense(rng, 3, 5)], (12,), "flat",
                         input_scale=2.0 ** rng.integers(-2, 3, 12))


def conv_binary(rng, layout="NHWC", pad1=1, pad2=0, min_channels="mixed", stride2=(2, 2)):
    """Odd channel counts, 'same' with pad 0 and 1, stride 2, a (min/max) pool."""
    H, W, C = 9, 8, 3
    c1 = Conv2d(pm1(rng, (5, 3, 3, C)), ithr(rng, 5, 27), padding="same", pad_value=pad1)
    if min_channels == "mixed":
        mn = np.array([True, False, True, False, False])
    elif min_channels == "all":
        mn = np.ones(5, bool)
    else:
        mn = None
    pool = MaxPool2d(2, min_channels=mn)                      # 9x8 -> 4x4
    c2 = Conv2d(pm1(rng, (7, 3, 3, 5)), ithr(rng, 7, 45), stride=stride2, padding="same",
                pad_value=pad2)                               # 4x4 -> 2x2 (stride 2)
    c3 = Conv2d(pm1(rng, (3, 1, 2, 7)), ithr(rng, 3, 14))    # valid 2x2 -> 2x1
    shape = (H, W, C) if layout == "NHWC" else (C, H, W)
    h3, w3 = -(-4 // stride2[0]), -(-4 // stride2[1]) - 1
    return BinaryNetwork([c1, pool, c2, c3, out_dense(rng, 4, h3 * w3 * 3)], shape, layout,
                         binarize_input=True)


def conv_real(rng, layout="NCHW", pad_value=1.0, scale=True):
    H, W, C = 7, 7, 3
    c1 = Conv2d(pm1(rng, (4, 3, 3, C)), rng.integers(-8, 8, 4) + 0.5, stride=(2, 1),
                padding="same", pad_value=pad_value)          # 7x7 -> 4x7
    c2 = Conv2d(pm1(rng, (5, 2, 2, 4)), ithr(rng, 5, 16))    # -> 3x6
    shape = (H, W, C) if layout == "NHWC" else (C, H, W)
    sc = 2.0 ** rng.integers(-1, 2, C) if scale else None
    return BinaryNetwork([c1, c2, MaxPool2d(2, 1), out_dense(rng, 3, 2 * 5 * 5)], shape,
                         layout, input_scale=sc)


def binary_inputs(rng, net, n=64):
    x = rng.integers(-2, 3, size=(n,) + tuple(net.input_shape)).astype(np.float32)
    x[0] = 0.0
    x[1] = -0.0  # sign(-0.0) = +1
    return x


def int_inputs(rng, net, n=64):
    return rng.integers(-4, 5, size=(n,) + tuple(net.input_shape)).astype(np.float32)


def round_trip(net, x, tmp_path, exact=True):
    p = tmp_path / "net.onnx"
    bo.export(net, p)
    want = net.predict(x)
    np.testing.assert_allclose(ref_predict(net, x), want, rtol=0, atol=1e-9)
    got = ort_run(p, x)
    assert got.dtype == np.float64 and got.shape == want.shape
    if exact:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    back = bo.load(p)
    assert back.equals(net), f"{back.summary()}\n!=\n{net.summary()}"
    assert back.input_layout == net.input_layout and back.input_shape == net.input_shape
    assert back.binarize_input == net.binarize_input
    if net.input_scale is None or np.all(net.input_scale == 1):  # same function
        assert back.input_scale is None or np.all(back.input_scale == 1)
    else:
        np.testing.assert_array_equal(back.input_scale, net.input_scale)
    for a, b in zip(net.layers, back.layers):
        if isinstance(a, Conv2d):
            np.testing.assert_array_equal(np.asarray(a.pad_value, dtype=np.float64)
                                          * np.ones(1), np.asarray(b.pad_value) * np.ones(1))
        if isinstance(a, MaxPool2d):
            ma = np.zeros(0, bool) if a.min_channels is None else a.min_channels
            mb = np.zeros(0, bool) if b.min_channels is None else b.min_channels
            assert ma.any() == mb.any() and (not ma.any() or np.array_equal(ma, mb))
    np.testing.assert_array_equal(back.predict(x), want)
    return p


@pytest.mark.parametrize("affine", [True, False])
def test_round_trip_mlp_binary_input(affine, tmp_path):
    rng = np.random.default_rng(1)
    net = mlp_binary(rng, affine)
    x = binary_inputs(rng, net)
    p = round_trip(net, x, tmp_path)
    if not affine:  # integer logits
        got = ort_run(p, x)
        np.testing.assert_array_equal(got, np.round(got))


def test_round_trip_mlp_real_input_with_scale(tmp_path):
    rng = np.random.default_rng(2)
    net = mlp_real(rng)
    round_trip(net, int_inputs(rng, net), tmp_path)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("pads", [(1, 0), (0, 1), (1, 1), (0, 0)])
@pytest.mark.parametrize("min_channels", ["mixed", "all", None])
def test_round_trip_conv_binary(layout, pads, min_channels, tmp_path):
    rng = np.random.default_rng(3)
    net = conv_binary(rng, layout, *pads, min_channels=min_channels)
    round_trip(net, binary_inputs(rng, net), tmp_path)


def test_round_trip_conv_stride_1x2(tmp_path):
    rng = np.random.default_rng(4)
    net = conv_binary(rng, "NHWC", 1, 1, stride2=(1, 2))
    round_trip(net, binary_inputs(rng, net), tmp_path)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("pad_value", [0.0, 1.0, -0.5, "per-channel"])
@pytest.mark.parametrize("scale", [True, False])
def test_round_trip_conv_real_input(layout, pad_value, scale, tmp_path):
    rng = np.random.default_rng(5)
    pv = np.array([0.5, -1.25, 2.0]) if pad_value == "per-channel" else pad_value
    net = conv_real(rng, layout, pv, scale)
    round_trip(net, int_inputs(rng, net), tmp_path)


def test_round_trip_dense_on_image_input(tmp_path):
    rng = np.random.default_rng(6)
    for layout, shape in (("NHWC", (3, 4, 2)), ("NCHW", (2, 3, 4))):
        net = BinaryNetwork([Dense(pm1(rng, (6, 24)), ithr(rng, 6, 24)), out_dense(rng, 3, 6)],
                            shape, layout, binarize_input=True)
        round_trip(net, binary_inputs(rng, net), tmp_path)


def test_round_trip_real_dense_on_image_input(tmp_path):
    rng = np.random.default_rng(6)
    for layout, shape in (("NHWC", (3, 4, 2)), ("NCHW", (2, 3, 4))):
        net = BinaryNetwork([Dense(pm1(rng, (6, 24)), rng.integers(-5, 5, 6) + 0.5),
                             out_dense(rng, 3, 6)], shape, layout,
                            input_scale=np.array([0.5, 2.0]))
        x = int_inputs(rng, net)
        round_trip(net, x, tmp_path)


def test_round_trip_single_layer_real(tmp_path):
    rng = np.random.default_rng(7)
    net = BinaryNetwork([out_dense(rng, 4, 10)], (10,), "flat")
    round_trip(net, rng.normal(size=(32, 10)).astype(np.float32).astype(np.float64), tmp_path,
               exact=False)


def test_export_uses_no_bare_sign_and_standard_ops(tmp_path):
    rng = np.random.default_rng(8)
    p = tmp_path / "n.onnx"
    bo.export(conv_binary(rng), p)
    m = onnx.load(p)
    ops = {n.op_type for n in m.graph.node}
    assert "Sign" not in ops
    assert {"Where", "GreaterOrEqual", "Conv", "Pad", "MaxPool", "MatMul"} <= ops
    assert all(n.domain in ("", "ai.onnx") for n in m.graph.node)
    assert [o.domain for o in m.opset_import] == [""] and m.opset_import[0].version == 17
    pads = [n for n in m.graph.node if n.op_type == "Pad"]
    vals = {float(numpy_helper.to_array(next(t for t in m.graph.initializer
                                             if t.name == n.input[2]))) for n in pads}
    assert vals == {1.0, 0.0}  # pad_value 1 then 0
    ann = {a.tensor_name for a in m.graph.quantization_annotation}
    assert ann and all(a.quant_parameter_tensor_names[0].value == "BIPOLAR"
                       for a in m.graph.quantization_annotation)
    onnx.checker.check_model(m, full_check=True)


def test_export_other_opset(tmp_path):
    rng = np.random.default_rng(9)
    net = conv_binary(rng)
    x = binary_inputs(rng, net)
    for opset in (13, 18):
        p = tmp_path / f"o{opset}.onnx"
        bo.export(net, p, opset=opset)
        np.testing.assert_array_equal(ort_run(p, x), net.predict(x))
    with pytest.raises(ValueError):
        bo.export(net, tmp_path / "old.onnx", opset=11)


def test_export_is_atomic(tmp_path, monkeypatch):
    rng = np.random.default_rng(10)
    net = mlp_binary(rng)
    p = tmp_path / "keep.onnx"
    bo.export(net, p)
    before = p.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["keep.onnx"]

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        bo.export(mlp_binary(np.random.default_rng(11)), p)
    assert p.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["keep.onnx"]  # no temporary file left


def test_export_rejects_non_networks(tmp_path):
    with pytest.raises(TypeError):
        bo.export(object(), tmp_path / "x.onnx")


# ----------------------------------------------------------------------------------------
# QONNX
# ----------------------------------------------------------------------------------------

def _qonnx_reference_session(path):
    """Run a qonnx=True export with onnx's reference evaluator plus a BipolarQuant op."""
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import OpRun

    class BipolarQuant(OpRun):
        op_domain = bo.QONNX_DOMAIN

        def _run(self, x, scale):
            return ((np.where(x >= 0, 1, -1) * scale).astype(x.dtype),)

    return ReferenceEvaluator(str(path), new_ops=[BipolarQuant])


@pytest.mark.parametrize("make", [mlp_binary, mlp_real, conv_binary])
def test_qonnx_export(make, tmp_path):
    rng = np.random.default_rng(12)
    net = make(rng)
    x = binary_inputs(rng, net) if net.binarize_input else int_inputs(rng, net)
    p = tmp_path / "q.onnx"
    bo.export(net, p, qonnx=True)
    m = onnx.load(p)
    q = [n for n in m.graph.node if n.op_type == "BipolarQuant"]
    assert q and all(n.domain == bo.QONNX_DOMAIN for n in q)
    assert "Where" not in {n.op_type for n in m.graph.node}
    assert any(o.domain == bo.QONNX_DOMAIN and o.version == 1 for o in m.opset_import)
    got = _qonnx_reference_session(p).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, net.predict(x))
    assert bo.load(p).equals(net)
    # onnxruntime has no kernel for the custom domain: the default export is the one it runs
    with pytest.raises(Exception):
        ort_run(p, x)


# ----------------------------------------------------------------------------------------
# hand-built graphs in tf2onnx's style
# ----------------------------------------------------------------------------------------

class G:
    """A tiny graph builder."""

    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def c(self, arr, dtype=np.float32):
        self.n += 1
        name = f"c{self.n}"
        self.inits.append(numpy_helper.from_array(np.asarray(arr, dtype=dtype), name))
        return name

    def op(self, op, inputs, **attrs):
        self.n += 1
        out = f"t{self.n}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"n{self.n}_{op}", **attrs))
        return out

    def ste_sign(self, x):  # larq ste_sign through tf2onnx
        s = self.op("Sign", [x])
        return self.op("Sign", [self.op("Add", [s, self.c(0.1)])])

    def model(self, x_shape, out, out_name="y"):
        self.nodes.append(helper.make_node("Identity", [out], [out_name], name="out"))
        g = helper.make_graph(self.nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [None, None])],
                              initializer=self.inits)
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def larq_style_conv(rng, pool_before_bn=True, bn_node=True, fused_first=True):
    """x NHWC (8, 8, 3) real -> Pad(1) conv fused-BN -> sign -> Pad(1) conv -> pool/BN
    (negative gammas) -> sign -> conv stride 2 SAME_UPPER zero pads -> Mul/Add -> flatten
    -> sign -> MatMul -> Mul/Add."""
    g = G()
    nhwc_pads = g.c([0, 1, 1, 0, 0, 1, 1, 0], np.int64)
    x = g.op("Pad", ["x", nhwc_pads, g.c(1.0)])
    x = g.op("Transpose", [x], perm=[0, 3, 1, 2])
    w1 = pm1(rng, (6, 3, 3, 3)).astype(np.float32)
    if fused_first:
        s1 = rng.uniform(-1.5, 1.5, 6).astype(np.float32)
        w1 = w1 * s1[:, None, None, None]
    x = g.op("Conv", [x, g.c(w1), g.c(rng.normal(size=6))], kernel_shape=[3, 3])
    x = g.op("Transpose", [x], perm=[0, 2, 3, 1])
    x = g.ste_sign(x)
    x = g.op("Pad", [x, nhwc_pads, g.c(1.0)])
    x = g.op("Transpose", [x], perm=[0, 3, 1, 2])
    x = g.op("Conv", [x, g.c(pm1(rng, (5, 6, 3, 3)))], kernel_shape=[3, 3])  # 8x8x5
    gamma = rng.uniform(0.5, 2, 5) * np.array([1, -1, 1, -1, -1])
    beta, mean, var = rng.normal(size=5), rng.normal(size=5) * 3, rng.uniform(0.5, 3, 5)

    def bn(x):
        if bn_node:
            return g.op("BatchNormalization", [x, g.c(gamma), g.c(beta), g.c(mean), g.c(var)],
                        epsilon=1e-3)
        a = gamma / np.sqrt(var + 1e-3)
        x = g.op("Mul", [x, g.c(a.reshape(1, 5, 1, 1))])
        return g.op("Add", [x, g.c((beta - mean * a).reshape(5, 1, 1))])

    if pool_before_bn:
        x = bn(g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2]))
    else:
        x = g.op("MaxPool", [bn(x)], kernel_shape=[2, 2], strides=[2, 2])
    x = g.op("Transpose", [x], perm=[0, 2, 3, 1])                           # 4x4x5 NHWC
    x = g.ste_sign(x)
    x = g.op("Transpose", [x], perm=[0, 3, 1, 2])
    x = g.op("Conv", [x, g.c(pm1(rng, (7, 5, 3, 3)))], kernel_shape=[3, 3], strides=[2, 2],
             auto_pad="SAME_UPPER")                                          # 2x2x7
    x = g.op("Mul", [x, g.c(rng.uniform(-2, 2, (1, 7, 1, 1)))])
    x = g.op("Add", [x, g.c(rng.normal(size=(7, 1, 1)))])
    x = g.op("Transpose", [x], perm=[0, 2, 3, 1])
    x = g.op("Reshape", [x, g.c([-1, 28], np.int64)])
    x = g.ste_sign(x)
    x = g.op("MatMul", [x, g.c(pm1(rng, (28, 4)))])
    x = g.op("Mul", [x, g.c(rng.uniform(0.5, 2, 4))])
    x = g.op("Add", [x, g.c(rng.normal(size=4))])
    return g.model(["N", 8, 8, 3], x)


@pytest.mark.parametrize("pool_before_bn", [True, False])
@pytest.mark.parametrize("bn_node", [True, False])
@pytest.mark.parametrize("fused_first", [True, False])
def test_larq_style_graph_matches_onnxruntime(pool_before_bn, bn_node, fused_first, tmp_path):
    rng = np.random.default_rng(13)
    m = larq_style_conv(rng, pool_before_bn, bn_node, fused_first)
    onnx.checker.check_model(m)
    p = tmp_path / "larq_style.onnx"
    p.write_bytes(m.SerializeToString())
    x = rng.normal(size=(200, 8, 8, 3)).astype(np.float32)
    x[:20] = np.round(x[:20])
    want = ort_run(m, x)
    net = bo.load(p)
    got = net.predict(x)
    np.testing.assert_array_equal(got.argmax(1), want.argmax(1))
    assert np.max(np.abs(got - want)) <= 1e-4
    np.testing.assert_allclose(ref_predict(net, x), got, atol=1e-9)
    pools = [l for l in net.layers if isinstance(l, MaxPool2d)]
    assert len(pools) == 1
    mn = pools[0].min_channels
    if pool_before_bn:  # negative gamma after the pool: min over the unit outputs
        np.testing.assert_array_equal(mn, [False, True, False, True, True])
    else:
        assert mn is None or not mn.any()


def test_input_normalisation_folds_into_first_layer(tmp_path):
    """(x - m) / s before a dense or padded conv first layer folds exactly."""
    rng = np.random.default_rng(14)
    for conv in (False, True):
        g = G()
        if conv:
            x = g.op("Sub", ["x", g.c(rng.normal(size=(1, 1, 3)))])
            x = g.op("Div", [x, g.c(rng.uniform(0.5, 2, 3) * np.array([1, -1, 1]))])
            x = g.op("Transpose", [x], perm=[0, 3, 1, 2])
            x = g.op("Conv", [x, g.c(pm1(rng, (4, 3, 3, 3)))], kernel_shape=[3, 3],
                     pads=[1, 1, 1, 1])
            x = g.op("Add", [x, g.c(rng.normal(size=(4, 1, 1)))])
            x = g.op("Reshape", [g.op("Transpose", [g.ste_sign(x)], perm=[0, 2, 3, 1]),
                                 g.c([-1, 4 * 5 * 5], np.int64)])
            shape = ["N", 5, 5, 3]
            w = pm1(rng, (100, 3))
        else:
            x = g.op("Mul", [g.op("Add", ["x", g.c(rng.normal(size=10))]),
                             g.c(rng.uniform(-2, 2, 10))])
            x = g.op("MatMul", [x, g.c(pm1(rng, (10, 6)))])
            x = g.op("Add", [x, g.c(rng.normal(size=6))])
            shape = ["N", 10]
            w = pm1(rng, (6, 3))
        x = g.op("MatMul", [g.ste_sign(x), g.c(w)])
        m = g.model(shape, x)
        p = tmp_path / "norm.onnx"
        p.write_bytes(m.SerializeToString())
        xs = rng.normal(size=[100] + shape[1:]).astype(np.float32)
        net = bo.load(p)
        want = ort_run(m, xs)
        got = net.predict(xs)
        np.testing.assert_array_equal(got.argmax(1), want.argmax(1))
        assert np.max(np.abs(got - want)) <= 1e-4
        np.testing.assert_allclose(ref_predict(net, xs), got, atol=1e-9)


def test_final_softmax_is_dropped_with_a_warning(tmp_path):
    rng = np.random.default_rng(15)
    g = G()
    x = g.op("MatMul", [g.ste_sign("x"), g.c(pm1(rng, (6, 3)))])
    m = g.model(["N", 6], g.op("Softmax", [x], axis=1))
    p = tmp_path / "sm.onnx"
    p.write_bytes(m.SerializeToString())
    with pytest.warns(UserWarning, match="Softmax"):
        net = bo.load(p)
    xs = rng.normal(size=(20, 6)).astype(np.float32)
    np.testing.assert_array_equal(net.predict(xs).argmax(1), ort_run(m, xs).argmax(1))


# ----------------------------------------------------------------------------------------
# malformed and unsupported files
# ----------------------------------------------------------------------------------------

def _good_model(rng):
    g = G()
    x = g.op("MatMul", [g.ste_sign("x"), g.c(pm1(rng, (6, 5)))])
    x = g.op("Add", [x, g.c(rng.normal(size=5))])
    x = g.ste_sign(x)
    x = g.op("MatMul", [x, g.c(pm1(rng, (5, 3)))])
    return g.model(["N", 6], x)


def _write(tmp_path, m, name="m.onnx"):
    p = tmp_path / name
    p.write_bytes(m.SerializeToString() if isinstance(m, onnx.ModelProto) else m)
    return p


def test_good_model_loads(tmp_path):
    rng = np.random.default_rng(16)
    m = _good_model(rng)
    net = bo.load(_write(tmp_path, m))
    xs = rng.normal(size=(50, 6)).astype(np.float32)
    np.testing.assert_array_equal(net.predict(xs), ort_run(m, xs))


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.95])
def test_truncated_file(cut, tmp_path):
    d = fixtures_dir()
    data = (d / "conv_small.onnx").read_bytes()
    p = _write(tmp_path, data[: int(len(data) * cut)])
    with pytest.raises(bo.OnnxImportError, match="truncated|corrupted|not a valid|dangling"):
        bo.load(p)


def test_garbage_and_empty_files(tmp_path):
    with pytest.raises(bo.OnnxImportError, match="empty"):
        bo.load(_write(tmp_path, b"", "empty.onnx"))
    with pytest.raises(bo.OnnxImportError):
        bo.load(_write(tmp_path, b"\x00\xff" * 500 + b"not onnx at all", "junk.onnx"))
    with pytest.raises(FileNotFoundError):
        bo.load(tmp_path / "missing.onnx")
    assert issubclass(bo.OnnxImportError, ValueError)


def test_non_pm1_kernel(tmp_path):
    rng = np.random.default_rng(17)
    m = _good_model(rng)
    w = next(t for t in m.graph.initializer if numpy_helper.to_array(t).shape == (6, 5))
    arr = numpy_helper.to_array(w).copy()
    arr[2, 3] = 0.5
    w.CopyFrom(numpy_helper.from_array(arr, w.name))
    with pytest.raises(bo.OnnxImportError, match=r"MatMul.*not binary"):
        bo.load(_write(tmp_path, m))


def test_dangling_input(tmp_path):
    rng = np.random.default_rng(18)
    m = _good_model(rng)
    node = next(n for n in m.graph.node if n.op_type == "Add")
    node.input[1] = "no_such_tensor"
    with pytest.raises(bo.OnnxImportError, match="no_such_tensor"):
        bo.load(_write(tmp_path, m))


@pytest.mark.parametrize("case", ["relu", "bare_sign", "two_inputs", "branch", "conv_output",
                                  "strict_sign", "scaled_binary", "grouped_conv"])
def test_unsupported_graphs_name_the_node(case, tmp_path):
    rng = np.random.default_rng(19)
    g = G()
    shape = ["N", 6]
    if case == "relu":
        x = g.op("MatMul", [g.op("Relu", ["x"]), g.c(pm1(rng, (6, 3)))])
        match = "Relu"
    elif case == "bare_sign":
        x = g.op("MatMul", [g.op("Sign", ["x"]), g.c(pm1(rng, (6, 3)))])
        match = "Sign maps 0 to 0"
    elif case == "two_inputs":
        x = g.op("MatMul", [g.ste_sign("x"), g.c(pm1(rng, (6, 3)))])
        m = g.model(shape, x)
        m.graph.input.append(helper.make_tensor_value_info("x2", TensorProto.FLOAT, [1, 6]))
        with pytest.raises(bo.OnnxImportError, match="one graph input"):
            bo.load(_write(tmp_path, m))
        return
    elif case == "branch":
        s = g.ste_sign("x")
        a = g.op("MatMul", [s, g.c(pm1(rng, (6, 3)))])
        b = g.op("MatMul", [s, g.c(pm1(rng, (6, 3)))])
        x = g.op("Add", [a, b])
        match = "chain"
    elif case == "conv_output":
        shape = ["N", 4, 4, 1]
        x = g.op("Conv", [g.op("Transpose", ["x"], perm=[0, 3, 1, 2]),
                          g.c(pm1(rng, (2, 1, 3, 3)))], kernel_shape=[3, 3])
        match = "dense output layer"
    elif case == "strict_sign":
        s = g.op("Sign", ["x"])
        x = g.op("Sign", [g.op("Add", [s, g.c(-0.1)])])
        x = g.op("MatMul", [x, g.c(pm1(rng, (6, 3)))])
        match = "Sign"
    elif case == "scaled_binary":
        x = g.op("Mul", [g.ste_sign("x"), g.c(0.5)])
        x = g.op("MatMul", [x, g.c(pm1(rng, (6, 3)))])
        match = "Mul"
    else:
        shape = ["N", 4, 4, 2]
        x = g.op("Conv", [g.op("Transpose", ["x"], perm=[0, 3, 1, 2]),
                          g.c(pm1(rng, (2, 1, 3, 3)))], kernel_shape=[3, 3], group=2)
        x = g.op("Reshape", [g.ste_sign(x), g.c([-1, 8], np.int64)])
        x = g.op("MatMul", [x, g.c(pm1(rng, (8, 3)))])
        match = "group"
    m = g.model(shape, x)
    with pytest.raises(bo.OnnxImportError, match=match) as e:
        bo.load(_write(tmp_path, m))
    assert "node" in str(e.value) or "output" in str(e.value) or "input" in str(e.value)


# ----------------------------------------------------------------------------------------
# torch export
# ----------------------------------------------------------------------------------------

def test_export_torch(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 4 * 4, 3))
    x = torch.randn(5, 1, 8, 8)
    p = tmp_path / "t.onnx"
    bo.export_torch(model, p, x)
    assert sorted(os.listdir(tmp_path)) == ["t.onnx"]
    with torch.no_grad():
        want = model(torch.randn(7, 1, 8, 8) * 0 + x[:1]).numpy()
    got = ort_run(p, np.repeat(x[:1].numpy(), 7, axis=0))  # dynamic batch
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert model.training  # the mode is restored


@pytest.mark.parametrize("which", ["mlp_binary_input", "mlp_real_input", "convnet_same_pad1"])
def test_torch_exported_binary_models_load(which, tmp_path):
    """torch.onnx graphs of this package's nn models (NCHW, Flatten in CHW order, Where
    from torch.where(x >= 0, ...), Shape/ConstantOfShape, BN after the pool) load into the
    same network as BinaryNetwork.from_torch."""
    torch = pytest.importorskip("torch")
    from bnn_toroid import nn as bnn

    torch.manual_seed(0)
    if which == "mlp_binary_input":
        model, shape = bnn.BinaryMLP([20, 16, 8, 5], binarize_input=True), (20,)
    elif which == "mlp_real_input":
        model, shape = bnn.BinaryMLP([20, 16, 5]), (20,)
    else:
        model = bnn.BinaryConvNet((2, 12, 12), 4, channels=(5, 7), dense=(9,), kernel_size=3,
                                  padding="same", pad_value=1.0)
        shape = (2, 12, 12)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.weight.data.uniform_(-2, 2)  # negative gammas: flipped rows, min-pools
            m.bias.data.normal_()
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 3)
    model.eval()
    x = torch.randn(100, *shape)
    x[:10] = torch.round(x[:10])
    p = tmp_path / "torch.onnx"
    bo.export_torch(model, p, x)
    net = bo.load(p)
    with torch.no_grad():
        want = model(x).numpy()
    got = net.predict(x.numpy())
    np.testing.assert_array_equal(got.argmax(1), want.argmax(1))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    frozen = BinaryNetwork.from_torch(model)
    assert frozen.same_architecture(net)
    np.testing.assert_array_equal(frozen.predict(x.numpy()), got)
    if which == "convnet_same_pad1":
        assert net.input_layout == "NCHW"
        assert any(isinstance(l, MaxPool2d) and l.min_channels is not None
                   and l.min_channels.any() for l in net.layers)


def test_gemm_and_flatten_graph(tmp_path):
    rng = np.random.default_rng(24)
    g = G()
    x = g.op("Flatten", [g.ste_sign("x")], axis=1)
    x = g.op("Gemm", [x, g.c(pm1(rng, (5, 12))), g.c(rng.normal(size=5))], transB=1,
             alpha=0.5, beta=2.0)
    x = g.ste_sign(x)
    x = g.op("Gemm", [x, g.c(pm1(rng, (5, 3)) * 0.25)])
    m = g.model(["N", 3, 4], x)
    p = _write(tmp_path, m)
    net = bo.load(p)
    assert net.input_layout == "flat" and net.input_shape == (3, 4)
    xs = rng.integers(-2, 3, size=(40, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(net.predict(xs), ort_run(m, xs), rtol=1e-6, atol=1e-6)


hyp = pytest.importorskip("hypothesis")
st = hyp.strategies


@st.composite
def conv_nets(draw):
    """Small random conv networks: kernels 1-3 (non-square too), strides 1-2 per axis,
    'valid'/'same' with pad 0/1, odd channel counts, optional (min/max) pools."""
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    H, W, C = draw(st.integers(3, 9)), draw(st.integers(3, 9)), draw(st.sampled_from([1, 2, 3]))
    binarize = draw(st.booleans())
    layers, h, w, c = [], H, W, C
    for i in range(draw(st.integers(1, 3))):
        kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        sy, sx = draw(st.integers(1, 2)), draw(st.integers(1, 2))
        pad = draw(st.sampled_from(["valid", "same"]))
        if pad == "valid" and (kh > h or kw > w):
            pad = "same"
        f = draw(st.sampled_from([1, 3, 5]))
        real = i == 0 and not binarize
        thr = (rng.integers(-4, 5, f) + 0.5) if real else ithr(rng, f, kh * kw * c)
        pv = draw(st.sampled_from([0, 1])) if not real else draw(st.sampled_from([0.0, 1.0, -0.5]))
        layers.append(Conv2d(pm1(rng, (f, kh, kw, c)), thr, stride=(sy, sx), padding=pad,
                             pad_value=pv))
        if pad == "same":
            h, w = -(-h // sy), -(-w // sx)
        else:
            h, w = (h - kh) // sy + 1, (w - kw) // sx + 1
        c = f
        if h >= 2 and w >= 2 and draw(st.booleans()):
            k = 2
            s = draw(st.integers(1, 2))
            mn = rng.random(f) < 0.5 if draw(st.booleans()) else None
            layers.append(MaxPool2d(k, s, min_channels=mn))
            h, w = (h - k) // s + 1, (w - k) // s + 1
    layers.append(out_dense(rng, 3, h * w * c, affine=draw(st.booleans())))
    layout = draw(st.sampled_from(["NHWC", "NCHW"]))
    shape = (H, W, C) if layout == "NHWC" else (C, H, W)
    scale = None if binarize or not draw(st.booleans()) else 2.0 ** rng.integers(-1, 2, C)
    return BinaryNetwork(layers, shape, layout, binarize_input=binarize, input_scale=scale), seed


@hyp.settings(max_examples=40, deadline=None,
              suppress_health_check=[hyp.HealthCheck.function_scoped_fixture])
@hyp.given(net_seed=conv_nets())
def test_round_trip_random_conv_architectures(net_seed, tmp_path):
    net, seed = net_seed
    rng = np.random.default_rng(seed + 1)
    x = binary_inputs(rng, net, 16) if net.binarize_input else int_inputs(rng, net, 16)
    round_trip(net, x, tmp_path)
