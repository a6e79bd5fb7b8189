"""Every verb that dispatches on the kind of network, run on one binary and one real-valued
network (the scikit-learn ``check_estimator`` habit): the same call returns the same kind
of object for both, and the same bad input fails with the same exception type and a
message made of the same parts for both.

The dispatching verbs are the names of ``bnn_toroid``'s name table that route through
:func:`bnn_toroid._dispatch.kind` (``distance``, ``align``, ``local_energy``, ``error``) and
``paths.single_bend``; the verbs of one kind only (``paths.random_flip``,
``paths.search`` for binary networks, ``paths.linear``, ``paths.geodesic`` and
``normalize`` for real-valued ones, ``canonicalize`` and ``fingerprint`` for binary ones)
must refuse the other kind with a TypeError that says what to use instead.
"""
import numpy as np
import pytest
import torch
from torch import nn

import bnn_toroid as bt
from bnn_toroid import paths
from bnn_toroid.landscape import LocalEnergy
from bnn_toroid.network import BinaryNetwork
from bnn_toroid.nn import MLP
from bnn_toroid.paths import Barrier, Path

from netgen import random_mlp, shuffle

KINDS = ("binary", "continuous")
SIZES = [12, 8, 6, 3]
DISPATCHING = ("distance", "align", "local_energy", "error")
ALIGNED = {"binary": "hamming_aligned", "continuous": "geodesic_aligned"}


def _torch_shuffle(model, seed):
    g = np.random.default_rng(seed)
    perms = [g.permutation(n) for n in SIZES[1:-1]]
    scales = [g.uniform(0.5, 2.0, n) for n in SIZES[1:-1]]
    return bt.symmetry.continuous.rescale(bt.symmetry.continuous.permute(model, perms), scales)


@pytest.fixture(scope="module")
def nets(one_torch_thread):
    """kind -> (a, b, a shuffled by its symmetries, data, the kind's network type)."""
    rng = np.random.default_rng(0)
    a = random_mlp(rng, SIZES, constant=False)
    b = random_mlp(rng, SIZES, constant=False)
    x = rng.normal(size=(48, SIZES[0]))
    y = rng.integers(0, SIZES[-1], 48)
    torch.manual_seed(0)
    ra, rb = MLP(SIZES).eval(), MLP(SIZES).eval()
    return {"binary": (a, b, shuffle(np.random.default_rng(1), a), (x, y), BinaryNetwork),
            "continuous": (ra, rb, _torch_shuffle(ra, 1), (x, y), nn.Module)}


def test_the_dispatching_verbs_are_the_ones_checked_here():
    # a new verb in the name table that dispatches on the kind belongs in this module
    import inspect
    routed = {name for name, mod in bt._NAMES.items()
              if "kind(" in inspect.getsource(getattr(bt, name))}
    assert routed == set(DISPATCHING)


# ------------------------------------------------------------------ return types

@pytest.mark.parametrize("k", KINDS)
def test_distance_returns_a_float_and_one_per_layer_shape(nets, k):
    a, b, a2, _, _ = nets[k]
    d = bt.distance(a, b)
    assert isinstance(d, float) and d > 0
    per = bt.distance(a, b, per_layer=True)
    assert list(per) == ["layer1", "layer2", "layer3", "total"]
    assert all(isinstance(v, float) for v in per.values()) and per["total"] == d
    # the aligned kind is the plain kind after align, and finds a shuffled copy
    al = bt.distance(a, b, kind=ALIGNED[k])
    assert isinstance(al, float) and al <= d
    assert al == pytest.approx(bt.distance(a, bt.align(b, a)), rel=1e-5)
    assert bt.distance(a, a2) > 0.1
    assert bt.distance(a, a2, kind=ALIGNED[k]) == pytest.approx(0, abs=1e-5)
    per = bt.distance(a, b, kind=ALIGNED[k], per_layer=True)
    assert list(per) == ["layer1", "layer2", "layer3", "total"] and per["total"] == al


