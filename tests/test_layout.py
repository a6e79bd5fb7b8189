"""The packed layout (network/layout.py) and the fingerprint's canonical encoding
(symmetry/encoding.py): round trips for every layout kind and shape, ``locate`` against
``pack``, flips via the layout against a naive float re-evaluation, and the encoding
pinned on hand-built networks."""
import hashlib
import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import bnn_toroid as bt
from bnn_toroid.landscape.binary import flip_masks
from bnn_toroid.network import BinaryNetwork, Conv2d, Dense, MaxPool2d, NetworkStack
from bnn_toroid.network.layout import (ChannelMask, ConvPerPixel, DensePerPixel, FlatRows,
                                       file_layout, layout_of)
from bnn_toroid.symmetry.encoding import MAGIC, canonical_bytes
from netgen import inputs, pm1, random_convnet, random_mlp, shuffle, thresholds
from reference import conv2d, maxpool

SETTINGS = settings(max_examples=30, deadline=None)
# channel counts around the word boundary, and a few others
CHANNELS = st.sampled_from([1, 63, 64, 65]) | st.integers(1, 140)


# ------------------------------------------------------------------------------ layouts
def layouts():
    units, side = st.integers(1, 4), st.integers(1, 3)
    return (st.builds(lambda u, k: FlatRows((u, k)), units, CHANNELS)
            | st.builds(lambda u, h, w, c: DensePerPixel(u, (h, w, c)), units, side, side, CHANNELS)
            | st.builds(lambda f, kh, kw, c: ConvPerPixel((f, kh, kw, c)), units, side, side, CHANNELS)
            | st.builds(lambda f, kh, kw, c: FlatRows((f, kh, kw, c)), units, side, side, CHANNELS)
            | st.builds(ChannelMask, CHANNELS))


def values(lay, rng, lead=()):
    if isinstance(lay, ChannelMask):
        return rng.random(lead + lay.shape) < 0.5
    return pm1(rng, lead + lay.shape)


@SETTINGS
@given(layouts(), st.integers(0, 10**6), st.sampled_from([(), (1,), (3,), (2, 2)]))
def test_pack_and_unpack_are_inverse_for_every_layout_and_shape(lay, seed, lead):
    w = values(lay, np.random.default_rng(seed), lead)
    words = lay.pack(w)
    assert words.dtype == np.uint64 and words.shape == lead + lay.packed_shape
    assert np.array_equal(lay.unpack(words), w)
    assert not (words & ~lay.valid_bits()).any()          # padding bits are 0
    ones = np.unpackbits(lay.valid_bits().view(np.uint8)).sum()
    assert ones == lay.size                                # one bit per weight


@SETTINGS
@given(layouts(), st.integers(0, 10**6))
def test_locate_agrees_with_pack(lay, seed):
    rng = np.random.default_rng(seed)
    w = values(lay, rng)
    neg = (w if w.dtype == bool else w < 0).reshape(-1)
    # pack by hand, bit by bit, from locate alone
    words = np.zeros(lay.packed_shape, np.uint64).reshape(-1)
    word, bit = lay.locate(np.arange(lay.size))
    for j in np.flatnonzero(neg):
        words[word[j]] |= np.uint64(1) << np.uint64(bit[j])
    assert np.array_equal(words.reshape(lay.packed_shape), lay.pack(w))
    # every weight has its own bit
    assert len(set(zip(word.tolist(), bit.tolist()))) == lay.size
    # flipping the located bit flips exactly that weight
    j = int(rng.integers(lay.size))
    flipped = lay.unpack(lay.flip(lay.pack(w), [j]))
    want = w.copy().reshape(-1)
    want[j] = ~want[j] if want.dtype == bool else -want[j]
    assert np.array_equal(flipped.reshape(-1), want)
    assert np.array_equal(lay.pack(w) ^ lay.flip_mask([j]), lay.pack(want.reshape(lay.shape)))


def test_layout_kinds_and_the_one_rule():
    d = Dense(pm1(np.random.default_rng(0), (3, 2 * 2 * 65)), threshold=np.zeros(3, np.int64))
    assert isinstance(layout_of(d, (2, 2, 65), real_input=True), FlatRows)
    assert isinstance(layout_of(d, (2, 2, 65), real_input=False), DensePerPixel)
    assert layout_of(d, (2, 2, 65), False).packed_shape == (3, 4 * 2)
    assert layout_of(d, (260,), False).packed_shape == (3, 5)
    c = Conv2d(pm1(np.random.default_rng(0), (4, 3, 3, 65)), threshold=np.zeros(4, np.int64))
    for real in (True, False):
        assert layout_of(c, (5, 5, 65), real).packed_shape == (4, 3, 3, 2)
    assert layout_of(MaxPool2d(2), (4, 4, 65), False).packed_shape == (2,)
    assert file_layout((4, 3, 3, 65)).packed_shape == (4, 10)  # files: flat rows (585 bits)
    with pytest.raises(ValueError, match="expected an array of shape"):
        FlatRows((2, 3)).pack(np.ones((3, 2)))


