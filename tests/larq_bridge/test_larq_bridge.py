"""bnn_toroid.larq against real larq 0.14 + tf2onnx 1.16.1 (run in the larq venv).

- to_larq(net) computes net's logits in Keras;
- network -> to_larq -> tf2onnx -> bnn_toroid.onnx.load gives the network back;
- the shared fixtures' larq models, rebuilt here from their JSON and weights, reproduce
  the recorded logits, and from_larq(model) reproduces them too;
- from_larq on larq models with random BatchNorm statistics, negative gammas, a pool
  before the BN, pad_values=1 and stride 2.
"""
import json

import numpy as np
import pytest

lq = pytest.importorskip("larq")
tf = pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")

from bnn_toroid import larq as bl  # noqa: E402
from bnn_toroid import onnx as bo  # noqa: E402
from bnn_toroid.network import Conv2d, Dense, MaxPool2d  # noqa: E402
from test_onnx import (FIXTURE_NAMES, binary_inputs, conv_binary, conv_real,  # noqa: E402
                       fixtures_dir, int_inputs, mlp_binary, mlp_real, ref_predict)

assert bl._legacy_keras(tf), "TF_USE_LEGACY_KERAS=1 was not in effect: tf.keras is Keras 3"

NETS = {
    "mlp_binary": lambda r: mlp_binary(r),
    "mlp_binary_int_logits": lambda r: mlp_binary(r, affine=False),
    "mlp_real_scaled": mlp_real,
    "conv_binary_min_pool": lambda r: conv_binary(r, "NHWC", 1, 0, "mixed"),
    "conv_binary_nchw_all_min": lambda r: conv_binary(r, "NCHW", 0, 1, "all"),
    "conv_real_pad1": lambda r: conv_real(r, "NHWC", 1.0, scale=False),
    "conv_real_scaled_per_channel_pad": lambda r: conv_real(r, "NCHW",
                                                            np.array([0.5, -1.25, 2.0])),
}


def _inputs(rng, net):
    return binary_inputs(rng, net) if net.binarize_input else int_inputs(rng, net)


def _assert_same_network(back, net):
    """Same layers; thresholds and output affine up to Keras' float32."""
    assert back.same_architecture(net), f"{back.summary()}\n!=\n{net.summary()}"
    assert back.input_layout == net.input_layout and back.binarize_input == net.binarize_input
    if net.input_scale is None:
        assert back.input_scale is None
    else:
        np.testing.assert_allclose(back.input_scale, net.input_scale, rtol=1e-6)
    for a, b in zip(net.layers, back.layers):
        if isinstance(a, MaxPool2d):
            ma = np.zeros(0, bool) if a.min_channels is None else a.min_channels
            mb = np.zeros(0, bool) if b.min_channels is None else b.min_channels
            assert ma.any() == mb.any() and (not ma.any() or np.array_equal(ma, mb))
            continue
        np.testing.assert_array_equal(a.weights, b.weights)
        if a.threshold is not None:
            if a.threshold.dtype == np.int64:
                np.testing.assert_array_equal(a.threshold, b.threshold)
            else:
                np.testing.assert_allclose(a.threshold, b.threshold, rtol=1e-6)
        else:
            np.testing.assert_allclose(a.out_scale, b.out_scale, rtol=1e-6)
            np.testing.assert_allclose(a.out_bias, b.out_bias, rtol=1e-6, atol=1e-6)
        if isinstance(a, Conv2d):
            np.testing.assert_allclose(np.asarray(a.pad_value, float) * np.ones(1),
                                       np.asarray(b.pad_value, float) * np.ones(1), rtol=1e-6)


@pytest.mark.parametrize("name", list(NETS))
def test_to_larq_then_tf2onnx_then_load(name, tmp_path):
    rng = np.random.default_rng(20)
    net = NETS[name](rng)
    x = _inputs(rng, net)
    want = net.predict(x)
    model = bl.to_larq(net)
    assert any(isinstance(l, (lq.layers.QuantDense, lq.layers.QuantConv2D)) for l in model.layers)
    got = model.predict(x, verbose=0)
    np.testing.assert_array_equal(got.argmax(1), want.argmax(1))
    if name.endswith("int_logits"):
        np.testing.assert_array_equal(got, want)  # integers: exact in float32
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    p = tmp_path / "from_keras.onnx"
    back = bl.from_larq(model, path=p)
    assert p.is_file()
    _assert_same_network(back, net)
    pred = back.predict(x)
    np.testing.assert_array_equal(pred.argmax(1), want.argmax(1))
    if name.endswith("int_logits"):
        np.testing.assert_array_equal(pred, want)
    else:
        np.testing.assert_allclose(pred, want, rtol=1e-5, atol=1e-5)
    assert bo.load(p).equals(back)


