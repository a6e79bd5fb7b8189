"""The form registry (kernels/forms.py): the policy for every CPU class, the host's
choice, the overrides, and every form this host can execute checked bit-exactly
against the naive reference."""
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import bnn_toroid.kernels as K
from bnn_toroid.kernels import forms
from reference import conv2d, gemm

# LLVM feature names of the CPU classes the project's machines have had
ZEN3 = {"sse4.2", "popcnt", "avx", "avx2", "bmi2", "fma"}
CASCADE_LAKE = ZEN3 | {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd", "avx512vnni"}
ZEN4 = CASCADE_LAKE | {"avx512vpopcntdq", "avx512bitalg", "avx512vbmi", "avx512vbmi2"}
ARM = {"neon", "fp-armv8"}


@pytest.mark.parametrize("features, cls, want", [
    (ZEN4, "avx512_vpopcntdq", {"gemm": "vpopcnt_tiles", "conv": "vpopcnt_tiles",
                                "hidden": "vpopcnt_tiles", "first": "vnni", "first_one": "lookup"}),
    (CASCADE_LAKE, "avx512bw", {"gemm": "harley_seal_ternlog", "conv": "harley_seal_ternlog",
                                "hidden": "tiles", "first": "vnni", "first_one": "lookup"}),
    # Skylake-X: AVX-512BW without VNNI falls back to the AVX2 class's first-layer form
    (CASCADE_LAKE - {"avx512vnni"}, "avx512bw", {"gemm": "harley_seal_ternlog", "first": "lookup"}),
    (ZEN3, "avx2", {"gemm": "harley_seal", "conv": "harley_seal", "hidden": "nibbles", "first": "lookup",
                    "first_one": "lookup"}),
    (ARM, "generic", {"gemm": "harley_seal", "hidden": "tiles", "first": "bytes",
                      "first_one": "signs"}),
    (set(), "generic", {"gemm": "harley_seal", "hidden": "tiles", "first": "bytes",
                        "first_one": "signs"}),
])
def test_the_policy_for_each_cpu_class(features, cls, want):
    assert forms.cpu_class(features) == cls
    assert {w: forms.choose(w, features).name for w in want} == want
    for w, name in want.items():  # a chosen form never needs what the CPU lacks
        assert forms.forms(w)[name].needs <= frozenset(features)


def test_every_workload_has_a_policy_entry_and_a_generic_form():
    for workload, table in forms.POLICY.items():
        assert "generic" in table, workload
        assert not forms.forms(workload)[table["generic"]].needs, workload
        assert set(table.values()) <= set(forms.forms(workload)), workload


def test_the_host_runs_what_the_policy_names_for_its_features():
    feats = forms.host_features()
    for workload in forms.POLICY:
        assert forms.chosen(workload) is forms.choose(workload, feats)
    rep = forms.report()
    assert rep["cpu_class"] == forms.cpu_class(feats)
    assert rep["forms"] == {w: forms.choose(w, feats).name for w in forms.POLICY}


def test_overrides_are_checked_and_scoped():
    with forms.override(gemm="harley_seal"):
        assert forms.chosen("gemm").name == "harley_seal"
    assert forms.chosen("gemm") is forms.choose("gemm", forms.host_features())
    with pytest.raises(forms.FormError, match=r"unknown form 'fast' for gemm; known: harley_seal, harley_seal_ternlog, vpopcnt"):
        forms.choose("gemm", ZEN4, "fast")
    with pytest.raises(forms.FormError, match=r"gemm.vpopcnt needs the CPU feature\(s\) avx512f, "
                                              r"avx512vpopcntdq, which this CPU lacks"):
        forms.choose("gemm", ZEN3, "vpopcnt")
    with pytest.raises(forms.FormError, match=r"unknown workload 'conv3d'"):
        forms.choose("conv3d", ZEN4)
    with pytest.raises(forms.FormError, match="unknown form"):
        with forms.override(hidden="bogus"):
            pass


def test_the_environment_variable_chooses_and_bad_values_are_named():
    code = ("from bnn_toroid.kernels import forms; "
            "print(forms.chosen('gemm').name, forms.chosen('hidden').name)")
    env = dict(os.environ, BNN_TOROID_FORMS="gemm=harley_seal, hidden=tiles")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["harley_seal", "tiles"]
    env["BNN_TOROID_FORMS"] = "gemm"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "expected WORKLOAD=FORM" in out.stderr


GEMM_FORMS = forms.runnable("gemm")


@pytest.mark.parametrize("form", GEMM_FORMS)
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.sampled_from([1, 2, 7, 8, 9, 33]), st.integers(1, 140),
       st.sampled_from([1, 63, 64, 65, 511, 512, 513, 1000]) | st.integers(1, 700),
       st.booleans(), st.integers(0, 2**32 - 1))
def test_every_gemm_form_this_host_runs_is_exact(form, s, n, m, k, shared_input, seed):
    """Batch 1 and small batches (scalar tiles) and ≥ 8 rows (the form's own loop), K at
    word and vector edges, S networks with shared or per-network inputs; int32 dots and
    the fused threshold."""
    rng = np.random.default_rng(seed)
    x = rng.choice(np.array([-1, 1], np.int8), (1 if shared_input else s, n, k))
    w = rng.choice(np.array([-1, 1], np.int8), (s, m, k))
    A = np.stack([K.pack_bits(v) for v in x])
    W = np.stack([K.pack_bits(v) for v in w])
    ref = np.stack([gemm(x[0 if shared_input else i], w[i]) for i in range(s)])
    assert np.array_equal(K.binary_gemm(A, W, k, form=form), ref)
    t = rng.integers(-k - 1, k + 2, (s, m))
    bits = K.binary_gemm(A, W, k, threshold=t, form=form)
    got = np.stack([K.unpack_bits(bits[i], m) for i in range(s)])
    assert np.array_equal(got, np.where(ref >= t[:, None, :], 1, -1))