# ------------------------------------------------------------------------------ networks
def naive_logits(net, x):
    """The network evaluated on float ±1 weights, layer by layer (NHWC), with no packing."""
    a = np.asarray(x, np.float64)
    n = a.shape[0]
    if net.input_layout == "NCHW":
        a = a.transpose(0, 2, 3, 1)
    elif net.input_layout == "flat":
        a = a.reshape(n, -1)
    if net.binarize_input:
        a = np.where(a >= 0, 1.0, -1.0)
    elif net.input_scale is not None:
        a = a * net.input_scale
    for i, layer in enumerate(net.layers):
        if isinstance(layer, MaxPool2d):
            a = maxpool(a, layer.size, layer.stride, layer.min_channels)
            continue
        w = layer.weights.astype(np.float64)
        if isinstance(layer, Dense):
            h = a.reshape(n, -1) @ w.T
        else:
            h = conv2d(a, w, layer.stride, layer.padding, layer.pad_value)
        if layer.threshold is None:
            return h * layer.out_scale + layer.out_bias
        a = np.where(h >= layer.threshold, 1.0, -1.0)


def _dense_on_image(rng, hw, c, binarize):
    k = hw * hw * c
    first = Dense(pm1(rng, (5, k)), threshold=thresholds(rng, 5, k, real=not binarize))
    return BinaryNetwork([first, Dense(pm1(rng, (3, 5)))], (hw, hw, c), "NHWC", binarize_input=binarize)


def networks():
    seed = st.integers(0, 10**6)
    mlp = st.builds(lambda s, k, b: random_mlp(np.random.default_rng(s), [k, 7, 5, 3], b),
                    seed, CHANNELS, st.booleans())
    conv = st.builds(lambda s, c, b, pad, pv: random_convnet(np.random.default_rng(s), hw=8, c_in=c,
                                                             channels=(c, 4), binarize=b, padding=pad,
                                                             pad_value=pv),
                     seed, st.sampled_from([1, 3, 63, 64, 65]), st.booleans(),
                     st.sampled_from(["same", "valid"]), st.sampled_from([0, 1]))
    image = st.builds(lambda s, hw, c, b: _dense_on_image(np.random.default_rng(s), hw, c, b),
                      seed, st.integers(1, 3), CHANNELS, st.booleans())
    return mlp | conv | image


def _with_weights(net, i, w):
    layers = list(net.layers)
    layer = layers[i]
    kw = ({"threshold": layer.threshold} if layer.threshold is not None
          else {"out_scale": layer.out_scale, "out_bias": layer.out_bias})
    if isinstance(layer, Dense):
        layers[i] = Dense(w, **kw)
    else:
        layers[i] = Conv2d(w, stride=layer.stride, padding=layer.padding, pad_value=layer.pad_value, **kw)
    return net.with_layers(layers)


@settings(max_examples=25, deadline=None)
@given(networks(), st.integers(0, 10**6))
def test_a_flip_via_the_layout_equals_a_naive_reevaluation(net, seed):
    rng = np.random.default_rng(seed)
    x = inputs(rng, net, n=12)
    assert np.array_equal(net.predict(x), naive_logits(net, x))
    i = int(rng.choice(net.weight_layers()))
    js = rng.choice(net.layers[i].weights.size, size=min(3, net.layers[i].weights.size), replace=False)
    params = [{k: np.array(v) for k, v in p.items()} for p in net.packed_params()]
    net.layout(i).flip(params[i]["w"][0], js)
    stack = NetworkStack(net, params)
    w = net.layers[i].weights.copy().reshape(-1)
    w[js] *= -1
    flipped = _with_weights(net, i, w.reshape(net.layers[i].weights.shape))
    assert np.array_equal(stack.network(0).layers[i].weights, flipped.layers[i].weights)
    assert np.array_equal(stack.predict(x)[0], naive_logits(flipped, x))


@settings(max_examples=15, deadline=None)
@given(networks(), st.integers(0, 10**6))
def test_flip_masks_flip_exactly_the_drawn_count(net, seed):
    counts = [0, 1, min(5, net.n_weights)]
    masks = flip_masks(net, counts, np.random.default_rng(seed))
    for s, m in enumerate(counts):
        got = sum(int(np.unpackbits(masks[i][s].view(np.uint8)).sum()) for i in net.weight_layers())
        assert got == m
        for i in net.weight_layers():
            assert not (masks[i][s] & ~net.layout(i).valid_bits()).any()