@pytest.mark.parametrize("k", KINDS)
def test_distance_kinds_are_listed_default_first(nets, k):
    kinds = bt.geometry.DISTANCE_KINDS[k]
    a, b = nets[k][:2]
    assert bt.distance(a, b, kind=kinds[0]) == bt.distance(a, b)
    assert ALIGNED[k] in kinds and all(isinstance(bt.distance(a, b, kind=x), float) for x in kinds)


@pytest.mark.parametrize("k", KINDS)
def test_align_returns_the_same_kind_of_network_with_the_same_function(nets, k):
    a, b, _, (x, y), cls = nets[k]
    al = bt.align(b, a)
    assert isinstance(al, cls)
    if k == "binary":
        assert al.same_architecture(b)
        np.testing.assert_array_equal(al.predict_classes(x), b.predict_classes(x))
    else:
        xt = torch.as_tensor(x, dtype=torch.float32)
        with torch.no_grad():
            assert torch.equal(al(xt).argmax(1), b(xt).argmax(1))
    assert bt.error(al, (x, y)) == bt.error(b, (x, y))


@pytest.mark.parametrize("k", KINDS)
def test_error_is_a_fraction_of_the_data(nets, k):
    a, _, a2, (x, y), _ = nets[k]
    e = bt.error(a, (x, y))
    assert isinstance(e, float) and 0 <= e <= 1 and (e * len(y)) == pytest.approx(round(e * len(y)))
    assert bt.error(a2, (x, y)) == e  # a symmetry leaves the error as it is
    if k == "binary":
        assert e == a.error(x, y)
    else:
        assert e == bt.symmetry.continuous.train_error(a, (x, y))


@pytest.mark.parametrize("k", KINDS)
def test_local_energy_returns_a_local_energy(nets, k):
    a, _, _, data, _ = nets[k]
    kw = {"eps": [0.0, 0.1]} if k == "binary" else {"sigma": [0.0, 0.3]}
    le = bt.local_energy(a, data, samples=3, **kw)
    assert isinstance(le, LocalEnergy)
    assert le.sigma.shape == le.mean.shape == le.std.shape == le.sem.shape == (2,)
    assert le.errors.shape == (3, 2) and isinstance(le.base_error, float)
    assert le.base_error == bt.error(a, data) and le.mean[0] == 0


def _check_path(p, data, cls):
    assert isinstance(p, Path)
    e = p.errors(data)
    assert isinstance(e, np.ndarray) and e.shape == (len(p),) and e.dtype == np.float64
    bar = p.barrier(data)
    assert isinstance(bar, Barrier) and bar.max_error == e.max()
    assert isinstance(p.point(0), cls) and isinstance(p.point(-1), cls)


@pytest.mark.parametrize("k", KINDS)
def test_single_bend_returns_a_path(nets, k):
    a, b, _, data, cls = nets[k]
    p = paths.single_bend(a, b, data, points=3, epochs=1)
    _check_path(p, data, cls)
    assert isinstance(p.midpoint, cls)


@pytest.mark.parametrize("func", ["random_flip", "search"])
def test_binary_paths_return_paths(nets, func):
    a, b, _, data, cls = nets["binary"]
    f = getattr(paths, func)
    _check_path(f(a, b, data, points=4, quiet=True) if func == "search" else f(a, b, points=4), data, cls)


@pytest.mark.parametrize("func", ["linear", "geodesic"])
def test_real_valued_paths_return_paths(nets, func):
    a, b, _, data, cls = nets["continuous"]
    _check_path(getattr(paths, func)(a, b, points=4), data, cls)


# ------------------------------------------------------------------ bad input

def _other(nets, k):
    return nets["continuous" if k == "binary" else "binary"][0]


