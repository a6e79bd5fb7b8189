"""Frozen networks equal their torch models exactly; files round-trip and refuse damage."""
import json
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

import bnn_toroid as bt
import bnn_toroid.nn as bnn
from bnn_toroid import kernels as K
from bnn_toroid.network import (BinaryNetwork, Conv2d, Dense, NetworkError, NetworkFileError, NetworkStack,
                                load)


def randomize_bn(model, seed, negative=True):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_((torch.rand(n, generator=g) - 0.5) * 8)
            m.running_var.copy_(torch.rand(n, generator=g) * 20 + 0.5)
            lo = -1.0 if negative else 0.1
            m.weight.data.copy_(torch.rand(n, generator=g) * (1 - lo) + lo)
            m.bias.data.copy_((torch.rand(n, generator=g) - 0.5) * 2)
    return model.eval()


def torch_trace(model, x):
    """Pre-activations of binary layers (NHWC for conv) and ±1 outputs of Sign modules."""
    pre, signs = [], []
    hooks = []
    for m in model.modules():
        if isinstance(m, (bnn.BinaryLinear, bnn.BinaryConv2d)):
            hooks.append(m.register_forward_hook(lambda _m, _i, o: pre.append(o)))
        if isinstance(m, bnn.Sign):
            hooks.append(m.register_forward_hook(lambda _m, _i, o: signs.append(o)))
    with torch.no_grad():
        logits = model(torch.as_tensor(x, dtype=torch.float32)).numpy()
    for h in hooks:
        h.remove()
    nhwc = lambda t: (t.permute(0, 2, 3, 1) if t.dim() == 4 else t).numpy()  # noqa: E731
    return logits, [nhwc(t) for t in pre], [nhwc(t) for t in signs]


def orientation(net, model):
    """Per weight layer, +1/-1 per unit: whether the frozen row equals torch's sign(W) row
    or its negation (a row is flipped to fold a negative BatchNorm scale)."""
    out = []
    torch_layers = [m for m in model.modules() if isinstance(m, (bnn.BinaryLinear, bnn.BinaryConv2d))]
    for i, t in zip(net.weight_layers(), torch_layers):
        w = np.where(t.weight.detach().numpy() >= 0, 1, -1)
        w = w.transpose(0, 2, 3, 1) if w.ndim == 4 else w
        geom = net.layer_input_shape(i)
        if w.ndim == 2 and len(geom) == 3:  # dense after conv: torch flattens CHW, we use HWC
            h_, w_, c_ = geom
            w = w.reshape(len(w), c_, h_, w_).transpose(0, 2, 3, 1)
        ours = net.layers[i].weights.reshape(len(w), -1)
        w = w.reshape(len(w), -1)
        same = (ours == w).all(axis=1)
        assert (same | (ours == -w).all(axis=1)).all()
        out.append(np.where(same, 1, -1))
    return out


@settings(max_examples=12, deadline=None)
@given(st.lists(st.integers(1, 70), min_size=1, max_size=3), st.integers(1, 130),
       st.booleans(), st.booleans(), st.integers(0, 10_000))
def test_mlp_equals_torch_exactly(hidden, n_in, binarize, batchnorm, seed):
    torch.manual_seed(seed)
    # without the output Scale the logits are integers, so equality is exact
    model = nn.Sequential(*list(bnn.BinaryMLP([n_in, *hidden, 7], batchnorm=batchnorm,
                                              binarize_input=binarize))[:-1])
    randomize_bn(model, seed)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(33, n_in)).astype(np.uint8) if not binarize else \
        rng.normal(size=(33, n_in)).astype(np.float32)
    net = BinaryNetwork.from_torch(model)
    logits, pre, signs = torch_trace(model, x)
    assert np.array_equal(net.predict(x), logits.astype(np.float64))  # integer logits, exactly
    for ours, theirs, o in zip(net.preactivations(x), pre, orientation(net, model)):
        assert np.array_equal(ours, theirs.astype(np.float64) * o)
    hidden_out = net.hidden_outputs(x)
    theirs = signs[1:] if binarize else signs
    for ours, t in zip(hidden_out, theirs):
        assert np.array_equal(ours, t)


