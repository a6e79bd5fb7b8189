"""Residual binary networks: the packed-kernel evaluation against the float64 reference
(network/residual_eval.py) and the naive twin (tests/naive.py), on hypothesis shapes;
binary sums exactly, logits to float tolerance."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import naive
from resgen import flipped_weights, random_residual

from bnn_toroid.network import NetworkError, ResidualBinaryNetwork
from bnn_toroid.network.residual_ops import BinaryConv, GlobalAvgPool, RealDense, Residual


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9 * (1 + np.abs(b).max()))


@settings(max_examples=12, deadline=None)
@given(c=st.sampled_from([1, 63, 64, 65]), h=st.integers(3, 7), w=st.integers(3, 7),
       n=st.sampled_from([1, 3]), s=st.sampled_from([1, 3]), stride=st.sampled_from([1, 2]),
       pad_value=st.sampled_from([0, 1]), quick=st.booleans(), seed=st.integers(0, 2 ** 31))
def test_packed_path_equals_the_reference(c, h, w, n, s, stride, pad_value, quick, seed):
    rng = np.random.default_rng(seed)
    layout = "NCHW" if seed % 2 else "NHWC"
    net = random_residual(rng, c=c, hw=(h, w), stride=stride, pad_value=pad_value, quick=quick,
                          layout=layout)
    x = rng.normal(size=(n,) + net.input_shape)
    weights = [net.binary_weights()] + [flipped_weights(rng, net) for _ in range(s - 1)]
    fast = net.stack_logits(x, weights)
    ref = net.stack_logits(x, weights, reference=True)
    assert fast.shape == (s, n, net.n_classes)
    hf, hr = net.binary_sums(x, weights), net.binary_sums(x, weights, reference=True)
    assert len(hf) == len(net.binary_locations())
    for a, b in zip(hf, hr):
        assert a.dtype == np.int64
        np.testing.assert_array_equal(a, b)
    _close(fast, ref)
    _close(net.logits(x), ref[0])
    for k in range(s):  # each network alone gives its row of the stack
        _close(net.with_binary_weights(weights[k]).logits(x), fast[k])


@settings(max_examples=6, deadline=None)
@given(c=st.sampled_from([1, 64, 65]), stride=st.sampled_from([1, 2]),
       pad_value=st.sampled_from([0, 1]), quick=st.booleans(), seed=st.integers(0, 2 ** 31))
def test_packed_path_equals_the_naive_twin(c, stride, pad_value, quick, seed):
    rng = np.random.default_rng(seed)
    net = random_residual(rng, c=c, hw=(5, 3), stride=stride, pad_value=pad_value, quick=quick)
    x = rng.normal(size=(2,) + net.input_shape)
    weights = [net.binary_weights(), flipped_weights(rng, net)]
    want, sums = naive.residual_logits(net, x, weights)
    got = net.stack_logits(x, weights)
    hs = net.binary_sums(x, weights)
    for k in range(len(hs)):
        for si in range(2):
            for ni in range(2):
                np.testing.assert_array_equal(hs[k][si, ni], sums[si][ni][k])
    _close(got, want)


def test_integer_valued_network_is_exact():
    """Integer parameters and inputs: every float64 step is exact, so both paths give
    identical logits, bit for bit."""
    rng = np.random.default_rng(3)
    c = 65
    ops = [Residual((BinaryConv(rng.choice([-1, 1], (c, 3, 3, c)), rng.integers(1, 4, c)
                                .astype(float), padding="same", pad_value=1),)),
           Residual((BinaryConv(rng.choice([-1, 1], (c, 1, 1, c)), None),)),
           GlobalAvgPool(), RealDense(rng.integers(-3, 4, (4, c)).astype(float))]
    net = ResidualBinaryNetwork(ops, (5, 5, c), "NHWC")
    x = rng.integers(-3, 4, (3, 5, 5, c)).astype(float)
    np.testing.assert_array_equal(net.logits(x), net.logits(x, reference=True))


def test_packed_filters_are_made_once_per_network():
    rng = np.random.default_rng(0)
    net = random_residual(rng)
    x = rng.normal(size=(2,) + net.input_shape)
    net.logits(x)
    cache = dict(net._tile_cache)
    assert set(cache) == set(range(len(net.binary_locations())))
    net.logits(x)
    assert all(net._tile_cache[k] is cache[k] for k in cache)


def test_stack_logits_calls_the_kernel_once_per_binary_conv(monkeypatch):
    import bnn_toroid.kernels as K
    calls = []
    real = K.binary_conv2d_trusted

    def spy(A, tiles, *args):
        calls.append(tiles[1].shape[0])  # networks in the call
        return real(A, tiles, *args)
    monkeypatch.setattr(K, "binary_conv2d_trusted", spy)
    rng = np.random.default_rng(1)
    net = random_residual(rng)
    x = rng.normal(size=(2,) + net.input_shape)
    net.stack_logits(x, [flipped_weights(rng, net) for _ in range(5)])
    assert calls == [5] * len(net.binary_locations())


def test_bad_inputs_are_named():
    rng = np.random.default_rng(0)
    net = random_residual(rng)
    with pytest.raises(NetworkError, match="expected samples of shape"):
        net.logits(np.zeros((2, 9, 9, 3)))
    with pytest.raises(NetworkError, match="NaN or infinity"):
        net.logits(np.full((1,) + net.input_shape, np.nan))
    ws = net.binary_weights()
    with pytest.raises(NetworkError, match=r"weights\[0\] must have shapes"):
        net.stack_logits(np.zeros((1,) + net.input_shape), [ws[:-1]])
    bad = [w.astype(float) * 0.5 for w in ws]
    with pytest.raises(NetworkError, match=r"weights\[0\]\[0\].*±1"):
        net.stack_logits(np.zeros((1,) + net.input_shape), [bad])
    with pytest.raises(NetworkError, match="at least one"):
        net.stack_logits(np.zeros((1,) + net.input_shape), [])


# ------------------------------------------------------------------- files

def test_save_load_round_trip(tmp_path):
    import bnn_toroid as bt
    rng = np.random.default_rng(4)
    for quick in (False, True):
        net = random_residual(rng, c=65, quick=quick, pad_value=1)
        p = tmp_path / f"r{quick}.npz"
        net.save(p)
        back = bt.load(p)
        assert isinstance(back, ResidualBinaryNetwork)
        assert back.input_shape == net.input_shape and back.input_layout == net.input_layout
        for a, b in zip(back.binary_weights(), net.binary_weights()):
            np.testing.assert_array_equal(a, b)
        x = rng.normal(size=(3,) + net.input_shape)
        np.testing.assert_array_equal(back.logits(x), net.logits(x))
        assert bt.network.read_meta(p)["format"] == "bnn_toroid.ResidualBinaryNetwork"


def _rewrite(src, dst, edit):
    import json
    import zipfile
    with zipfile.ZipFile(src) as z:
        arrays = {n[:-4]: np.load(z.open(n)) for n in z.namelist()}
    meta = json.loads(bytes(arrays.pop("meta")).decode())
    edit(arrays, meta)
    np.savez(dst, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)


def test_bad_residual_files_are_refused(tmp_path):
    import bnn_toroid as bt
    from bnn_toroid._files import sha256_content
    from bnn_toroid.network import NetworkFileError
    rng = np.random.default_rng(5)
    net = random_residual(rng)
    p = tmp_path / "r.npz"
    net.save(p)
    raw = p.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(raw[:len(raw) // 2])
    with pytest.raises(NetworkFileError):
        bt.load(tmp_path / "trunc.npz")

    def flip_weight(arrays, meta):
        arrays["o2.body.0.weights"] = arrays["o2.body.0.weights"] ^ np.uint64(1)
    _rewrite(p, tmp_path / "t.npz", flip_weight)
    with pytest.raises(NetworkFileError, match="SHA-256 mismatch"):
        bt.load(tmp_path / "t.npz")

    def resign(edit):
        def go(arrays, meta):
            edit(arrays, meta)
            meta.pop("sha256")
            meta["sha256"] = sha256_content(arrays, meta)
        return go
    cases = [
        (lambda a, m: a.pop("o0.weights"), "array 'o0.weights' is missing"),
        (lambda a, m: m["ops"][2].update(type="Bogus"), "'type' is one of"),
        (lambda a, m: m["ops"][2]["body"][0].update(pad_value=2), "pad_value is 2"),
        (lambda a, m: m.update(format_version=9), "newer"),
        (lambda a, m: m.update(input_layout="HWC"), "input_layout"),
        (lambda a, m: a.update({"o2.body.0.weights": a["o2.body.0.weights"] | np.uint64(1 << 63)}),
         "padding bits"),
        (lambda a, m: a.update({"o9.extra": np.zeros(2)}), "belong to no operation"),
        (lambda a, m: m.update(n_binary=3), "n_binary"),
        (lambda a, m: m["ops"][1].update(type="RealDense"), "inconsistent|missing"),
    ]
    for k, (edit, msg) in enumerate(cases):
        q = tmp_path / f"c{k}.npz"
        _rewrite(p, q, resign(edit))
        with pytest.raises(NetworkFileError, match=msg):
            bt.load(q)


def test_predict_is_the_logits_as_for_every_binary_network():
    # one verb, one meaning: predict gives logits, predict_proba their softmax and
    # predict_classes their argmax, as BinaryNetwork's verbs do; batching changes
    # nothing but float rounding
    from bnn_toroid._batches import softmax
    rng = np.random.default_rng(3)
    net = random_residual(rng, quick=True)  # NCHW input: batches are sliced before the transpose
    x = rng.normal(size=(7,) + net.input_shape)
    z = net.logits(x)
    np.testing.assert_array_equal(net.predict(x), z)
    # the real stem and head run in BLAS, whose sums may round differently per batch
    np.testing.assert_allclose(net.predict(x, batch_size=3), z, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(net.predict_classes(x, batch_size=2), z.argmax(1))
    np.testing.assert_allclose(net.predict_proba(x), softmax(z), rtol=1e-12)
    with pytest.raises(ValueError, match="batch_size"):
        net.predict(x, batch_size=0)