BAD = {
    # name: (call(nets, kind, a, b, data), exception, fragments every message holds)
    "distance: two kinds": (lambda n, k, a, b, d: bt.distance(a, _other(n, k)), TypeError,
                            ["distance", "same kind"]),
    "align: two kinds": (lambda n, k, a, b, d: bt.align(_other(n, k), a), TypeError,
                         ["align", "same kind"]),
    "single_bend: two kinds": (lambda n, k, a, b, d: paths.single_bend(a, _other(n, k), d),
                               TypeError, ["single_bend", "same kind"]),
    "distance: not a network": (lambda n, k, a, b, d: bt.distance(a, "net"), TypeError,
                                ["distance", "expected a BinaryNetwork or a real-valued torch",
                                 "got str"]),
    "align: not a network": (lambda n, k, a, b, d: bt.align(np.zeros(3), a), TypeError,
                             ["align", "got ndarray"]),
    "local_energy: not a network": (lambda n, k, a, b, d: bt.local_energy([a], d), TypeError,
                                    ["local_energy", "got list"]),
    "error: not a network": (lambda n, k, a, b, d: bt.error(None, d), TypeError,
                             ["error", "got NoneType"]),
    "distance: bad kind": (lambda n, k, a, b, d: bt.distance(a, b, kind="euclid"), ValueError,
                           ["distance", "kind must be one of", "'euclid'"]),
    "distance: bad method": (lambda n, k, a, b, d: bt.distance(a, b, kind=ALIGNED[k], method="x"),
                             ValueError, ["align", "method must be", "'x'"]),
    "align: bad method": (lambda n, k, a, b, d: bt.align(b, a, method="nearest"), ValueError,
                          ["align", "method must be", "'nearest'"]),
    "distance: other architecture": (lambda n, k, a, b, d: bt.distance(a, _small(k)), ValueError,
                                     ["different architectures"]),
    "align: other architecture": (lambda n, k, a, b, d: bt.align(_small(k), a), ValueError,
                                  ["different architectures"]),
    "local_energy: no data set": (lambda n, k, a, b, d: bt.local_energy(a, 42), TypeError,
                                  ["data", "expected a Dataset", "got int"]),
    "error: no data set": (lambda n, k, a, b, d: bt.error(a, "x.npz"), TypeError,
                           ["data", "expected a Dataset", "got str"]),
    "path errors: no data set": (lambda n, k, a, b, d: _path(k, a, b).errors(7), TypeError,
                                 ["data", "expected a Dataset", "got int"]),
    "error: samples of another shape": (lambda n, k, a, b, d: bt.error(a, (d[0][:, :5], d[1])),
                                        ValueError, ["error", "samples of shape (5,)"]),
    "local_energy: samples of another shape": (
        lambda n, k, a, b, d: bt.local_energy(a, (d[0][:, :5], d[1]), samples=1), ValueError,
        ["local_energy", "samples of shape (5,)"]),
    "path errors: samples of another shape": (
        lambda n, k, a, b, d: _path(k, a, b).errors((d[0][:, :5], d[1])), ValueError,
        ["samples of shape (5,)"]),
    "error: labels outside the classes": (lambda n, k, a, b, d: bt.error(a, (d[0], d[1] + 3)),
                                          ValueError, ["error", "holds labels in [3, 5]",
                                                       "expected class indices"]),
    "local_energy: labels outside the classes": (
        lambda n, k, a, b, d: bt.local_energy(a, (d[0], d[1] - 3), samples=1), ValueError,
        ["local_energy", "holds labels in [-3, -1]", "expected class indices"]),
    "path errors: labels outside the classes": (
        lambda n, k, a, b, d: _path(k, a, b).errors((d[0], d[1] + 3)), ValueError,
        ["holds labels in [3, 5]", "expected class indices"]),
    "local_energy: samples=0": (lambda n, k, a, b, d: bt.local_energy(a, d, samples=0), ValueError,
                                ["local_energy", "samples must be an integer >= 1", "got 0"]),
    "local_energy: negative level": (lambda n, k, a, b, d: bt.local_energy(a, d, **_level(k, -0.1)),
                                     ValueError, ["local_energy", "-0.1"]),
    "local_energy: the other kind's level": (
        lambda n, k, a, b, d: bt.local_energy(a, d, **_level("continuous" if k == "binary" else "binary", 0.1)),
        ValueError, ["local_energy", "not"]),
    "single_bend: one point": (lambda n, k, a, b, d: paths.single_bend(a, b, d, points=1),
                               ValueError, ["single_bend", "points must be", "got 1"]),
    "distance: unknown argument": (lambda n, k, a, b, d: bt.distance(a, b, colour="red"), TypeError,
                                   ["colour"]),
}


