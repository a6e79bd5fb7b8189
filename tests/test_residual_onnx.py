"""Residual binary networks through ONNX: larq-made fixtures (tests/data/larq_residual,
made by real larq 0.14 + tf2onnx, see its README) import and reproduce larq's logits;
exports run in onnxruntime with the same outputs and load back to the same network;
unrecognised graphs are refused with the node named."""
import pathlib

import numpy as np
import pytest

from hypothesis import HealthCheck, given, settings, strategies as st
from residual_nets import build
from resgen import random_residual

import bnn_toroid as bt
import bnn_toroid.onnx as bo
from bnn_toroid.network import ResidualBinaryNetwork
from bnn_toroid.network.residual_ops import Residual

onnx = pytest.importorskip("onnx")
DATA = pathlib.Path(__file__).parent / "data" / "larq_residual"


@pytest.mark.parametrize("name", ["bireal_small", "quicknet_small"])
def test_larq_fixture_imports_and_matches_larq(name):
    net = bo.load(DATA / f"{name}.onnx")
    assert isinstance(net, ResidualBinaryNetwork)
    assert net.input_layout == "NHWC" and net.input_shape == (32, 32, 3)
    ref = np.load(DATA / f"{name}.npz")
    got = net.logits(ref["x"])
    assert np.abs(got - ref["logits"]).max() <= 1e-4
    np.testing.assert_array_equal(got.argmax(1), ref["logits"].argmax(1))
    # the binary convolutions are recognised as binary: 6 per network (2 per stage)
    assert len(net.binary_locations()) == 6
    kernels = [k for k in ref.files if k.startswith("w/quant_conv2d") and k.endswith("/0")]
    assert len(kernels) == 6
    for w in net.binary_weights():
        assert set(np.unique(w)) <= {-1, 1}
    blocks = [op for op in net.ops if isinstance(op, Residual)]
    assert len(blocks) == 6
    convs = [net.op_at(loc) for loc in net.binary_locations()]
    if name == "quicknet_small":  # pad_values=1, ste_sign kernels (±1)
        assert all(c.pad_value == 1 and c.scale is None for c in convs)
    else:  # pad_values=0, magnitude_aware_sign kernels (±α, BN folded by tf2onnx)
        assert all(c.pad_value == 0 and c.scale is not None for c in convs)


@pytest.mark.parametrize("name", ["bireal_small", "quicknet_small"])
def test_larq_fixture_signs_match_larq_kernels(name):
    """The imported ±1 filters are larq's sign(kernel), with a whole filter flipped where
    tf2onnx folded a negative BN gamma into it (docs: the README of the fixtures)."""
    net = bo.load(DATA / f"{name}.onnx")
    ref = np.load(DATA / f"{name}.npz")
    names = sorted({k.split("/")[1] for k in ref.files if k.startswith("w/quant_conv2d")},
                   key=lambda s: int(s.rsplit("_", 1)[1]) if "_" in s[len("quant_conv2d"):] else 0)
    for w, layer in zip(net.binary_weights(), names):
        k = ref[f"w/{layer}/0"]  # HWIO
        s = np.where(k >= 0, 1, -1).transpose(3, 0, 1, 2)
        agree = (w == s).reshape(w.shape[0], -1)
        assert np.all(agree.all(1) | (~agree).all(1))  # each filter: same or all flipped


def _export_check(net, tmp_path, rng):
    ort = pytest.importorskip("onnxruntime")
    p = tmp_path / "r.onnx"
    bo.export(net, p)
    x = rng.normal(size=(5,) + net.input_shape).astype(np.float32)
    want = net.logits(x)
    got = ort.InferenceSession(str(p)).run(None, {"x": x})[0]
    tol = 1e-5 * (1 + np.abs(want).max())
    assert np.abs(got - want).max() <= tol
    np.testing.assert_array_equal(got.argmax(1), want.argmax(1))
    back = bo.load(p)
    assert [type(o).__name__ for o in back.ops] == [type(o).__name__ for o in net.ops]
    for a, b in zip(back.binary_weights(), net.binary_weights()):
        np.testing.assert_array_equal(a, b)
    for la, lb in zip(back.binary_locations(), net.binary_locations()):
        oa, ob = back.op_at(la), net.op_at(lb)
        assert oa.pad_value == ob.pad_value and oa.stride == ob.stride
    assert np.abs(back.logits(x) - want).max() <= tol
    return p