def test_to_larq_uses_larq_layers_and_quantizers():
    net = conv_binary(np.random.default_rng(21), "NHWC", 1, 0, "mixed")
    model = bl.to_larq(net)
    qconv = [l for l in model.layers if isinstance(l, lq.layers.QuantConv2D)]
    assert len(qconv) == 3
    assert qconv[0].pad_values == 1.0 and qconv[1].pad_values == 0.0
    for l in qconv:
        assert isinstance(l.input_quantizer, lq.quantizers.SteSign)
        assert isinstance(l.kernel_quantizer, lq.quantizers.SteSign)
        assert isinstance(l.kernel_constraint, lq.constraints.WeightClip)
    assert any(isinstance(l, tf.keras.layers.MaxPooling2D) for l in model.layers)


# ----------------------------------------------------------------------------------------
# the shared fixtures, rebuilt in larq
# ----------------------------------------------------------------------------------------

def _quantizer(name):
    return None if name is None else {"SteSign": "ste_sign"}[name]


def build_fixture_model(name):
    """The fixture's larq model from NAME.json and the weights in NAME.npz."""
    d = fixtures_dir()
    spec = json.loads((d / f"{name}.json").read_text())
    data = np.load(d / f"{name}.npz")
    K = tf.keras
    inp = K.Input(shape=tuple(spec["input_shape"]))
    x, named = inp, []
    for L in spec["layers"]:
        c = L["class"]
        if c == "QuantDense":
            layer = lq.layers.QuantDense(L["units"], use_bias=L["use_bias"],
                                         input_quantizer=_quantizer(L["input_quantizer"]),
                                         kernel_quantizer=_quantizer(L["kernel_quantizer"]),
                                         kernel_constraint="weight_clip", name=L["name"])
        elif c == "QuantConv2D":
            layer = lq.layers.QuantConv2D(L["filters"], tuple(L["kernel_size"]),
                                          strides=tuple(L["strides"]), padding=L["padding"],
                                          pad_values=L["pad_values"], use_bias=L["use_bias"],
                                          input_quantizer=_quantizer(L["input_quantizer"]),
                                          kernel_quantizer=_quantizer(L["kernel_quantizer"]),
                                          kernel_constraint="weight_clip", name=L["name"])
        elif c == "BatchNormalization":
            layer = K.layers.BatchNormalization(scale=L["scale"], center=L["center"],
                                                epsilon=L["epsilon"], name=L["name"])
        elif c == "MaxPooling2D":
            layer = K.layers.MaxPooling2D(tuple(L["pool_size"]), strides=tuple(L["strides"]),
                                          padding=L["padding"], name=L["name"])
        elif c == "Flatten":
            layer = K.layers.Flatten(name=L["name"])
        else:
            raise AssertionError(f"fixture layer class {c}")
        x = layer(x)
        named.append(layer)
    model = K.Model(inp, x)
    for layer in named:
        n = len(layer.get_weights())
        if n:
            layer.set_weights([data[f"w/{layer.name}/{i}"] for i in range(n)])
    return model, data


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_models_rebuilt_in_larq(name, tmp_path):
    model, data = build_fixture_model(name)
    x, logits = data["x"], data["logits"]
    # this venv's larq reproduces the recorded logits
    np.testing.assert_allclose(model.predict(x, verbose=0), logits, rtol=0, atol=1e-5)
    net = bl.from_larq(model)
    got = net.predict(x)
    np.testing.assert_array_equal(got.argmax(1), logits.argmax(1))
    assert np.max(np.abs(got - logits)) <= 1e-4
    # and the fixture file itself gives the same network
    ref = bo.load(fixtures_dir() / f"{name}.onnx")
    np.testing.assert_array_equal(ref.predict(x).argmax(1), got.argmax(1))
    # out again: our network as a larq model gives larq's logits
    back = bl.to_larq(net).predict(x, verbose=0)
    np.testing.assert_array_equal(back.argmax(1), logits.argmax(1))
    assert np.max(np.abs(back - logits)) <= 1e-4


# ----------------------------------------------------------------------------------------
# larq models with random statistics
# ----------------------------------------------------------------------------------------