@settings(max_examples=10, deadline=None)
@given(st.integers(1, 3), st.sampled_from([1, 3]), st.sampled_from([3, 5, 17]), st.sampled_from([2, 64, 65]),
       st.sampled_from(["valid", "same"]), st.sampled_from([0.0, 1.0]), st.sampled_from([1, 2]),
       st.booleans(), st.integers(0, 10_000))
def test_conv_net_equals_torch_exactly(n, c_in, c1, c2, padding, pad_value, stride, pool, seed):
    torch.manual_seed(seed)
    layers = [bnn.BinaryConv2d(c_in, c1, 3, stride=stride, padding=padding, pad_value=pad_value)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    layers += [nn.BatchNorm2d(c1), bnn.Sign(),
               bnn.BinaryConv2d(c1, c2, 3, stride=1, padding=padding, pad_value=pad_value),
               nn.BatchNorm2d(c2), bnn.Sign(), nn.Flatten()]
    size = 15  # big enough for stride 2, a pool and a valid 3×3 conv
    x = np.random.default_rng(seed).integers(0, 256, size=(n, c_in, size, size)).astype(np.uint8)
    with torch.no_grad():
        flat = nn.Sequential(*layers).eval()(torch.zeros(1, c_in, size, size)).shape[1]
    model = randomize_bn(nn.Sequential(*layers, bnn.BinaryLinear(flat, 10)), seed)
    net = BinaryNetwork.from_torch(model, input_shape=(c_in, size, size))
    logits, pre, _ = torch_trace(model, x)
    assert np.array_equal(net.predict(x), logits.astype(np.float64))
    for ours, theirs, o in zip(net.preactivations(x), pre, orientation(net, model)):
        assert np.array_equal(ours, theirs.astype(np.float64) * o)


def test_paper_convnet_with_normalisation_and_scale():
    torch.manual_seed(3)
    model = randomize_bn(bnn.BinaryConvNet((1, 28, 28), input_norm=(33.3, 78.6)), 3)
    x = np.random.default_rng(3).integers(0, 256, size=(40, 1, 28, 28)).astype(np.uint8)
    net = BinaryNetwork.from_torch(model)
    logits, _, signs = torch_trace(model, x)
    np.testing.assert_allclose(net.predict(x), logits, rtol=1e-6, atol=1e-6)
    assert np.array_equal(net.predict(x).argmax(1), logits.argmax(1))
    ours = net.hidden_outputs(x)
    assert np.array_equal(ours[-1], signs[-1])  # the last hidden layer's ±1 output


def test_digits_real_data_matches_torch():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = d.images.astype(np.uint8).reshape(-1, 64)
    torch.manual_seed(0)
    model = randomize_bn(bnn.BinaryMLP([64, 256, 256, 10], input_norm=(x.mean(), x.std())), 0)
    net = BinaryNetwork.from_torch(model)
    logits, _, signs = torch_trace(model, x)
    np.testing.assert_allclose(net.predict(x), logits, rtol=1e-6, atol=1e-6)
    for ours, theirs in zip(net.hidden_outputs(x), signs):
        assert np.array_equal(ours, theirs)
    assert net.error(x, d.target) == pytest.approx(float((logits.argmax(1) != d.target).mean()))


def test_negative_zero_input_is_plus_one():
    net = BinaryNetwork([Dense(np.ones((1, 2), np.int8))], (2,), binarize_input=True)
    assert np.array_equal(net.predict(np.array([[-0.0, 0.0], [-1.0, 0.0]])), [[2.0], [0.0]])


def test_stack_evaluates_like_each_network():
    torch.manual_seed(1)
    nets = [BinaryNetwork.from_torch(randomize_bn(bnn.BinaryMLP([20, 30, 5]), s)) for s in range(3)]
    x = np.random.default_rng(0).integers(0, 5, size=(17, 20)).astype(np.uint8)
    y = np.random.default_rng(1).integers(0, 5, size=17)
    stack = NetworkStack.from_networks(nets)
    out = stack.predict(x, batch_size=5)
    for i, n in enumerate(nets):
        assert np.array_equal(out[i], n.predict(x))
    assert np.array_equal(stack.errors(x, y, batch_size=4), [n.error(x, y) for n in nets])


def test_save_load_roundtrip(tmp_path):
    torch.manual_seed(2)
    for model, shape in [(randomize_bn(bnn.BinaryMLP([30, 40, 6], input_norm=(1.0, 2.0)), 0), None),
                         (randomize_bn(bnn.BinaryConvNet((3, 16, 16), channels=(5, 7), dense=(9,),
                                                         kernel_size=3, padding="same", pad_value=1,
                                                         input_norm=([1, 2, 3], [2, 3, 4])), 1), None)]:
        net = BinaryNetwork.from_torch(model, shape)
        path = bt.save(net, tmp_path / "net.npz") if hasattr(bt, "save") else net.save(tmp_path / "net.npz")
        back = load(path)
        assert back.equals(net)
        x = np.random.default_rng(0).integers(0, 256, size=(4,) + net.input_shape).astype(np.uint8)
        assert np.array_equal(back.predict(x), net.predict(x))


def _saved(tmp_path):
    net = BinaryNetwork.from_torch(randomize_bn(bnn.BinaryMLP([10, 12, 3]), 0))
    return net.save(tmp_path / "n.npz")


def test_truncated_file_is_refused(tmp_path):
    p = _saved(tmp_path)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(NetworkFileError, match="truncated"):
        load(p)


def test_tampered_file_is_refused(tmp_path):
    p = _saved(tmp_path)
    with np.load(p) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["l0.threshold"] = arrays["l0.threshold"] + 1
    np.savez(p, **arrays)
    with pytest.raises(NetworkFileError, match="SHA-256"):
        load(p)


def test_newer_format_is_refused(tmp_path):
    p = _saved(tmp_path)
    with np.load(p) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["meta"].tobytes())
    meta["format_version"] = 99
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(p, **arrays)
    with pytest.raises(NetworkFileError, match="newer"):
        load(p)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(NetworkFileError, match="no such"):
        load(tmp_path / "absent.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(NetworkFileError, match="not a bnn_toroid"):
        load(tmp_path / "other.npz")
    assert zipfile.is_zipfile(_saved(tmp_path))


@pytest.mark.parametrize("make,match", [
    (lambda: Dense(np.array([[1, 0]])), r"\+1/-1"),
    (lambda: Dense(np.array([[1.0, 0.5]])), r"\+1/-1"),
    (lambda: BinaryNetwork([Dense(np.ones((2, 3)), threshold=[0, 0]), Dense(np.ones((1, 3)))], (3,),
                           binarize_input=True), "expects 3 inputs but receives 2"),
    (lambda: BinaryNetwork([Dense(np.ones((2, 3)), threshold=[0.5, 0]), Dense(np.ones((1, 2)))], (3,),
                           binarize_input=True), "must be integers"),
    (lambda: BinaryNetwork([Dense(np.ones((2, 3)))], (3,), input_layout="CHW"), "input_layout"),
    (lambda: BinaryNetwork([Dense(np.ones((2, 3)), threshold=[0, 0])], (3,)), "takes no threshold"),
    (lambda: Dense(np.ones((2, 3)), threshold=[np.nan, 0]), "NaN"),
])
def test_bad_networks_are_named(make, match):
    with pytest.raises(NetworkError, match=match):
        make()


def test_bad_inputs_are_named():
    net = BinaryNetwork([Dense(np.ones((2, 3), np.int8))], (3,))
    with pytest.raises(ValueError, match="NaN"):
        net.predict(np.array([[1.0, np.nan, 0.0]]))
    with pytest.raises(ValueError, match="shape"):
        net.predict(np.zeros((2, 4)))
    with pytest.raises(TypeError, match="dtype"):
        net.predict(np.array([["a", "b", "c"]]))
    with pytest.raises(ValueError, match="labels"):
        net.error(np.zeros((2, 3)), np.array([0, 5]))


def test_unsupported_torch_models_are_named():
    with pytest.raises(NetworkError, match="Tanh"):
        BinaryNetwork.from_torch(nn.Sequential(bnn.BinaryLinear(3, 3), nn.Tanh()).eval())
    with pytest.raises(NetworkError, match="training mode"):
        BinaryNetwork.from_torch(bnn.BinaryMLP([3, 4, 2]).train())
    with pytest.raises(NetworkError, match="nn.Module"):
        BinaryNetwork.from_torch("model")


def test_n_weights_and_summary():
    net = BinaryNetwork.from_torch(bnn.BinaryConvNet((1, 28, 28)).eval())
    assert net.n_weights == 20 * 25 + 50 * 20 * 25 + 800 * 500 + 500 * 10
    text = net.summary()
    assert "conv" in text and "maxpool" in text and "logits" in text


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 40), st.integers(1, 90), st.integers(1, 70), st.integers(2, 5),
       st.sampled_from(["uint8", "int16", "float64"]), st.integers(0, 2**32 - 1))
