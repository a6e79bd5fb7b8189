"""Thresholds re-estimated from data (bnn_toroid.recalibrate) against a naive torch twin,
and the BatchNorm records through files, symmetries and paths."""
import numpy as np
import pytest
import torch
from torch import nn

import bnn_toroid as bt
from bnn_toroid import datasets as D
from bnn_toroid import nn as bnn
from bnn_toroid import train as T
from bnn_toroid.network.recalibrate import infer_records, recalibrate
from netgen import shuffle


@pytest.fixture(scope="module")
def digits():
    return D.load("digits")


class _Centred:
    """digits with pixels shifted to -8..8, so that a binarised input varies."""
    def __init__(self, d):
        self.x = np.asarray(d.x, np.float32) - 8.0
        self.y = d.y


def _trained(model, data, epochs=3, seed=0):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    if isinstance(data, _Centred):
        data = (data.x, data.y)
    try:
        T.fit(model, data, "sgd", epochs=epochs, seed=seed, quiet=True)
    finally:
        torch.set_num_threads(n)
    return model.eval()


@torch.no_grad()
def _torch_twin(model, x):
    """The naive reference: each BatchNorm's running statistics set, layer after layer, to
    the population mean and variance of its input over x (eval-mode forward), then frozen."""
    x = torch.as_tensor(np.array(x), dtype=torch.float32)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        got = {}
        h = bn.register_forward_hook(lambda m, i, o: got.setdefault("x", i[0]))
        model(x)
        h.remove()
        v = got["x"].double()
        dims = [0] + list(range(2, v.dim()))
        bn.running_mean.copy_(v.mean(dims).float())
        bn.running_var.copy_(v.var(dims, unbiased=False).float())
    return bt.BinaryNetwork.from_torch(model)


@pytest.mark.parametrize("binarize", [True, False])
def test_dense_thresholds_equal_the_torch_twin(digits, binarize):
    torch.manual_seed(0)
    norm = None if binarize else T.input_norm(digits)
    digits = _Centred(digits) if binarize else digits
    model = _trained(bnn.BinaryMLP([64, 48, 32, 10], input_norm=norm, binarize_input=binarize),
                     (digits.x, digits.y))
    net = bt.BinaryNetwork.from_torch(model)
    assert all(l.bn is not None for l in net.layers[:-1]) and net.layers[-1].bn is None
    ours = recalibrate(net, digits)
    twin = _torch_twin(model, digits.x)
    for i, (a, b) in enumerate(zip(ours.layers[:-1], twin.layers[:-1])):
        if a.threshold.dtype == np.int64:   # binary input: exact integers
            assert np.array_equal(a.threshold, b.threshold), i
        else:                               # real input: float32 torch vs float64 ours
            assert np.allclose(a.threshold, b.threshold, rtol=1e-4, atol=1e-3), i
    assert np.array_equal(ours.predict(digits.x).argmax(1), twin.predict(digits.x).argmax(1))


def test_conv_thresholds_after_the_pool_equal_the_torch_twin(digits):
    torch.manual_seed(1)
    digits = _Centred(digits)
    model = _trained(bnn.BinaryConvNet((1, 8, 8), channels=(6,), dense=(16,), kernel_size=3,
                                       padding="same", pad_value=1.0), digits, epochs=2)
    net = bt.BinaryNetwork.from_torch(model)
    assert net.layers[0].bn.after_pool
    ours, twin = recalibrate(net, digits), _torch_twin(model, digits.x)
    for a, b in zip(ours.layers, twin.layers):
        if getattr(a, "threshold", None) is not None and a.threshold.dtype == np.int64:
            assert np.array_equal(a.threshold, b.threshold)


def test_records_survive_files_and_symmetries(digits, tmp_path):
    digits = _Centred(digits)
    torch.manual_seed(2)
    net = bt.BinaryNetwork.from_torch(_trained(bnn.BinaryMLP([64, 32, 32, 10], binarize_input=True), digits))
    net.save(tmp_path / "n.npz")
    back = bt.load(tmp_path / "n.npz")
    for a, b in zip(net.layers[:-1], back.layers[:-1]):
        assert np.array_equal(a.bn.ratio, b.bn.ratio) and np.array_equal(a.bn.eps, b.bn.eps)
    rng = np.random.default_rng(0)
    moved = shuffle(rng, net)
    # recalibration commutes with permutations and sign reversals: the same function
    assert np.array_equal(recalibrate(moved, digits).predict(digits.x), recalibrate(net, digits).predict(digits.x))
    assert bt.fingerprint(moved) == bt.fingerprint(net)
    bare = net.with_layers([bt.network.Dense(l.weights, threshold=l.threshold) if l.threshold is not None else l
                            for l in net.layers])
    assert bt.fingerprint(bare) == bt.fingerprint(net)          # records are not the class


def test_inferred_records_give_back_the_thresholds(digits):
    digits = _Centred(digits)
    torch.manual_seed(3)
    net = bt.BinaryNetwork.from_torch(_trained(bnn.BinaryMLP([64, 32, 32, 10], binarize_input=True), digits))
    bare = net.with_layers([bt.network.Dense(l.weights, threshold=l.threshold) if l.threshold is not None else l
                            for l in net.layers])
    inferred = infer_records(bare, digits)
    again = recalibrate(inferred, digits)
    for a, b in zip(bare.layers[:-1], again.layers[:-1]):
        assert np.array_equal(a.threshold, b.threshold)


def test_recomputed_paths_recalibrate_every_point(digits):
    digits = _Centred(digits)
    nets = []
    for s in (0, 1):
        torch.manual_seed(s)
        nets.append(bt.BinaryNetwork.from_torch(_trained(bnn.BinaryMLP([64, 32, 10], binarize_input=True),
                                                         digits, seed=s)))
    a, b = nets
    p = bt.paths.random_flip(a, b, points=5, bn="recompute")
    e = p.errors(digits)
    assert e[0] == recalibrate(a, digits).error(digits.x, digits.y)
    assert e[-1] == recalibrate(p.b, digits).error(digits.x, digits.y)
    sub = (digits.x[:300], digits.y[:300])
    q = bt.paths.random_flip(a, b, points=5, bn="recompute", bn_data=sub)
    assert q.errors(digits)[0] == recalibrate(a, sub).error(digits.x, digits.y)
    with pytest.raises(ValueError, match="bn must be one of 'frozen', 'recompute'"):
        bt.paths.random_flip(a, b, bn="repair")
    s = bt.paths.search(a, b, sub, points=5, bn="recompute", quiet=True, candidates=4)
    assert s.errors(sub)[0] == recalibrate(a, sub).error(*sub)
    with pytest.raises(ValueError, match="every_move"):
        s.errors(sub, every_move=True)


def test_normalize_before_the_input_sign_is_refused(digits):
    model = bnn.BinaryMLP([64, 8, 10], input_norm=T.input_norm(digits), binarize_input=True).eval()
    with pytest.raises(bt.network.NetworkError, match="Normalize before the input Sign"):
        bt.BinaryNetwork.from_torch(model)