def _small(k):
    if k == "binary":
        return random_mlp(np.random.default_rng(5), [12, 7, 6, 3])
    return MLP([12, 7, 6, 3]).eval()


def _level(k, v):
    return {"eps": [v]} if k == "binary" else {"sigma": [v]}


def _path(k, a, b):
    return paths.random_flip(a, b, points=3) if k == "binary" else paths.linear(a, b, points=3)


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_fails_alike_for_both_kinds(nets, case):
    call, exc, parts = BAD[case]
    for k in KINDS:
        a, b, _, data, _ = nets[k]
        with pytest.raises(exc) as e:
            call(nets, k, a, b, data)
        for p in parts:
            assert p in str(e.value), f"{k}: {p!r} not in {str(e.value)!r}"


ONE_KIND = {
    # verb: (call(a, b, data), the kind it takes, fragments of the refusal of the other kind)
    "paths.random_flip": (lambda a, b, d: paths.random_flip(a, b), "binary", ["BinaryNetwork", "from_torch"]),
    "paths.search": (lambda a, b, d: paths.search(a, b, d), "binary", ["BinaryNetwork", "from_torch"]),
    "canonicalize": (lambda a, b, d: bt.canonicalize(a), "binary", ["canonicalize", "BinaryNetwork"]),
    # fingerprint's refusal names canonicalize, which it calls (symmetry/binary.py)
    "fingerprint": (lambda a, b, d: bt.fingerprint(a), "binary", ["BinaryNetwork", "from_torch"]),
    "paths.linear": (lambda a, b, d: paths.linear(a, b), "continuous",
                     ["paths.linear", "BinaryNetwork", "paths.random_flip"]),
    "paths.geodesic": (lambda a, b, d: paths.geodesic(a, b), "continuous",
                       ["paths.geodesic", "BinaryNetwork", "paths.random_flip"]),
    "normalize": (lambda a, b, d: bt.normalize(a), "continuous", ["normalize", "BinaryNetwork"]),
}


@pytest.mark.parametrize("verb", sorted(ONE_KIND))
def test_verbs_of_one_kind_refuse_the_other_by_name(nets, verb):
    call, takes, parts = ONE_KIND[verb]
    other = "continuous" if takes == "binary" else "binary"
    a, b, _, data, _ = nets[other]
    with pytest.raises(TypeError) as e:
        call(a, b, data)
    for p in parts:
        assert p in str(e.value), f"{p!r} not in {str(e.value)!r}"


@pytest.mark.parametrize("verb", ["distance", "align", "local_energy", "error", "single_bend"])
def test_a_torch_model_with_binary_layers_is_sent_to_freeze(nets, verb):
    from bnn_toroid.nn import BinaryMLP
    m = BinaryMLP([12, 8, 3]).eval()
    data = nets["binary"][3]
    call = {"distance": lambda: bt.distance(m, m), "align": lambda: bt.align(m, m),
            "local_energy": lambda: bt.local_energy(m, data), "error": lambda: bt.error(m, data),
            "single_bend": lambda: paths.single_bend(m, m, data)}[verb]
    with pytest.raises(TypeError, match="freeze it first"):
        call()