def test_stack_sharing_the_first_layer_equals_each_network(n, k, m, s, dtype, seed):
    """A stack whose networks differ from network 0 in a few first-layer weights (and in
    every threshold) shares the product x W0 and adds the flips: same logits as each
    network alone, bit for bit; float input takes the per-network product."""
    rng = np.random.default_rng(seed)
    pm1 = lambda *shape: np.where(rng.random(shape) < 0.5, -1, 1).astype(np.int8)  # noqa: E731
    w0, w1, w2 = pm1(m, k), pm1(9, m), pm1(3, 9)
    nets = []
    for i in range(s):
        w = w0.copy()
        w[rng.random(w.shape) < (0.05 if i else 0)] *= -1
        t0 = rng.integers(-40 * k, 40 * k, m) + (0.5 if dtype == "float64" else 0)
        nets.append(BinaryNetwork([Dense(w, t0), Dense(w1, rng.integers(-m, m + 1, 9)),
                                   Dense(w2, out_scale=rng.random(3))], (k,)))
    stack = NetworkStack.from_networks(nets)
    lo, hi = {"uint8": (0, 256), "int16": (-300, 300), "float64": (-50, 50)}[dtype]
    x = rng.integers(lo, hi, (n, k)).astype(dtype) + (rng.random((n, k)) if dtype == "float64" else 0)
    out = stack.predict(x, batch_size=max(1, n // 2))
    # the majority template needs at most the flips that network 0 as template would
    if sum(int((a.layers[0].weights != w0).sum()) for a in nets) <= m * k * s / 8:
        template, (ptr, _, _) = stack._first.shared_flips()
        votes = sum((a.layers[0].weights < 0).astype(int) for a in nets)
        assert np.array_equal(K.unpack_bits(template, k), np.where(2 * votes > s, -1, 1))
        assert ptr[-1] == sum(int((a.layers[0].weights != np.where(2 * votes > s, -1, 1)).sum()) for a in nets)
    for i, net in enumerate(nets):
        assert np.array_equal(out[i], net.predict(x))
        assert np.array_equal(net.hidden_outputs(x)[0], np.where(
            x.astype(np.float64) @ net.layers[0].weights.T.astype(np.float64) >= net.layers[0].threshold, 1, -1))


def test_stack_checks_its_parameters_once():
    """Wrong shapes, dtypes or set padding bits are named when the stack is built (the
    kernels do not check per call); thresholds given as floats become ceil(T) in int64."""
    rng = np.random.default_rng(5)
    pm1 = lambda *s: np.where(rng.random(s) < 0.5, -1, 1).astype(np.int8)  # noqa: E731
    net = BinaryNetwork([Dense(pm1(100, 20), rng.integers(-5, 5, 100)),
                         Dense(pm1(70, 100), rng.integers(-5, 5, 70)),
                         Dense(pm1(3, 70), out_scale=np.ones(3))], (20,))
    x = rng.integers(0, 256, (10, 20)).astype(np.uint8)
    good = net.packed_params()

    def edited(i, key, value):
        p = [dict(q) for q in good]
        p[i][key] = value
        return p
    with pytest.raises(NetworkError, match="layer 1 'T' must be int64 of shape"):
        NetworkStack(net, edited(1, "T", good[1]["T"][:, :50]))
    with pytest.raises(NetworkError, match="layer 1 'w' must be uint64"):
        NetworkStack(net, edited(1, "w", good[1]["w"][:, :, :1].copy()))
    with pytest.raises(NetworkError, match="layer 0 has packed weights with padding bits"):
        NetworkStack(net, edited(0, "w", good[0]["w"] | np.uint64(1 << 63)))
    with pytest.raises(NetworkError, match="needs parameters"):
        NetworkStack(net, edited(2, "T", good[1]["T"]))
    t = good[1]["T"] - 0.5  # h >= T - 0.5 iff h >= T for integer h
    stack = NetworkStack(net, edited(1, "T", t))
    assert stack.params[1]["T"].dtype == np.int64 and np.array_equal(stack.params[1]["T"], good[1]["T"])
    assert np.array_equal(stack.predict(x)[0], net.predict(x))


def test_copied_network_drops_its_evaluation_cache():
    """``__getstate__`` (used by copy and by pickling to worker processes) leaves out the
    float copies kept for evaluation."""
    import copy
    rng = np.random.default_rng(6)
    net = BinaryNetwork([Dense(np.where(rng.random((30, 40)) < 0.5, -1, 1), rng.integers(-9, 9, 30)),
                         Dense(np.ones((4, 30)))], (40,))
    x = rng.integers(0, 256, (5, 40)).astype(np.uint8)
    out = net.predict(x)
    back = copy.deepcopy(net)
    assert back._stack is None and np.array_equal(back.predict(x), out)


@pytest.mark.parametrize("layers", ["one", "three", "conv", "conv-channel-pads", "conv-real-pad"])
def test_pixel_inputs_agree_with_float_inputs(layers, monkeypatch):
    """uint8 (and in-range integer) samples take the 8-bit pixel kernel; the same values
    as float64 take BLAS. Logits, pre-activations and hidden outputs agree exactly, for a
    first layer that is hidden and one that is the output layer."""
    rng = np.random.default_rng(4)
    k, m = 131, 70
    w0 = np.where(rng.random((m, k)) < 0.5, -1, 1).astype(np.int8)
    shape = (k,)
    if layers.startswith("conv"):
        # a first conv's pad value is a pixel too, unless it is not an integer in [0, 255]
        pad = {"conv": 1.0, "conv-channel-pads": np.array([0.0, 7.0, 255.0]),
               "conv-real-pad": np.array([0.5, 1.0, 2.0])}[layers]
        shape = (9, 9, 3)
        wc = np.where(rng.random((70, 3, 3, 3)) < 0.5, -1, 1).astype(np.int8)
        net = BinaryNetwork([Conv2d(wc, rng.integers(-500, 500, 70) + 0.5, padding="same", pad_value=pad),
                             Dense(np.where(rng.random((5, 81 * 70)) < 0.5, -1, 1), out_scale=rng.random(5))],
                            shape, input_layout="NHWC")
    elif layers == "one":
        net = BinaryNetwork([Dense(w0, out_scale=rng.random(m))], (k,))
    else:
        net = BinaryNetwork([Dense(w0, rng.integers(-2000, 2000, m) + 0.5),
                             Dense(np.where(rng.random((9, m)) < 0.5, -1, 1), rng.integers(-m, m + 1, 9)),
                             Dense(np.where(rng.random((3, 9)) < 0.5, -1, 1), out_scale=rng.random(3))], (k,))
    x = rng.integers(0, 256, (23,) + shape).astype(np.uint8)
    calls = []
    real = K.pixel_stack_t
    monkeypatch.setattr(K, "pixel_stack_t", lambda *a: calls.append(1) or real(*a))
    for xs in (x, x.astype(np.int64)):
        assert np.array_equal(net.predict(xs), net.predict(x.astype(np.float64)))
        for a, b in zip(net.preactivations(xs), net.preactivations(x.astype(np.float64))):
            assert np.array_equal(a, b)
        for a, b in zip(net.hidden_outputs(xs), net.hidden_outputs(x.astype(np.float64))):
            assert np.array_equal(a, b)
    if layers == "conv-real-pad":
        assert not calls, "a real pad value must keep the float convolution"
        return
    assert calls, "uint8 input did not reach the pixel kernel"
    n_pixel = len(calls)
    net.predict(x.astype(np.int64) + 1)  # 256 is out of range: BLAS
    assert len(calls) == n_pixel


@pytest.mark.parametrize("first", K.forms.runnable("first"))
@pytest.mark.parametrize("hidden_form", K.forms.runnable("hidden"))
@settings(max_examples=12, deadline=None)
@given(st.lists(st.integers(1, 130), min_size=1, max_size=3), st.integers(1, 300),
       st.sampled_from([1, 2, 3, 40, 333]), st.integers(0, 2**32 - 1))
def test_an_mlp_on_pixels_takes_one_compiled_call(first, hidden_form, hidden, k, n, seed):
    """A single MLP on pixels runs as one compiled chain (kernels/chain.py), small
    batches on the calling thread, larger ones with the parallel kernels, in every form
    of its first layer and of its hidden layers that this host runs (kernels/forms.py):
    the same logits, bit for bit, as the layer-by-layer path."""
    from bnn_toroid.kernels import forms
    with forms.override(first=first, first_one=first, hidden=hidden_form):
        _check_mlp_chain(hidden, k, n, seed, first)


def _check_mlp_chain(hidden, k, n, seed, first):
    from bnn_toroid.network.core import _forward
    rng = np.random.default_rng(seed)
    sizes = [k, *hidden, 7]
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = np.where(rng.random((b, a)) < 0.5, -1, 1).astype(np.int8)
        if i == len(sizes) - 2:
            layers.append(Dense(w, out_scale=rng.normal(size=b), out_bias=rng.normal(size=b)))
        else:
            t = rng.integers(-128 * a, 128 * a, b) + (0.5 if i == 0 else 0)
            layers.append(Dense(w, t))
    net = BinaryNetwork(layers, (k,))
    x = rng.integers(0, 256, (n, k)).astype(np.uint8)
    stack = net._as_stack()
    out = net.predict(x)
    assert stack._chain is not None and stack._chain.ok and stack._chain.rows is not None
    assert set(stack._chain.panels) == {first}
    ref = _forward(stack.template, stack.params, x, False, stack._first, stack._conv_tiles)[0][0]
    assert np.array_equal(out, ref) and np.array_equal(stack._chain(x)[0], ref)
    assert np.array_equal(out, net.predict(x.astype(np.float64)))  # the BLAS path


def test_the_lookup_chain_splits_samples_into_groups():
    """On two threads or more the lookup form's chain takes groups of samples through
    every layer in one launch (kernels/chain.py ``_split_chain``); any group count (a
    multiple of the threads, at most one group per sample) gives the serial chain's
    logits, and so do the hidden layers as Harley–Seal tiles instead of nibble lookups."""
    from bnn_toroid.kernels import forms
    from bnn_toroid.kernels.chain import HIDDEN, pixel_dense_chain
    rng = np.random.default_rng(12)
    sizes = [300, 200, 130, 7]
    layers = [Dense(np.where(rng.random((b, a)) < 0.5, -1, 1), rng.integers(-40 * a, 40 * a, b) + (0.5 if i == 0 else 0))
              for i, (a, b) in enumerate(zip(sizes[:-2], sizes[1:-1]))]
    layers.append(Dense(np.where(rng.random((7, 130)) < 0.5, -1, 1), out_scale=rng.normal(size=7)))
    net = BinaryNetwork(layers, (300,))
    x = rng.integers(0, 256, (97, 300)).astype(np.uint8)
    with forms.override(hidden="nibbles"):
        net.predict(x[:1])
        ch = net._as_stack()._dense_chain()
    args = ch.args("lookup")
    pats, poff, thr, toff = args[-2]
    assert pats.size > 0 and args[-1] == HIDDEN["nibbles"]
    tiles = args[:-1] + (HIDDEN["tiles"],)
    for n in (1, 2, 5, 64, 97):
        want = pixel_dense_chain(x[:n], *args, 1)
        assert np.array_equal(pixel_dense_chain(x[:n], *tiles, 1), want), n
        for threads in (2, 3, 5):
            assert np.array_equal(pixel_dense_chain(x[:n], *args, threads), want), (n, threads)
            assert np.array_equal(pixel_dense_chain(x[:n], *tiles, threads), want), (n, threads)


def test_a_chain_built_without_nibble_patterns_gives_the_same_logits():
    """In the "tiles" form of its hidden layers the chain is built without nibble
    patterns (empty buffers, zero offsets) and runs them as Harley–Seal tiles: the same
    logits as the chain built with them."""
    from bnn_toroid.kernels import forms
    rng = np.random.default_rng(13)
    sizes = [200, 130, 70, 5]
    layers = [Dense(np.where(rng.random((b, a)) < 0.5, -1, 1), rng.integers(-40 * a, 40 * a, b) + (0.5 if i == 0 else 0))
              for i, (a, b) in enumerate(zip(sizes[:-2], sizes[1:-1]))]
    layers.append(Dense(np.where(rng.random((5, 70)) < 0.5, -1, 1), out_scale=rng.normal(size=5)))
    x = rng.integers(0, 256, (40, 200)).astype(np.uint8)
    with forms.override(hidden="nibbles"):
        want = BinaryNetwork(layers, (200,)).predict(x)
    with forms.override(hidden="tiles"):
        net = BinaryNetwork(layers, (200,))
        got = net.predict(x)
    pats, poff, thr, toff = net._as_stack()._dense_chain().nib
    assert pats.size == 0 and thr.size == 0 and not poff.any() and not toff.any()
    assert np.array_equal(got, want)


@pytest.mark.parametrize("layout", ["flat", "NHWC", "NCHW"])
def test_the_chain_fast_path_takes_only_what_prepare_input_would_pass(layout, monkeypatch):
    """``predict`` hands a uint8 C-contiguous batch straight to the chain (no
    ``prepare_input``) only where that function would pass it unchanged: the same
    logits as the general path for every input, the fast path for exactly the inputs it
    claims, and the general path's errors for bad ones."""
    from bnn_toroid.network import chain
    rng = np.random.default_rng(3)
    shape = (2, 3, 4)  # (H, W, C) or (C, H, W): 24 features
    w0 = np.where(rng.random((70, 24)) < 0.5, -1, 1)
    w1 = np.where(rng.random((5, 70)) < 0.5, -1, 1)
    net = BinaryNetwork([Dense(w0, rng.integers(-900, 900, 70) + 0.5),
                         Dense(w1, out_scale=rng.normal(size=5), out_bias=rng.normal(size=5))],
                        shape, input_layout=layout)
    runs = []
    real = chain.DenseChain._run
    monkeypatch.setattr(chain.DenseChain, "_run", lambda self, px: runs.append(px.shape) or real(self, px))
    fast = []
    real_fast = chain.DenseChain.fast
    monkeypatch.setattr(chain.DenseChain, "fast",
                        lambda self, x, b: fast.append(r := real_fast(self, x, b)) or r)
    x = rng.integers(0, 256, (3, *shape)).astype(np.uint8)
    cases = {"samples": (x, layout != "NCHW"),
             "flat rows": (x.reshape(3, -1), layout == "flat"),
             "not contiguous": (x[::2], False),
             "int64": (x.astype(np.int64), False),
             "over batch_size": (x, False)}
    for name, (xs, takes) in cases.items():
        fast.clear()
        b = 2 if name == "over batch_size" else 4096
        if layout != "flat" and xs.ndim == 2:
            with pytest.raises(ValueError, match="expected samples of shape"):
                net.predict(xs, batch_size=b)
            assert fast == [None], name
            continue
        got = net.predict(xs, batch_size=b)
        ref = net.predict(xs.astype(np.float64), batch_size=b)  # BLAS, layer by layer
        assert np.array_equal(got, ref), name
        assert (fast[0] is not None) == takes, name
    assert runs, "the chain never ran"
    with pytest.raises(ValueError, match="expected samples of shape"):
        net.predict(np.zeros((2, 5), np.uint8))


def test_pixel_conv_chunks_and_empty_batches(monkeypatch):
    """A first conv on pixels builds its patches a chunk at a time (any chunk size gives
    the same bits), serves a stack of networks from each chunk, and takes empty batches."""
    from bnn_toroid.network import first
    rng = np.random.default_rng(6)
    nets = [BinaryNetwork([Conv2d(np.where(rng.random((5, 3, 3, 2)) < 0.5, -1, 1), rng.integers(-300, 300, 5) + 0.5,
                                  stride=2, padding="same", pad_value=np.array([0.0, 9.0])),
                           Dense(np.where(rng.random((4, 5 * 25)) < 0.5, -1, 1), out_scale=rng.random(4))],
                          (9, 9, 2), input_layout="NHWC") for _ in range(3)]
    stack = NetworkStack.from_networks(nets)
    x = rng.integers(0, 256, (7, 9, 9, 2)).astype(np.uint8)
    want = stack.predict(x.astype(np.float64))
    for rows in (1, 30, 1 << 16):
        monkeypatch.setattr(first, "PATCH_ROWS", rows)
        assert np.array_equal(stack.predict(x), want)
    out, _ = stack._first(x[:0], True, False)
    assert out.shape == (3, 0, 5, 5, 1)


def test_nan_first_layer_thresholds_are_refused():
    net = BinaryNetwork([Dense(np.ones((3, 4)), np.zeros(3)), Dense(np.ones((2, 3)))], (4,))
    params = net.packed_params()
    params[0]["T"] = np.array([[0.0, np.nan, 1.0]])
    with pytest.raises(NetworkError, match="NaN"):
        NetworkStack(net, params)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int32])