@pytest.mark.parametrize("form", forms.runnable("conv"))
@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.sampled_from([1, 2]), st.integers(1, 9), st.integers(1, 9),
       st.sampled_from([1, 63, 64, 65]) | st.integers(1, 140), st.sampled_from([1, 7, 8, 65]),
       st.sampled_from([1, 3]), st.sampled_from([1, 2]), st.sampled_from(["valid", "same"]),
       st.sampled_from([0, 1]), st.booleans(), st.integers(0, 2**32 - 1))
def test_every_conv_form_this_host_runs_is_exact(form, s, n, h, w, c, f, k, stride, padding,
                                                 pad_value, shared_input, seed):
    """Channels at word edges, 1×1 and 3×3 kernels, strides, both paddings and pad values
    (the border pixels' correction), S networks; int32 dots and the fused threshold."""
    if padding == "valid" and (h < k or w < k):
        h, w = max(h, k), max(w, k)
    rng = np.random.default_rng(seed)
    x = rng.choice(np.array([-1, 1], np.int8), (1 if shared_input else s, n, h, w, c))
    wt = rng.choice(np.array([-1, 1], np.int8), (s, f, k, k, c))
    A = K.pack_bits(x)
    W = K.pack_bits(wt)
    ref = np.stack([conv2d(x[0 if shared_input else i], wt[i], (stride, stride), padding, pad_value)
                    for i in range(s)]).astype(np.int64)
    got = K.binary_conv2d(A, W, c, (stride, stride), padding, pad_value, form=form)
    assert np.array_equal(got, ref)
    t = rng.integers(-k * k * c - 1, k * k * c + 2, (s, f))
    bits = K.binary_conv2d(A, W, c, (stride, stride), padding, pad_value, threshold=t, form=form)
    assert np.array_equal(K.unpack_bits(bits, f), np.where(ref >= t[:, None, None, None, :], 1, -1))


def test_binary_gemm_refuses_a_form_by_name():
    a = K.pack_bits(np.ones((2, 10)))
    with pytest.raises(forms.FormError, match="unknown form 'tiles' for gemm"):
        K.binary_gemm(a, a, 10, form="tiles")


FIRST_FORMS = forms.runnable("first")


@pytest.mark.parametrize("form", FIRST_FORMS)
@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.sampled_from([0, 1, 2, 17]), st.sampled_from([1, 63, 64, 65, 130]),
       st.sampled_from([1, 63, 64, 65, 784]) | st.integers(1, 300), st.integers(0, 2**32 - 1))
def test_every_first_layer_form_this_host_runs_is_exact_for_s_networks(form, s, n, m, k, seed):
    """The pixel product of S networks in one call (:func:`pixel_stack_t`), in each
    form: int32 sums and the fused threshold, against the naive integer product."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, k)).astype(np.uint8)
    x[:1] = 255  # the largest lane sums
    w = rng.choice(np.array([-1, 1], np.int8), (s, m, k))
    ref = np.stack([gemm(x, w[i]) for i in range(s)])
    W = K.pixel_stack_weights(form, w)
    rows = x if form in ("lookup", "vnni") else K.pixel_pairs(x)
    assert np.array_equal(K.pixel_stack_t(form, rows, W, m), ref)
    t = rng.integers(-255 * k, 255 * k + 1, (s, m)) + rng.choice([0.0, 0.5], (s, m))
    T = np.stack([K.pixel_thresholds(t[i], m) for i in range(s)])
    want = np.stack([K.threshold_pack(ref[i].astype(np.float64), t[i]) for i in range(s)])
    assert np.array_equal(K.pixel_stack_t(form, rows, W, m, T), want)


@pytest.mark.parametrize("form", [f for f in forms.runnable("hidden") if f.startswith("nibbles")])
@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.sampled_from([1, 2, 9, 33]), st.sampled_from([1, 63, 64, 65, 130]),
       st.sampled_from([1, 63, 64, 65, 1024]) | st.integers(1, 300), st.integers(0, 2**32 - 1))
def test_the_nibble_forms_are_exact_for_s_networks(form, s, n, m, k, seed):
    """Hidden layers of S networks, each on its own packed input, in one call
    (:func:`nibble_stack_t`)."""
    rng = np.random.default_rng(seed)
    a = rng.choice(np.array([-1, 1], np.int8), (s, n, k))
    w = rng.choice(np.array([-1, 1], np.int8), (s, m, k))
    A = np.stack([K.pack_bits(v) for v in a])
    P = np.stack([K.nibble_weights(K.pack_bits(v), k) for v in w])
    ref = np.stack([gemm(a[i], w[i]) for i in range(s)])
    assert np.array_equal(K.nibble_stack_t(A, P, m, k, form=form), ref)
    t = rng.integers(-k - 1, k + 2, (s, m)) + 0.5
    T = np.stack([K.pixel_thresholds(t[i], m) for i in range(s)])
    want = np.stack([K.threshold_pack(ref[i].astype(np.float64), t[i]) for i in range(s)])
    assert np.array_equal(K.nibble_stack_t(A, P, m, k, T, form=form), want)


def test_the_pixel_product_refuses_an_unknown_form():
    with pytest.raises(ValueError, match="unknown form 'tiles'; expected one of bytes, signs, lookup, vnni"):
        K.pixel_stack_weights("tiles", np.ones((1, 2, 3)))