def _randomise_bn(model, rng):
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            ws = layer.get_weights()
            c = ws[0].shape[0]
            new = []
            for w, kind in zip(ws, (["gamma"] if layer.scale else []) +
                               (["beta"] if layer.center else []) + ["mean", "var"]):
                if kind == "gamma":
                    new.append(rng.uniform(0.3, 2, c) * np.where(rng.random(c) < 0.4, -1, 1))
                elif kind == "beta":
                    new.append(rng.normal(size=c))
                elif kind == "mean":
                    new.append(rng.normal(size=c) * 4)
                else:
                    new.append(rng.uniform(0.5, 9, c))
            layer.set_weights([np.asarray(v, np.float32) for v in new])
        elif isinstance(layer, (lq.layers.QuantDense, lq.layers.QuantConv2D)):
            ws = layer.get_weights()
            ws[0] = np.where(rng.random(ws[0].shape) < 0.5, -1.0, 1.0).astype(np.float32)
            if len(ws) > 1:
                ws[1] = rng.normal(size=ws[1].shape).astype(np.float32)
            layer.set_weights(ws)


@pytest.mark.parametrize("pool_before_bn", [True, False])
def test_from_larq_random_conv_model(pool_before_bn):
    rng = np.random.default_rng(22)
    K = tf.keras
    q = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
             kernel_constraint="weight_clip")
    inp = K.Input(shape=(10, 10, 2))
    x = lq.layers.QuantConv2D(5, 3, padding="same", pad_values=1.0, use_bias=False,
                              kernel_quantizer="ste_sign", kernel_constraint="weight_clip")(inp)
    x = K.layers.BatchNormalization(scale=True)(x)
    x = lq.layers.QuantConv2D(7, 3, padding="same", pad_values=1.0, use_bias=True, **q)(x)
    if pool_before_bn:
        x = K.layers.BatchNormalization(scale=True)(K.layers.MaxPooling2D(2)(x))
    else:
        x = K.layers.MaxPooling2D(2)(K.layers.BatchNormalization(scale=True)(x))
    x = lq.layers.QuantConv2D(3, 3, strides=2, padding="same", pad_values=0.0, use_bias=False,
                              **q)(x)
    x = K.layers.BatchNormalization(scale=True)(x)
    x = K.layers.Flatten()(x)
    x = lq.layers.QuantDense(4, use_bias=True, **q)(x)
    x = K.layers.BatchNormalization(scale=True)(x)
    x = K.layers.Activation("softmax")(x)
    model = K.Model(inp, x)
    _randomise_bn(model, rng)
    xs = rng.normal(size=(300, 10, 10, 2)).astype(np.float32)
    xs[:30] = np.round(xs[:30])
    logits_model = K.Model(inp, model.layers[-2].output)
    want = logits_model.predict(xs, verbose=0)
    with pytest.warns(UserWarning, match="Softmax"):
        net = bl.from_larq(model)
    got = net.predict(xs)
    np.testing.assert_array_equal(got.argmax(1), want.argmax(1))
    assert np.max(np.abs(got - want)) <= 1e-4
    np.testing.assert_allclose(ref_predict(net, xs), got, atol=1e-9)
    pools = [l for l in net.layers if isinstance(l, MaxPool2d)]
    flips = pools[0].min_channels
    if pool_before_bn:
        gamma = [l for l in model.layers if isinstance(l, K.layers.BatchNormalization)][1]
        np.testing.assert_array_equal(flips, gamma.get_weights()[0] < 0)
    else:
        assert flips is None or not flips.any()


def test_from_larq_binary_mlp_with_zero_inputs():
    """sign(0) = +1 through larq, tf2onnx and the importer (inputs with exact zeros)."""
    rng = np.random.default_rng(23)
    K = tf.keras
    q = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
             kernel_constraint="weight_clip", use_bias=False)
    inp = K.Input(shape=(16,))
    x = K.layers.BatchNormalization(scale=False)(lq.layers.QuantDense(9, **q)(inp))
    x = lq.layers.QuantDense(3, **q)(x)
    model = K.Model(inp, x)
    _randomise_bn(model, rng)
    xs = rng.integers(-1, 2, size=(200, 16)).astype(np.float32)  # a third are zeros
    want = model.predict(xs, verbose=0)
    net = bl.from_larq(model)
    np.testing.assert_array_equal(net.predict(xs), want)  # integer logits: exact
    assert net.binarize_input and isinstance(net.layers[-1], Dense)