def test_integer_pixels_in_any_dtype_take_the_pixel_kernels(dtype):
    """Images in [0, 255] handed over as floats (float32 pipelines do) are pixels: the
    8-bit first layer and the compiled chain run, with the logits of the uint8 input
    bit for bit; one fraction sends the batch down the float path, still exact."""
    rng = np.random.default_rng(31)
    layers = [Dense(np.where(rng.random((40, 100)) < 0.5, -1, 1), rng.integers(-3000, 3000, 40) + 0.5),
              Dense(np.where(rng.random((7, 40)) < 0.5, -1, 1), out_scale=rng.normal(size=7))]
    x8 = rng.integers(0, 256, (9, 100)).astype(np.uint8)
    want = BinaryNetwork(layers, (100,)).predict(x8)
    net = BinaryNetwork(layers, (100,))
    assert np.array_equal(net.predict(x8.astype(dtype)), want)
    assert net._as_stack()._chain.panels, "the chain ran"
    from bnn_toroid.network.first import pixels
    assert pixels(x8.astype(dtype)) is not None
    frac = x8.astype(np.float64)
    frac[3, 5] += 0.5
    assert pixels(frac) is None and pixels(x8.astype(np.float64) - 1) is None
    ref = np.stack([layers[0].weights @ v for v in frac])   # the first layer's sums, by hand
    h = (ref >= layers[0].threshold).astype(np.int64) * 2 - 1
    logits = (h @ layers[1].weights.T) * layers[1].out_scale + layers[1].out_bias
    assert np.allclose(net.predict(frac), logits)


