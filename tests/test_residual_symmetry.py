"""Symmetries of residual binary networks (bnn_toroid.symmetry.residual_binary): the
channel spaces derived from the op graph, the group action, and canonicalize /
fingerprint / align through the public verbs, property-tested by function equality."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import bnn_toroid as bt
from bnn_toroid.network.residual_ops import BinaryConv, GlobalAvgPool, RealConv, RealDense
from bnn_toroid.network.residual import ResidualBinaryNetwork
from bnn_toroid.symmetry import residual_binary as R

from residual_nets import build, preactivations

ARCH = st.fixed_dictionaries({
    "c": st.sampled_from([4, 6]), "blocks": st.integers(1, 2), "relu": st.booleans(),
    "pad_value": st.sampled_from([0, 1]), "scale": st.booleans(), "down": st.booleans(),
    "prelu": st.booleans(), "maxpool": st.booleans(), "depthwise": st.booleans(),
    "real_branch": st.booleans()})
FAST = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _x(seed, n=6):
    return np.random.default_rng(seed).normal(size=(n, 3, 8, 8))


def _same_function(a, b, x):
    ya, yb = a.logits(x), b.logits(x)
    np.testing.assert_allclose(yb, ya, rtol=1e-9, atol=1e-9 * np.abs(ya).max())
    # and the predicted classes
    np.testing.assert_array_equal(yb.argmax(1), ya.argmax(1))


def _random_action(g, rng, strict, n_rows):
    rev = g.reversible(strict)
    perms = [None if g.fixed[s] else rng.permutation(g.sizes[s]) for s in range(len(g))]
    flips = [rng.random(g.sizes[s]) < 0.5 if rev[s] else None for s in range(len(g))]
    rows = [rng.random(n) < 0.5 for n in n_rows]
    return perms, flips, rows


# ---------------------------------------------------------------------------- spaces
def test_a_bi_real_stream_is_one_space_from_stem_to_transition():
    net = build(np.random.default_rng(0), c=4, blocks=2, down=True, real_branch=True)
    g = R.channel_spaces(net)
    # input, stream (stem + both identity blocks), downsampled stream, real branch, logits
    assert g.sizes == [3, 4, 8, 9, 3]
    assert g.fixed[0] == "the network input" and g.fixed[-1] == "the logits"
    assert g.free() == [1, 2, 3]
    stream = {n.loc for n in g.nodes if n.outs == 1 and n.role == "write"}
    assert stream == {(0,), (2, "body", 0), (3, "body", 0)}  # stem and both blocks' binary convs
    # the 8-channel space is written by the strided binary conv and the 1x1 shortcut conv
    assert {n.loc for n in g.nodes if n.outs == 2 and n.role == "write"} == {(4, "body", 0), (4, "shortcut", 1)}
    # strict: spaces read by a binary conv have no stream reversal; the real branch has
    assert g.reversible(True) == [False, False, True, True, False]
    assert g.reversible(False) == [False, True, True, True, False]


def test_what_breaks_a_stream_reversal_is_named():
    net = build(np.random.default_rng(1), relu=True, pad_value=1, prelu=True, maxpool=True)
    g = R.channel_spaces(net)
    text = " ".join(" ".join(b) for b in g.breakers)
    for part in ("ReLU", "PReLU", "MaxPool", "pads with +1"):
        assert part in text
    assert g.reversible(False)[1] is False
    with pytest.raises(ValueError, match="not exact.*ReLU"):
        R.reverse(net, [None, np.ones(4, bool)] + [None] * (len(g) - 2), strict=False)
    with pytest.raises(ValueError, match="sign\\(0\\)"):
        R.reverse(build(np.random.default_rng(1)), [None, np.ones(4, bool), None, None], strict=True)


def test_fixed_spaces_and_bad_actions_are_refused_by_name():
    net = build(np.random.default_rng(2))
    g = R.channel_spaces(net)
    with pytest.raises(ValueError, match="network input"):
        R.permute(net, [[2, 1, 0], None, None, None])
    with pytest.raises(ValueError, match="logits"):
        R.permute(net, [None, None, None, [1, 0, 2]])
    with pytest.raises(ValueError, match="perms\\[1\\] must be a permutation of 4"):
        R.permute(net, [None, [0, 0, 1, 2], None, None])
    with pytest.raises(ValueError, match=f"one permutation and one flip mask per channel space \\({len(g)}"):
        R.permute(net, [None])
    with pytest.raises(ValueError, match="one row-flip mask per binary convolution"):
        R.reverse_rows(net, [])
    with pytest.raises(TypeError, match="expected a ResidualBinaryNetwork, got list"):
        R.channel_spaces([])


def test_a_stream_reversal_read_through_sign_zero_changes_the_function():
    # a binary conv reads the un-shifted integer output of another: h = 0 occurs, and
    # sign(-0) = sign(0) = +1, so reversing that space is not exact (strict refuses it)
    rng = np.random.default_rng(3)
    c = 4
    ops = [RealConv(rng.normal(size=(c, 3, 3, 3)), rng.normal(size=c), padding="same"),
           BinaryConv(rng.choice([-1, 1], size=(c, 3, 3, c)), padding="valid"),
           BinaryConv(rng.choice([-1, 1], size=(c, 3, 3, c)), padding="valid"),
           GlobalAvgPool(), RealDense(rng.normal(size=(3, c)))]
    net = ResidualBinaryNetwork(ops, (3, 8, 8), "NCHW")
    x = _x(4, 20)
    assert (preactivations(net, x)[0] == 0).any()
    g = R.channel_spaces(net)
    flips = [None, None, np.ones(c, bool), None, None][:len(g)]
    with pytest.raises(ValueError, match="sign\\(0\\)"):
        R.reverse(net, flips)
    loose = R.reverse(net, flips, strict=False)
    assert not np.allclose(loose.logits(x), net.logits(x))
    # away from zero (every stream value read by a binary conv non-zero) it would be exact:
    # the space of the stem has no zeros, and reversing it keeps the function
    stem = R.reverse(net, [None, np.ones(c, bool)] + [None] * (len(g) - 2), strict=False)
    _same_function(net, stem, x)


# ---------------------------------------------------------------------------- group action
@FAST
@given(arch=ARCH, seed=st.integers(0, 2**16), strict=st.booleans())
def test_the_group_action_keeps_the_function_and_permutes_the_integers(arch, seed, strict):
    rng = np.random.default_rng(seed)
    net = build(rng, **arch)
    g = R.channel_spaces(net)
    locs = net.binary_locations()
    perms, flips, rows = _random_action(g, rng, strict, [w.shape[0] for w in net.binary_weights()])
    new = R.transform(net, perms, flips, rows, strict=strict)
    x = _x(seed)
    _same_function(net, new, x)
    # h'_f = r_f · h_{π(f)}: a stream reversal of the output space goes to the scale, one
    # of the input space is undone by the negated columns
    outs = {n.binary: n.outs for n in g.nodes if n.binary >= 0}
    for b, (h, h2) in enumerate(zip(preactivations(net, x), preactivations(new, x))):
        p = np.arange(h.shape[-1]) if perms[outs[b]] is None else perms[outs[b]]
        want = h[..., p] * np.where(rows[b], -1, 1)
        assert h2.dtype == np.float64 and np.array_equal(h2, want), locs[b]
        assert np.array_equal(h2, np.rint(h2))  # integers


# ---------------------------------------------------------------------------- public verbs
@FAST
@given(arch=ARCH, seed=st.integers(0, 2**16), strict=st.booleans())
def test_canonicalize_fingerprint_and_align_through_the_public_verbs(arch, seed, strict):
    rng = np.random.default_rng(seed)
    net = build(rng, **arch)
    copy = R.shuffled(net, rng, strict)
    x = _x(seed)
    c1, c2 = bt.canonicalize(net, strict=strict), bt.canonicalize(copy, strict=strict)
    _same_function(net, c1, x)
    _same_function(copy, c2, x)
    assert R.canonical_bytes(c1) == R.canonical_bytes(c2)
    assert R.canonical_bytes(bt.canonicalize(c1, strict=strict)) == R.canonical_bytes(c1)  # idempotent
    assert bt.fingerprint(net, strict=strict) == bt.fingerprint(copy, strict=strict)
    al = bt.align(copy, net, strict=strict)
    _same_function(copy, al, x)
    assert all(np.array_equal(u, v) for u, v in zip(al.binary_weights(), net.binary_weights()))
    assert R.canonical_bytes(al) == R.canonical_bytes(net)  # every real parameter back too
    if strict:  # distance aligns with the exact group (strict=True)
        assert bt.distance(net, copy, kind="hamming_aligned") == 0.0


def test_fingerprints_differ_for_different_networks():
    rng = np.random.default_rng(5)
    net = build(rng, real_branch=True)
    ws = [w.copy() for w in net.binary_weights()]
    ws[0][1, 1, 1, 2] *= -1
    other = net.with_binary_weights(ws)
    assert bt.fingerprint(net) != bt.fingerprint(other)
    assert bt.fingerprint(net) != bt.fingerprint(build(np.random.default_rng(6), real_branch=True))
    # strict and loose orbits are hashed apart
    assert bt.fingerprint(net) != bt.fingerprint(net, strict=False)
    # a scale of None and a scale of ones compute alike and hash alike
    a = build(np.random.default_rng(7), scale=False)
    g = R.channel_spaces(a)
    rows = [np.zeros(w.shape[0], bool) for w in a.binary_weights()]
    rows[0][0] = True
    twice = R.reverse_rows(R.reverse_rows(a, rows), rows)
    assert twice.op_at(twice.binary_locations()[0]).scale is not None
    assert R.canonical_bytes(twice) == R.canonical_bytes(a) and len(g) == 4


def test_align_matches_two_different_networks_without_changing_the_function():
    rng = np.random.default_rng(8)
    a, b = build(rng, c=6), build(rng, c=6)
    x = _x(9)
    al = bt.align(b, a)
    _same_function(b, al, x)
    assert bt.distance(a, al) <= bt.distance(a, b)
    assert bt.distance(a, b, kind="hamming_aligned") == bt.distance(a, al)


def test_align_and_fingerprint_refuse_bad_input_by_name():
    rng = np.random.default_rng(10)
    a = build(rng)
    with pytest.raises(ValueError, match="different architectures"):
        bt.align(build(rng, c=6), a)
    with pytest.raises(ValueError, match="method must be 'weights' or 'overlap'.*'nearest'"):
        bt.align(a, a, method="nearest")
    from netgen import random_mlp
    chain = random_mlp(rng, [12, 8, 3])
    with pytest.raises(TypeError, match="same kind"):
        bt.align(a, chain)
    with pytest.raises(TypeError, match="same kind"):
        bt.align(chain, a)