@pytest.mark.parametrize("quick", [False, True])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_export_runs_in_onnxruntime_and_loads_back(tmp_path, quick, layout):
    rng = np.random.default_rng(7)
    net = random_residual(rng, c=65, quick=quick, pad_value=int(quick), layout=layout)
    _export_check(net, tmp_path, rng)


def test_export_writes_larq_numerics(tmp_path):
    """sign(0) = +1 in the exported graph: an all-zero stream gives every binary input +1."""
    rng = np.random.default_rng(2)
    net = random_residual(rng, c=4)
    p = _export_check(net, tmp_path, rng)
    m = onnx.load(p)
    ops = [n.op_type for n in m.graph.node]
    assert "Sign" not in ops and ops.count("Where") == len(net.binary_locations())
    ort = pytest.importorskip("onnxruntime")
    x = np.zeros((2,) + net.input_shape, np.float32)
    got = ort.InferenceSession(str(p)).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, net.logits(x), rtol=1e-5, atol=1e-5)


def test_larq_fixture_exports_back(tmp_path):
    rng = np.random.default_rng(0)
    net = bo.load(DATA / "quicknet_small.onnx")
    _export_check(net, tmp_path, rng)


def _mutated(name, edit):
    m = onnx.load(DATA / f"{name}.onnx")
    edit(m)
    return m


def test_unrecognised_graphs_name_the_node():
    def non_binary_kernel(m):
        conv = next(n for n in m.graph.node if n.name.endswith("quant_conv2d/QuantConv2D"))
        init = next(t for t in m.graph.initializer if t.name == conv.input[1])
        w = onnx.numpy_helper.to_array(init).copy()
        w[0, 0, 0, 0] = 0.5
        init.CopyFrom(onnx.numpy_helper.from_array(w, init.name))
    with pytest.raises(bo.OnnxImportError, match=r"QuantConv2D.*filter 0 is not ±s"):
        bo.load(_mutated("quicknet_small", non_binary_kernel))

    def bare_sign(m):  # drop the "+ 0.1" of the first quantiser: a bare ONNX Sign
        nodes = list(m.graph.node)
        add = next(n for n in nodes if n.name.endswith("quant_conv2d/ste_sign_1/add"))
        sign2 = next(n for n in nodes if n.input and n.input[0] == add.output[0])
        sign2.input[0] = add.input[0]
        m.graph.node.remove(add)
    with pytest.raises(bo.OnnxImportError, match="Sign"):
        bo.load(_mutated("quicknet_small", bare_sign))

    def unsupported(m):
        relu = next(n for n in m.graph.node if n.op_type == "Relu")
        relu.op_type = "Elu"
    with pytest.raises(bo.OnnxImportError, match=r"op Elu"):
        bo.load(_mutated("quicknet_small", unsupported))


def test_bireal_fixture_saves_and_loads(tmp_path):
    net = bo.load(DATA / "bireal_small.onnx")
    net.save(tmp_path / "b.npz")
    back = bt.load(tmp_path / "b.npz")
    x = np.load(DATA / "bireal_small.npz")["x"][:8]
    np.testing.assert_array_equal(back.logits(x), net.logits(x))


@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), c=st.sampled_from([1, 3, 8, 65]), blocks=st.integers(0, 2),
       relu=st.booleans(), pad_value=st.sampled_from([0, 1]), scale=st.booleans(),
       down=st.booleans(), prelu=st.booleans(), maxpool=st.booleans(),
       depthwise=st.booleans(), real_branch=st.booleans())
def test_export_and_load_back_on_random_architectures(tmp_path, seed, c, blocks, relu, pad_value,
                                                      scale, down, prelu, maxpool, depthwise,
                                                      real_branch):
    # every op type and option the exporter and importer know, in random combinations
    # (derandomized: ORT's float32 stream against ours in float64 is held to a tolerance,
    # and a value within rounding of 0 would flip a sign, so the examples are fixed)
    rng = np.random.default_rng(seed)
    net = build(rng, c=c, blocks=blocks, relu=relu, pad_value=pad_value, scale=scale, down=down,
                prelu=prelu, maxpool=maxpool, depthwise=depthwise, real_branch=real_branch)
    _export_check(net, tmp_path, rng)