@pytest.mark.parametrize("hidden_form", K.forms.runnable("hidden"))
@settings(max_examples=10, deadline=None)
@given(st.lists(st.integers(1, 130), min_size=0, max_size=2), st.integers(1, 300),
       st.sampled_from([1, 2, 40, 333]), st.sampled_from([np.float32, np.float64]),
       st.integers(0, 2**32 - 1))
def test_an_mlp_on_binarised_input_takes_one_compiled_call(hidden_form, hidden, k, n, dtype, seed):
    """A single MLP that binarises its input runs as one compiled chain of binary layers
    (the signs packed in one pass, zeros as +1): the logits of the layer-by-layer path,
    bit for bit; a NaN still gets the general path's error."""
    from bnn_toroid.kernels import forms
    from bnn_toroid.network.core import _forward
    rng = np.random.default_rng(seed)
    sizes = [k, *hidden, 7]
    layers = [Dense(np.where(rng.random((b, a)) < 0.5, -1, 1), rng.integers(-a, a + 1, b))
              for a, b in zip(sizes[:-2], sizes[1:-1])]
    layers.append(Dense(np.where(rng.random((7, sizes[-2])) < 0.5, -1, 1), out_scale=rng.random(7)))
    x = rng.normal(size=(n, k)).astype(dtype)
    x[0, : k // 2] = 0.0
    with forms.override(hidden=hidden_form):
        net = BinaryNetwork(layers, (k,), binarize_input=True)
        got = net.predict(x)
        stack = net._as_stack()
        assert stack._chain.signs
        assert np.array_equal(got, _forward(net, stack.params, net.prepare_input(x))[0][0])
        x[-1, -1] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            net.predict(x)


@pytest.mark.parametrize("stack_bytes", [1, 20 * 70 * 8 * 2, 1 << 25])
def test_a_stack_on_real_input_equals_its_networks_in_any_chunking(monkeypatch, stack_bytes):
    """The real-input dense first layer of S networks runs as batched products over
    chunks of networks (one network, two, all): each network's output is its own."""
    import bnn_toroid.network.first as first
    from bnn_toroid.network import NetworkStack
    monkeypatch.setattr(first, "STACK_BYTES", stack_bytes)
    nets = []
    for seed in range(5):
        torch.manual_seed(seed)
        nets.append(bt.BinaryNetwork.from_torch(bnn.BinaryMLP([20, 70, 10]).eval()))
    x = np.random.default_rng(0).normal(size=(33, 20))
    got = NetworkStack.from_networks(nets).predict(x)
    for i, net in enumerate(nets):
        assert np.array_equal(got[i], net.predict(x))