# ------------------------------------------------------------------------------ fingerprint
def tiny_mlp():
    w0 = np.array([[1, -1, 1], [-1, -1, 1], [1, 1, 1], [1, -1, -1]], np.int8)
    w1 = np.array([[1, -1, 1, 1], [-1, 1, 1, -1]], np.int8)
    return BinaryNetwork([Dense(w0, threshold=np.array([1, -1, 3, 0])),
                          Dense(w1, out_scale=np.array([0.5, 2.0]), out_bias=np.array([0.0, -1.0]))],
                         (3,), binarize_input=True)


def tiny_conv():
    f = np.array([1, -1, -1, 1, 1, 1, -1, 1] * 3, np.int8).reshape(3, 2, 2, 2)
    conv = Conv2d(f, threshold=np.array([0, 2, -2]), padding="valid")
    pool = MaxPool2d(2, min_channels=np.array([False, True, False]))
    d = np.array([1, -1, 1, -1, -1, 1], np.int8).reshape(2, 3)
    return BinaryNetwork([conv, pool, Dense(d)], (4, 4, 2), "NHWC", binarize_input=True)


# Regression pins of the encoding (docs/methods.md, "Fingerprint"): a change here changes
# every recorded fingerprint, and needs a new encoding version.
TINY_MLP_FINGERPRINT = "8f2e6a02379e4b103d5eafb73385792c6248bdc3da1001c53a5acc5a81c5a4e9"
TINY_CONV_FINGERPRINT = "1bf16b7b7b85f6151bdb748eac9340699d8e31afde7b66130c9c8e087fad38ed"


def test_fingerprints_of_fixed_networks_are_fixed_strings():
    assert bt.fingerprint(tiny_mlp()) == TINY_MLP_FINGERPRINT
    assert bt.fingerprint(tiny_conv()) == TINY_CONV_FINGERPRINT


def test_the_encoding_is_the_documented_one():
    """canonical_bytes of tiny_mlp, written out by hand from symmetry/encoding.py's spec."""
    i = lambda v: struct.pack("<q", v)                        # noqa: E731
    s = lambda t: i(len(t)) + t.encode()                      # noqa: E731
    shape = lambda *d: i(len(d)) + b"".join(i(v) for v in d)  # noqa: E731
    want = (MAGIC + s("flat") + i(1) + shape(3) + i(0) + i(2)
            # layer 0: weights [[1,-1,1],[-1,-1,1],[1,1,1],[1,-1,-1]] -> -1 bits 1,3,4,10,11
            + s("Dense") + shape(4, 3) + bytes([0b00011010, 0b00001100])
            + s("threshold") + s("int64") + shape(4) + struct.pack("<4q", 1, -1, 3, 0)
            # layer 1: [[1,-1,1,1],[-1,1,1,-1]] -> bits 1,4,7
            + s("Dense") + shape(2, 4) + bytes([0b10010010])
            + s("output") + shape(2) + struct.pack("<2d", 0.5, 2.0) + shape(2) + struct.pack("<2d", 0.0, -1.0))
    assert canonical_bytes(tiny_mlp()) == want


def test_the_fingerprint_is_not_the_file_format(monkeypatch):
    import bnn_toroid.network.files as files

    def refuse(net):
        raise AssertionError("fingerprint must not use the file encoder")
    monkeypatch.setattr(files, "_encode", refuse)
    assert bt.fingerprint(tiny_mlp()) == TINY_MLP_FINGERPRINT
    net = tiny_conv()
    no_mask = net.with_layers([net.layers[0], MaxPool2d(2), net.layers[2]])
    zeros = net.with_layers([net.layers[0], MaxPool2d(2, min_channels=np.zeros(3, bool)), net.layers[2]])
    assert canonical_bytes(no_mask) == canonical_bytes(zeros)   # no mask: all max-pooled


@pytest.mark.parametrize("make", [tiny_mlp, tiny_conv])
def test_the_fingerprint_changes_with_any_one_weight(make):
    net = make()
    base = bt.fingerprint(net)
    seen = {base}
    for i in net.weight_layers():
        w = net.layers[i].weights
        for j in range(w.size):
            v = w.copy().reshape(-1)
            v[j] *= -1
            fp = bt.fingerprint(_with_weights(net, i, v.reshape(w.shape)))
            assert fp != base
            seen.add(fp)
    assert len(seen) > 1


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10**6), st.booleans())
def test_the_fingerprint_is_invariant_under_permutations_and_flips(seed, mlp):
    rng = np.random.default_rng(seed)
    net = (random_mlp(rng, [9, 6, 5, 3], constant=False) if mlp
           else random_convnet(rng, hw=8, channels=(4, 3), constant=False))
    fp = bt.fingerprint(net)
    for _ in range(3):
        assert bt.fingerprint(shuffle(rng, net)) == fp
    assert bt.fingerprint(tiny_mlp()) == hashlib.sha256(canonical_bytes(bt.canonicalize(tiny_mlp()))).hexdigest()
